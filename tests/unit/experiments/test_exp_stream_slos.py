"""SLOs over streamed answers: ``latency_ttft_p95`` and ``latency_itl_p95``, judged like ``latency_p95``."""

from __future__ import annotations

import pytest

from faultdrill.experiments.expect.slo import KIND, SloOver
from faultdrill.experiments.expect.stats import SteadyCriteria, judge_slo, request_stats
from faultdrill.experiments.journal.events import RequestAttrs
from faultdrill.experiments.journal.timeline import Timeline


def _streamed(tl: Timeline, n: int, *, ttft: float, itl: float | None, ok: bool = True, start: float = 0.0) -> None:
    for i in range(n):
        attrs = {"ttft_s": ttft * (1 + i / 100), **({"itl_s": itl} if itl is not None else {})}
        tl.add("request", "load", t=start + i * 0.1, ok=ok, status=200, latency_s=0.5, name="/v1/chat/completions",
               error=None if ok else "WrongAnswer: no tokens in the stream", **attrs)  # fmt: skip


def _slo(raw: dict[str, object]) -> SloOver:
    return SloOver.model_validate(raw)


def test_p95_of_ok_streamed_requests_only() -> None:
    tl = Timeline(start=0.0, clock=lambda: 0.0)
    _streamed(tl, 100, ttft=0.1, itl=0.02)
    _streamed(tl, 10, ttft=9.0, itl=5.0, ok=False, start=20.0)  # failed streams do not count, as for latency_p95
    tl.add("request", "load", t=30.0, ok=True, status=200, latency_s=0.01)  # not streamed: no ttft, not counted
    stats = request_stats(tl.select("request"))
    assert stats.ttfts.count == 100 and stats.itls.count == 100 and stats.latencies.count == 101
    found = judge_slo("latency_ttft_p95", tl.select("request"), "during the run", (0.0, 30.0), at_least=None,
                      at_most=0.2)  # fmt: skip
    assert found.passed and found.measured["latency_ttft_p95"] == pytest.approx(0.1 * 1.94)
    assert found.observed == ("latency ttft p95 during the run was 194 ms over 100 successful streamed requests "
                              "(expected at most 200 ms)")  # fmt: skip
    itl = judge_slo("latency_itl_p95", tl.select("request"), "during the run", (0.0, 30.0), at_least=None,
                    at_most=0.01)  # fmt: skip
    assert not itl.passed and itl.measured["latency_itl_p95"] == pytest.approx(0.02)


def test_no_streamed_requests_fails_and_says_why() -> None:
    tl = Timeline(start=0.0, clock=lambda: 0.0)
    tl.add("request", "load", t=1.0, ok=True, status=200, latency_s=0.01)
    found = judge_slo("latency_itl_p95", tl.select("request"), "x", (0.0, 2.0), at_least=None, at_most=1.0)
    assert not found.passed
    assert found.observed.endswith("no successful streamed requests to measure inter-token latency")
    empty = judge_slo("latency_ttft_p95", [], "x", (0.0, 2.0), at_least=None, at_most=1.0)
    assert not empty.passed and empty.observed.endswith("no requests at all")


def test_the_expectation_kind_reads_them_from_a_spec() -> None:
    x = _slo({"slo": "latency_ttft_p95", "at_most": "250ms", "during": "run"})
    assert float(x.at_most or 0) == pytest.approx(0.25)
    assert KIND.describe(x) == "latency ttft p95 at most 250 ms during run"
    tl = Timeline(start=0.0, clock=lambda: 0.0)
    _streamed(tl, 20, ttft=0.1, itl=0.02, start=0.1)
    tl.add("phase", "run", t=3.0, phase="teardown")
    finding = KIND.judge(x, tl, SteadyCriteria())
    assert finding.passed, finding.observed
    with pytest.raises(ValueError, match="latency_ttft_p95"):
        _slo({"slo": "latency_ttft_p99", "at_most": "1s", "during": "run"})


def test_request_events_carry_the_stream_timings() -> None:
    attrs = RequestAttrs.model_validate({"ok": True, "status": 200, "latency_s": 0.4, "ttft_s": 0.05, "itl_s": 0.01})
    assert (attrs.ttft_s, attrs.itl_s) == (0.05, 0.01)
    assert RequestAttrs.model_validate({"ok": True}).ttft_s is None  # older journals and the bundled load
