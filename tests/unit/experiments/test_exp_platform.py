"""The local platform: back-off and exit reasons, the service endpoint, and real replicas
supervised with Kubernetes semantics (readiness routing, liveness and OOM restarts, holds,
CrashLoopBackOff, nothing left behind)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from faultdrill.experiments.host.process import free_port
from faultdrill.experiments.journal.timeline import Event, Timeline
from faultdrill.experiments.platforms import BackOff, LocalPlatform, ServiceEndpoint, exit_reason, restarts_after
from faultdrill.faults.base import FaultContext
from faultdrill.faults.cgroups import detect_memory_controller
from faultdrill.faults.process import admin_request
from faultdrill.faults.registry import FaultRegistry

MIB = 1024 * 1024
INFER = {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 64}]}


# -- pure parts ----------------------------------------------------------------------------
def test_backoff_doubles_caps_and_has_a_kubernetes_scale() -> None:
    assert [BackOff().delay(n) for n in range(6)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    k8s = BackOff.kubernetes()
    assert (k8s.delay(0), k8s.delay(10), k8s.reset_after_s) == (10.0, 300.0, 600.0)
    with pytest.raises(ValueError, match="back-off"):
        BackOff(initial_s=5, max_s=1)


@pytest.mark.parametrize(("rc", "oom", "cause", "expected"), [
    (0, False, None, (0, None, "Completed")),
    (1, False, None, (1, None, "Error")),
    (-9, True, None, (137, 9, "OOMKilled")),
    (-9, False, None, (137, 9, "Signal")),
    (-9, False, "liveness", (137, 9, "Error")),
    (-15, True, None, (143, 15, "Signal")),  # only SIGKILL is the OOM killer's
])  # fmt: skip
def test_exit_reasons_follow_kubernetes(rc: int, oom: bool, cause: str | None, expected: tuple[Any, ...]) -> None:
    assert exit_reason(rc, oom_killed=oom, cause=cause) == expected


def test_restart_policies() -> None:
    assert restarts_after("Always", 0) and restarts_after("OnFailure", 137)
    assert not restarts_after("OnFailure", 0) and not restarts_after("Never", 1)


class Backend:
    """A loopback HTTP server that names itself in every answer and echoes POST bodies."""

    def __init__(self, name: str) -> None:
        class Handler(BaseHTTPRequestHandler):
            def _answer(self, body: bytes) -> None:
                self.send_response(200)
                self.send_header("content-length", str(len(body)))
                self.send_header("x-backend", name)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._answer(f"{name} {self.path}".encode())

            def do_POST(self) -> None:
                self._answer(self.rfile.read(int(self.headers["content-length"])))

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_endpoint_routes_round_robin_to_ready_backends_only() -> None:
    a, b = Backend("a"), Backend("b")
    ready = [("a", a.url), ("b", b.url), ("dead", f"http://127.0.0.1:{free_port()}")]
    ep = ServiceEndpoint(lambda: list(ready))
    ep.start()
    try:
        with httpx.Client(base_url=ep.url) as client:
            answers = [client.get("/x?q=1") for _ in range(9)]
            assert all(r.status_code == 200 for r in answers)  # the refused one failed over to the next
            served = [r.headers["x-faultdrill-replica"] for r in answers]
            assert served.count("a") >= 3 and served.count("b") >= 3
            assert client.get("/x?q=1").text.split(" ")[1] == "/x?q=1"
            assert client.post("/echo", content=b"payload" * 1000).content == b"payload" * 1000
            ready[:] = [("b", b.url)]
            assert {client.get("/").headers["x-backend"] for _ in range(5)} == {"b"}
            ready.clear()
            r = client.get("/")
            assert r.status_code == 503 and r.headers["retry-after"] == "1" and "no ready replica" in r.text
        assert ep.served["<none>"] == 1
    finally:
        ep.stop()
        a.close()
        b.close()
    with pytest.raises(httpx.ConnectError):
        httpx.get(ep.url, timeout=1)


# -- real replicas ---------------------------------------------------------------------------
def _until(check: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.02)
    raise AssertionError(f"{what} not met within {timeout}s")


HAS_CGROUP = os.geteuid() == 0 and detect_memory_controller() is not None


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPlatform]:
    p = LocalPlatform(tmp_path_factory.mktemp("plat"), replicas=2, with_proxy=False, timeline=Timeline(),
                      memory_limit_bytes=700 * MIB if HAS_CGROUP else None,
                      replica_env={"FAULTDRILL_LIVENESS_STALL_S": "1"},
                      backoff=BackOff(initial_s=0.25, factor=2, max_s=1.0, reset_after_s=20))  # fmt: skip
    with p:
        yield p


@pytest.fixture
def both_ready(platform: LocalPlatform) -> LocalPlatform:
    _until(lambda: platform.ready_replicas() == ["replica-0", "replica-1"], 60, "both replicas ready")
    return platform


def _admin(p: LocalPlatform, name: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    h = p.handle(name)
    assert h.admin_url is not None and h.admin_token_file is not None
    return admin_request(h.admin_url, h.admin_token_file, method, path, body)


def _events(p: LocalPlatform, source: str, since: float, **attrs: Any) -> list[Event]:
    return p.timeline.select("process", source=source, start=since, **attrs)


@pytest.mark.slow
def test_service_endpoint_spreads_inference_over_ready_replicas(both_ready: LocalPlatform) -> None:
    p = both_ready
    with httpx.Client(base_url=p.service_url, timeout=10) as client:
        answers = [client.post("/v2/models/digits/infer", json=INFER) for _ in range(10)]
    assert all(r.status_code == 200 for r in answers)
    assert {r.headers["x-faultdrill-replica"] for r in answers} == {"replica-0", "replica-1"}
    assert p.topology().get("service").url == p.service_url
    starts = p.timeline.select("process", event="start")
    assert {e.source for e in starts} == {"feature-store", "replica-0", "replica-1"}
    assert p.timeline.select("breaker", source="replica-0", state="closed")


@pytest.mark.slow
def test_unready_replica_receives_no_traffic(both_ready: LocalPlatform) -> None:
    p = both_ready
    since = p.timeline.now()
    _admin(p, "replica-0", "POST", "/admin/device-memory/hold", {"leave_free_mib": 0})
    url = p.handle("replica-0").url
    with httpx.Client(timeout=10) as client:
        for _ in range(100):  # device OOMs (507) until the replica declares itself unready
            client.post(f"{url}/v2/models/digits/infer", json=INFER)
            if client.get(f"{url}/v2/health/ready").status_code == 503:
                break
        _until(lambda: p.ready_replicas() == ["replica-1"], 10, "replica-0 unready")
        with httpx.Client(base_url=p.service_url, timeout=10) as svc:
            served = {svc.post("/v2/models/digits/infer", json=INFER).headers["x-faultdrill-replica"]
                      for _ in range(20)}  # fmt: skip
        assert served == {"replica-1"}
        _admin(p, "replica-0", "POST", "/admin/device-memory/release")
        _until(lambda: "replica-0" in p.ready_replicas(), 20, "replica-0 ready again")
    unready = _events(p, "replica-0", since, event="unready")
    assert len(unready) == 1 and not _events(p, "replica-0", since, event="exit")  # unready is no restart
    assert p.timeline.select("probe", source="replica-0", start=since, probe="readiness", value=False, status=503)


@pytest.mark.slow
def test_liveness_failure_kills_and_restarts_with_backoff(both_ready: LocalPlatform) -> None:
    p = both_ready
    since, old_pid, restarts = p.timeline.now(), p.handle("replica-1").pid, p.restarts("replica-1")
    _admin(p, "replica-1", "POST", "/admin/worker/freeze", {"seconds": 60})  # stuck worker: liveness fails
    restart = _until(lambda: _events(p, "replica-1", since, event="restart"), 30, "liveness restart")[0]
    (exit_,) = _events(p, "replica-1", since, event="exit")
    assert exit_.attrs | {"ran_s": 0} == {"event": "exit", "pid": old_pid, "code": 137, "signal": 9, "reason": "Error",
                                          "cause": "liveness", "ran_s": 0, "restarts": restarts, "backoff_s": 0.25}
    assert restart.attrs["restarts"] == restarts + 1 and restart.attrs["reason"] == "Error"
    assert restart.t - exit_.t >= 0.25 and restart.attrs["pid"] != old_pid
    assert _events(p, "replica-1", since, event="unready")[0].t <= exit_.t + 0.5
    _until(lambda: "replica-1" in p.ready_replicas(), 60, "replica-1 ready after restart")


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.skipif(not HAS_CGROUP, reason="needs root and a cgroup memory controller")
def test_oom_kill_is_reported_as_oomkilled_and_restarted(both_ready: LocalPlatform) -> None:
    p = both_ready
    since = p.timeline.now()
    _admin(p, "replica-0", "POST", "/admin/host-memory/leak", {"rate_mib_s": 300, "max_mib": 4000})
    exit_ = _until(lambda: _events(p, "replica-0", since, event="exit"), 30, "OOM kill")[0]
    assert (exit_.attrs["reason"], exit_.attrs["code"], exit_.attrs["signal"]) == ("OOMKilled", 137, 9)
    restart = _until(lambda: _events(p, "replica-0", since, event="restart"), 10, "restart")[0]
    assert restart.attrs["reason"] == "OOMKilled"
    with httpx.Client(base_url=p.service_url, timeout=10) as svc:  # the other replica serves meanwhile
        assert svc.post("/v2/models/digits/infer", json=INFER).status_code == 200
    _until(lambda: "replica-0" in p.ready_replicas(), 60, "replica-0 ready after OOM restart")


@pytest.mark.slow
def test_held_service_stays_down_until_started(both_ready: LocalPlatform) -> None:
    p = both_ready
    since = p.timeline.now()
    assert p.stop("replica-1", hold=True) == 0  # SIGTERM: graceful drain, exit 0
    time.sleep(2.0)  # eight times the back-off: the policy would have restarted it by now
    assert p.exit_status("replica-1") == 0 and p.ready_replicas() == ["replica-0"]
    (exit_,) = _events(p, "replica-1", since, event="exit")
    assert (exit_.attrs["reason"], exit_.attrs["cause"], exit_.attrs["backoff_s"]) == ("Completed", "stop", None)
    assert not _events(p, "replica-1", since, event="restart")
    p.start("replica-1")
    assert _events(p, "replica-1", since, event="start")
    _until(lambda: "replica-1" in p.ready_replicas(), 30, "replica-1 ready after start")


@pytest.mark.slow
def test_crash_loop_backoff_doubles_and_caps(both_ready: LocalPlatform, tmp_path: Path) -> None:
    p = both_ready
    registry = FaultRegistry()
    registry.load_entry_points()
    fault = registry.get("model_load_failure")()
    ctx = FaultContext.create(tmp_path / "state", scope=p.scope(), topology=p.topology(), supervisor=p)
    since = p.timeline.now()
    injection = fault.inject(fault.parse_config({"target": "replica-1", "mode": "corrupt"}), ctx)
    try:
        # Every exit counts for the back-off: the load failure (code 1), or — on a busy machine — a
        # start-up probe giving up on a slow torch start first (killed, cause "startup").
        def failures() -> list[Event]:  # not the fault's own planned restart
            return [e for e in _events(p, "replica-1", since, event="exit") if e.attrs.get("cause") != "restart"]

        crashes = _until(lambda: failures()[4:], 180, "five crashes")  # each is a torch start-up: slow when busy
        crashes = failures()
        assert [e.attrs["backoff_s"] for e in crashes[:5]] == [0.25, 0.5, 1.0, 1.0, 1.0]
        assert all(e.attrs["reason"] == "Error" for e in crashes)
        seen = [(e.attrs["code"], e.attrs.get("cause"), e.attrs.get("ran_s")) for e in crashes]
        assert any(e.attrs["code"] == 1 for e in crashes), seen  # the model load itself failed
        assert not _events(p, "replica-1", since, event="ready")
        with httpx.Client(base_url=p.service_url, timeout=10) as svc:
            assert {svc.get("/v2/health/ready").headers["x-faultdrill-replica"] for _ in range(5)} == {"replica-0"}
    finally:
        fault.undo(injection, ctx)
    _until(lambda: "replica-1" in p.ready_replicas(), 60, "replica-1 ready after rollback")


@pytest.mark.slow
def test_close_stops_everything(platform: LocalPlatform) -> None:
    pids = {e.attrs["pid"] for e in platform.timeline.select("process") if e.attrs.get("pid")}
    assert len(pids) >= 3
    ports = [platform.endpoint.port]
    platform.close()
    platform.close()  # idempotent
    alive = [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert alive == []
    assert not [c for c in psutil.Process().children(recursive=True) if c.status() != psutil.STATUS_ZOMBIE]
    assert not [t for t in threading.enumerate() if t.name.startswith(("probe-", "observer-", "service-endpoint"))]
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{ports[0]}/", timeout=1)
