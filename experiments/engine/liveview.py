"""What a run shows while it runs, computed from the timeline alone.

``snapshot(timeline)`` condenses the last seconds into the figures an SRE watches — phase,
elapsed, active faults, requests/s, p95, error ratio, replicas ready, breaker states,
restarts, verdicts settled — and ``LiveView`` renders them: a rich live table on a terminal,
one plain line every few seconds when not a terminal or in CI (``CI=true``).

Example::

    with LiveView(timeline, title="smoke") as view:
        ...                       # the run appends events; the view refreshes by itself
        view.note("verdict: readiness of replica-0 became false 1.4 s after hog.start")
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass, field
from types import TracebackType

from rich.console import Console
from rich.live import Live
from rich.table import Table

from faultdrill.experiments.expect.stats import request_stats
from faultdrill.experiments.journal.timeline import Timeline

__all__ = ["LiveView", "Snapshot", "snapshot"]

_LAG_S = 0.2


@dataclass(frozen=True)
class Snapshot:
    elapsed_s: float
    phase: str
    active_faults: list[str]
    rps: float
    p95_ms: float | None
    error_ratio: float | None
    ready: dict[str, bool]
    breakers: dict[str, str]
    restarts: int
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        ready = sum(self.ready.values())
        p95 = "-" if self.p95_ms is None else f"{self.p95_ms:.0f}ms"
        err = "-" if self.error_ratio is None else f"{self.error_ratio:.1%}"
        breakers = ",".join(f"{k}={v}" for k, v in sorted(self.breakers.items())) or "-"
        faults = ",".join(self.active_faults) or "-"
        return (
            f"[{self.elapsed_s:6.1f}s] {self.phase:9} faults={faults} rps={self.rps:.0f} p95={p95} "
            f"errors={err} ready={ready}/{len(self.ready)} breaker={breakers} restarts={self.restarts}"
        )


def snapshot(timeline: Timeline, *, window_s: float = 5.0, notes: list[str] | None = None) -> Snapshot:
    """Figures over the last ``window_s`` seconds (requests/s over the last second)."""
    now = timeline.now()
    phase_event = timeline.last("phase", source="run")
    phase = str(phase_event.get("phase")) if phase_event else "setup"
    stage = timeline.last("phase", source="load")  # a load.rate_stages entry under way shows as the phase
    if stage is not None and stage.get("edge") == "start":
        phase = str(stage.get("phase"))
    active: dict[str, bool] = {}
    for e in timeline.select("fault"):
        if e.get("event") == "start":
            active[e.source] = True
        elif e.get("event") == "end":
            active.pop(e.source, None)
    recent = timeline.requests(start=now - window_s)
    stats = request_stats(recent)
    # Buckets reach the timeline ~0.2 s after their start: requests/s over the last full second before that.
    last_second = request_stats(e for e in recent if now - 1.0 - _LAG_S <= e.t < now - _LAG_S).total
    p95 = stats.latency(0.95)
    ready: dict[str, bool] = {}
    for e in timeline.select("probe", probe="readiness"):
        ready[e.source] = bool(e.get("value"))
    breakers = {e.source: str(e.get("state")) for e in timeline.select("breaker")}
    restarts = len(timeline.select("process", event="restart"))
    return Snapshot(now, phase, sorted(active), float(last_second), None if p95 is None else p95 * 1000,
                    stats.error_ratio, ready, breakers, restarts, notes or [])  # fmt: skip


def _table(snap: Snapshot, title: str) -> Table:
    table = Table(title=f"faultdrill run — {title}", show_header=False, expand=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    table.add_row("phase", f"{snap.phase}  ({snap.elapsed_s:.1f} s)")
    table.add_row("active faults", ", ".join(snap.active_faults) or "none")
    table.add_row("load", f"{snap.rps:.0f} req/s   p95 {'-' if snap.p95_ms is None else f'{snap.p95_ms:.0f} ms'}"
                  f"   errors {'-' if snap.error_ratio is None else f'{snap.error_ratio:.1%}'}")  # fmt: skip
    table.add_row("replicas ready", " ".join(f"{k}:{'✔' if v else '✘'}" for k, v in sorted(snap.ready.items())) or "-")
    table.add_row("breakers", " ".join(f"{k}:{v}" for k, v in sorted(snap.breakers.items())) or "-")
    table.add_row("restarts", str(snap.restarts))
    for note in snap.notes[-6:]:
        table.add_row("", note)
    return table


class LiveView:
    """Refreshes a view of ``timeline`` from a background thread until closed."""

    def __init__(self, timeline: Timeline, *, title: str, console: Console | None = None,
                 plain: bool | None = None, interval_s: float | None = None) -> None:  # fmt: skip
        self.timeline = timeline
        self.title = title
        self.console = console or Console(stderr=False)
        interactive = self.console.is_terminal and os.environ.get("CI", "").lower() not in ("1", "true")
        self.plain = (not interactive) if plain is None else plain
        self.interval_s = interval_s if interval_s is not None else (5.0 if self.plain else 0.5)
        self.notes: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._live: Live | None = None

    def note(self, text: str) -> None:
        """A line that stays in the view (settled verdicts, phase changes)."""
        self.notes.append(text)
        if self.plain:
            print(text, file=sys.stdout, flush=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            snap = snapshot(self.timeline, notes=self.notes)
            if self._live is not None:
                self._live.update(_table(snap, self.title))
            else:
                print(snap.line(), flush=True)

    def __enter__(self) -> LiveView:
        if not self.plain:
            self._live = Live(_table(snapshot(self.timeline), self.title), console=self.console,
                              refresh_per_second=4, transient=False)  # fmt: skip
            self._live.__enter__()
        self._thread = threading.Thread(target=self._loop, name="liveview", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object | TracebackType) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._live is not None:
            self._live.update(_table(snapshot(self.timeline, notes=self.notes), self.title))
            self._live.__exit__(None, None, None)
        else:
            print(snapshot(self.timeline).line(), flush=True)
