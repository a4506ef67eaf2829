"""The HTML report: one self-contained file with the figure, every section, for every kind of run."""

from __future__ import annotations

import re

import pytest

from faultdrill.reports.html import render_html
from faultdrill.reports.model import RunView

CASES = {
    "passed": {},
    "failed": {"outcome": "failed"},
    "halted": {"outcome": "halted", "reason": "halt_if availability: availability was below 0.5 for 5 s"},
    "error": {"outcome": "error", "events": False, "reason": "preflight: cgroup v2 is not mounted"},
    "no-load": {"load": False},
    "no-faults": {"faults": False, "alerts": False},
    "no-events": {"events": False},
}


def _self_contained(html: str) -> None:
    assert html.startswith("<!DOCTYPE html>")
    assert "<script" not in html and "<link" not in html and "@import" not in html
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", html), "a report must not need the network"
    assert not re.search(r"url\(\s*['\"]?(?:https?:)?//", html)


@pytest.mark.parametrize("case", list(CASES))
def test_renders_every_kind_of_run(journal_factory, case):
    journal = journal_factory(**CASES[case])
    html = render_html(RunView.of(journal))
    _self_contained(html)
    assert html.count('<svg id="timeline-figure"') == 1
    assert f'<span class="badge {journal.outcome}">{journal.outcome}</span>' in html
    for section in ("Timeline", "Expectations", "Faults: MTTD and MTTR", "Alerts", "SLO and error budget",
                    "Resilience score", "Environment", "The spec that ran"):  # fmt: skip
        assert f">{section}</h2>" in html
    if journal.reason:
        assert journal.reason in html
    if case == "no-load":
        assert "no requests recorded" in html
    if case == "error":
        assert "n/a" in html and "not scored" in html and "No expectation was judged" in html


@pytest.fixture(scope="module")
def failed_html(journal_factory):
    return render_html(RunView.of(journal_factory("failed")))


def test_shows_what_the_issue_asks_for(failed_html):
    html = failed_html
    assert "✘" in html and "availability during hog was 0.800 over 100 requests" in html  # expected vs observed
    assert "5.0–15.0" in html  # the verdict's window
    assert "1.00 s" in html and "2.00 s" in html  # MTTD, MTTR
    assert "InferenceGPUMemoryPressure" in html and "oncall" in html and "hog.start + 3.0 s" in html
    assert "check nvidia-smi" in html and ">Runbook steps</h2>" in html
    assert "error budget consumed" in html and "714 %" in html  # 20 of 280 failed against a 1 % budget
    assert "cpu (emulated)" in html and "no GPU: emulated device-memory budget" in html
    assert "alert rule time scale</dt><dd>0.1 (alert <code>for:</code> durations" in html
    assert "100 × (40×0.50" in html  # the score's formula next to it
    assert "after: hog.start" in html and "apiVersion: faultdrill/v1" in html  # the spec, moments tidied


def test_journal_text_is_escaped(journal_factory):
    hostile = "<script>alert(1)</script>"
    journal = journal_factory("failed", verdicts=[{"name": hostile, "passed": False, "expected": hostile,
                                                   "observed": "<img src=x onerror=alert(1)>"}])  # fmt: skip
    html = render_html(RunView.of(journal))
    assert hostile not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;b&gt;no&lt;/b&gt;" in html  # a runbook note, too


def test_figure_shades_and_labels_faults(failed_html):
    html = failed_html
    svg = html[html.index("<svg") : html.index("</svg>")]
    assert "hog: gpu_memory_exhaustion (emulated)" in svg  # text stays text (svg.fonttype none)
    for title in ("throughput (requests/s)", "error ratio (%)", "latency of successful requests (ms)"):
        assert title in svg
    assert "replica-0 readiness" in svg and "alert InferenceGPUMemoryPressure" in svg and "runbook" in svg
    assert 'width="' not in svg[: svg.index(">")]  # scales with the page


def test_real_run(smoke_view):
    html = render_html(smoke_view)
    _self_contained(html)
    assert "11 of 11 expectations held" in html and smoke_view.journal.run_id in html
    assert "gpu_memory_exhaustion" in html and "OOMKilled" in html


def test_unfinished_run_and_a_fault_that_never_ended(journal_factory, xsd_path):
    import xmlschema

    from faultdrill.reports.junit import render_junit
    from faultdrill.reports.markdown import render_markdown

    journal = journal_factory("halted", reason="killed")
    journal = journal.model_copy(update={
        "outcome": None, "exit_code": None, "ended_at": None, "spec": {},
        "events": [e for e in journal.events if not (e.kind == "fault" and e.get("event") == "end")],
        "faults": {"hog": {"type": "gpu_memory_exhaustion", "target": "replica-0", "mttd_s": None, "mttr_s": None}},
    })  # fmt: skip
    view = RunView.of(journal)
    assert view.faults[0].end is None and view.faults[0].requests > 0
    html = render_html(view)
    assert "never ended" in html and "unfinished" in html and "# no spec recorded" in html
    assert "the run did not finish" in html  # not scored
    assert "unfinished" in render_markdown(view)
    xmlschema.XMLSchema(str(xsd_path)).validate(render_junit([view]))
