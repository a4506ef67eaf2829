"""Locust load in its own processes, every request on the timeline (real target on loopback)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from faultdrill.experiments.expect.stats import request_stats
from faultdrill.experiments.journal.timeline import Timeline
from faultdrill.experiments.observe.load import LoadGenerator, LoadShape, LoadSummary, _Tail
from faultdrill.experiments.platforms.local.stack import LocalStack


@pytest.fixture(scope="module")
def target_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with LocalStack(tmp_path_factory.mktemp("load-stack"), replicas=1) as stack:
        url = stack.topology().get("replica-0").url
        assert url is not None
        yield url


def _locust_processes(workdir: Path) -> list[psutil.Process]:
    """Locust processes this test's generator started (found by the files they were told about)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
            if "locust" in cmd and (str(workdir) in cmd or proc.environ().get("FAULTDRILL_LOAD_EVENTS", "")
                                    .startswith(str(workdir))):  # fmt: skip
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _run(gen: LoadGenerator) -> LoadSummary:
    gen.start()
    try:
        assert gen.wait(timeout_s=gen.run_time_s + 90), "locust did not finish within its bound"
    finally:
        summary = gen.stop()
    return summary


# -- fast: the pieces that need no processes ---------------------------------------------
def test_tail_keeps_partial_lines_until_complete(tmp_path: Path) -> None:
    path = tmp_path / "ev.jsonl"
    tail = _Tail([path, tmp_path / "not-yet.jsonl"])
    assert tail.read() == []
    path.write_bytes(b'{"a":1}\n{"b":')
    assert tail.read() == [b'{"a":1}']
    with path.open("ab") as f:
        f.write(b"2}\n")
    assert tail.read() == [b'{"b":2}']


def test_summary_from_locust_json_aggregates_endpoints() -> None:
    rows = [
        {"name": "/a", "num_requests": 90, "num_failures": 0, "start_time": 100.0, "last_request_timestamp": 109.0,
         "max_response_time": 40.0, "response_times": {"5": 80, "10": 10}},
        {"name": "/b", "num_requests": 10, "num_failures": 10, "start_time": 101.0, "last_request_timestamp": 110.0,
         "max_response_time": 90.0, "response_times": {"90": 10}},
    ]  # fmt: skip
    s = LoadSummary.from_locust_json(rows, events=100)
    assert (s.requests, s.failures, s.events, s.exact) == (100, 10, 100, True)
    assert s.p50_s == pytest.approx(0.005) and s.p95_s == pytest.approx(0.09) and s.max_s == pytest.approx(0.09)
    assert s.rps == pytest.approx(10.0) and s.by_name == {"/a": 90, "/b": 10}


def test_shape_env_and_validation() -> None:
    env = LoadShape(kind="spike", spike_users=9, spike_at="2s", spike_for="500ms").env()
    assert env["FAULTDRILL_LOAD_SHAPE"] == "spike" and env["FAULTDRILL_LOAD_SPIKE_USERS"] == "9"
    assert env["FAULTDRILL_LOAD_SPIKE_AT_S"] == "2.0" and env["FAULTDRILL_LOAD_SPIKE_S"] == "0.5"
    with pytest.raises(ValueError):
        LoadShape(kind="sawtooth")
    with pytest.raises(ValueError):
        LoadGenerator("http://127.0.0.1:1", Timeline(), Path("unused"), users=0)


# -- slow: real Locust against the real target ---------------------------------------------
@pytest.mark.slow
def test_every_request_reaches_the_timeline(target_url: str, tmp_path: Path) -> None:
    tl = Timeline()
    summary = _run(LoadGenerator(target_url, tl, tmp_path, users=8, run_time="5s"))
    events = tl.select("requests", source="load")
    stats = request_stats(events)
    assert summary.exact and summary.requests > 500 and summary.failures == 0
    # Aggregated where they were sent, every request is counted once: exactly Locust's own total.
    assert stats.total == summary.requests == summary.events and stats.ok == stats.total
    # One bucket per 100 ms (and key), whatever the rate: the timeline grows with time, not requests.
    assert len(events) <= 2 * 10 * 7 < summary.requests / 5
    assert all(e.attrs["statuses"] == {"200": e.attrs["count"]} and "replica" not in e.attrs for e in events)
    assert {e.attrs["name"] for e in events} == {"/v2/models/digits/infer"}
    assert stats.latencies.count == summary.requests and 0 < stats.latency(0.5) <= stats.latency(0.99)
    # Locust's own median (ms-rounded buckets) agrees with the histograms' within their precisions.
    assert stats.latency(0.5) == pytest.approx(summary.p50_s, rel=0.5, abs=0.002)
    # Run-relative times: inside the run, and spanning about the run time.
    assert 0 < events[0].t < events[-1].t <= tl.now()
    assert 3.5 <= events[-1].t - events[0].t <= 7.0
    assert events[0].wall == pytest.approx(tl.start_wall + events[0].t)
    assert summary.exit_codes == (0,)


@pytest.mark.slow
def test_errors_from_the_target_are_failures(target_url: str, tmp_path: Path) -> None:
    tl = Timeline()
    summary = _run(LoadGenerator(target_url, tl, tmp_path, users=2, run_time=2, model="no-such-model"))
    stats = request_stats(tl.requests())
    assert summary.requests > 0 and summary.failures == summary.requests == stats.total and stats.ok == 0
    assert stats.lost == 0 and stats.failures  # answered, with an error status: failed, not lost
    assert all(not e.attrs["ok"] and e.attrs["status"] == 404 and "404" in e.attrs["error"] for e in stats.failures)
    assert all(set(e.attrs["statuses"]) == {"404"} for e in tl.requests())


@pytest.mark.slow
def test_distributed_mode_sums_workers(target_url: str, tmp_path: Path) -> None:
    tl = Timeline()
    summary = _run(LoadGenerator(target_url, tl, tmp_path, users=8, workers=2, run_time=4))
    per_worker = [sum(json.loads(line)["count"] for line in (tmp_path / f"load-events-{i}.jsonl").open())
                  for i in (1, 2)]  # fmt: skip
    assert all(n > 0 for n in per_worker), per_worker  # both workers sent load
    assert summary.exact and summary.requests == sum(per_worker)
    assert request_stats(tl.requests()).total == summary.requests
    assert summary.exit_codes == (0, 0, 0)
    assert not _locust_processes(tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 1])
def test_stop_early_is_graceful_and_leaves_nothing(target_url: str, tmp_path: Path, workers: int) -> None:
    tl = Timeline()
    gen = LoadGenerator(target_url, tl, tmp_path, users=4, workers=workers, run_time="60s")
    gen.start()
    try:
        assert _locust_processes(tmp_path)
        assert gen.wait_first_request(timeout_s=60)
    finally:
        summary = gen.stop()
    assert not gen.running
    assert not _locust_processes(tmp_path)
    # SIGTERM let Locust write its final totals, and every flushed request was read.
    assert summary.exact and request_stats(tl.requests()).total == summary.requests > 0


@pytest.mark.slow
def test_spike_shape_changes_the_request_rate(target_url: str, tmp_path: Path) -> None:
    tl = Timeline()
    shape = LoadShape(kind="spike", spike_users=12, spike_at=2.0, spike_for=2.0)
    # Think time makes each user's rate fixed (~20/s), so the rate follows the user count.
    gen = LoadGenerator(target_url, tl, tmp_path, users=2, run_time=6, shape=shape, think_time_s=0.05)
    _run(gen)
    t0 = tl.requests()[0].t  # the shape's clock starts with the first users

    def rate(a: float, b: float) -> float:
        return request_stats(tl.requests(start=t0 + a, end=t0 + b)).total / (b - a)

    before, during, after = rate(0.2, 1.8), rate(2.6, 3.8), rate(4.6, 5.6)
    assert during > 3 * before, (before, during, after)
    assert during > 3 * after, (before, during, after)


@pytest.mark.slow
def test_events_file_lines_are_compact_json(target_url: str, tmp_path: Path) -> None:
    _run(LoadGenerator(target_url, Timeline(), tmp_path, users=1, run_time=1))
    line = (tmp_path / "load-events-0.jsonl").read_text().splitlines()[0]
    row = json.loads(line)
    assert {"t", "span_s", "name", "count", "ok", "lost", "statuses", "latency"} <= set(row)
    assert " " not in line.split('"name"')[0] and row["latency"].startswith("HISTF")
    assert row["t"] == pytest.approx(round(row["t"] / 0.1) * 0.1) and row["span_s"] == 0.1
