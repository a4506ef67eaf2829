"""``{probe: readiness, replica: replica-0, becomes: false, within: 3s, after: hog.start}`` and
``{probe: liveness, replica: replica-0, holds: true, during: hog}``: a replica's probe samples.

Readiness is also judged on the platform's Ready condition (``process`` events): a container in
back-off, or one whose startup probe has not passed, is not ready, as in Kubernetes.

Example::

    >>> from experiments.journal.timeline import Timeline
    >>> tl = Timeline()
    >>> _ = tl.add("fault", "hog", t=5.0, event="start", fault="gpu_memory_exhaustion")
    >>> _ = tl.add("probe", "replica-0", t=6.4, probe="readiness", value=False)
    >>> x = ProbeBecomes(probe="readiness", replica="replica-0", becomes=False, within="3s", after="hog.start")
    >>> judge_becomes(x, tl, SteadyCriteria()).observed
    'readiness of replica-0 became false 1.4 s after hog.start (limit 3 s)'
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from faultdrill.experiments.expect.kind import Kind, Ref
from faultdrill.experiments.expect.stats import Finding, SteadyCriteria
from faultdrill.experiments.expect.windows import label, moment_at, moment_ref, span, timed_after_end, window_refs
from faultdrill.experiments.journal.timeline import Event, Timeline
from faultdrill.experiments.timespec import Duration, Moment, Windowed

__all__ = ["BECOMES", "HOLDS", "ProbeBecomes", "ProbeHolds", "judge_becomes", "judge_holds"]


class ProbeBecomes(BaseModel):
    """``{probe: readiness, replica: replica-0, becomes: false, within: 3s, after: hog.start}``"""

    model_config = ConfigDict(frozen=True, extra="forbid")

    probe: Literal["readiness", "liveness", "startup"]
    replica: str
    becomes: bool
    within: Duration
    after: Moment


class ProbeHolds(Windowed):
    """``{probe: liveness, replica: replica-0, holds: true, during: hog}``"""

    probe: Literal["readiness", "liveness", "startup"]
    replica: str
    holds: bool


def _b(value: bool) -> str:
    return "true" if value else "false"


def _describe_becomes(x: ProbeBecomes) -> str:
    return f"{x.probe} of {x.replica} becomes {_b(x.becomes)} within {x.within:g} s after {x.after}"


def _describe_holds(x: ProbeHolds) -> str:
    return f"{x.probe} of {x.replica} holds {_b(x.holds)} {label(x)}"


def judge_becomes(x: ProbeBecomes, tl: Timeline, _: SteadyCriteria) -> Finding:
    moment, what = moment_at(x.after, tl), f"{x.probe} of {x.replica}"
    samples = tl.select("probe", source=x.replica, probe=x.probe)
    prior = next((e for e in reversed(samples) if e.t <= moment), None)
    if prior is not None and (prior.get("value") is True) == x.becomes:
        return Finding(True, f"{what} was already {_b(x.becomes)} at {x.after} (t={moment:.1f} s)",
                       {"seconds": 0.0}, (moment, moment), (prior,))  # fmt: skip
    hit = next((e for e in samples if e.t >= moment and (e.get("value") is True) == x.becomes), None)
    if hit is None:
        later = [e for e in samples if e.t >= moment]
        seen = f"{len(later):,} samples up to t={later[-1].t:.1f} s were all {_b(not x.becomes)}" if later \
            else f"no {x.probe} samples of {x.replica} after it"  # fmt: skip
        return Finding(False, f"{what} never became {_b(x.becomes)} after {x.after} (t={moment:.1f} s): {seen}",
                       {"seconds": None}, None, (prior,) if prior else ())  # fmt: skip
    delay = hit.t - moment
    return Finding(delay <= x.within, f"{what} became {_b(x.becomes)} {delay:.1f} s after {x.after} "
                   f"(limit {x.within:g} s)", {"seconds": round(delay, 6)}, (moment, hit.t), (hit,))  # fmt: skip


def _ready_condition(tl: Timeline, replica: str, start: float, end: float) -> tuple[bool | None, list[Event]]:
    """The platform's Ready condition of ``replica`` at ``start`` (None = never reported) and its changes in
    the window. A start, restart or exit makes a container not ready, as in Kubernetes."""
    state: bool | None = None
    changes: list[Event] = []
    for e in tl.select("process", source=replica, end=end):
        value = {"ready": True, "unready": False, "start": False, "restart": False, "exit": False}.get(
            str(e.get("event")))
        if value is None:
            continue
        if e.t < start:
            state = value
        elif value != (changes[-1].get("event") == "ready" if changes else state):
            changes.append(e)
    return state, changes


def judge_holds(x: ProbeHolds, tl: Timeline, _: SteadyCriteria) -> Finding:
    start, end, name = span(x.window(), tl)
    what, where = f"{x.probe} of {x.replica}", f"{name} (t={start:.1f}–{end:.1f} s)"
    samples = tl.select("probe", source=x.replica, probe=x.probe, start=start, end=end)
    bad = [e for e in samples if (e.get("value") is True) != x.holds]
    # Readiness is also a condition the platform keeps (Kubernetes' Ready): it is known while no probe
    # runs — a container in back-off, or one whose startup probe has not passed, is not ready. Every
    # contradicting sample *and* every contradicting condition change is a violation.
    state, changes = _ready_condition(tl, x.replica, start, end) if x.probe == "readiness" else (None, [])
    known = state is not None or bool(changes)
    if x.probe == "readiness" and known:
        if state is not None and state != x.holds:
            return Finding(False, f"{what} was already {_b(state)} at the start of {where}",
                           {"samples": len(samples), "violations": len(bad) + 1}, (start, end),
                           tuple(bad[:5]))  # fmt: skip
        bad += [e for e in changes if (e.get("event") == "ready") != x.holds]
        bad.sort(key=lambda e: e.t)
    measured: dict[str, float | int | None] = {"samples": len(samples), "violations": len(bad)}
    if not samples and not known:
        return Finding(False, f"no {x.probe} samples of {x.replica} {where}: cannot tell whether it held",
                       measured, (start, end))  # fmt: skip
    if not bad:
        basis = f"all {len(samples):,} samples" if samples else "no probe ran"
        if x.probe == "readiness" and known:
            basis += f" and its Ready condition ({len(changes)} change{'' if len(changes) == 1 else 's'})"
        return Finding(True, f"{what} stayed {_b(x.holds)} in {basis} {where}", measured, (start, end),
                       tuple(samples[:1] + samples[-1:]))  # fmt: skip
    n_samples = sum(1 for e in bad if e.kind == "probe")
    extra = f" and {len(bad) - n_samples} Ready condition change(s)" if len(bad) > n_samples else ""
    return Finding(False, f"{what} was {_b(not x.holds)} at t={bad[0].t:.1f} s ({bad[0].t - start:.1f} s into "
                   f"{name}); {n_samples:,} of {len(samples):,} samples {_b(not x.holds)}{extra}",
                   measured, (start, end), tuple(bad))  # fmt: skip


def _becomes_refs(x: ProbeBecomes) -> list[Ref]:
    return [*moment_ref(("after",), x.after), Ref("replica", ("replica",), x.replica)]


def _holds_refs(x: ProbeHolds) -> list[Ref]:
    return [*window_refs(x), Ref("replica", ("replica",), x.replica)]


BECOMES = Kind("probe", ProbeBecomes, "probe_becomes", _describe_becomes, judge_becomes,
               claims=lambda m: "probe" in m and "becomes" in m, references=_becomes_refs,
               needed_after_end=timed_after_end, catches="mechanism")  # fmt: skip
HOLDS = Kind("probe", ProbeHolds, "probe_holds", _describe_holds, judge_holds, references=_holds_refs,
             catches="mechanism")
