"""``{runbook: FAULT, restores: steady_state, within: T}``: the runbook attached to a fault restores steady
state, judged over the timeline's ``runbook`` events.

The run records ``runbook`` events: ``launched`` (attrs ``fault``, ``trigger``) when it starts the
runbook attached to a fault, then one per step state (``started``, ``done``, ``failed``,
``skipped``, ``halted``; attrs ``step``, ``title``, ``check``, ``note``), source = the runbook's
file stem. The runbook restores steady state when steady state is regained within ``T`` of its
launch *and* before the fault ended — one whole steady window inside the fault: a recovery that only
came with the fault's own rollback is the rollback's, not the runbook's. When steady state never broke
(other replicas absorbed the fault), the runbook must have completed every step — its checks are then
the proof — before the fault ended. A failure names the step: the one whose check failed, or the last
one done when recovery did not follow.

Example::

    >>> from experiments.journal.timeline import Timeline
    >>> tl = Timeline()
    >>> _ = tl.add("runbook", "gpu-memory", t=5.0, status="launched", fault="hog", trigger="fault start")
    >>> launched(tl, "hog").t
    5.0
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from faultdrill.experiments.expect.kind import Kind, Ref
from faultdrill.experiments.expect.stats import Finding, SteadyCriteria, regained_at, request_stats
from faultdrill.experiments.journal.timeline import Event, Timeline
from faultdrill.experiments.timespec import Duration

__all__ = ["KIND", "RunbookRestores", "judge_restores", "launched"]


class RunbookRestores(BaseModel):
    """``{runbook: hog, restores: steady_state, within: 30s}`` — the runbook attached to fault ``hog``
    brings steady state back within 30 s of its start, while the fault is still in effect (a recovery
    that only came with the fault's own rollback does not count)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    runbook: str
    """The id of the fault the runbook is attached to."""
    restores: Literal["steady_state"]
    within: Duration


_END_STATES = ("done", "failed", "skipped", "halted")


def launched(tl: Timeline, fault: str) -> Event | None:
    """The ``launched`` event of the runbook attached to ``fault`` (the first one)."""
    return next((e for e in tl.select("runbook") if e.get("status") == "launched" and e.get("fault") == fault), None)


def _step(e: Event) -> str:
    return f"step {e.get('step')} '{e.get('title')}'"


def judge_restores(x: RunbookRestores, tl: Timeline, steady: SteadyCriteria) -> Finding:
    """A ``RunbookRestores`` expectation; see the module docstring."""
    fault, within = x.runbook, float(x.within)
    start = tl.first("fault", source=fault, event="start")
    run = launched(tl, fault)
    if run is None:
        why = "its fault never started" if start is None else f"fault {fault} started at t={start.t:.1f} s"
        return Finding(False, f"the runbook of {fault} never ran ({why}; no 'launched' runbook event)",
                       {"seconds": None})  # fmt: skip
    t0 = run.t
    ends = [e for e in tl.select("fault", source=fault, event="end") if e.t >= (start.t if start else 0.0)]
    fault_end = ends[0].t if ends else tl.end
    steps = [e for e in tl.select("runbook", source=run.source, start=t0) if e.get("status") in _END_STATES]
    failed = next((e for e in steps if e.get("status") in ("failed", "halted")), None)
    # Credit only for a steady window wholly inside the fault: at hundreds of requests a second a window that
    # straddles the rollback holds its burst of failures under 1 % and would "regain" before the fault ended.
    credited = regained_at(tl.requests(), t0, steady, horizon=fault_end)
    at = credited if credited is not None else regained_at(tl.requests(), t0, steady, horizon=tl.end)
    after_fault = at is not None and credited is None
    measured: dict[str, float | int | None] = {"seconds": None if at is None else round(at - t0, 6),
                                               "steps_done": sum(e.get("status") == "done" for e in steps)}
    who = f"{run.source} (launched on {run.get('trigger')} at t={t0:.1f} s)"
    if failed is not None:
        check = f": {failed.get('check')}" if failed.get("check") else ""
        return Finding(False, f"{who}: {_step(failed)} {failed.get('status')} at t={failed.t:.1f} s{check}",
                       measured, (t0, failed.t), (failed,))  # fmt: skip
    broke = any(e.get("name") == "steady_state" and e.get("value") == 0.0
                for e in tl.select("metric", source="run", start=start.t if start else t0))  # fmt: skip
    if not broke:  # redundancy absorbed the fault: the runbook's own checks are the proof
        done = [e for e in steps if e.get("status") == "done"]
        if steps and len(done) == len(steps) and steps[-1].t <= fault_end:
            return Finding(True, f"{who}: steady state never broke (the rest of the system absorbed {fault}); all "
                           f"{len(done)} steps done and checked by t={steps[-1].t:.1f} s, while {fault} was still in "
                           f"effect", measured, (t0, steps[-1].t), (steps[-1],))  # fmt: skip
        last_seen = steps[-1] if steps else None
        where = f"its last step was {_step(last_seen)} ({last_seen.get('status')})" if last_seen else "no step finished"
        return Finding(False, f"{who}: steady state never broke, and the runbook did not complete while {fault} was in "
                       f"effect: {where}", measured, (t0, fault_end))  # fmt: skip
    # The step in progress when steady state returned (the first to finish at or after it) is the one
    # that fixed it; when none was in progress, recovery followed the last step. When the fault's own
    # rollback restored it, the step in progress when the fault ended is the one that did not fix it
    # (its check passed only thanks to the rollback; the next step may finish after ``at`` too).
    pivot = fault_end if after_fault else at
    during = next((e for e in steps if pivot is not None and e.t >= pivot), None)
    last = during or (steps[-1] if steps else None)
    if during is not None and at is not None and not after_fault and at - t0 <= within:
        after = f"during {_step(during)} (done at t={during.t:.1f} s)"
    else:
        after = f"after {_step(last)} (done at t={last.t:.1f} s)" if last is not None else "before any step finished"
    if at is None or after_fault or at - t0 > within:
        if at is None:
            seen = f"steady state had not returned by the end of the run (t={tl.end:.1f} s)"
        elif after_fault:
            seen = (f"steady state returned only in a window from t={at:.1f} s that reaches past the end of {fault} "
                    f"(t={fault_end:.1f} s): the fault's rollback restored it, not the runbook")  # fmt: skip
        else:
            seen = f"steady state returned {at - t0:.1f} s after the runbook started (limit {within:g} s)"
        return Finding(False, f"{who}: recovery did not happen {after}; {seen}", measured,
                       (t0, min(tl.end, t0 + within)), (last,) if last is not None else ())  # fmt: skip
    stats = request_stats(tl.requests(start=at, end=at + steady.window_s))
    return Finding(True, f"{who}: steady state regained {at - t0:.1f} s after it started, {after}, while {fault} "
                   f"was still in effect (limit {within:g} s); availability {stats.availability or 0.0:.3f} from "
                   f"t={at:.1f} s", measured, (t0, at), (last,) if last is not None else ())  # fmt: skip


def _describe(x: RunbookRestores) -> str:
    return f"the runbook of {x.runbook} restores steady state within {x.within:g} s"


def _references(x: RunbookRestores) -> list[Ref]:
    return [Ref("runbook", ("runbook",), x.runbook)]


# No needed_after_end: it is judged while its fault is in effect, so it needs no events after the fault ends.
KIND = Kind("runbook", RunbookRestores, "runbook", _describe, judge_restores, references=_references,
            judged_on_steady_state=True)
