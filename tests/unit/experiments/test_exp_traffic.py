"""Requests aggregated at the source: the real aggregator (``target_service/loadkit.py``, run in a subprocess as
Locust runs it: it imports gevent) against the same requests kept one event each.

Counts must agree exactly; percentiles within the histograms' stated precision (never below the measured value,
at most 1 % above); windows to within a bucket (100 ms); and the file grows with time, not with requests.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from faultdrill.experiments.expect.stats import judge_requests, judge_slo, regained_at, request_stats
from faultdrill.experiments.journal.models import SteadyCriteria
from faultdrill.experiments.journal.timeline import Event, Timeline
from faultdrill.experiments.journal.traffic import Dist, decoded, encode_latencies, units
from faultdrill.experiments.observe.load import event_of_line
from faultdrill.reports.model import Requests

ROOT = Path(__file__).resolve().parents[3]
START = 1_700_000_000.0


def _aggregate(rows: list[dict[str, object]], tmp_path: Path) -> tuple[list[Event], int]:
    """The buckets the real aggregator writes for ``rows`` (run-relative), and the file's size in bytes."""
    src, dst = tmp_path / "raw.jsonl", tmp_path / "buckets.jsonl"
    tmp_path.mkdir(parents=True, exist_ok=True)
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code = "import sys; from target_service.loadkit import aggregate_file as a; print(a(sys.argv[1], sys.argv[2]))"
    out = subprocess.run([sys.executable, "-c", code, str(src), str(dst)], cwd=ROOT / "faultdrill", check=True,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert int(out.stdout) == len(rows)
    events = [e for line in dst.read_text().splitlines() if (e := event_of_line(line, START)) is not None]
    assert len(events) == len(dst.read_text().splitlines())  # every line reads back
    return sorted(events, key=lambda e: e.t), dst.stat().st_size


def _raw(rows: list[dict[str, object]]) -> list[Event]:
    return [event_of_line(json.dumps(r), START) for r in rows]  # type: ignore[misc]


def _traffic(seconds: float, rps: float, seed: int = 7) -> list[dict[str, object]]:
    """Requests of a service that fails (503, refused) between 4 s and 6 s and is slow between 7 s and 8 s."""
    rng, rows = random.Random(seed), []
    for i in range(int(seconds * rps)):
        t = i / rps + rng.random() / rps
        latency = rng.lognormvariate(-5.5, 0.6) + (0.4 if 7.0 <= t < 8.0 else 0.0)
        row: dict[str, object] = {"t": START + t, "ok": True, "status": 200, "latency_s": round(latency, 6),
                                  "name": "/v2/models/digits/infer", "error": None,
                                  "replica": f"replica-{i % 2}"}  # fmt: skip
        if 4.0 <= t < 6.0 and rng.random() < 0.3:
            refused = rng.random() < 0.5
            row |= {"ok": False, "status": 0 if refused else 503,
                    "error": "ConnectionRefusedError: [Errno 111] refused" if refused else "HTTPError: 503 Busy"}
        rows.append(row)
    return rows


def test_buckets_count_exactly_and_read_percentiles_within_the_stated_precision(tmp_path: Path) -> None:
    rows = _traffic(10.0, 800)
    buckets, _ = _aggregate(rows, tmp_path)
    raw = _raw(rows)
    for start, end in ((0.0, 10.0), (4.0, 6.0), (7.0, 8.0), (2.35, 2.95)):
        # a bucket sits at its start: windows on 100 ms edges hold exactly the same requests
        edge = (round(start, 1), round(end, 1) - 1e-9)
        b = request_stats(e for e in buckets if edge[0] <= e.t <= edge[1])
        r = request_stats(e for e in raw if edge[0] <= e.t < round(end, 1))
        assert (b.total, b.ok, b.lost, b.latencies.count) == (r.total, r.ok, r.lost, r.latencies.count), (start, end)
        for q in (0.5, 0.95, 0.99, 1.0):
            exact, read = r.latency(q), b.latency(q)
            assert exact is not None and read is not None
            assert exact <= read <= exact * 1.01 + 1e-6, (q, exact, read)
    assert sum(u.total for u in units(buckets)) == len(rows)
    # the replica answering is part of the key
    assert {e.attrs.get("replica") for e in buckets} == {"replica-0", "replica-1"}


def test_failures_are_kept_raw_up_to_a_bound_and_counted_all(tmp_path: Path) -> None:
    rows = _traffic(10.0, 800)
    buckets, _ = _aggregate(rows, tmp_path)
    failed = [r for r in rows if not r["ok"]]
    found = judge_requests("lost", buckets, "during the outage", (4.0, 6.0), at_most=0)
    lost = sum(1 for r in failed if r["status"] == 0)
    assert not found.passed and found.measured["lost"] == lost and found.observed.startswith(f"{lost:,} of ")
    assert 0 < len(found.evidence) <= 5 * len(buckets) and all(e.attrs["status"] == 0 for e in found.evidence)
    assert all(4.0 <= e.t < 6.0 and e.attrs["replica"] in ("replica-0", "replica-1") for e in found.evidence)
    errors: dict[str, int] = {}
    for e in buckets:
        for message, n in e.attrs.get("errors", {}).items():
            errors[message] = errors.get(message, 0) + n
    assert sum(errors.values()) == len(failed) and "HTTPError: 503 Busy" in errors


def test_slo_recovery_and_reports_read_buckets_as_they_read_requests(tmp_path: Path) -> None:
    rows = _traffic(12.0, 400)
    buckets, _ = _aggregate(rows, tmp_path)
    raw = _raw(rows)
    tl = Timeline(buckets, start=START)
    slow = judge_slo("latency_p95", tl.requests(start=7.0, end=7.95), "while slow", (7.0, 7.95), at_least=None,
                     at_most=0.3)  # fmt: skip
    fast = judge_slo("latency_p95", tl.requests(end=3.95), "before", (0.0, 3.95), at_least=None, at_most=0.3)
    assert not slow.passed and fast.passed
    steady = SteadyCriteria(window_s=1.0, availability=0.99, latency_p95_s=0.1)
    by_buckets = regained_at(buckets, 4.0, steady, horizon=12.0)
    by_requests = regained_at(raw, 4.0, steady, horizon=12.0)
    assert by_buckets is not None and by_requests is not None and abs(by_buckets - by_requests) <= 0.1
    assert request_stats(tl.requests(start=4.0, end=5.95)).failed == sum(1 for r in rows if not r["ok"])
    # the report's arrays: per-window figures as request_stats gives them
    req = Requests.of(buckets)
    total, ok, _, p95 = req.window(0.0, 3.95)
    stats = request_stats(e for e in buckets if e.t <= 3.95)
    assert (total, ok, p95) == (stats.total, stats.ok, stats.latency(0.95))


def test_the_file_grows_with_time_not_with_requests(tmp_path: Path) -> None:
    _, size_small = _aggregate(_traffic(10.0, 100, seed=1), tmp_path / "a")
    big, size_big = _aggregate(_traffic(10.0, 2000, seed=1), tmp_path / "b")
    assert len(big) <= 2 * 10 * 10 * 1.2  # 2 replicas × 10 buckets a second × 10 s (+ outage lines' extras)
    assert size_big < 4 * size_small  # 20 × the requests, not 20 × the bytes


def test_hdr_encoding_round_trips_and_an_unreadable_one_has_no_latencies() -> None:
    values = [0.0012, 0.0012, 0.25, 3.5]
    pairs = decoded(encode_latencies(values))
    assert [n for _, n in pairs] == [2, 1, 1]
    for (read, _), exact in zip(pairs, (0.0012, 0.25, 3.5), strict=True):
        assert exact <= read <= exact * 1.01
    assert decoded("not-a-histogram") == ()
    bucket = Event(t=1.0, kind="requests", source="load", attrs={"count": 3, "ok": 3, "latency": "garbage"})
    assert request_stats([bucket]).total == 3 and request_stats([bucket]).latencies.count == 0


def test_dist_is_a_multiset_with_nearest_rank() -> None:
    d = Dist.of([(0.3, 1), (0.1, 2), (0.2, 1)])
    assert [d.quantile(q) for q in (0.25, 0.5, 0.75, 1.0)] == [0.1, 0.1, 0.2, 0.3]
    d.remove([(0.1, 2)])
    assert d.count == 2 and d.pairs() == [(0.2, 1), (0.3, 1)] and Dist().quantile(0.5) is None


@pytest.mark.parametrize("bad", ['{"t": 1, "count": 2, "ok": 3, "lost": 0, "span_s": 0.1, "name": "x", "statuses": {}}',
                                 '{"t": 1, "count": "many"}', "[1, 2]", "Locust: starting"])
def test_a_line_that_is_not_a_bucket_or_a_request_is_skipped(bad: str) -> None:
    assert event_of_line(bad, START) is None
