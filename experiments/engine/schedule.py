"""The fault schedule of a run: when each fault starts and ends, and what is in effect now.

Start times are relative to ``steady.start`` (the moment steady state was confirmed):
``at: 5s`` starts 5 s after it; ``after: other`` (or ``other.end+2s``) starts when that
fault has ended (plus the offset); neither means 0 s. Each fault ends ``duration`` after it
started. ``FaultScheduler.tick(now)`` injects and undoes on time, records ``fault`` events
(start, verified, end, error) on the timeline, and ``rollback_all`` undoes whatever is still
in effect — on success, failure, halt, exception or signal.

Example::

    scheduler = FaultScheduler(plan.faults, timeline, context_factory)   # plan: experiments.engine.plan.Plan
    scheduler.start(steady_at=timeline.now())
    while not scheduler.done(timeline.now()):
        scheduler.tick(timeline.now()); time.sleep(0.05)
    scheduler.rollback_all()
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from faultdrill.experiments.engine.plan import PlannedFault
from faultdrill.experiments.journal.timeline import Timeline
from faultdrill.experiments.spec.experiment import FaultSpec
from faultdrill.faults.base import Fault, FaultContext, Injection
from faultdrill.faults.errors import FaultdrillError

__all__ = ["FaultScheduler", "ScheduledFault"]

log = logging.getLogger("faultdrill.schedule")


@dataclass
class ScheduledFault:
    spec: FaultSpec
    fault: Fault
    config: Any
    start_at: float | None = None
    end_at: float | None = None
    injection: Injection | None = None
    state: str = "pending"  # pending | active | ended | failed
    error: str = ""
    verified: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.spec.id


class FaultScheduler:
    """Injects and undoes the spec's faults on time; see the module docstring."""

    def __init__(
        self, faults: Sequence[PlannedFault], timeline: Timeline, context: Callable[[], FaultContext], *,
        on_injected: Callable[[], None] | None = None,
    ) -> None:  # fmt: skip
        self.timeline = timeline
        self.context = context
        self.on_injected = on_injected
        """Called after each successful injection (the run makes sure its dead-man watchdog runs)."""
        self.faults = [ScheduledFault(f.spec, f.fault, f.config) for f in faults]  # the plan's plugin instances
        self._by_id = {f.id: f for f in self.faults}
        self._steady_at: float | None = None
        self._lock = threading.Lock()

    # -- planning ------------------------------------------------------------------------
    def start(self, steady_at: float) -> None:
        self._steady_at = steady_at
        for f in self.faults:
            if f.spec.after is None:
                f.start_at = steady_at + float(f.spec.at or 0.0)

    def _resolve_after(self, f: ScheduledFault) -> None:
        after = f.spec.after
        if f.start_at is not None or after is None:
            return
        ref = self._by_id.get(after.ref or "")
        base = None
        if after.ref in ("run", None):
            base = 0.0
        elif after.ref == "steady":
            base = self._steady_at
        elif ref is not None:
            base = ref.end_at if after.edge == "end" and ref.state in ("ended", "failed") else None
            if after.edge == "start" and ref.state != "pending":
                base = ref.start_at
        if base is not None:
            f.start_at = base + after.offset_s

    def planned_end(self) -> float | None:
        """The latest planned end (None until every start is known)."""
        ends = []
        for f in self.faults:
            if f.start_at is None:
                return None
            ends.append(f.start_at + float(f.spec.duration))
        return max(ends, default=self._steady_at)

    # -- running -------------------------------------------------------------------------
    def active(self) -> list[ScheduledFault]:
        return [f for f in self.faults if f.state == "active"]

    def done(self) -> bool:
        return all(f.state in ("ended", "failed") for f in self.faults)

    def tick(self, now: float) -> None:
        for f in self.faults:
            self._resolve_after(f)
            if f.state == "pending" and f.start_at is not None and now >= f.start_at:
                self._inject(f)
            elif f.state == "active" and f.start_at is not None and now >= f.start_at + float(f.spec.duration):
                self._end(f)

    def _inject(self, f: ScheduledFault) -> None:
        ctx = self.context()
        common: dict[str, Any] = {
            "fault": f.spec.type,
            "mode": f.fault.mode_of(f.config),
            "target": f.spec.target or "",
        }
        try:
            f.injection = f.fault.inject(f.config, ctx)
        except FaultdrillError as exc:
            f.state, f.error = "failed", str(exc)
            f.start_at = f.end_at = self.timeline.now()
            self.timeline.add("fault", f.id, event="error", error=str(exc), **common)
            log.error("fault %s failed to inject: %s", f.id, exc)
            return
        f.state = "active"
        f.start_at = self.timeline.now()
        if self.on_injected is not None:
            self.on_injected()
        self.timeline.add("fault", f.id, event="start", emulated=f.injection.emulated, injection=f.injection.id,
                          **common)  # fmt: skip
        threading.Thread(target=self._verify, args=(f, ctx), name=f"verify-{f.id}", daemon=True).start()

    def _verify(self, f: ScheduledFault, ctx: FaultContext) -> None:
        injection = f.injection
        if injection is None:
            return
        try:
            result = f.fault.verify(injection, ctx)
        except Exception as exc:  # verification must never break the run
            self.timeline.add("fault", f.id, event="verified", effective=False, message=f"verify failed: {exc}")
            return
        f.verified = {"effective": result.effective, "emulated": result.emulated, "message": result.message}
        self.timeline.add("fault", f.id, event="verified", effective=result.effective, emulated=result.emulated,
                          message=result.message[:300])  # fmt: skip

    def _end(self, f: ScheduledFault) -> None:
        with self._lock:
            if f.state != "active" or f.injection is None:
                return
            f.state = "ending"
        # The fault ends when its rollback begins (``<id>.end``); recovery, and MTTR, count from here.
        f.end_at = self.timeline.now()
        self.timeline.add("fault", f.id, t=f.end_at, event="end", fault=f.spec.type)
        try:
            f.fault.undo(f.injection, self.context())
        except FaultdrillError as exc:
            f.error = f"rollback failed: {exc}"
            log.error("fault %s rollback failed (kept in the ledger): %s", f.id, exc)
        f.state = "ended"
        self.timeline.add("fault", f.id, event="rolled_back", fault=f.spec.type, error=f.error or None,
                          seconds=round(self.timeline.now() - f.end_at, 3))  # fmt: skip

    def rollback_all(self) -> list[str]:
        """Undo everything still in effect; return the ids undone (errors are logged, kept in the ledger)."""
        undone = []
        for f in reversed(self.faults):  # newest first, like the ledger
            if f.state == "active":
                self._end(f)
                undone.append(f.id)
        return undone

    def summary(self) -> dict[str, dict[str, Any]]:
        return {f.id: self._summary(f) for f in self.faults}

    @staticmethod
    def _summary(f: ScheduledFault) -> dict[str, Any]:
        return {
            "type": f.spec.type, "target": f.spec.target, "start_s": f.start_at, "end_s": f.end_at,
            "state": f.state, "error": f.error, "emulated": f.injection.emulated if f.injection else None,
            "verified": f.verified,
        }  # fmt: skip
