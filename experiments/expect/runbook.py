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

A pass names the step that repaired the service — the last step with a command (an action or a shell script)
that had started when the first whole steady window began; a step of checks only changes nothing — and shows the
fault still in effect then: its rollback began only later (at the time given), its own check had found it in
effect, and any change of the target's spec meanwhile (``process`` events ``spec``). A runbook whose steps
include one of the fault's own undo actions (the ``launched`` event's ``undo_actions``, from
``Fault.undo_actions_of``: ``release-device-memory`` for a held GPU memory) gets no credit, whatever steady
state did: it rolled the fault back instead of repairing the service.

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

__all__ = ["KIND", "RunbookRestores", "judge_restores", "launched", "repairing_step"]


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
_INJECT_S = 15.0
"""How long before its ``start`` event a fault's injection may have changed a spec (it restarts a replica)."""


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
    events = tl.select("runbook", source=run.source, start=t0)
    steps = [e for e in events if e.get("status") in _END_STATES]
    failed = next((e for e in steps if e.get("status") in ("failed", "halted")), None)
    undo = set(run.get("undo_actions") or ())
    own = next((e for e in events if undo and e.get("action") in undo), None)
    # Credit only for a steady window wholly inside the fault: at hundreds of requests a second a window that
    # straddles the rollback holds its burst of failures under 1 % and would "regain" before the fault ended.
    credited = regained_at(tl.requests(), t0, steady, horizon=fault_end)
    at = credited if credited is not None else regained_at(tl.requests(), t0, steady, horizon=tl.end)
    after_fault = at is not None and credited is None
    measured: dict[str, float | int | None] = {"seconds": None if at is None else round(at - t0, 6),
                                               "steps_done": sum(e.get("status") == "done" for e in steps)}
    who = f"{run.source} (launched on {run.get('trigger')} at t={t0:.1f} s)"
    if own is not None:
        return Finding(False, f"{who}: {_step(own)} runs {own.get('action')}, the undo of {fault} itself (the same "
                       f"call as its rollback): that rolls the fault back, it does not repair the service, so the "
                       f"runbook gets no credit (a runbook must repair what the fault broke, e.g. restart or drain "
                       f"the replica, roll the version back)", measured, (t0, fault_end), (own,))  # fmt: skip
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
    repair = repairing_step(events, at)
    in_effect = _still_in_effect(tl, fault, start, at, at + steady.window_s, ends[0] if ends else None)
    if repair is not None:
        measured["repair_step"] = repair.get("step") if isinstance(repair.get("step"), int) else None
    measured.update(regained_t=round(at, 3), fault_end_t=round(fault_end, 3) if ends else None)
    if repair is None:
        named = "no step that changes anything had run: steady state came back by itself"
    else:
        began = next((e.t for e in events if e.get("status") == "started" and e.get("step") == repair.get("step")),
                     None)  # fmt: skip
        span = f"t={began:.1f}–{repair.t:.1f} s" if began is not None else f"done at t={repair.t:.1f} s"
        what = f"{repair.get('action') or repair.get('command')}; " if repair.get("command") else ""
        named = f"repaired by {_step(repair)} ({what}{span})"
    return Finding(True, f"{who}: steady state regained {at - t0:.1f} s after it started, while {fault} was "
                   f"still in effect (limit {within:g} s): {named}, the first whole steady window "
                   f"t={at:.1f}–{at + steady.window_s:.1f} s (availability {stats.availability or 0.0:.3f}); "
                   f"{in_effect}", measured, (t0, at),
                   tuple(e for e in (repair, ends[0] if ends else None) if e is not None))  # fmt: skip


def repairing_step(events: list[Event], at: float) -> Event | None:
    """The step that repaired the service, of a runbook's events (its end event): the last step with a command (a
    faultdrill action or a shell script) that had started by ``at``, the start of the first whole steady window — a
    step of checks only changes nothing. Events without ``command`` (older journals): the step in progress at
    ``at``, else the last one done before it."""
    started: dict[object, float] = {}
    ends: dict[object, Event] = {}
    for e in events:
        if e.get("status") == "started":
            started.setdefault(e.get("step"), e.t)
        elif e.get("status") in _END_STATES:
            ends.setdefault(e.get("step"), e)
    acting = [s for s, t in started.items() if t <= at and s in ends and ends[s].get("command")]
    if acting:
        return ends[max(acting, key=lambda s: started[s])]
    if any(e.get("command") for e in ends.values()):
        return None  # no step that changes anything had started: steady state came back by itself
    return next((e for e in ends.values() if e.t >= at and started.get(e.get("step"), e.t) <= at),
                next((e for e in reversed(list(ends.values())) if e.get("status") == "done" and e.t < at), None))


def _still_in_effect(tl: Timeline, fault: str, start: Event | None, at: float, window_end: float,
                     end: Event | None) -> str:  # fmt: skip
    """That ``fault`` was in effect at ``at``, in words: its rollback came later, its own check, spec changes."""
    words = [f"{fault}'s rollback began only at t={end.t:.1f} s, {end.t - window_end:.1f} s after that window closed"
             if end is not None else f"{fault} was not rolled back by the end of the run (t={tl.end:.1f} s)"]
    verified = tl.first("fault", source=fault, event="verified")
    if verified is not None and verified.get("effective"):
        words.append(f"its own check found it in effect at t={verified.t:.1f} s ({verified.get('message')})")
    target = start.get("target") if start is not None else None
    if target:
        # From a little before the fault's start event: an injection changes the spec before it returns.
        specs = [e for e in tl.select("process", source=target, start=start.t - _INJECT_S if start else 0.0, end=at)
                 if e.get("event") == "spec"][-3:]  # fmt: skip
        if specs:
            shown = "; ".join(f"t={e.t:.1f} s " + ", ".join(f"{k}={v}" for k, v in (e.get("env") or {}).items())
                              for e in specs)  # fmt: skip
            words.append(f"{target}'s spec changed meanwhile ({shown}): the fault's rollback puts it back")
    return "; ".join(words)


def _describe(x: RunbookRestores) -> str:
    return f"the runbook of {x.runbook} restores steady state within {x.within:g} s"


def _references(x: RunbookRestores) -> list[Ref]:
    return [Ref("runbook", ("runbook",), x.runbook)]


# No needed_after_end: it is judged while its fault is in effect, so it needs no events after the fault ends.
KIND = Kind("runbook", RunbookRestores, "runbook", _describe, judge_restores, references=_references,
            judged_on_steady_state=True, catches="damage")
