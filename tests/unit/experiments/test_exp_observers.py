"""Observers on synthetic backends: the Poller loop, ObserverGroup, BreakerPoller, ProbeSampler."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from faultdrill.experiments.journal.timeline import Timeline
from faultdrill.experiments.observe.observers import BreakerPoller, Observer, ObserverContext, ObserverGroup, Poller
from faultdrill.experiments.platforms.local.probes import ProbeConfig, ProbeSampler, ProbeSet
from faultdrill.faults.topology import ServiceHandle, Topology


class FakeReplica:
    """A loopback HTTP server whose answers per path the test sets (status, JSON body)."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, dict[str, Any]]] = {
            "/v2/health/ready": (200, {"ready": True}), "/v2/health/live": (200, {"live": True}),
            "/v2": (200, {"dependency": {"breaker": "closed"}}),
        }  # fmt: skip
        routes = self.routes

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, doc = routes.get(self.path, (404, {}))
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake() -> Iterator[FakeReplica]:
    f = FakeReplica()
    yield f
    f.close()


def _ctx(tl: Timeline, fake: FakeReplica, pid: int = 100) -> ObserverContext:
    handle = ServiceHandle(name="replica-0", role="replica", pid=pid, url=fake.url)
    return ObserverContext(tl, topology=lambda: Topology(services={"replica-0": handle}))


def _until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.01)
    raise AssertionError(f"condition not met within {timeout}s")


def test_poller_keeps_ticking_after_a_failing_tick_and_stops() -> None:
    calls: list[int] = []

    def tick(_: ObserverContext) -> None:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("one bad sample")

    poller = Poller("p", 0.01, tick)
    poller.start(ObserverContext(Timeline()))
    _until(lambda: len(calls) >= 5)
    poller.stop()
    n = len(calls)
    time.sleep(0.05)
    assert len(calls) == n and poller.errors == 1
    with pytest.raises(ValueError, match="period_s"):
        Poller("bad", 0, tick)


def test_poller_is_bounded_by_max_runtime() -> None:
    poller = Poller("p", 0.01, lambda _: None)
    poller.start(ObserverContext(Timeline(), max_runtime_s=0.05))
    _until(lambda: poller._thread is not None and not poller._thread.is_alive(), 5)
    assert 1 <= poller.ticks <= 7
    poller.stop()


class Recorder:
    def __init__(self, name: str, log: list[str], fail: str = "") -> None:
        self.name, self.log, self.fail = name, log, fail

    def start(self, ctx: ObserverContext) -> None:
        if self.fail == "start":
            raise RuntimeError(f"{self.name} cannot start")
        self.log.append(f"start {self.name}")

    def stop(self) -> None:
        self.log.append(f"stop {self.name}")
        if self.fail == "stop":
            raise RuntimeError(f"{self.name} cannot stop")


def test_group_stops_every_observer_in_reverse_even_when_one_raises() -> None:
    log: list[str] = []
    a, b, c = Recorder("a", log), Recorder("b", log, fail="stop"), Recorder("c", log)
    assert all(isinstance(o, Observer) for o in (a, b, c))
    group = ObserverGroup([a, b, c])
    group.start(ObserverContext(Timeline()))
    with pytest.raises(RuntimeError, match="b cannot stop"):
        group.stop()
    assert log == ["start a", "start b", "start c", "stop c", "stop b", "stop a"]
    group.stop()  # idempotent: nothing left to stop
    assert len(log) == 6


def test_group_start_failure_stops_what_started() -> None:
    log: list[str] = []
    group = ObserverGroup([Recorder("a", log), Recorder("b", log, fail="start"), Recorder("c", log)])
    with pytest.raises(RuntimeError, match="b cannot start"):
        group.start(ObserverContext(Timeline()))
    assert log == ["start a", "stop a"]


def test_breaker_poller_emits_changes_only(fake: FakeReplica) -> None:
    tl = Timeline()
    poller = BreakerPoller(period_s=0.02)
    poller.start(_ctx(tl, fake))
    try:
        _until(lambda: len(tl.select("breaker")) == 1)
        time.sleep(0.1)
        fake.routes["/v2"] = (200, {"dependency": {"breaker": "open"}})
        _until(lambda: len(tl.select("breaker")) == 2)
        fake.routes["/v2"] = (500, {"error": "no dependency block"})
        time.sleep(0.1)
        fake.routes["/v2"] = (200, {"dependency": {"breaker": "closed"}})
        _until(lambda: len(tl.select("breaker")) == 3)
    finally:
        poller.stop()
    assert [e.attrs["state"] for e in tl.select("breaker", source="replica-0")] == ["closed", "open", "closed"]


def test_probe_sampler_thresholds_events_and_liveness_callback(fake: FakeReplica) -> None:
    tl = Timeline()
    pid = {"replica-0": 100}
    failed: list[tuple[str, str, int]] = []
    probes = ProbeSet(readiness=ProbeConfig("/v2/health/ready", period_s=0.02, failure_threshold=3),
                      liveness=ProbeConfig("/v2/health/live", period_s=0.02, failure_threshold=4),
                      startup=ProbeConfig("/v2/health/live", period_s=0.02), event_interval_s=0.2)  # fmt: skip
    sampler = ProbeSampler(probes, pid_of=pid.get, on_failed=lambda n, k, p: failed.append((n, k, p)))
    sampler.start(_ctx(tl, fake))
    try:
        _until(lambda: sampler.is_ready("replica-0"))
        time.sleep(0.5)  # steady: a heartbeat event every 0.2 s, not one per 0.02 s sample
        steady = tl.select("probe", source="replica-0", probe="readiness")
        assert 2 <= len(steady) <= 6 and sum(e.attrs["samples"] for e in steady) >= 15
        fake.routes["/v2/health/ready"] = (503, {"ready": False})
        _until(lambda: not sampler.is_ready("replica-0"))
        unready = tl.last("process", source="replica-0", event="unready")
        first_fail = tl.first("probe", source="replica-0", probe="readiness", value=False)
        assert unready is not None and first_fail is not None and first_fail.attrs["status"] == 503
        assert unready.t - first_fail.t >= 0.02  # three failures in a row, not one
        fake.routes["/v2/health/live"] = (500, {"live": False})
        _until(lambda: bool(failed))
        assert failed[0] == ("replica-0", "liveness", 100)
        fake.routes["/v2/health/ready"] = (200, {"ready": True})
        fake.routes["/v2/health/live"] = (200, {"live": True})
        _until(lambda: sampler.is_ready("replica-0"))
        pid["replica-0"] = None  # type: ignore[assignment]  # the process is gone: unready at once
        _until(lambda: not sampler.is_ready("replica-0"), 2)
        pid["replica-0"] = 101  # a new process: startup first, then ready again
        _until(lambda: sampler.is_ready("replica-0"))
    finally:
        sampler.stop()
    ready = tl.select("process", source="replica-0", event="ready")
    assert [e.attrs["pid"] for e in ready] == [100, 100, 101]
    assert tl.select("probe", source="replica-0", probe="startup", pid=101)
