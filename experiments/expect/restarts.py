"""``{restarts: replica-0, at_least: 1, reason: OOMKilled, during: oom}``: how often a supervised
service restarted in a window (``process`` events), optionally only for one exit reason.

With no bound it means "restarts at least once". A restart carries the reason of the exit that
caused it, or inherits it from that exit.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from faultdrill.experiments.expect.kind import Kind, Ref
from faultdrill.experiments.expect.stats import Finding, SteadyCriteria
from faultdrill.experiments.expect.windows import label, span, window_refs
from faultdrill.experiments.journal.timeline import Event, Timeline
from faultdrill.experiments.timespec import Windowed

__all__ = ["KIND", "Restarts", "judge"]


class Restarts(Windowed):
    """``{restarts: replica-0, at_least: 1, reason: OOMKilled, during: oom}``"""

    restarts: str
    at_least: int | None = Field(default=None, ge=0)
    at_most: int | None = Field(default=None, ge=0)
    reason: Literal["OOMKilled", "Error", "Completed", "Signal"] | None = None


def _bounds(x: Restarts) -> tuple[int, int | None]:
    # {restarts: replica-0, reason: OOMKilled} with no bound means "restarts at least once".
    if x.at_least is None and x.at_most is None:
        return 1, None
    return x.at_least or 0, x.at_most


def _describe(x: Restarts) -> str:
    lo, hi = _bounds(x)
    bound = " and ".join(([f"at least {lo}"] if lo else []) + ([f"at most {hi}"] if hi is not None else []))
    bound = bound or "any number of"
    return f"{x.restarts} restarts {bound} times{f' ({x.reason})' if x.reason else ''} {label(x)}"


def judge(x: Restarts, tl: Timeline, _: SteadyCriteria) -> Finding:
    lo, hi = _bounds(x)
    start, end, name = span(x.window(), tl)
    history = tl.select("process", source=x.restarts)
    counted: list[Event] = []
    for i, e in enumerate(history):
        if e.get("event") != "restart" or not start <= e.t <= end:
            continue
        # A restart carries the reason of the exit that caused it, or inherits it from that exit.
        exit_ = next((p for p in reversed(history[:i]) if p.get("event") == "exit"), None)
        reason = e.get("reason") or (exit_.get("reason") if exit_ is not None else None)
        if x.reason is None or reason == x.reason:
            counted.append(e)
    exits = [e for e in history if e.get("event") == "exit" and start <= e.t <= end]
    reasons = ", ".join(sorted({str(e.get("reason")) for e in exits})) or "none"
    times = f"{len(counted)} time{'' if len(counted) == 1 else 's'}" + (f" with reason {x.reason}" if x.reason else "")
    return Finding(len(counted) >= lo and (hi is None or len(counted) <= hi),
                   f"{x.restarts} restarted {times} {name} (t={start:.1f}–{end:.1f} s); "
                   f"{len(exits)} exits (reasons: {reasons})", {"restarts": len(counted), "exits": len(exits)},
                   (start, end), (*counted, *exits))  # fmt: skip


def _references(x: Restarts) -> list[Ref]:
    return [*window_refs(x), Ref("supervised", ("restarts",), x.restarts)]


KIND = Kind("restarts", Restarts, "restarts", _describe, judge, references=_references, catches="damage")
