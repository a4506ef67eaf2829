"""The TCP fault proxy, run as its own process against a local echo server."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from faults_helpers import child_env

from faultdrill.faults.proxy_control import ProxyControl, RunningProxy, spawn_proxy


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        for _ in range(100_000):  # bounded; ends at EOF or reset
            try:
                data = self.request.recv(65536)
            except OSError:
                return
            if not data:
                return
            self.request.sendall(data)


class _EchoServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        pass  # resets are the point of these tests


@pytest.fixture(scope="module")
def echo() -> Iterator[tuple[str, int]]:
    server = _EchoServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server.server_address[:2]  # type: ignore[misc]
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture(scope="module")
def proxy(
    echo: tuple[str, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningProxy]:
    token_file = tmp_path_factory.mktemp("proxy") / "token"
    running = spawn_proxy(echo, token_file=token_file, env=child_env())
    yield running
    running.stop()
    assert running.process.returncode == 0


@pytest.fixture
def ctl(proxy: RunningProxy) -> Iterator[ProxyControl]:
    client = proxy.control()
    client.set_mode("passthrough")
    yield client
    client.set_mode("passthrough")
    client.close()


def _connect(proxy: RunningProxy, timeout: float = 2.0) -> socket.socket:
    sock = socket.create_connection(proxy.listen, timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _roundtrip(sock: socket.socket, payload: bytes = b"ping") -> float:
    start = time.perf_counter()
    sock.sendall(payload)
    got = b""
    for _ in range(1000):
        if len(got) >= len(payload):
            break
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    assert got == payload
    return time.perf_counter() - start


def test_passthrough_and_counters(proxy: RunningProxy, ctl: ProxyControl) -> None:
    before = ctl.state()
    with _connect(proxy) as sock:
        _roundtrip(sock, b"x" * 1000)
    after = ctl.state()
    assert after["mode"]["mode"] == "passthrough"
    assert after["connections_total"] == before["connections_total"] + 1
    assert after["bytes_to_upstream"] - before["bytes_to_upstream"] == 1000
    assert after["bytes_to_client"] - before["bytes_to_client"] == 1000


def test_latency_is_added_each_way(proxy: RunningProxy, ctl: ProxyControl) -> None:
    ctl.set_mode("latency", latency_ms=80, jitter_ms=10)
    with _connect(proxy) as sock:
        rtts = [_roundtrip(sock) for _ in range(5)]
    assert all(0.14 <= rtt <= 0.40 for rtt in rtts), rtts  # 2 x (80 +- 10) ms


def test_bandwidth_is_limited(proxy: RunningProxy, ctl: ProxyControl) -> None:
    rate = 200_000
    ctl.set_mode("bandwidth", bandwidth_bps=rate)
    payload = b"b" * 100_000
    with _connect(proxy, timeout=5) as sock:
        sender = threading.Thread(target=sock.sendall, args=(payload,))
        start = time.perf_counter()
        sender.start()
        got = 0
        for _ in range(10_000):
            if got >= len(payload):
                break
            got += len(sock.recv(65536))
        elapsed = time.perf_counter() - start
        sender.join(5)
    measured = got / elapsed
    assert got == len(payload)
    assert 0.6 * rate <= measured <= 1.1 * rate, measured


def test_blackhole_accepts_and_never_answers(proxy: RunningProxy, ctl: ProxyControl) -> None:
    ctl.set_mode("blackhole")
    with _connect(proxy, timeout=0.5) as sock:  # the connect itself succeeds
        sock.sendall(b"hello?")
        with pytest.raises(TimeoutError):
            sock.recv(10)


def test_reset_new_and_existing_connections(proxy: RunningProxy, ctl: ProxyControl) -> None:
    existing = _connect(proxy)
    _roundtrip(existing)
    ctl.set_mode("reset")
    with pytest.raises(ConnectionResetError):
        existing.recv(10)
    existing.close()
    # The RST may already be there when the connect completes, or arrive at the first read.
    with pytest.raises(ConnectionResetError), _connect(proxy) as sock:
        sock.recv(10)


def test_reset_mid_stream_after_n_bytes(proxy: RunningProxy, ctl: ProxyControl) -> None:
    ctl.set_mode("reset", reset_after_bytes=100)
    got = b""
    with pytest.raises(ConnectionResetError), _connect(proxy) as sock:
        sock.sendall(b"r" * 60)
        for _ in range(100):
            chunk = sock.recv(65536)
            got += chunk
            sock.sendall(b"r" * 60)
    assert len(got) <= 100


def test_refuse_then_heal(proxy: RunningProxy, ctl: ProxyControl) -> None:
    ctl.set_mode("refuse")
    assert ctl.state()["listening"] is False
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(proxy.listen, timeout=1)
    ctl.set_mode("passthrough")
    with _connect(proxy) as sock:
        _roundtrip(sock)


def test_drop_affects_existing_connection_and_heals(
    proxy: RunningProxy, ctl: ProxyControl
) -> None:
    with _connect(proxy, timeout=0.5) as sock:
        _roundtrip(sock)
        ctl.set_mode("drop")
        sock.sendall(b"held")
        with pytest.raises(TimeoutError):
            sock.recv(10)
        ctl.set_mode("passthrough")
        sock.settimeout(2)
        assert sock.recv(10) == b"held"  # like a healed partition: data flows again


def test_slow_close_delays_fin(proxy: RunningProxy, ctl: ProxyControl) -> None:
    ctl.set_mode("slow_close", close_delay_ms=300)
    with _connect(proxy) as sock:
        _roundtrip(sock)
        start = time.perf_counter()
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(10) == b""
        assert time.perf_counter() - start >= 0.3


def test_control_api_requires_the_token(proxy: RunningProxy, ctl: ProxyControl) -> None:
    host, port = proxy.control_address
    base = f"http://{host}:{port}"
    assert httpx.get(f"{base}/state").status_code == 401
    wrong = {"Authorization": "Bearer not-the-token"}
    assert httpx.get(f"{base}/state", headers=wrong).status_code == 401
    assert httpx.put(f"{base}/mode", headers=wrong, content=b'{"mode":"reset"}').status_code == 401
    good = {"Authorization": f"Bearer {proxy.token}"}
    assert httpx.get(f"{base}/state", headers=good).status_code == 200
    bad_mode = httpx.put(f"{base}/mode", headers=good, content=b'{"mode":"explode"}')
    assert bad_mode.status_code == 422
    assert httpx.get(f"{base}/nope", headers=good).status_code == 404
    assert ctl.state()["mode"]["mode"] == "passthrough"


def test_metrics_exposition(ctl: ProxyControl) -> None:
    ctl.set_mode("latency", latency_ms=1)
    text = ctl.metrics()
    assert 'faultdrill_proxy_mode{mode="latency"} 1' in text
    assert "faultdrill_proxy_connections_total" in text


def test_mode_validation_and_private_token(tmp_path: Path) -> None:
    from faultdrill.faults.proxy import ProxyMode

    with pytest.raises(ValueError, match="bandwidth_bps"):
        ProxyMode(mode="bandwidth")
    with pytest.raises(ValueError, match="extra"):
        ProxyMode.model_validate({"mode": "latency", "latncy_ms": 5})
    token = tmp_path / "token"
    running = spawn_proxy(("127.0.0.1", 9), token_file=token, env=child_env())
    running.stop()
    assert token.stat().st_mode & 0o077 == 0 and len(token.read_text()) >= 32
