"""The game-day report: every scenario in one document, with the day's timeline of people's steps."""

from __future__ import annotations

from faultdrill.reports.gameday import day_timeline, render_gameday, render_gameday_markdown
from faultdrill.reports.model import RunView


def _views(journal_factory):
    return [RunView.of(journal_factory("passed", name="gpu-hog", started=1_800_000_000.0)),
            RunView.of(journal_factory("failed", name="partition", started=1_800_000_100.0, runbook=False)),
            RunView.of(journal_factory("halted", name="oom", started=1_800_000_200.0, reason="halted: stop"))]


def test_day_timeline_orders_people_and_system_by_wall_clock(journal_factory):
    rows = day_timeline(_views(journal_factory))
    assert [r.wall for r in rows] == sorted(r.wall for r in rows)
    steps = [r for r in rows if r.css == "step"]
    assert [r.scenario for r in steps] == ["gpu-hog", "gpu-hog", "oom", "oom"]  # "partition" recorded none
    assert [r.detail for r in steps[:2]] == ["check nvidia-smi — hog found [gpu-memory.md]",
                                             "drain replica-0 — <b>no</b> [gpu-memory.md]"]  # fmt: skip
    assert [r.what for r in steps[:2]] == ["runbook step (done)", "runbook step (failed)"]
    whats = {r.what for r in rows}
    assert {"scenario started", "fault injected", "alert firing", "notified (firing)", "scenario halted"} <= whats


def test_one_document_with_every_scenario(journal_factory):
    html = render_gameday(_views(journal_factory)[::2], title="Game day: GPU fleet")
    assert html.count('<svg id="timeline-figure"') == 2
    for name in ("gpu-hog", "oom"):
        assert f">{name}</a>" in html
    assert "Timeline of the day: people&#39;s steps and notes" in html or "people's steps" in html
    assert "check nvidia-smi" in html and "&lt;b&gt;no&lt;/b&gt;" in html and "<script" not in html
    assert "halted: stop" in html


def test_without_runbook_steps_it_says_so(journal_factory):
    views = [RunView.of(journal_factory(runbook=False))]
    assert "No runbook step or note was recorded" in render_gameday(views)
    md = render_gameday_markdown(views, title="Day")
    assert md.startswith("## Day") and "- none recorded" in md and "### ✅ synthetic" in md


def test_the_step_that_repaired_the_service_says_so_with_the_fault_still_in_effect(journal_factory):
    # The runbook verdict that passed names the repairing step (measured.repair_step, evidence[0]): the failed
    # "drain replica-0" step of the synthetic journal stands in for it here.
    step = {"t": 13.0, "kind": "runbook", "source": "gpu-memory.md",
            "attrs": {"step": "drain replica-0", "status": "failed"}}
    verdict = {"name": "the runbook of hog restores steady state within 15 s", "passed": True, "observed": "…",
               "measured": {"seconds": 4.0, "repair_step": 4, "regained_t": 13.2, "fault_end_t": 30.0},
               "evidence": [step]}  # fmt: skip
    rows = day_timeline([RunView.of(journal_factory("passed", name="gpu-hog", started=1_800_000_000.0,
                                                    verdicts=[verdict]))])  # fmt: skip
    fixed = [r for r in rows if "repaired the service" in r.what]
    assert len(fixed) == 1 and fixed[0].t == 13.0
    assert fixed[0].detail.startswith("drain replica-0")
    assert "steady from t=13.2 s while the fault was still in effect (rolled back only at t=30.0 s)" in fixed[0].detail
    md = render_gameday_markdown([RunView.of(journal_factory("passed", verdicts=[verdict]))])
    assert "repaired the service" in md
