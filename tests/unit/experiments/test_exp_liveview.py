"""The live view's figures come from the timeline alone."""

from __future__ import annotations

import io

from rich.console import Console

from faultdrill.experiments.engine.liveview import LiveView, snapshot
from faultdrill.experiments.journal.timeline import Timeline


def _timeline(now: float) -> Timeline:
    tl = Timeline(start=0.0, clock=lambda: now)
    tl.add("phase", "run", t=0.0, phase="steady")
    tl.add("fault", "hog", t=2.0, event="start")
    tl.add("fault", "old", t=1.0, event="start")
    tl.add("fault", "old", t=3.0, event="end")
    for i in range(100):
        t = 5.0 + i * 0.05
        tl.add("request", "load", t=t, ok=i % 10 != 0, status=200 if i % 10 else 503, latency_s=0.001 * (i + 1))
    tl.add("probe", "replica-0", t=9.0, probe="readiness", value=False)
    tl.add("probe", "replica-1", t=9.0, probe="readiness", value=True)
    tl.add("breaker", "replica-0", t=9.5, state="open")
    tl.add("process", "replica-0", t=9.6, event="restart", restarts=1)
    return tl


def test_snapshot_figures():
    snap = snapshot(_timeline(10.0))
    assert snap.phase == "steady" and snap.active_faults == ["hog"]
    assert snap.rps == 20.0  # 20 requests in the last second
    assert snap.error_ratio == 0.1
    assert snap.p95_ms is not None and 90 < snap.p95_ms <= 100
    assert snap.ready == {"replica-0": False, "replica-1": True}
    assert snap.breakers == {"replica-0": "open"} and snap.restarts == 1
    assert "ready=1/2" in snap.line() and "faults=hog" in snap.line()


def test_empty_timeline_is_fine():
    snap = snapshot(Timeline(start=0.0, clock=lambda: 0.0))
    assert snap.rps == 0 and snap.p95_ms is None and snap.error_ratio is None and snap.phase == "setup"


def test_plain_mode_prints_lines(capsys):
    console = Console(file=io.StringIO(), force_terminal=False)
    with LiveView(_timeline(10.0), title="t", console=console, interval_s=0.05) as view:
        view.note("verdict: ok")
    out = capsys.readouterr().out
    assert "verdict: ok" in out and "restarts=1" in out
