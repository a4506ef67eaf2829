"""The weighted split between stable and canary, per-pool SLIs, and the endpoint's routing/recording."""

from __future__ import annotations

import itertools
import json
import math

import pytest

from faultdrill.experiments.platforms.local.split import CanaryRouting, Outcome, PoolStats, TrafficSplit


@pytest.mark.parametrize("weight", [0, 1, 10, 25, 33, 50, 90, 100])
def test_smooth_weighted_round_robin_gives_exact_shares(weight: int) -> None:
    split = TrafficSplit(weight)
    picks = [split.choose(stable_ready=True, canary_ready=True) for _ in range(1000)]
    assert picks.count("canary") == weight * 10
    assert picks.count("stable") == 1000 - weight * 10


def test_the_canary_share_is_spread_evenly() -> None:
    split = TrafficSplit(20)
    picks = [split.choose(stable_ready=True, canary_ready=True) for _ in range(100)]
    canary_at = [i for i, p in enumerate(picks) if p == "canary"]
    gaps = {b - a for a, b in itertools.pairwise(canary_at)}
    assert gaps == {5}  # one in five, never two in a row


def test_an_unready_pool_gets_nothing_and_weight_zero_never_reaches_the_canary() -> None:
    split = TrafficSplit(50)
    assert {split.choose(stable_ready=True, canary_ready=False) for _ in range(10)} == {"stable"}
    assert {split.choose(stable_ready=False, canary_ready=True) for _ in range(10)} == {"canary"}
    assert split.choose(stable_ready=False, canary_ready=False) is None
    split.canary_weight = 0  # rolled back: the canary takes no traffic even when stable is gone
    assert split.choose(stable_ready=False, canary_ready=True) is None
    with pytest.raises(ValueError, match=r"0\.\.100"):
        split.canary_weight = 101


def test_pool_stats_slis_over_a_window_and_since_a_revision() -> None:
    now = [100.0]
    stats = PoolStats(clock=lambda: now[0])
    for i in range(20):  # t 81..100: 1 failure in 20, latency 1..20 ms, confidence 0.9
        stats.record("canary", Outcome(81.0 + i, ok=i != 5, latency_s=(i + 1) / 1000, confidence=0.9, version="2"))
    s = stats.slis("canary", 20.0)
    assert (s.requests, s.success_rate, s.version) == (20, 0.95, "2")
    assert s.latency_p95_s == pytest.approx(0.019)  # nearest rank: the 19th of 20
    assert s.confidence == pytest.approx(0.9)
    assert s.burn_rate(0.99) == pytest.approx(5.0)
    assert stats.slis("canary", 20.0, since=90.0).requests == 11  # t 90..100: the new revision's own
    assert stats.slis("stable", 20.0).requests == 0 and stats.slis("stable", 20.0).success_rate is None
    assert stats.first_since("canary", 95.5) == 96.0


def _answer(probabilities: list[float | None], version: str = "2") -> bytes:
    return json.dumps({"model_name": "digits", "model_version": version,
                       "outputs": [{"name": "probabilities", "shape": [len(probabilities) // 10, 10],
                                    "datatype": "FP32", "data": probabilities}]}).encode()  # fmt: skip


def test_routing_orders_by_pool_and_records_what_each_answered() -> None:
    stats = PoolStats()
    routing = CanaryRouting(TrafficSplit(50), stats, lambda n: "canary" if n.startswith("canary-") else "stable")
    backends = [("replica-0", "u0"), ("canary-0", "uc"), ("replica-1", "u1")]
    first = [routing.order(backends)[0][0] for _ in range(4)]
    assert first.count("canary-0") == 2  # half of the requests start at the canary
    assert routing.order(backends)[1:] != []  # the other pool is the fallback if the first refuses
    confident = [0.91] + [0.01] * 9
    assert routing.observe("canary-0", 200, 0.01, _answer(confident * 2, "3"), infer=True) == "3"
    assert routing.observe("canary-0", 200, 0.01, _answer([None] * 10, "3"), infer=True) == "3"  # NaN → null
    routing.observe("replica-0", 503, 0.002, b'{"error": "x"}', infer=True)
    routing.observe("replica-0", 404, 0.002, b'{"error": "x"}', infer=True)  # the client's fault: ok
    canary, stable = stats.slis("canary", 60.0), stats.slis("stable", 60.0)
    assert canary.requests == 2 and canary.success_rate == 0.5 and canary.version == "3"
    assert canary.confidence is not None and math.isclose(canary.confidence, 0.91)
    assert stable.success_rate == 0.5


def test_routing_at_weight_zero_and_hundred_never_falls_back_across() -> None:
    routing = CanaryRouting(TrafficSplit(0), PoolStats(), lambda n: "canary" if n.startswith("canary-") else "stable")
    backends = [("replica-0", "u0"), ("canary-0", "uc")]
    assert [n for n, _ in routing.order(backends)] == ["replica-0"]
    routing.split.canary_weight = 100
    assert [n for n, _ in routing.order(backends)] == ["canary-0"]


def test_setting_the_same_weight_keeps_the_cycle() -> None:
    split = TrafficSplit(50)
    picks = []
    for _ in range(20):
        split.canary_weight = 50  # the controller re-applies its weight every interval
        picks.append(split.choose(stable_ready=True, canary_ready=True))
    assert picks.count("canary") == 10
