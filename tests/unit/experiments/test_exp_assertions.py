"""Every expectation passes and fails on synthetic timelines, with readable verdicts and edge cases."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from faultdrill.experiments.expect import Expectation
from faultdrill.experiments.expect import judge as assertions
from faultdrill.experiments.expect.judge import Verdict, describe, evaluate, resolve_moment, resolve_window
from faultdrill.experiments.expect.stats import SteadyCriteria
from faultdrill.experiments.journal.timeline import Timeline
from faultdrill.experiments.timespec import Moment, Window

_EXPECT: TypeAdapter[Any] = TypeAdapter(Expectation)


def _x(**raw: Any) -> Any:
    """An expectation from its YAML-shaped dict, as a spec would give it."""
    return _EXPECT.validate_python(raw)


def _timeline() -> Timeline:
    return Timeline(start=0.0, clock=lambda: 0.0)


def _fault(tl: Timeline, fid: str, start: float, end: float | None) -> None:
    tl.add("fault", fid, t=start, event="start", fault="gpu_memory_exhaustion", target="replica-0")
    if end is not None:
        tl.add("fault", fid, t=end, event="end", fault="gpu_memory_exhaustion", target="replica-0")


def _probes(tl: Timeline, replica: str, probe: str, values: dict[float, bool]) -> None:
    for t, value in values.items():
        tl.add("probe", replica, t=t, probe=probe, value=value, status=200 if value else 503, latency_s=0.002)


def _load(tl: Timeline, start: float, end: float, *, step: float = 0.1, ok: bool = True, latency: float = 0.01,
          status: int | None = None) -> None:  # fmt: skip
    code = status if status is not None else (200 if ok else 503)
    for i in range(round((end - start) / step)):
        tl.add("request", "load", t=round(start + i * step, 6), ok=ok, latency_s=latency, name="infer", status=code,
               error=None if ok else "HTTP 503")  # fmt: skip


def _check(x: Any, tl: Timeline, **kw: Any) -> Verdict:
    verdict = evaluate(x, tl, **kw)
    json.dumps(verdict.model_dump(mode="json"))  # journal-ready, always
    return verdict


# -- verdicts, moments, windows ----------------------------------------------------------
def test_verdict_is_frozen_and_round_trips():
    v = Verdict(name="n", passed=True, expected="e", observed="o", measured={"seconds": 1.4}, window=(1.0, 2.0))
    with pytest.raises(ValidationError):
        v.passed = False  # type: ignore[misc]
    assert Verdict.model_validate_json(v.model_dump_json()) == v


def test_moments_resolve_on_fault_and_phase_events():
    tl = _timeline()
    tl.add("phase", "run", t=2.0, phase="setup")
    tl.add("phase", "run", t=4.0, phase="steady")
    tl.add("phase", "run", t=9.0, phase="inject")
    _fault(tl, "hog", 10.0, 25.0)
    tl.add("probe", "replica-0", t=40.0, probe="readiness", value=True)
    m = Moment.model_validate
    assert resolve_moment(m("run.start"), tl) == 0.0
    assert resolve_moment(m("run.end"), tl) == 40.0
    assert resolve_moment(m("30s"), tl) == 30.0
    assert resolve_moment(m("hog.start"), tl) == 10.0
    assert resolve_moment(m("hog.end+5s"), tl) == 30.0
    assert resolve_moment(m("hog.start-2s"), tl) == 8.0
    assert resolve_moment(m("steady.start"), tl) == 4.0
    assert resolve_moment(m("steady.end"), tl) == 9.0
    assert resolve_moment(m("nope.start"), tl) is None
    assert resolve_moment(m("steady.start"), _timeline()) is None


def test_windows_resolve_inclusively_and_fall_back_to_run_start_before_steady():
    tl = _timeline()
    _fault(tl, "hog", 10.0, 25.0)
    tl.add("probe", "replica-0", t=40.0, probe="readiness", value=True)
    w = Window.model_validate
    assert resolve_window(w({"start": "hog.start", "end": "hog.end"}), tl) == (10.0, 25.0)
    assert resolve_window(w({"start": "hog.end"}), tl) == (25.0, 40.0)
    assert resolve_window(w({"start": "steady.start", "end": "hog.start"}), tl) == (0.0, 10.0)
    assert resolve_window(None, tl) == (0.0, 40.0)
    assert resolve_window(w({"start": "ghost.start", "end": "ghost.end"}), tl) is None
    assert resolve_window(w({"start": "30s", "end": "20s"}), tl) is None


def test_unknown_fault_reference_is_a_failed_verdict_not_an_exception():
    tl = _timeline()
    _probes(tl, "replica-0", "readiness", {1.0: False})
    _load(tl, 0.0, 5.0)
    for raw in (
        {"probe": "readiness", "replica": "replica-0", "becomes": False, "within": "3s", "after": "gohst.start"},
        {"probe": "liveness", "replica": "replica-0", "holds": True, "during": "gohst"},
        {"breaker": "replica-0", "sequence": ["open"], "within": "3s", "after": "gohst.start"},
        {"slo": "availability", "at_least": 0.9, "during": "gohst"},
        {"recovers": "steady_state", "within": "3s", "after": "gohst.end"},
        {"restarts": "replica-0", "at_least": 1, "during": "gohst"},
        {"requests": "failed", "at_most": 1, "during": "gohst"},
        {"error_budget": "availability", "at_most": 0.5, "during": "gohst"},
    ):
        verdict = _check(_x(**raw), tl)
        assert not verdict.passed, raw
        edge = "end" if raw.get("recovers") else "start"
        assert verdict.observed == f"gohst.{edge} never happened: no fault 'gohst' {edge} event on the timeline"
        assert verdict.name == describe(_x(**raw)) and verdict.measured == {}


def test_a_fault_that_never_ended_fails_windows_that_need_its_end():
    tl = _timeline()
    _fault(tl, "hog", 5.0, None)
    _load(tl, 0.0, 10.0)
    verdict = _check(_x(slo="availability", at_least=0.9, during="hog"), tl)
    assert not verdict.passed
    assert verdict.observed == "hog.end never happened: no fault 'hog' end event on the timeline"


# -- probe becomes -----------------------------------------------------------------------
_BECOMES = {"probe": "readiness", "replica": "replica-0", "becomes": False, "within": "3s", "after": "hog.start"}


def test_probe_becomes_within_the_limit():
    tl = _timeline()
    _fault(tl, "hog", 5.0, 20.0)
    _probes(tl, "replica-0", "readiness", {4.0: True, 5.5: True, 6.4: False, 7.0: False})
    verdict = _check(_x(**_BECOMES), tl)
    assert verdict.passed
    assert verdict.name == "readiness of replica-0 becomes false within 3 s after hog.start"
    assert verdict.observed == "readiness of replica-0 became false 1.4 s after hog.start (limit 3 s)"
    assert verdict.measured["seconds"] == pytest.approx(1.4) and verdict.window == (5.0, 6.4)
    assert verdict.evidence[0]["t"] == 6.4


def test_probe_becomes_too_late_never_and_without_samples():
    tl = _timeline()
    _fault(tl, "hog", 5.0, 20.0)
    _probes(tl, "replica-0", "readiness", {4.0: True, 6.0: True, 9.2: False})
    late = _check(_x(**_BECOMES), tl)
    assert not late.passed and late.observed == "readiness of replica-0 became false 4.2 s after hog.start (limit 3 s)"
    assert late.measured["seconds"] == pytest.approx(4.2)
    never = _timeline()
    _fault(never, "hog", 5.0, 20.0)
    _probes(never, "replica-0", "readiness", {4.0: True, 6.0: True, 7.0: True})
    v = _check(_x(**_BECOMES), never)
    assert not v.passed and v.measured["seconds"] is None
    assert "never became false after hog.start (t=5.0 s): 2 samples up to t=7.0 s were all true" in v.observed
    empty = _timeline()
    _fault(empty, "hog", 5.0, 20.0)
    assert "no readiness samples of replica-0" in _check(_x(**_BECOMES), empty).observed


def test_probe_becomes_counts_a_value_already_held_at_the_moment_and_the_exact_bound():
    tl = _timeline()
    _fault(tl, "hog", 5.0, 20.0)
    _probes(tl, "replica-0", "readiness", {4.5: False, 5.5: False})
    already = _check(_x(**_BECOMES), tl)
    assert already.passed and already.measured["seconds"] == 0.0
    assert already.observed == "readiness of replica-0 was already false at hog.start (t=5.0 s)"
    edge = _timeline()
    _fault(edge, "hog", 5.0, 20.0)
    _probes(edge, "replica-0", "readiness", {4.5: True, 8.0: False})  # exactly at the 3 s limit: inclusive
    assert _check(_x(**_BECOMES), edge).passed


def test_probe_becomes_on_a_flapping_probe_and_out_of_order_events():
    tl = _timeline()
    _probes(tl, "replica-0", "readiness", {7.0: True, 6.5: False, 6.0: True})  # inserted out of order
    _fault(tl, "hog", 5.0, 20.0)  # the fault event itself arrives last
    verdict = _check(_x(**_BECOMES), tl)
    assert verdict.passed and verdict.measured["seconds"] == pytest.approx(1.5)


# -- probe holds -------------------------------------------------------------------------
_HOLDS = {"probe": "liveness", "replica": "replica-0", "holds": True, "during": "hog"}


def test_probe_holds_passes_on_every_sample_and_ignores_samples_outside_the_window():
    tl = _timeline()
    _fault(tl, "hog", 5.0, 10.0)
    _probes(tl, "replica-0", "liveness", {4.9: False, 5.0: True, 7.5: True, 10.0: True, 10.1: False})
    verdict = _check(_x(**_HOLDS), tl)
    assert verdict.passed and verdict.measured == {"samples": 3, "violations": 0}
    assert verdict.observed == "liveness of replica-0 stayed true in all 3 samples during hog (t=5.0–10.0 s)"
    assert verdict.name == "liveness of replica-0 holds true during hog"


@pytest.mark.parametrize("bad_at", [5.0, 10.0])
def test_probe_holds_counts_violations_exactly_at_either_bound(bad_at: float):
    tl = _timeline()
    _fault(tl, "hog", 5.0, 10.0)
    _probes(tl, "replica-0", "liveness", {5.0: True, 7.0: True, 10.0: True} | {bad_at: False})
    verdict = _check(_x(**_HOLDS), tl)
    assert not verdict.passed and f"was false at t={bad_at:.1f} s" in verdict.observed


def test_readiness_holds_false_through_a_back_off_without_probe_samples():
    # A container restarted into a bad model: its startup probe never passes, so no readiness
    # probe runs — but its Ready condition is known to be false, as Kubernetes reports it.
    tl = _timeline()
    _fault(tl, "bad", 5.0, 12.0)
    tl.add("process", "replica-1", t=3.0, event="unready")
    tl.add("process", "replica-1", t=5.5, event="exit", reason="Completed")
    tl.add("process", "replica-1", t=5.6, event="restart", restarts=1)
    x = _x(probe="readiness", replica="replica-1", holds=False, between=["bad.start+1s", "bad.end"])
    verdict = _check(x, tl)
    assert verdict.passed, verdict.observed
    assert "no probe ran and its Ready condition (0 changes)" in verdict.observed
    tl.add("process", "replica-1", t=9.0, event="ready")
    verdict = _check(x, tl)
    assert not verdict.passed and "was true at t=9.0 s" in verdict.observed
    assert "1 Ready condition change(s)" in verdict.observed


def test_readiness_holds_true_fails_on_a_condition_flip_even_when_every_sample_passed():
    tl = _timeline()
    _fault(tl, "hog", 5.0, 10.0)
    tl.add("process", "replica-0", t=1.0, event="ready")
    _probes(tl, "replica-0", "readiness", {6.0: True, 9.0: True})
    tl.add("process", "replica-0", t=7.0, event="unready")
    verdict = _check(_x(probe="readiness", replica="replica-0", holds=True, during="hog"), tl)
    assert not verdict.passed and verdict.measured == {"samples": 2, "violations": 1}
    early = _timeline()
    _fault(early, "hog", 5.0, 10.0)
    early.add("process", "replica-0", t=1.0, event="unready")
    _probes(early, "replica-0", "readiness", {6.0: True})
    assert "already false at the start" in _check(_x(probe="readiness", replica="replica-0", holds=True,
                                                     during="hog"), early).observed  # fmt: skip


def test_probe_holds_reports_the_first_violation_of_a_flapping_probe():
    tl = _timeline()
    _fault(tl, "hog", 5.0, 10.0)
    _probes(tl, "replica-0", "liveness", {6.0: True, 6.5: False, 7.0: True, 8.0: False, 9.0: True})
    verdict = _check(_x(**_HOLDS), tl)
    assert not verdict.passed and verdict.measured == {"samples": 5, "violations": 2}
    assert verdict.observed == ("liveness of replica-0 was false at t=6.5 s (1.5 s into during hog); "
                                "2 of 5 samples false")  # fmt: skip


def test_probe_holds_without_samples_fails_and_a_zero_length_window_is_inclusive():
    tl = _timeline()
    _fault(tl, "hog", 5.0, 10.0)
    empty = _check(_x(**_HOLDS), tl)
    assert not empty.passed
    assert empty.observed == "no liveness samples of replica-0 during hog (t=5.0–10.0 s): cannot tell whether it held"
    _probes(tl, "replica-0", "liveness", {12.0: True})
    point = _x(probe="liveness", replica="replica-0", holds=True, between=["12s", "12s"])
    assert _check(point, tl).passed


def test_probe_holds_over_the_whole_run_and_before_a_fault():
    tl = _timeline()
    tl.add("phase", "run", t=1.0, phase="steady")
    _probes(tl, "replica-0", "readiness", {0.5: False, 2.0: True, 4.0: True})
    _fault(tl, "hog", 5.0, 10.0)
    before = _check(_x(probe="readiness", replica="replica-0", holds=True, before="hog"), tl)
    assert before.passed and before.window == (1.0, 5.0)
    whole = _check(_x(probe="readiness", replica="replica-0", holds=True), tl)
    assert not whole.passed and whole.name.endswith("over the whole run")


# -- breaker sequence --------------------------------------------------------------------
_SEQ = {"breaker": "replica-0", "sequence": ["closed", "open", "half-open", "closed"], "within": "30s",
        "after": "part.start"}  # fmt: skip


def _breaker(tl: Timeline, states: dict[float, str]) -> None:
    for t, state in states.items():
        tl.add("breaker", "replica-0", t=t, state=state)


def test_breaker_sequence_collapses_duplicates_and_counts_the_state_at_the_moment():
    tl = _timeline()
    _breaker(tl, {1.0: "closed", 12.1: "open", 13.0: "open", 17.2: "half-open", 17.3: "half-open", 17.5: "closed"})
    _fault(tl, "part", 10.0, 15.0)
    verdict = _check(_x(**_SEQ), tl)
    assert verdict.passed and verdict.measured["seconds"] == pytest.approx(7.5)
    assert verdict.observed == ("breaker of replica-0 went closed (t=10.0 s) → open (t=12.1 s) → half-open (t=17.2 s) "
                                "→ closed (t=17.5 s), completing 7.5 s after part.start (limit 30 s)")  # fmt: skip


def test_breaker_sequence_as_a_subsequence_with_flapping_in_between():
    tl = _timeline()
    _fault(tl, "part", 10.0, 15.0)
    _breaker(tl, {10.0: "closed", 11.0: "open", 12.0: "half-open", 12.5: "open", 16.0: "half-open", 16.5: "closed"})
    assert _check(_x(**_SEQ), tl).passed


def test_breaker_sequence_missing_a_step_or_too_late_fails():
    tl = _timeline()
    _fault(tl, "part", 10.0, 15.0)
    _breaker(tl, {9.0: "closed", 12.0: "open"})
    stuck = _check(_x(**_SEQ), tl)
    assert not stuck.passed and stuck.measured["seconds"] is None
    assert stuck.observed.endswith("never reached half-open → closed")
    late = _timeline()
    _fault(late, "part", 10.0, 15.0)
    _breaker(late, {9.0: "closed", 12.0: "open", 44.0: "half-open", 45.0: "closed"})
    verdict = _check(_x(**_SEQ), late)
    assert not verdict.passed and verdict.measured["seconds"] == pytest.approx(35.0)
    nothing = _timeline()
    _fault(nothing, "part", 10.0, 15.0)
    assert "no breaker states" in _check(_x(**_SEQ), nothing).observed


# -- SLO over a window -------------------------------------------------------------------
def _hog_load(failures: int, total: int = 1000) -> Timeline:
    tl = _timeline()
    _fault(tl, "hog", 10.0, 20.0)
    step = 10.0 / total
    for i in range(total):
        ok = i >= failures
        tl.add("request", "load", t=10.0 + i * step, ok=ok, status=200 if ok else 507, latency_s=0.05 + i * 0.0004)
    tl.add("request", "load", t=9.99, ok=False, status=503, latency_s=0.01)  # just outside: not counted
    return tl


def test_slo_availability_passes_and_fails_with_the_numbers():
    ok = _check(_x(slo="availability", at_least=0.95, during="hog"), _hog_load(38))
    assert ok.passed and ok.observed == "availability during hog was 0.962 over 1,000 requests (expected at least 0.95)"
    assert ok.measured == {"availability": 0.962, "requests": 1000} and ok.window == (10.0, 20.0)
    bad = _check(_x(slo="availability", at_least=0.95, during="hog"), _hog_load(80))
    assert not bad.passed and "0.920" in bad.observed
    ratio = _check(_x(slo="error_ratio", at_most=0.05, during="hog"), _hog_load(38))
    assert ratio.passed and ratio.measured["error_ratio"] == pytest.approx(0.038)


def test_slo_latency_percentiles_over_successful_requests():
    tl = _hog_load(0)
    p95 = _check(_x(slo="latency_p95", at_most="500ms", during="hog"), tl)
    assert p95.passed and p95.name == "latency p95 at most 500 ms during hog"
    assert p95.observed == "latency p95 during hog was 430 ms over 1,000 successful requests (expected at most 500 ms)"
    assert not _check(_x(slo="latency_p99", at_most="0.4s", during="hog"), tl).passed
    assert _check(_x(slo="latency_p50", at_most=0.3, during="hog"), tl).passed


def test_slo_without_requests_fails_saying_so():
    tl = _timeline()
    _fault(tl, "hog", 10.0, 20.0)
    verdict = _check(_x(slo="availability", at_least=0.9, during="hog"), tl)
    assert not verdict.passed and verdict.observed == "availability during hog (t=10.0–20.0 s): no requests at all"


def test_slo_counts_requests_exactly_at_the_bounds():
    tl = _timeline()
    _fault(tl, "hog", 10.0, 20.0)
    for t in (10.0, 20.0):
        tl.add("request", "load", t=t, ok=False, status=503, latency_s=0.01)
    tl.add("request", "load", t=15.0, ok=True, status=200, latency_s=0.01)
    verdict = _check(_x(slo="availability", at_least=0.5, during="hog"), tl)
    assert not verdict.passed and verdict.measured["requests"] == 3


# -- recovery ----------------------------------------------------------------------------
def _recovery_timeline() -> Timeline:
    tl = _timeline()
    _fault(tl, "hog", 5.0, 15.0)
    _load(tl, 0.0, 5.0)
    _load(tl, 5.0, 19.0, ok=False)
    _load(tl, 19.0, 40.0)
    return tl


def test_recovers_measures_mttr():
    steady = SimpleNamespace(window=5.0, slo=SimpleNamespace(availability=0.99, latency_p95=0.5))
    verdict = _check(_x(recovers="steady_state", within="20s", after="hog.end"), _recovery_timeline(),
                     steady_state=steady)  # fmt: skip
    assert verdict.passed and verdict.measured["seconds"] == pytest.approx(4.0)
    assert verdict.observed.startswith("steady state regained 4.0 s after hog.end (limit 20 s)")
    assert "availability ≥ 0.99 and p95 ≤ 500 ms over 5 s windows" in verdict.expected


def test_recovers_too_late_still_reports_mttr_and_never_says_so():
    late = _check(_x(recovers="steady_state", within="2s", after="hog.end"), _recovery_timeline())
    assert not late.passed and late.measured["seconds"] == pytest.approx(4.0)
    tl = _timeline()
    _fault(tl, "hog", 5.0, 15.0)
    _load(tl, 0.0, 30.0, ok=False)
    never = _check(_x(recovers="steady_state", within="20s", after="hog.end"), tl,
                   steady_state=SteadyCriteria(window_s=2.0))  # fmt: skip
    assert not never.passed and never.measured["seconds"] is None
    assert never.observed.startswith("steady state not regained by the end of the run (t=29.9 s")


# -- restarts ----------------------------------------------------------------------------
def _oom_timeline() -> Timeline:
    tl = _timeline()
    _fault(tl, "oom", 5.0, 15.0)
    tl.add("process", "replica-0", t=1.0, event="start", pid=10)
    tl.add("process", "replica-0", t=6.0, event="exit", pid=10, code=137, signal=9, reason="OOMKilled")
    tl.add("process", "replica-0", t=6.5, event="restart", pid=11, restarts=1)
    tl.add("process", "replica-0", t=9.0, event="exit", pid=11, code=1, reason="Error")
    tl.add("process", "replica-0", t=9.5, event="restart", pid=12, restarts=2, reason="Error")
    return tl


def test_restarts_with_a_reason_inherited_from_the_exit():
    tl = _oom_timeline()
    verdict = _check(_x(restarts="replica-0", at_least=1, reason="OOMKilled", during="oom"), tl)
    assert verdict.passed and verdict.measured == {"restarts": 1, "exits": 2}
    assert verdict.observed == ("replica-0 restarted 1 time with reason OOMKilled during oom (t=5.0–15.0 s); "
                                "2 exits (reasons: Error, OOMKilled)")  # fmt: skip
    assert _check(_x(restarts="replica-0", reason="OOMKilled", during="oom"), tl).passed  # no bound: at least once
    assert _check(_x(restarts="replica-0", at_least=2, during="oom"), tl).passed


def test_restarts_bounds_fail():
    tl = _oom_timeline()
    assert not _check(_x(restarts="replica-0", at_most=0, during="oom"), tl).passed
    assert not _check(_x(restarts="replica-0", at_least=1, reason="Completed", during="oom"), tl).passed
    assert not _check(_x(restarts="replica-1", at_least=1, during="oom"), tl).passed
    window = _check(_x(restarts="replica-0", at_most=1, between=["6.5s", "9s"]), tl)  # inclusive: 1 restart
    assert window.passed and window.measured["restarts"] == 1


# -- requests lost or failed, error budget -----------------------------------------------
def test_requests_failed_and_lost():
    tl = _timeline()
    _fault(tl, "part", 5.0, 10.0)
    _load(tl, 0.0, 12.0)
    tl.add("request", "load", t=6.0, ok=False, status=0, latency_s=1.0, error="ConnectionResetError(104)")
    tl.add("request", "load", t=7.0, ok=False, status=503, latency_s=0.01, error="HTTP 503")
    failed = _check(_x(requests="failed", at_most=1, during="part"), tl)  # 51 ok at 5.0..10.0 inclusive, 2 failed
    assert not failed.passed and failed.observed == "2 of 53 requests failed during part (expected at most 1)"
    lost = _check(_x(requests="lost", at_most=1, during="part"), tl)
    assert lost.passed and lost.measured["lost"] == 1 and lost.evidence[0]["attrs"]["status"] == 0
    idle = _timeline()
    _fault(idle, "part", 5.0, 10.0)
    assert "no requests during part" in _check(_x(requests="failed", at_most=10, during="part"), idle).observed


def test_error_budget_consumed_fraction():
    tl = _hog_load(5)  # availability 0.995 against a 0.99 SLO: half the budget
    half = _check(_x(error_budget="availability", at_most=0.6, during="hog"), tl)
    assert half.passed and half.measured["consumed"] == pytest.approx(0.5)
    assert half.name == "at most 60% of the availability error budget consumed during hog"
    assert "consumed 50% of the error budget during hog" in half.observed
    assert not _check(_x(error_budget="availability", at_most=0.4, during="hog"), tl).passed
    spec = SimpleNamespace(window=5.0, slo=SimpleNamespace(availability=0.999, latency_p95=None))
    assert not _check(_x(error_budget="availability", at_most=1.0, during="hog"), tl, steady_state=spec).passed


# -- the API -----------------------------------------------------------------------------
def test_describe_names_every_expectation_and_evaluate_rejects_others():
    names = [describe(_x(**raw)) for raw in (
        {"restarts": "replica-0", "at_least": 1, "at_most": 3, "during": "oom"},
        {"restarts": "replica-0", "at_most": 0, "after": "oom.end"},
        {"restarts": "replica-0", "at_least": 0},
        {"requests": "lost", "at_most": 0, "between": ["5s", "10s"]},
        {"recovers": "steady_state", "within": "20s", "after": "hog.end+2s"},
    )]  # fmt: skip
    assert names == ["replica-0 restarts at least 1 and at most 3 times during oom",
                     "replica-0 restarts at most 0 times after oom.end",
                     "replica-0 restarts any number of times over the whole run",
                     "at most 0 lost requests between run.start+5s and run.start+10s",
                     "recovers steady state within 20 s after hog.end+2s"]  # fmt: skip
    with pytest.raises(TypeError, match="not an expectation"):
        evaluate(object(), _timeline())


def test_public_api_is_pinned():
    assert sorted(assertions.__all__) == ["Verdict", "check_halt", "describe", "evaluate", "mttd_mttr",
                                          "not_evaluated", "resolve_moment", "resolve_window"]  # fmt: skip


def test_not_evaluated_says_why_and_is_neither_a_pass_nor_a_judgement():
    from faultdrill.experiments.expect import Recovers

    x = Recovers(recovers="steady_state", within="20s", after="hog.end")
    v = assertions.not_evaluated(x, "ServiceError: replica-0 did not become ready")
    assert (v.passed, v.evaluated) == (False, False)
    assert v.name == assertions.describe(x) and v.evidence == [] and v.window is None
    assert v.observed == "not evaluated (run aborted: ServiceError: replica-0 did not become ready)"
    assert assertions.Verdict.model_validate(v.model_dump(mode="json")).evaluated is False  # journal round trip
    judged = assertions.evaluate(x, _timeline())
    assert judged.evaluated is True


# -- a whole run, as the smoke experiment would see it -----------------------------------
_SMOKE = """
steady_state: {window: 3s, slo: {availability: 0.99, latency_p95: 500ms}}
expect:
  - {probe: readiness, replica: replica-0, becomes: false, within: 5s, after: hog.start}
  - {probe: liveness, replica: replica-0, holds: true, during: hog}
  - {breaker: replica-0, sequence: [closed, open], within: 5s, after: part.start}
  - {restarts: replica-1, at_least: 1, reason: OOMKilled, between: [oom.start, oom.end+5s]}
  - {slo: availability, at_least: 0.95, during: outage}
  - {probe: readiness, replica: replica-1, holds: false, between: [bad.start+1s, bad.end]}
  - {recovers: steady_state, within: 20s, after: bad.end}
"""


def _smoke_run(*, liveness_fails: bool = False) -> Timeline:
    tl = _timeline()
    tl.add("phase", "run", t=2.0, phase="steady")
    for fid, start, end in (("hog", 5.0, 10.0), ("part", 5.0, 10.0), ("oom", 15.0, 23.0), ("outage", 27.0, 32.0),
                            ("bad", 27.0, 32.0)):  # fmt: skip
        _fault(tl, fid, start, end)
    _load(tl, 0.0, 45.0)
    _load(tl, 6.0, 6.3, ok=False)  # a few failures while replica-0 drains
    for i in range(450):
        t = round(i * 0.1, 6)
        _probes(tl, "replica-0", "readiness", {t: not 6.0 <= t < 11.0})
        _probes(tl, "replica-0", "liveness", {t: not (liveness_fails and 7.0 <= t < 7.5)})
        _probes(tl, "replica-1", "readiness", {t: not (18.0 <= t < 20.0 or 27.5 <= t < 33.0)})
    tl.add("breaker", "replica-0", t=1.0, state="closed")
    tl.add("breaker", "replica-0", t=6.0, state="open")
    tl.add("breaker", "replica-0", t=11.0, state="half-open")
    tl.add("breaker", "replica-0", t=11.2, state="closed")
    tl.add("process", "replica-1", t=18.0, event="exit", code=137, signal=9, reason="OOMKilled")
    tl.add("process", "replica-1", t=19.0, event="restart", restarts=1)
    return tl


def test_a_whole_smoke_run_passes_and_a_broken_target_fails_naming_the_expectation():
    import yaml

    from faultdrill.experiments.spec.experiment import SteadyState

    doc = yaml.safe_load(_SMOKE)
    steady = SteadyState.model_validate(doc["steady_state"])
    expectations = [_x(**raw) for raw in doc["expect"]]
    good = [evaluate(x, _smoke_run(), steady_state=steady) for x in expectations]
    assert all(v.passed for v in good), [v.observed for v in good if not v.passed]
    broken = [evaluate(x, _smoke_run(liveness_fails=True), steady_state=steady) for x in expectations]
    assert [v.name for v in broken if not v.passed] == ["liveness of replica-0 holds true during hog"]
    assert assertions.mttd_mttr(_smoke_run(), steady_state=steady)["hog"] == {
        "mttd_s": None, "first_signal_s": 1.0, "mttr_s": 0.0, "detected_by": None, "receiver": None}  # no alerting
