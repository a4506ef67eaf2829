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
