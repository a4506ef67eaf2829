"""The report's "Canary rollout" section: traffic split over time, per-version SLIs, the rollback moment."""

from __future__ import annotations

import re
from typing import Any

from faultdrill.experiments.journal import Journal
from faultdrill.experiments.journal.timeline import Event
from faultdrill.reports.canary import canary_markdown, canary_view
from faultdrill.reports.html import render_html
from faultdrill.reports.markdown import render_markdown
from faultdrill.reports.model import RunView


def _slis(n: int, ok: float | None, p95: float | None, conf: float | None) -> dict[str, Any]:
    return {"requests": n, "success_rate": ok, "latency_p95_s": p95, "confidence": conf, "version": None}


def _canary_events() -> list[Event]:
    stable = _slis(200, 1.0, 0.04, 0.96)
    rows: list[tuple[float, dict[str, Any]]] = [
        (3.0, {"event": "revision", "version": "2", "weight": 0}),
        (4.0, {"event": "weight", "version": "2", "weight": 20, "reason": "canary ready: its traffic begins"}),
        (5.0, {"event": "check", "version": "2", "weight": 20, "result": "passed", "canary": _slis(40, 1.0, 0.05, 0.97),
               "stable": stable}),
        (5.0, {"event": "promote", "version": "2", "weight": 100, "seconds": 2.0}),
        (8.0, {"event": "revision", "version": "bad-1", "weight": 0}),
        (9.0, {"event": "check", "version": "bad-1", "weight": 20, "result": "failed",
               "canary": _slis(30, 0.0, 0.06, None), "stable": stable}),
        (10.0, {"event": "check", "version": "bad-1", "weight": 20, "result": "failed",
                "canary": _slis(30, 0.0, 0.06, None), "stable": stable}),
        (10.0, {"event": "rollback", "version": "bad-1", "weight": 0, "by": "analysis", "seconds": 1.7,
                "reason": "2 failed checks (threshold 2): success_rate 0 below 0.99"}),
    ]  # fmt: skip
    return [Event(t=t, kind="canary", source="canary", attrs=a, wall=1_800_000_000.0 + t) for t, a in rows]


def _journal(journal_factory: Any, canary: bool) -> Journal:
    base = journal_factory("passed")
    events = sorted([*base.events, *_canary_events()], key=lambda e: e.t) if canary else base.events
    return base.model_copy(update={"events": events})


def test_the_view_has_the_weight_steps_the_slis_and_the_decisions(journal_factory: Any) -> None:
    view = canary_view(_journal(journal_factory, True).events)
    assert view is not None
    assert view.weights == ((3.0, 0), (4.0, 20), (5.0, 100), (8.0, 0), (9.0, 20), (10.0, 0))
    assert [(p.t, p.result, p.canary["success_rate"]) for p in view.points] == [
        (5.0, "passed", 1.0), (9.0, "failed", 0.0), (10.0, "failed", 0.0)]
    rollback = next(d for d in view.decisions if d.event == "rollback")
    assert (rollback.t, rollback.version, rollback.seconds) == (10.0, "bad-1", 1.7)
    assert canary_view(_journal(journal_factory, False).events) is None
    assert canary_markdown(None) == []


def test_html_shows_the_split_figure_and_the_rollback(journal_factory: Any) -> None:
    page = render_html(RunView.of(_journal(journal_factory, True)))
    section = page[page.index('id="canary"'):]
    assert '<svg id="canary-figure"' in section and "canary traffic weight (%)" in section
    assert "p95 latency (ms)" in section and "mean confidence" in section
    assert re.search(r"<td>rollback</td><td>bad-1</td>\s*<td class=\"num\">0 %</td>", section)
    assert "success_rate 0 below 0.99" in section and "1.7 s after its first canary request" in section
    plain = render_html(RunView.of(_journal(journal_factory, False)))
    assert 'id="canary"' not in plain and "canary-figure" not in plain


def test_markdown_lists_decisions_and_per_version_slis(journal_factory: Any) -> None:
    md = render_markdown(RunView.of(_journal(journal_factory, True)))
    section = md[md.index("Canary rollout"):]
    why = "2 failed checks (threshold 2): success_rate 0 below 0.99 (1.7 s)"
    assert f"| 10.0 | rollback | bad-1 | 0 % | {why} |" in section
    assert "| 9.0 | failed | 20 % | 0.0 % | 60 ms | – | 100.0 % | 40 ms | 0.960 |" in section
    assert "Canary rollout" not in render_markdown(RunView.of(_journal(journal_factory, False)))
