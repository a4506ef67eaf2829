"""State lanes of the timeline figure, and the alert and runbook tables, from the events.

A lane is a row of spans (a state held from one event to the next) and marks (instants):
probes per replica, breakers, process restarts with their reason, alerts (pending, firing,
notified, resolved) and runbook steps. Consecutive events in the same state merge into one
span, so a 10 Hz probe stream draws as a handful of rectangles.

>>> from experiments.journal import Event
>>> lanes = build_lanes([Event(t=1, kind="breaker", source="replica-0", attrs={"state": "open"}),
...                      Event(t=3, kind="breaker", source="replica-0", attrs={"state": "closed"})], 5.0)
>>> [(s.state, s.start, s.end) for s in lanes[0].spans]
[('open', 1.0, 3.0), ('closed', 3.0, 5.0)]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from faultdrill.experiments.journal import (
    AlertAttrs,
    BreakerAttrs,
    Event,
    NotificationAttrs,
    ProbeAttrs,
    ProcessAttrs,
    RunbookAttrs,
)

__all__ = ["AlertRow", "Lane", "Mark", "RunbookRow", "Span", "alert_rows", "build_lanes", "runbook_rows"]

PROBES = ("readiness", "liveness")


@dataclass(frozen=True)
class Span:
    start: float
    end: float
    state: str
    """ok, bad, warn, down or info, as the lane names it: e.g. ready, unready, open, firing."""


@dataclass(frozen=True)
class Mark:
    t: float
    text: str
    state: str


@dataclass(frozen=True)
class Lane:
    group: str
    """probes, breaker, restarts, alerts or runbook."""
    label: str
    spans: tuple[Span, ...] = ()
    marks: tuple[Mark, ...] = ()


@dataclass(frozen=True)
class AlertRow:
    """One alert's life: first pending, firing, notification and resolution (run time, seconds)."""

    name: str
    severity: str
    pending: float | None
    firing: float | None
    notified: float | None
    receivers: tuple[str, ...]
    resolved: float | None
    after_fault: str
    """``hog.start + 12.3 s``: the latest fault start before it fired (or went pending)."""
    notifications: int = 0


@dataclass(frozen=True)
class RunbookRow:
    t: float
    wall: float | None
    runbook: str
    step: str
    status: str
    note: str


def _spans(points: Sequence[tuple[float, str]], end: float) -> tuple[Span, ...]:
    out: list[Span] = []
    for i, (t, state) in enumerate(points):
        if out and out[-1].state == state:
            continue
        nxt = next((pt for pt, st in points[i + 1 :] if st != state), end)
        out.append(Span(t, max(nxt, t), state))
    return tuple(out)


def build_lanes(events: Iterable[Event], end: float) -> tuple[Lane, ...]:
    """Probe, breaker, restart, alert and runbook lanes, in that order."""
    probes: dict[tuple[str, str], list[tuple[float, str]]] = {}
    breakers: dict[str, list[tuple[float, str]]] = {}
    down: dict[str, list[tuple[float, str]]] = {}
    restarts: list[Mark] = []
    alerts: dict[str, list[tuple[float, str]]] = {}
    notified: dict[str, list[Mark]] = {}
    runbook: list[Mark] = []
    exits: dict[str, ProcessAttrs] = {}
    for e in events:
        if e.kind == "probe":
            p = ProbeAttrs.of(e)
            if p.probe in PROBES:
                state = "ready" if p.probe == "readiness" else "live"
                probes.setdefault((e.source, p.probe), []).append((e.t, state if p.value else f"not {state}"))
        elif e.kind == "breaker":
            if state := BreakerAttrs.of(e).state:
                breakers.setdefault(e.source, []).append((e.t, state))
        elif e.kind == "process":
            pr = ProcessAttrs.of(e)
            if pr.event not in ("exit", "start", "restart", "ready"):
                continue
            if pr.event == "exit":
                exits[e.source] = pr
            down.setdefault(e.source, []).append((e.t, "down" if pr.event == "exit" else "up"))
            if pr.event == "restart":
                died = exits.get(e.source)
                reason = pr.reason or (died.reason if died else None) or "?"
                cause = died.cause if died else None
                restarts.append(Mark(e.t, f"{e.source}: {reason}" + (f" ({cause})" if cause else ""), "bad"))
        elif e.kind == "alert":
            if state := AlertAttrs.of(e).state:
                alerts.setdefault(e.source, []).append((e.t, state))
        elif e.kind == "notification":
            n = NotificationAttrs.of(e)
            notified.setdefault(n.alert or "?", []).append(Mark(e.t, f"→ {e.source}", str(n.status)))
        elif e.kind == "runbook":
            r = RunbookAttrs.of(e)
            runbook.append(Mark(e.t, str(r.step or "step"), r.status or ""))
    lanes: list[Lane] = []
    for replica in sorted({r for r, _ in probes} | set(breakers)):
        gone = tuple(s for s in _spans(down.get(replica, []), end) if s.state == "down")
        for probe in PROBES:
            if (replica, probe) in probes:
                lanes.append(Lane("probes", f"{replica} {probe}", _spans(probes[replica, probe], end) + gone))
        if replica in breakers:
            lanes.append(Lane("breaker", f"{replica} breaker", _spans(breakers[replica], end)))
    if restarts:
        lanes.append(Lane("restarts", "restarts", marks=tuple(restarts)))
    for name in sorted(set(alerts) | set(notified)):
        spans = tuple(s for s in _spans(alerts.get(name, []), end) if s.state in ("pending", "firing"))
        resolved = tuple(Mark(t, "resolved", "resolved") for t, st in alerts.get(name, []) if st == "resolved")
        lanes.append(Lane("alerts", f"alert {name}", spans, tuple(notified.get(name, [])) + resolved))
    if runbook:
        lanes.append(Lane("runbook", "runbook", marks=tuple(runbook)))
    return tuple(lanes)


@dataclass
class _Seen:
    pending: float | None = None
    firing: float | None = None
    resolved: float | None = None
    notified: float | None = None
    severity: str = ""
    receivers: list[str] = field(default_factory=list)
    count: int = 0


def alert_rows(events: Iterable[Event], fault_starts: Sequence[tuple[str, float | None]]) -> tuple[AlertRow, ...]:
    """One row per alert name, in order of first appearance."""
    rows: dict[str, _Seen] = {}
    for e in events:
        if e.kind == "alert":
            a = AlertAttrs.of(e)
            row = rows.setdefault(e.source, _Seen())
            if a.state in ("pending", "firing", "resolved") and getattr(row, a.state) is None:
                setattr(row, a.state, e.t)
            row.severity = row.severity or a.severity or a.labels.get("severity") or ""
        elif e.kind == "notification":
            n = NotificationAttrs.of(e)
            row = rows.setdefault(n.alert or "?", _Seen())
            row.count += 1
            if n.status == "firing" and row.notified is None:
                row.notified = e.t
            if e.source not in row.receivers:
                row.receivers.append(e.source)
            row.severity = row.severity or n.severity or ""
    out = []
    for name, row in rows.items():
        at = row.firing if row.firing is not None else row.pending
        starts = [(fid, s) for fid, s in fault_starts if s is not None and at is not None and s <= at]
        after = f"{starts[-1][0]}.start + {at - starts[-1][1]:.1f} s" if starts and at is not None else "–"
        out.append(AlertRow(name, row.severity or "–", row.pending, row.firing, row.notified, tuple(row.receivers),
                            row.resolved, after, row.count))  # fmt: skip
    return tuple(out)


def runbook_rows(events: Iterable[Event]) -> tuple[RunbookRow, ...]:
    rows = []
    for e in events:
        if e.kind == "runbook":
            r = RunbookAttrs.of(e)
            rows.append(RunbookRow(e.t, e.wall, e.source, str(r.step or ""), r.status or "", r.note or ""))
    return tuple(rows)
