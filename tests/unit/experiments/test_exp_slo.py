"""Windowed request statistics, steady-state recovery, halting and MTTD/MTTR on synthetic timelines."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from faultdrill.experiments.expect.stats import (
    HaltCondition,
    SteadyCriteria,
    check_halt,
    is_lost,
    judge_budget,
    judge_requests,
    judge_slo,
    mttd_mttr,
    percentile,
    regained_at,
    request_stats,
)
from faultdrill.experiments.journal.timeline import Event, Timeline
from faultdrill.experiments.journal.traffic import Dist


def _timeline() -> Timeline:
    return Timeline(start=0.0, clock=lambda: 0.0)


def _load(tl: Timeline, start: float, end: float, *, step: float = 0.1, ok: bool = True,
          latency: float = 0.01, status: int | None = None) -> None:  # fmt: skip
    """Requests every ``step`` seconds in ``[start, end)``."""
    n = round((end - start) / step)
    for i in range(n):
        code = status if status is not None else (200 if ok else 503)
        tl.add("request", "load", t=round(start + i * step, 6), ok=ok, status=code, latency_s=latency, name="infer",
               error=None if ok else "HTTP 503")  # fmt: skip


def _req(t: float, *, ok: bool = True, status: int | None = 200, error: str | None = None) -> Event:
    return Event(t=t, kind="request", source="load", attrs={"ok": ok, "status": status, "error": error,
                                                            "latency_s": 0.01})  # fmt: skip


# -- percentiles and statistics ----------------------------------------------------------
def test_percentile_is_nearest_rank_and_none_when_empty():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.95) == 95.0
    assert percentile(values, 0.5) == 50.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([1.0, 2.0], 0.0) == 1.0
    assert percentile([], 0.95) is None


def test_lost_means_never_answered():
    assert is_lost(_req(1.0, ok=False, status=None))
    assert is_lost(_req(1.0, ok=False, status=0, error="ConnectionRefusedError(111, 'Connection refused')"))
    assert is_lost(_req(1.0, ok=False, status=502, error="RemoteDisconnected('closed')"))
    assert not is_lost(_req(1.0, ok=False, status=503, error="HTTP 503"))


def test_request_stats_counts_and_takes_latency_of_ok_requests_only():
    events = [_req(0.0), _req(0.1, ok=False, status=503), _req(0.2, ok=False, status=None),
              Event(t=0.3, kind="probe", source="replica-0", attrs={"value": True})]  # fmt: skip
    events[0] = Event(t=0.0, kind="request", source="load", attrs={"ok": True, "status": 200, "latency_s": 0.2})
    stats = request_stats(events)
    assert (stats.total, stats.ok, stats.failed, stats.lost) == (3, 1, 2, 1)
    assert stats.availability == pytest.approx(1 / 3) and stats.error_ratio == pytest.approx(2 / 3)
    assert stats.latencies.pairs() == [(0.2, 1)]
    empty = request_stats([])
    assert empty.availability is None and empty.error_ratio is None and empty.latency(0.95) is None


# -- steady-state criteria ---------------------------------------------------------------
def test_criteria_from_none_from_itself_and_from_a_spec_like_object():
    assert SteadyCriteria.of(None) == SteadyCriteria(window_s=5.0, availability=0.99, latency_p95_s=None)
    mine = SteadyCriteria(window_s=2.0, availability=0.9)
    assert SteadyCriteria.of(mine) is mine
    spec = SimpleNamespace(window=3.0, slo=SimpleNamespace(availability=0.95, latency_p95=0.5))
    assert SteadyCriteria.of(spec) == SteadyCriteria(window_s=3.0, availability=0.95, latency_p95_s=0.5)
    assert SteadyCriteria.of(SimpleNamespace(window=1.0, slo=None)) == SteadyCriteria(window_s=1.0)
    assert "p95 ≤ 500 ms" in SteadyCriteria.of(spec).describe()
    no_bound = SimpleNamespace(window=2.0, slo=SimpleNamespace(availability=None, error_ratio=None, latency_p95=None))
    assert SteadyCriteria.of(no_bound).availability == 0.0
    by_ratio = SimpleNamespace(window=2.0, slo=SimpleNamespace(availability=0.9, error_ratio=0.02, latency_p95=None))
    assert SteadyCriteria.of(by_ratio).availability == pytest.approx(0.98)


def test_criteria_from_the_real_spec_model():
    from faultdrill.experiments.spec.experiment import SteadyState

    steady = SteadyState.model_validate({"window": "3s", "slo": {"availability": 0.99, "latency_p95": "500ms"}})
    assert SteadyCriteria.of(steady) == SteadyCriteria(window_s=3.0, availability=0.99, latency_p95_s=0.5)
    assert SteadyCriteria.of(SteadyState()) == SteadyCriteria()


def test_criteria_need_requests_availability_and_latency():
    c = SteadyCriteria(window_s=1.0, availability=0.9, latency_p95_s=0.1)
    assert not c.met(0, 0, Dist())
    assert c.met(10, 9, Dist.of([(0.01, 9)]))
    assert not c.met(10, 8, Dist.of([(0.01, 8)]))
    assert not c.met(10, 10, Dist.of([(0.2, 10)]))
    assert not c.met(10, 9, Dist())  # ok requests without latencies cannot prove the latency bound


# -- recovery (MTTR) ---------------------------------------------------------------------
def test_regained_immediately_when_already_steady():
    tl = _timeline()
    _load(tl, 0.0, 10.0)
    assert regained_at(tl.select("request"), 2.0, SteadyCriteria(window_s=2.0), horizon=tl.end) == 2.0


def test_regained_after_the_last_failure_leaves_the_window():
    tl = _timeline()
    _load(tl, 0.0, 5.0, ok=False)
    _load(tl, 5.0, 15.0)
    at = regained_at(tl.select("request"), 2.0, SteadyCriteria(window_s=3.0), horizon=tl.end)
    assert at == pytest.approx(5.0)


def test_not_regained_when_the_run_ends_first_or_load_is_gone():
    tl = _timeline()
    _load(tl, 0.0, 5.0, ok=False)
    _load(tl, 5.0, 6.0)
    # Only 1 s of good requests before the end: a 3 s window is never fully observed.
    assert regained_at(tl.select("request"), 0.0, SteadyCriteria(window_s=3.0), horizon=tl.end) is None
    assert regained_at([], 0.0, SteadyCriteria(window_s=1.0), horizon=100.0) is None


def test_regained_waits_for_latency_to_settle():
    tl = _timeline()
    _load(tl, 0.0, 4.0, latency=0.8)
    _load(tl, 4.0, 10.0, latency=0.02)
    c = SteadyCriteria(window_s=2.0, availability=0.99, latency_p95_s=0.5)
    # p95 over 21 requests tolerates one slow straggler at the window's start: 3.9 s, not 4.0 s.
    assert regained_at(tl.select("request"), 0.0, c, horizon=tl.end) == pytest.approx(3.9)


def test_regained_tolerates_errors_within_the_availability_bound():
    tl = _timeline()
    _load(tl, 0.0, 10.0, step=0.01)  # 100 req/s
    tl.add("request", "load", t=1.005, ok=False, status=503, latency_s=0.01)
    c = SteadyCriteria(window_s=2.0, availability=0.99)
    assert regained_at(tl.select("request"), 0.0, c, horizon=tl.end) == 0.0


def test_zero_length_steady_window_uses_requests_at_that_instant():
    tl = _timeline()
    tl.add("request", "load", t=1.0, ok=False, status=503, latency_s=0.01)
    tl.add("request", "load", t=2.0, ok=True, status=200, latency_s=0.01)
    assert regained_at(tl.select("request"), 0.5, SteadyCriteria(window_s=0.0), horizon=tl.end) == 2.0


def test_regained_on_out_of_order_insertions():
    tl = _timeline()
    _load(tl, 5.0, 10.0)
    _load(tl, 0.0, 5.0, ok=False)  # appended late, sorted by the timeline
    assert regained_at(tl.select("request"), 0.0, SteadyCriteria(window_s=2.0), horizon=tl.end) == pytest.approx(5.0)


def test_recovery_is_fast_on_a_long_run():
    import time

    tl = _timeline()
    _load(tl, 0.0, 30.0, step=0.002, ok=False)  # 500 req/s of failures, then good traffic
    _load(tl, 30.0, 60.0, step=0.002)
    started = time.perf_counter()
    at = regained_at(tl.select("request"), 0.0, SteadyCriteria(window_s=5.0, latency_p95_s=0.5), horizon=tl.end)
    assert at == pytest.approx(29.95)  # 1 % of a 5 s window at 500 req/s may still fail: 25 requests, 0.05 s
    assert time.perf_counter() - started < 10.0  # generous: 2 shared cores


# -- judges used by the assertions ------------------------------------------------------
def test_judge_slo_messages_and_empty_windows():
    events = [_req(i * 0.01) for i in range(962)] + [_req(10 + i * 0.01, ok=False, status=503) for i in range(38)]
    found = judge_slo("availability", events, "during hog", (0.0, 20.0), at_least=0.95, at_most=None)
    assert found.passed
    assert found.observed == "availability during hog was 0.962 over 1,000 requests (expected at least 0.95)"
    empty = judge_slo("latency_p95", [], "during hog", (1.0, 2.0), at_least=None, at_most=0.5)
    assert not empty.passed and "no requests at all" in empty.observed
    failed_only = judge_slo("latency_p95", [_req(1.0, ok=False, status=503)], "x", (0.0, 1.0), at_least=None,
                            at_most=0.5)  # fmt: skip
    assert not failed_only.passed and "no successful requests" in failed_only.observed


def test_judge_requests_and_budget():
    events = [_req(0.0), _req(0.1, ok=False, status=None), _req(0.2, ok=False, status=503)]
    assert judge_requests("failed", events, "during part", (0.0, 1.0), at_most=1).measured["failed"] == 2
    lost = judge_requests("lost", events, "during part", (0.0, 1.0), at_most=1)
    assert lost.passed and lost.measured["lost"] == 1 and len(lost.evidence) == 1
    assert not judge_requests("failed", [], "during part", (0.0, 1.0), at_most=5).passed
    budget = judge_budget([_req(i) for i in range(199)] + [_req(200, ok=False, status=503)], "during hog",
                          (0.0, 200.0), at_most=0.6, slo_availability=0.99)  # fmt: skip
    assert budget.passed and budget.measured["consumed"] == pytest.approx(0.5)
    strict = judge_budget([_req(0.0, ok=False, status=503)], "w", (0.0, 1.0), at_most=1.0, slo_availability=1.0)
    assert not strict.passed and math.isinf(strict.measured["consumed"] or 0.0)


# -- halting -----------------------------------------------------------------------------
def _halt(**kw: object) -> HaltCondition:
    return HaltCondition.model_validate(kw)


def test_halt_when_availability_stays_below_for_the_whole_span():
    tl = _timeline()
    _load(tl, 0.0, 10.0)
    _load(tl, 10.0, 25.0, ok=False)
    cond = _halt(slo="availability", below=0.5, **{"for": "10s"})
    assert check_halt(cond, tl, now=15.0) is None  # only 5 s of failures so far
    reason = check_halt(cond, tl, now=21.0)
    assert reason is not None
    assert reason.startswith("availability was below 0.500 for 10 s up to t=21.0 s")


def test_no_halt_when_one_slice_recovers_or_has_no_requests():
    tl = _timeline()
    _load(tl, 0.0, 5.0, ok=False)
    _load(tl, 5.0, 6.0)
    _load(tl, 6.0, 12.0, ok=False)
    cond = _halt(slo="availability", below=0.5, **{"for": "10s"})
    assert check_halt(cond, tl, now=11.5) is None
    gap = _timeline()
    _load(gap, 0.0, 4.0, ok=False)
    _load(gap, 6.0, 12.0, ok=False)  # the load generator stalled for 2 s: no evidence there
    assert check_halt(cond, gap, now=11.5) is None
    assert check_halt(cond, _timeline(), now=30.0) is None
    assert check_halt(cond, tl, now=5.0) is None  # the run is younger than `for`


def test_halt_on_latency_and_error_ratio_above():
    tl = _timeline()
    _load(tl, 0.0, 6.0, latency=0.9)
    latency = check_halt(_halt(slo="latency_p95", above="500ms", **{"for": "3s"}), tl, now=5.0)
    assert latency is not None and "above 500 ms" in latency and "900 ms" in latency
    assert check_halt(_halt(slo="error_ratio", above=0.1, **{"for": "3s"}), tl, now=5.0) is None
    _load(tl, 6.0, 10.0, ok=False)
    assert check_halt(_halt(slo="error_ratio", above=0.1, **{"for": "0s"}), tl, now=9.0) is not None


# -- MTTD / MTTR -------------------------------------------------------------------------
def test_first_signal_is_the_first_symptom_and_mttr_the_regained_steady_state():
    tl = _timeline()
    _load(tl, 0.0, 30.0)
    for i in range(300):
        tl.add("probe", "replica-0", t=i * 0.1, probe="readiness", value=not 11.0 <= i * 0.1 < 20.0)
    tl.add("fault", "hog", t=10.0, event="start", fault="gpu_memory_exhaustion")
    tl.add("fault", "hog", t=18.0, event="end", fault="gpu_memory_exhaustion")
    assert mttd_mttr(tl, steady_state=SteadyCriteria(window_s=2.0)) == {"hog": {"first_signal_s": 1.0, "mttr_s": 0.0}}


def test_first_signal_ignores_states_that_predate_the_fault_and_takes_the_earliest():
    tl = _timeline()
    _load(tl, 0.0, 20.0)
    for i in range(200):  # replica-1 was never ready: not a detection of this fault
        tl.add("probe", "replica-1", t=i * 0.1, probe="readiness", value=False)
    tl.add("breaker", "replica-0", t=1.0, state="closed")
    tl.add("breaker", "replica-0", t=7.5, state="open")
    tl.add("request", "load", t=8.0, ok=False, status=503, latency_s=0.01)
    tl.add("fault", "part", t=5.0, event="start", fault="network_partition")
    tl.add("fault", "part", t=12.0, event="end", fault="network_partition")
    out = mttd_mttr(tl, steady_state=SteadyCriteria(window_s=2.0))
    assert out["part"]["first_signal_s"] == pytest.approx(2.5)
    assert out["part"]["mttr_s"] == 0.0


def test_mttd_mttr_none_when_undetected_or_never_ended():
    tl = _timeline()
    _load(tl, 0.0, 10.0)
    tl.add("fault", "silent", t=2.0, event="start", fault="process_freeze")
    out = mttd_mttr(tl)
    assert out == {"silent": {"first_signal_s": None, "mttr_s": None}}
    assert mttd_mttr(_timeline()) == {}
