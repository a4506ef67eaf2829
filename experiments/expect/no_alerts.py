"""``{no_alerts: firing, allow: [NAME, …]}``: the false-positive check — no alert fired.

It covers steady state by default: from ``steady.start`` to the first fault's start (to teardown
when there are no faults); ``during``/``before``/``after``/``between`` choose another window;
``no_alerts: pending`` is stricter (not even pending). An alert that became active before the
window and is still active in it counts too.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from faultdrill.experiments.expect.alert import AlertName
from faultdrill.experiments.expect.kind import Kind, Path
from faultdrill.experiments.expect.stats import Finding, SteadyCriteria
from faultdrill.experiments.expect.windows import anchor, label, span, window_refs
from faultdrill.experiments.journal.timeline import Event, Timeline
from faultdrill.experiments.timespec import Windowed

__all__ = ["KIND", "NoAlerts", "judge", "judge_no_alerts"]


class NoAlerts(Windowed):
    """``{no_alerts: firing, allow: [NAME, …]}`` — steady state unless a window is given."""

    no_alerts: Literal["firing", "pending"]
    allow: list[AlertName] = Field(default_factory=list)


def _describe(x: NoAlerts) -> str:
    where = label(x) if x.window() is not None else "during steady state"
    allowed = f" (allowed: {', '.join(x.allow)})" if x.allow else ""
    return f"no alert {'pending or firing' if x.no_alerts == 'pending' else 'fires'} {where}{allowed}"


def judge_no_alerts(x: NoAlerts, tl: Timeline, start: float, end: float, label: str) -> Finding:
    """A ``NoAlerts``: no alert (besides ``allow``) reached the state ``no_alerts`` in the window."""
    strict = x.no_alerts == "pending"
    allow = set(x.allow)
    bad_states = ("pending", "firing") if strict else ("firing",)
    # An alert that became active before the window and is still active in it counts too.
    active: dict[str, Event] = {}
    for e in tl.select("alert", end=start):
        key = e.source + repr(sorted((e.get("labels") or {}).items()))
        if e.get("state") in bad_states:
            active[key] = e
        else:
            active.pop(key, None)
    bad = [e for e in active.values() if e.source not in allow]
    bad += [e for e in tl.select("alert", start=start, end=end)
            if e.get("state") in bad_states and e.source not in allow]  # fmt: skip
    what = "pending or firing" if strict else "firing"
    where = f"{label} (t={start:.1f}–{end:.1f} s)"
    allowed = f" (allowed: {', '.join(sorted(allow))})" if allow else ""
    if not bad:
        return Finding(True, f"no alert was {what} {where}{allowed}", {"alerts": 0}, (start, end))
    names = sorted({e.source for e in bad})
    first = min(bad, key=lambda e: e.t)
    return Finding(False, f"{len(names)} alert(s) {what} {where}: {', '.join(names)}; first {first.source} "
                   f"{first.get('state')} at t={first.t:.1f} s{allowed}", {"alerts": len(names)}, (start, end),
                   tuple(sorted(bad, key=lambda e: e.t)))  # fmt: skip


def judge(x: NoAlerts, tl: Timeline, _: SteadyCriteria) -> Finding:
    window = x.window()
    if window is not None:
        return judge_no_alerts(x, tl, *span(window, tl))
    # Steady state: from steady.start to the first fault (or to teardown when there is none).
    start = anchor("steady", "start", tl) or 0.0
    ends = [e.t for e in (tl.first("fault", event="start"), tl.first("phase", phase="teardown")) if e is not None]
    return judge_no_alerts(x, tl, start, min(ends, default=tl.end), "during steady state")


def _alerts(x: NoAlerts) -> list[tuple[Path, str]]:
    return [(("allow", j), name) for j, name in enumerate(x.allow)]


KIND = Kind("no_alerts", NoAlerts, "no_alerts", _describe, judge, references=window_refs, alerts=_alerts,
            catches="damage")
