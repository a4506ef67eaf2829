"""Comparison of two runs: better/worse for MTTD, MTTR, availability during faults, verdict changes."""

from __future__ import annotations

import json

from faultdrill.reports.compare import compare_runs, render_comparison_json, render_comparison_markdown
from faultdrill.reports.model import RunView


def test_better_and_worse(journal_factory):
    a = RunView.of(journal_factory("failed", mttd=3.0, mttr=None))
    b = RunView.of(journal_factory("passed", mttd=1.0, mttr=20.0))
    cmp = compare_runs(a, b)
    rows = {r.metric: r for r in cmp.rows}
    assert rows["MTTD hog"].change == "better" and rows["MTTR hog"].change == "better"  # never → 20 s
    assert rows["availability during faults"].change == "same"
    assert rows["resilience score"].change == "better"
    (change,) = cmp.verdicts
    assert (change.name, change.a, change.b, change.change) == ("availability at least 0.95 during hog", False, True,
                                                                "fixed")  # fmt: skip
    assert "availability at least 0.95 during hog" in cmp.better and cmp.worse == []
    back = compare_runs(b, a)
    assert {"MTTD hog", "MTTR hog", "resilience score", "availability at least 0.95 during hog"} <= set(back.worse)


def test_noise_is_same_and_missing_faults_are_named(journal_factory):
    a = RunView.of(journal_factory(mttd=1.00, mttr=2.0))
    b = RunView.of(journal_factory(mttd=1.03, mttr=2.0, faults=False))
    rows = {r.metric: r for r in compare_runs(a, a).rows}
    assert {r.change for r in rows.values()} == {"same"}
    rows = {r.metric: r for r in compare_runs(a, b).rows}
    assert rows["MTTD hog (not in B)"].change == "n/a"


def test_renderings(journal_factory):
    cmp = compare_runs(RunView.of(journal_factory("failed", name="before")),
                       RunView.of(journal_factory("passed", name="after")))
    md = render_comparison_markdown(cmp)
    assert "| MTTD hog | 1.00 s | 1.00 s | = same |" in md
    assert "| availability at least 0.95 during hog | ❌ | ✅ | fixed |" in md
    assert "different experiments" in md
    doc = json.loads(render_comparison_json(cmp))
    assert doc["better"] and doc["rows"][0]["metric"] == "resilience score"
