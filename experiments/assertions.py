"""Assertions: pure functions from an expectation and a timeline to a :class:`Verdict`.

Every verdict says what was expected and what was observed, with times, e.g.
"readiness of replica-0 became false 1.4 s after hog.start (limit 3 s)". Conventions:

* Moments resolve on the timeline: ``run.start`` is 0 (``run.end`` the last event),
  ``steady.start`` the ``phase`` event ``steady``, ``<fault>.start``/``.end`` the first
  ``fault`` start/end events of that id. A reference that never happened gives a *failed*
  verdict saying so, never an exception.
* Windows are inclusive at both ends; an open end is the end of the run; an expectation
  with no window covers the whole run; a window opening at ``steady.start`` opens at
  ``run.start`` when the run recorded no steady phase. No evidence (no samples, no
  requests) is a failure that says so, never a pass.
* MTTD/MTTR per fault: :func:`mttd_mttr` — MTTD is fault start → first page (a firing
  notification, ``experiments.alert_assertions``), MTTR fault end → steady state regained, and
  ``first_signal_s`` the first symptom (probe, breaker, failed request).

Example::

    >>> tl = Timeline()
    >>> _ = tl.add("fault", "hog", t=5.0, event="start", fault="gpu_memory_exhaustion")
    >>> _ = tl.add("probe", "replica-0", t=6.4, probe="readiness", value=False)
    >>> x = ex.ProbeBecomes(probe="readiness", replica="replica-0", becomes=False, within="3s", after="hog.start")
    >>> evaluate(x, tl).observed
    'readiness of replica-0 became false 1.4 s after hog.start (limit 3 s)'
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from experiments import alert_assertions, runbook_assertions, slo
from experiments import expectations as ex
from experiments.canary_expectations import describe_canary, judge_canary
from experiments.metric_expectations import describe_counter, judge_counter
from experiments.slo import Finding, SteadyCriteria, check_halt, fmt_value, regained_at, request_stats
from experiments.timeline import Event, Timeline

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

    >>> v = not_evaluated(ex.ProbeHolds(probe="liveness", replica="replica-0", holds=True, during="hog"), "no platform")
    >>> v.evaluated, v.passed, v.observed
    (False, False, 'not evaluated (run aborted: no platform)')
    """
    name = describe(expectation)
    return Verdict(name=name, passed=False, expected=name, observed=f"not evaluated (run aborted: {reason})",
                   evaluated=False)


class _Missing(Exception):
    """A moment or window that cannot be placed on the timeline (becomes a failed verdict)."""


# -- moments and windows -----------------------------------------------------------------
def _anchor(ref: str | None, edge: str, timeline: Timeline) -> float | None:
    if ref in (None, "run"):
        return 0.0 if edge == "start" else timeline.end
    if ref == "steady":
        phases = timeline.select("phase", source="run")
        start = next((e.t for e in phases if e.get("phase") == "steady"), None)
        if start is None or edge == "start":
            return start
        return next((e.t for e in phases if e.t >= start and e.get("phase") != "steady"), None)
    starts = timeline.select("fault", source=ref, event="start")
    if edge == "start":
        return starts[0].t if starts else None
    ends = timeline.select("fault", source=ref, event="end", start=starts[0].t if starts else None)
    return ends[0].t if ends else None


def resolve_moment(moment: ex.Moment, timeline: Timeline) -> float | None:
    """Seconds since the run started, or None when the referenced event never happened."""
    base = _anchor(moment.ref, moment.edge, timeline)
    return None if base is None else base + moment.offset_s


def _moment(moment: ex.Moment, timeline: Timeline) -> float:
    at = resolve_moment(moment, timeline)
    if at is None:
        what = "'steady' phase event" if moment.ref == "steady" else f"fault '{moment.ref}' {moment.edge} event"
        raise _Missing(f"{moment.ref}.{moment.edge} never happened: no {what} on the timeline")
    return at


def _span(window: ex.Window | None, timeline: Timeline) -> tuple[float, float, str]:
    if window is None:
        return 0.0, timeline.end, "over the whole run"
    if window.start.ref == "steady" and resolve_moment(window.start, timeline) is None:
        start = window.start.offset_s
    else:
        start = _moment(window.start, timeline)
    end = timeline.end if window.end is None else _moment(window.end, timeline)
    if end < start:
        raise _Missing(f"the window {window.label} is empty: it ends at t={end:.1f} s, before it starts at "
                       f"t={start:.1f} s")  # fmt: skip
    return start, end, window.label


def resolve_window(window: ex.Window | None, timeline: Timeline) -> tuple[float, float] | None:
    """``(start, end)`` in seconds (both inclusive), or None when a reference never happened."""
    try:
        return _span(window, timeline)[:2]
    except _Missing:
        return None


# -- names -------------------------------------------------------------------------------
def _b(value: bool) -> str:
    return "true" if value else "false"


def _label(x: Any) -> str:
    window = x.window()
    return window.label if window is not None else "over the whole run"


def _restart_bounds(x: ex.Restarts) -> tuple[int, int | None]:
    # {restarts: replica-0, reason: OOMKilled} with no bound means "restarts at least once".
    if x.at_least is None and x.at_most is None:
        return 1, None
    return x.at_least or 0, x.at_most


def describe(x: Any) -> str:
    """A readable one-line name of an expectation (used as the JUnit test name)."""
    if isinstance(x, ex.ProbeBecomes):
        return f"{x.probe} of {x.replica} becomes {_b(x.becomes)} within {x.within:g} s after {x.after}"
    if isinstance(x, ex.ProbeHolds):
        return f"{x.probe} of {x.replica} holds {_b(x.holds)} {_label(x)}"
    if isinstance(x, ex.BreakerSequence):
        return f"breaker of {x.breaker} goes {' → '.join(x.sequence)} within {x.within:g} s after {x.after}"
    if isinstance(x, ex.SloOver):
        bound = f"at least {x.at_least:g}" if x.at_least is not None else f"at most {fmt_value(x.slo, x.at_most or 0)}"
        return f"{x.slo.replace('_', ' ')} {bound} {_label(x)}{slo.clients_label(x.clients, x.except_clients)}"
    if isinstance(x, ex.Recovers):
        return f"recovers steady state within {x.within:g} s after {x.after}"
    if isinstance(x, ex.Restarts):
        lo, hi = _restart_bounds(x)
        bound = " and ".join(([f"at least {lo}"] if lo else []) + ([f"at most {hi}"] if hi is not None else []))
        bound = bound or "any number of"
        return f"{x.restarts} restarts {bound} times{f' ({x.reason})' if x.reason else ''} {_label(x)}"
    if isinstance(x, ex.RequestsCount):
        return f"at most {x.at_most} {x.requests} requests {_label(x)}"
    if isinstance(x, ex.ErrorBudget):
        return f"at most {x.at_most:.0%} of the {x.error_budget} error budget consumed {_label(x)}"
    if isinstance(x, ex.AlertExpectation):
        said = []
        if x.fires is not None:
            said.append(f"fires within {x.fires.within:g} s after {x.fires.after}"
                        + (f" with severity {x.severity}" if x.severity else "")
                        + (f", notifying {x.notifies}" if x.notifies else ""))  # fmt: skip
        if x.resolves is not None:
            said.append(f"resolves within {x.resolves.within:g} s after {x.resolves.after}")
        where = "".join(f" {k}={v}" for k, v in sorted(x.labels.items()))
        return f"alert {x.alert}{where} " + " and ".join(said)
    if isinstance(x, ex.RunbookRestores):
        return f"the runbook of {x.runbook} restores steady state within {x.within:g} s"
    if isinstance(x, ex.NoAlerts):
        label = _label(x) if x.window() is not None else "during steady state"
        allowed = f" (allowed: {', '.join(x.allow)})" if x.allow else ""
        return f"no alert {'pending or firing' if x.no_alerts == 'pending' else 'fires'} {label}{allowed}"
    if isinstance(x, ex.CanaryExpectation):
        return describe_canary(x)
    if isinstance(x, ex.CounterIncrease):
        return describe_counter(x, _label(x))
    return type(x).__name__


# -- the evaluators: each returns a Finding, or raises _Missing ----------------------------
def _probe_becomes(x: ex.ProbeBecomes, tl: Timeline, _: SteadyCriteria) -> Finding:
    moment, what = _moment(x.after, tl), f"{x.probe} of {x.replica}"
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


def _probe_holds(x: ex.ProbeHolds, tl: Timeline, _: SteadyCriteria) -> Finding:
    start, end, label = _span(x.window(), tl)
    what, where = f"{x.probe} of {x.replica}", f"{label} (t={start:.1f}–{end:.1f} s)"
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
                   f"{label}); {n_samples:,} of {len(samples):,} samples {_b(not x.holds)}{extra}",
                   measured, (start, end), tuple(bad))  # fmt: skip


def _breaker_sequence(x: ex.BreakerSequence, tl: Timeline, _: SteadyCriteria) -> Finding:
    wanted = [s for i, s in enumerate(x.sequence) if i == 0 or s != x.sequence[i - 1]]
    moment = _moment(x.after, tl)
    events = tl.select("breaker", source=x.breaker)
    # The state at the moment counts as the first one seen: observers may report changes only.
    prior = next((e for e in reversed(events) if e.t <= moment), None)
    seen: list[tuple[float, str]] = [(moment, str(prior.get("state")))] if prior is not None else []
    for e in events:
        if e.t > moment and (not seen or seen[-1][1] != e.get("state")):
            seen.append((e.t, str(e.get("state"))))
    matched: list[float] = []
    for t, state in seen:
        if len(matched) < len(wanted) and state == wanted[len(matched)]:
            matched.append(t)
    path = " → ".join(f"{s} (t={t:.1f} s)" for t, s in seen[:8]) + (" → …" if len(seen) > 8 else "")
    if len(matched) < len(wanted):
        return Finding(False, f"breaker of {x.breaker} after {x.after}: {path or 'no breaker states'}; never reached "
                       f"{' → '.join(wanted[len(matched):])}", {"seconds": None})  # fmt: skip
    took = matched[-1] - moment
    return Finding(took <= x.within, f"breaker of {x.breaker} went {path}, completing {took:.1f} s after {x.after} "
                   f"(limit {x.within:g} s)", {"seconds": round(took, 6)}, (moment, matched[-1]))  # fmt: skip


def _restarts(x: ex.Restarts, tl: Timeline, _: SteadyCriteria) -> Finding:
    lo, hi = _restart_bounds(x)
    start, end, label = _span(x.window(), tl)
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
                   f"{x.restarts} restarted {times} {label} (t={start:.1f}–{end:.1f} s); "
                   f"{len(exits)} exits (reasons: {reasons})", {"restarts": len(counted), "exits": len(exits)},
                   (start, end), (*counted, *exits))  # fmt: skip


def _requests_in(x: Any, tl: Timeline) -> tuple[list[Event], str, tuple[float, float]]:
    start, end, label = _span(x.window(), tl)
    return tl.select("request", start=start, end=end), label, (start, end)


def _slo_over(x: ex.SloOver, tl: Timeline, _: SteadyCriteria) -> Finding:
    at_most = None if x.at_most is None else float(x.at_most)
    events, label, span = _requests_in(x, tl)
    if x.clients is not None or x.except_clients is not None:
        events = slo.of_clients(events, x.clients, x.except_clients)
        label += slo.clients_label(x.clients, x.except_clients)
    return slo.judge_slo(x.slo, events, label, span, at_least=x.at_least, at_most=at_most)


def _counter(x: ex.CounterIncrease, tl: Timeline) -> Finding:
    start, end, label = _span(x.window(), tl)  # samples up to 5 s before: the baseline of the increase
    return judge_counter(x, tl.select("metric", start=start - 5.0, end=end), label, (start, end))


def _recovers(x: ex.Recovers, tl: Timeline, steady: SteadyCriteria) -> Finding:
    # The measured seconds (the MTTR) are reported even when over the limit.
    moment, requests = _moment(x.after, tl), tl.select("request")
    at = regained_at(requests, moment, steady, horizon=tl.end)
    if at is None:
        return Finding(False, f"steady state not regained by the end of the run (t={tl.end:.1f} s, "
                       f"{max(0.0, tl.end - moment):.1f} s after {x.after}; limit {x.within:g} s)",
                       {"seconds": None}, (moment, tl.end))  # fmt: skip
    stats, mttr = request_stats(tl.select("request", start=at, end=at + steady.window_s)), at - moment
    return Finding(mttr <= x.within, f"steady state regained {mttr:.1f} s after {x.after} (limit {x.within:g} s): "
                   f"availability {stats.availability or 0.0:.3f} over {stats.total:,} requests from t={at:.1f} s",
                   {"seconds": round(mttr, 6), "availability": stats.availability,
                    "latency_p95_s": stats.latency(0.95)}, (at, at + steady.window_s))  # fmt: skip


def _alert(x: ex.AlertExpectation, tl: Timeline, _: SteadyCriteria) -> Finding:
    fires_at = _moment(x.fires.after, tl) if x.fires is not None else None
    resolves_at = _moment(x.resolves.after, tl) if x.resolves is not None else None
    return alert_assertions.judge_alert(x, tl, fires_at=fires_at, resolves_at=resolves_at)


def _no_alerts(x: ex.NoAlerts, tl: Timeline, _: SteadyCriteria) -> Finding:
    window = x.window()
    if window is not None:
        return alert_assertions.judge_no_alerts(x, tl, *_span(window, tl))
    # Steady state: from steady.start to the first fault (or to teardown when there is none).
    start = _anchor("steady", "start", tl) or 0.0
    ends = [e.t for e in (tl.first("fault", event="start"), tl.first("phase", phase="teardown")) if e is not None]
    return alert_assertions.judge_no_alerts(x, tl, start, min(ends, default=tl.end), "during steady state")


_EVALUATORS: dict[type, Callable[[Any, Timeline, SteadyCriteria], Finding]] = {
    ex.ProbeBecomes: _probe_becomes, ex.ProbeHolds: _probe_holds, ex.BreakerSequence: _breaker_sequence,
    ex.SloOver: _slo_over, ex.Restarts: _restarts,
    ex.RequestsCount: lambda x, tl, _: slo.judge_requests(x.requests, *_requests_in(x, tl), at_most=x.at_most),
    ex.ErrorBudget: lambda x, tl, steady: slo.judge_budget(*_requests_in(x, tl), at_most=x.at_most,
                                                          slo_availability=steady.availability),
    ex.Recovers: _recovers, ex.AlertExpectation: _alert, ex.NoAlerts: _no_alerts,
    ex.RunbookRestores: runbook_assertions.judge_restores,
    ex.CounterIncrease: lambda x, tl, _: _counter(x, tl),
    ex.CanaryExpectation: lambda x, tl, _: judge_canary(x, tl, _moment(x.after, tl) if x.after else 0.0,
                                                        str(x.after or "run.start")),
}  # fmt: skip


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
    """Judge one expectation (a model of :mod:`experiments.expectations`) against the timeline.

    ``steady_state`` is the spec's ``steady_state`` (``window``, ``slo.availability``,
    ``slo.latency_p95``), a :class:`~experiments.slo.SteadyCriteria`, or None for the defaults.
    """
    evaluator = _EVALUATORS.get(type(expectation))
    if evaluator is None:
        raise TypeError(f"not an expectation: {type(expectation).__name__}")
    steady = SteadyCriteria.of(steady_state)
    name = expected = describe(expectation)
    if isinstance(expectation, ex.Recovers | ex.ErrorBudget | ex.RunbookRestores):
        expected = f"{expected} (steady state: {steady.describe()})"
    try:
        found = evaluator(expectation, timeline, steady)
    except _Missing as missing:
        return Verdict(name=name, passed=False, expected=expected, observed=str(missing))
    evidence = [e.model_dump(mode="json") for e in found.evidence[:_MAX_EVIDENCE]]
    return Verdict(name=name, passed=found.passed, expected=expected, observed=found.observed, evidence=evidence,
                   measured=found.measured, window=found.window)  # fmt: skip
