"""The expectation kinds an overload is judged by: ``answers`` (what clients were answered: ok, shed, or something
they cannot act on; goodput against the probed capacity) and ``gauge`` (a scraped gauge stays bounded: memory)."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter, ValidationError

from faultdrill.experiments.expect import Expectation, describe, references
from faultdrill.experiments.expect.answers import Answers, count_answers
from faultdrill.experiments.expect.answers import judge as judge_answers
from faultdrill.experiments.expect.gauge import Gauge
from faultdrill.experiments.expect.gauge import judge as judge_gauge
from faultdrill.experiments.expect.kind import Ref
from faultdrill.experiments.journal.timeline import Timeline
from faultdrill.experiments.journal.traffic import encode_latencies

_ADAPTER: TypeAdapter[object] = TypeAdapter(Expectation)


def _overload() -> Timeline:
    """Two seconds of a spike (t 10–12): buckets of ok answers, sheds, 504s, a wrong answer and lost requests."""
    tl = Timeline(clock=lambda: 0.0)
    tl.add("metric", "run", t=1.0, name="load_capacity_rps", value=200.0)
    for i in range(20):
        tl.add("requests", "load", t=10.0 + i / 10, span_s=0.1, count=60, ok=20, lost=1,
               statuses={"200": 21, "503": 30, "504": 8, "0": 1},  # one 200 is a wrong answer
               latency=encode_latencies([0.01] * 15 + [2.0] * 5))
    tl.add("request", "load", t=11.5, ok=False, status=500, error="x")
    tl.add("request", "load", t=11.6, ok=True, status=200, latency_s=0.01)
    for t, rss in ((9.0, 300.0), (10.0, 301.0), (11.0, 340.0), (12.0, 330.0), (13.0, 900.0)):
        tl.add("metric", "replica-0", t=t, name="process_resident_memory_bytes", value=rss * 2**20)
    tl.add("metric", "replica-1", t=11.0, name="process_resident_memory_bytes", value=500 * 2**20)
    return tl


def test_answers_count_ok_requests_and_failures_by_status() -> None:
    tl = _overload()
    matched, total, seen = count_answers(tl.requests(), ["ok", 503, 429])
    assert total == 20 * 60 + 2 and matched == 20 * 50 + 1
    assert seen == {"ok": 401, "200": 20, "503": 600, "504": 160, "0": 20, "500": 1}
    x = Answers(answers=["ok", 503, 429], share_at_least=0.99, between=["10s", "12s"])
    found = judge_answers(x, tl, None)
    assert not found.passed and found.measured["share"] == pytest.approx(1001 / 1202, abs=1e-4)
    assert "others: 160 504, 20 200, 20 never answered, 1 500" in found.observed
    assert judge_answers(Answers(answers=[504, 0], share_at_most=0.2, between=["10s", "12s"]), tl, None).passed


def test_goodput_is_ok_answers_per_second_against_the_probed_capacity() -> None:
    tl = _overload()
    x = Answers(answers=["ok"], per_second_at_least="90%", between=["10s", "12s"])
    found = judge_answers(x, tl, None)  # 401 ok in 2 s = 200.5/s, against 90 % of 200
    assert found.passed and found.measured["per_second"] == 200.5 and found.measured["capacity_rps"] == 200.0
    assert not judge_answers(x.model_copy(update={"per_second_at_least": "110%"}), tl, None).passed
    assert judge_answers(Answers(answers=["ok"], per_second_at_least=150, between=["10s", "12s"]), tl, None).passed
    # goodput in time: 15 of each bucket's 20 ok answers came within 300 ms (and the single request's 10 ms)
    timely = Answers(answers=["ok"], within="300ms", per_second_at_least="75%", between=["10s", "12s"])
    found = judge_answers(timely, tl, None)
    assert found.passed and found.measured["matched"] == 301 and found.measured["per_second"] == 150.5
    assert describe(timely) == "requests answered ok (ok within 300 ms) per second at least 75% of capacity between "\
        "run.start+10s and run.start+12s"
    share = judge_answers(Answers(answers=["ok", 503], within="300ms", share_at_least=0.99, between=["10s", "12s"]),
                          tl, None)  # fmt: skip
    assert not share.passed and "100 ok but slow" in share.observed
    bare = Timeline(clock=lambda: 0.0)
    bare.add("request", "load", t=1.0, ok=True, status=200)
    lonely = judge_answers(Answers(answers=["ok"], per_second_at_least="50%"), bare, None)
    assert not lonely.passed and "no capacity was probed" in lonely.observed
    assert "nothing was answered" in judge_answers(x, Timeline(clock=lambda: 0.0), None).observed


def test_answers_and_gauge_parse_describe_and_reference() -> None:
    a = _ADAPTER.validate_python({"answers": ["ok", 503, 429], "share_at_least": 0.99, "during": "spike"})
    assert describe(a) == "share of requests answered ok, 503, 429 at least 0.99 during spike"
    assert references(a) == [Ref("fault", ("during",), "spike")]
    g = _ADAPTER.validate_python({"gauge": "process_resident_memory_bytes", "source": "replica-0",
                                  "rise_at_most": "64Mi", "during": "spike"})  # fmt: skip
    assert isinstance(g, Gauge) and g.rise_at_most == 64 * 2**20
    assert describe(g) == "process_resident_memory_bytes of replica-0 rises by at most 64.0 MiB during spike"
    assert references(g) == [Ref("fault", ("during",), "spike"), Ref("supervised", ("source",), "replica-0")]
    for bad in ({"answers": ["ok"]}, {"answers": [], "share_at_least": 0.5}, {"answers": [600], "share_at_most": 0},
                {"answers": ["ok"], "share_at_least": 0.5, "per_second_at_least": 3},
                {"answers": ["ok"], "per_second_at_least": "x%"}, {"gauge": "m"},
                {"gauge": "m", "max_at_most": "lots"}, {"gauge": "m", "max_at_most": 1, "rise_at_most": 1}):
        with pytest.raises(ValidationError):
            _ADAPTER.validate_python(bad)


def test_a_gauge_is_bounded_by_its_highest_value_or_its_rise() -> None:
    tl = _overload()
    rise = judge_gauge(Gauge(gauge="process_resident_memory_bytes", source="replica-0", rise_at_most=64 * 2**20,
                             between=["10s", "12s"]), tl, None)  # fmt: skip
    assert rise.passed and rise.measured["rise"] == 40 * 2**20 and rise.measured["baseline"] == 300 * 2**20
    assert "rose by 40.0 MiB" in rise.observed and "300.0 MiB → 340.0 MiB" in rise.observed
    tight = Gauge(gauge="process_resident_memory_bytes", source="replica-0", rise_at_most=30 * 2**20,
                  between=["10s", "12s"])  # fmt: skip
    assert not judge_gauge(tight, tl, None).passed
    every = Gauge(gauge="process_resident_memory_bytes", max_at_most=400 * 2**20, between=["10s", "12s"])
    found = judge_gauge(every, tl, None)  # replica-1 has no sample before: its first one is its baseline
    assert not found.passed and "of replica-1 reached 500.0 MiB" in found.observed
    missing = judge_gauge(Gauge(gauge="nope", max_at_most=1, between=["10s", "12s"]), tl, None)
    assert not missing.passed and "is it scraped?" in missing.observed
