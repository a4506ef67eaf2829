"""Assertions: pure functions from an expectation and a timeline to a :class:`Verdict`.

Every verdict says what was expected and what was observed, with times, e.g.
"readiness of replica-0 became false 1.4 s after hog.start (limit 3 s)". Each kind of
expectation is judged by its own module of ``experiments.expect`` (the table there says which);
how moments and windows resolve on the timeline is ``experiments.expect.windows``. A reference
that never happened gives a *failed* verdict saying so, never an exception; no evidence (no
samples, no requests) is a failure that says so, never a pass.

MTTD/MTTR per fault: :func:`mttd_mttr` — MTTD is fault start → first page (a firing
notification, ``experiments.expect.mttd``), MTTR fault end → steady state regained, and
``first_signal_s`` the first symptom (probe, breaker, failed request).

Example::

    >>> from experiments.expect.probe import ProbeBecomes
    >>> tl = Timeline()
    >>> _ = tl.add("fault", "hog", t=5.0, event="start", fault="gpu_memory_exhaustion")
    >>> _ = tl.add("probe", "replica-0", t=6.4, probe="readiness", value=False)
    >>> x = ProbeBecomes(probe="readiness", replica="replica-0", becomes=False, within="3s", after="hog.start")
    >>> evaluate(x, tl).observed
    'readiness of replica-0 became false 1.4 s after hog.start (limit 3 s)'
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from faultdrill.experiments.expect import describe, kind_of
from faultdrill.experiments.expect import mttd as alert_assertions
from faultdrill.experiments.expect import stats as slo
from faultdrill.experiments.expect.stats import SteadyCriteria, check_halt
from faultdrill.experiments.expect.windows import Missing, resolve_moment, resolve_window
from faultdrill.experiments.journal.timeline import Timeline

__all__ = ["Verdict", "check_halt", "describe", "evaluate", "mttd_mttr", "not_evaluated", "resolve_moment",
           "resolve_window"]

_MAX_EVIDENCE = 10


class Verdict(BaseModel):
    """The judgement of one expectation; ``name`` is its one-line title (the JUnit test name).

    >>> Verdict(name="x", passed=True, expected="e", observed="o").measured
    {}
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    passed: bool
    expected: str
    observed: str
    evidence: list[dict[str, Any]] = Field(default_factory=list)
    """The events that decided it (JSON form, at most 10): the first violation, the transition, …"""
    measured: dict[str, float | int | None] = Field(default_factory=dict)
    window: tuple[float, float] | None = None
    evaluated: bool = True
    """False when the run aborted before there was anything to judge (``observed`` says why)."""


def not_evaluated(expectation: Any, reason: str, *, steady_state: Any = None) -> Verdict:
    """The verdict of an expectation a run never got to test: it aborted before any fault was injected.

    Not a failure of the system under test (nothing was done to it) and never a pass: it says why.

    >>> from experiments.expect.probe import ProbeHolds
    >>> v = not_evaluated(ProbeHolds(probe="liveness", replica="replica-0", holds=True, during="hog"), "no platform")
    >>> v.evaluated, v.passed, v.observed
    (False, False, 'not evaluated (run aborted: no platform)')
    """
    name = describe(expectation)
    return Verdict(name=name, passed=False, expected=name, observed=f"not evaluated (run aborted: {reason})",
                   evaluated=False)


def mttd_mttr(timeline: Timeline, *, steady_state: Any = None) -> dict[str, dict[str, Any]]:
    """Per fault id: ``mttd_s`` (start → first firing notification of an alert that became
    active while the fault was in effect; with ``detected_by`` alert and ``receiver``),
    ``first_signal_s`` (start → first symptom) and ``mttr_s`` (end → steady state regained)."""
    out: dict[str, dict[str, Any]] = {}
    for fid, row in slo.mttd_mttr(timeline, steady_state=steady_state).items():
        started = timeline.first("fault", source=fid, event="start")
        ended = None if started is None else timeline.first("fault", source=fid, event="end")
        page = None if started is None else alert_assertions.time_to_notification(
            timeline, started.t, target=started.get("target"), fault_end=ended.t if ended is not None else None)
        out[fid] = {"mttd_s": page["seconds"] if page else None, **row,
                    "detected_by": page["alert"] if page else None, "receiver": page["receiver"] if page else None}
    return out


def evaluate(expectation: Any, timeline: Timeline, *, steady_state: Any = None) -> Verdict:
    """Judge one expectation (a model of ``experiments.expect``) against the timeline.

    ``steady_state`` is the spec's ``steady_state`` (``window``, ``slo.availability``,
    ``slo.latency_p95``), a :class:`~experiments.expect.stats.SteadyCriteria`, or None for the defaults.
    """
    kind = kind_of(expectation)
    if kind is None:
        raise TypeError(f"not an expectation: {type(expectation).__name__}")
    steady = SteadyCriteria.of(steady_state)
    name = expected = kind.describe(expectation)
    if kind.judged_on_steady_state:
        expected = f"{expected} (steady state: {steady.describe()})"
    try:
        found = kind.judge(expectation, timeline, steady)
    except Missing as missing:
        return Verdict(name=name, passed=False, expected=expected, observed=str(missing))
    evidence = [e.model_dump(mode="json") for e in found.evidence[:_MAX_EVIDENCE]]
    return Verdict(name=name, passed=found.passed, expected=expected, observed=found.observed, evidence=evidence,
                   measured=found.measured, window=found.window)  # fmt: skip
