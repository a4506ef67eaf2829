"""Fixtures of the Chaos Toolkit tests: a fake platform behind the real control API, and a tiny
HTTP server that answers like a replica (and like Prometheus), so no test needs the real target."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from faultdrill.experiments.chaostoolkit.target import _Control
from faultdrill.faults.base import Scope
from faultdrill.faults.chaostoolkit import TargetState, write_state
from faultdrill.faults.topology import ServiceHandle, Topology


@dataclass
class FakePlatform:
    """What the control API serves: a topology, a scope, and supervisor calls it records."""

    root: Path
    replica_url: str = "http://127.0.0.1:9"
    calls: list[tuple[Any, ...]] = field(default_factory=list)

    def topology(self) -> Topology:
        return Topology(services={"replica-0": ServiceHandle(name="replica-0", role="replica", pid=os.getpid(),
                                                             url=self.replica_url)})  # fmt: skip

    def scope(self) -> Scope:
        return Scope().with_paths(self.root / "allowed").with_pids(os.getpid())

    def handle(self, name: str) -> ServiceHandle:
        return self.topology().get(name)

    def stop(self, name: str, hold: bool = True) -> int | None:
        self.calls.append(("stop", name, hold))
        return -15

    def kill(self, name: str, sig: int) -> None:
        self.calls.append(("kill", name, sig))

    def start(self, name: str, env: dict[str, str] | None = None, wait: bool = True) -> None:
        if name == "nowhere":
            raise RuntimeError("unknown service 'nowhere'")
        self.calls.append(("start", name, env, wait))

    def restart(self, name: str, env: dict[str, str] | None = None, wait: bool = True) -> None:
        self.calls.append(("restart", name, env, wait))

    def wait_exit(self, name: str, timeout_s: float) -> int | None:
        self.calls.append(("wait_exit", name, timeout_s))
        return 0

    def exit_status(self, name: str) -> int | None:
        return None


@dataclass
class FakeTarget:
    platform: FakePlatform
    path: Path
    state: TargetState
    token: str


@pytest.fixture
def fake_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTarget]:
    """A state file whose control API is real (``experiments.chaostoolkit.target``) over a FakePlatform."""
    (tmp_path / "allowed").mkdir()
    state_dir = tmp_path / "state"
    monkeypatch.setenv("FAULTDRILL_STATE_DIR", str(state_dir))
    platform = FakePlatform(tmp_path)
    token = "s3cret-token"
    control = _Control(platform, token)
    threading.Thread(target=control.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    token_file = tmp_path / "control.token"
    token_file.write_text(token)
    state = TargetState(status="ready", pid=os.getpid(), owner_pid=os.getpid(), state_dir=state_dir,
                        workdir=tmp_path, control_url=control.url, token_file=token_file,
                        service_url="http://127.0.0.1:9", replicas={"replica-0": platform.replica_url})  # fmt: skip
    path = tmp_path / "target.json"
    write_state(path, state)
    try:
        yield FakeTarget(platform, path, state, token)
    finally:
        control.shutdown()
        control.server_close()


class _Replica(BaseHTTPRequestHandler):
    """Answers like a replica of the bundled target (and Prometheus' /api/v1/alerts)."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, doc: Any) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        srv: Any = self.server
        if self.path == "/v2/health/ready":
            self._send(200 if srv.ready else 503, {})
        elif self.path == "/v2/health/live":
            self._send(200, {})
        elif self.path == "/v2":
            self._send(200, {"dependency": {"breaker": srv.breaker}})
        elif self.path == "/api/v1/alerts":
            self._send(200, {"status": "success", "data": {"alerts": srv.alerts}})
        else:
            self._send(404, {})

    def do_POST(self) -> None:
        srv: Any = self.server
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with srv.lock:
            srv.count += 1
            failing = srv.count % srv.fail_every == 0 if srv.fail_every else False
        self._send(507 if failing else 200, {"outputs": []})


@pytest.fixture
def replica() -> Iterator[Any]:
    """A tiny server: ``.url``; set ``.ready``, ``.breaker``, ``.alerts``, ``.fail_every`` (every Nth infer fails)."""
    server: Any = ThreadingHTTPServer(("127.0.0.1", 0), _Replica)
    server.daemon_threads = True
    server.ready, server.breaker, server.alerts, server.fail_every = True, "closed", [], 0
    server.count, server.lock = 0, threading.Lock()
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


class _Health(BaseHTTPRequestHandler):
    """GET answers 200 (500 once broken); POST /break breaks it, any other POST repairs it."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(500 if getattr(self.server, "broken", False) else 200)
        self.end_headers()

    def do_POST(self) -> None:
        self.server.broken = self.path == "/break"  # type: ignore[attr-defined]
        self.send_response(200)
        self.end_headers()


@pytest.fixture
def service(serve_http: Any) -> str:
    """A tiny breakable HTTP service on loopback for embedded Chaos Toolkit experiments."""
    return str(serve_http(_Health))
