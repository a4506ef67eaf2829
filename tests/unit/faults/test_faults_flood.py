"""The noisy-neighbour fault (``client_flood``): config validation, preflight, a real detached flood
process measured by ``verify``, and its ledger record undone from a fresh process (pid + start time
checked, so a recycled pid is never killed)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from faultdrill.faults.base import FaultContext
from faultdrill.faults.errors import ConfigError
from faultdrill.faults.flood import ClientFloodFault, read_stats
from faultdrill.faults.procid import pid_alive, process_start_ticks
from faultdrill.faults.topology import ServiceHandle, Topology
from faultdrill.target_service.ratelimit import Limit, RateLimiter, RateLimitTable

REPO = Path(__file__).resolve().parents[3]


def limited_handler() -> type[BaseHTTPRequestHandler]:
    """A keep-alive HTTP/1.1 server answering like the target: the real limiter (2 rps per client)."""
    limiter = RateLimiter(RateLimitTable(), default=Limit(rps=2, burst=2))

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            raw = [(k.lower().encode(), v.encode()) for k, v in self.headers.items()]
            decision = limiter.check(raw)
            body = b'{"ok": true}' if decision.allowed else b'{"error": "rate limit exceeded"}'
            self.send_response(200 if decision.allowed else 429)
            for name, value in decision.headers.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    return Handler


def context(tmp_path: Path, url: str) -> FaultContext:
    topo = Topology(services={
        "replica-0": ServiceHandle(name="replica-0", role="replica", url=url),
        "remote": ServiceHandle(name="remote", role="other", url="http://10.1.2.3:80"),
    })  # fmt: skip
    return FaultContext.create(tmp_path / "state", topology=topo)


def test_config_is_validated_with_did_you_mean() -> None:
    fault = ClientFloodFault()
    with pytest.raises(ConfigError) as err:
        fault.parse_config({"client_id": "x", "rsp": 10})
    assert err.value.suggestion == "rps"
    with pytest.raises(ConfigError, match="less than or equal to 5000"):
        fault.parse_config({"rps": 10_000})
    with pytest.raises(ConfigError, match="client_id"):
        fault.parse_config({"client_id": "bad id with spaces"})


def test_preflight_refuses_anything_but_loopback(tmp_path: Path) -> None:
    fault, ctx = ClientFloodFault(), context(tmp_path, "http://127.0.0.1:9")
    assert fault.preflight(fault.parse_config({"target": "replica-0"}), ctx) == []
    problems = fault.preflight(fault.parse_config({"target": "remote"}), ctx)
    assert [p.code for p in problems] == ["not_loopback"]
    with pytest.raises(ConfigError, match="unknown target 'replica-9'"):
        fault.preflight(fault.parse_config({"target": "replica-9"}), ctx)


def test_flood_is_measured_and_rolled_back_from_a_fresh_process(
    tmp_path: Path, serve_http: Callable[[type[BaseHTTPRequestHandler]], str]
) -> None:
    url = serve_http(limited_handler())
    fault, ctx = ClientFloodFault(), context(tmp_path, url)
    config = fault.parse_config({"target": "replica-0", "client_id": "batch", "rps": 40, "concurrency": 4,
                                 "duration_s": 30})  # fmt: skip
    injection = fault.inject(config, ctx)
    pid, start = injection.undo["pid"], injection.undo["pid_start"]
    assert pid_alive(pid, start) and ctx.ledger.get(injection.id) is not None
    verified = fault.verify(injection, ctx)
    assert verified.effective, verified.message
    assert verified.details["achieved_rps"] >= 20
    assert verified.details["limited"] > 0 and verified.details["retry_after"] == verified.details["limited"]
    # Another process (as after a crash of this one): `faultdrill rollback --pending --force`.
    env = {**os.environ, "FAULTDRILL_STATE_DIR": str(ctx.state_dir)}
    done = subprocess.run([sys.executable, "-m", "faultdrill", "rollback", "--pending", "--force"], env=env,
                          capture_output=True, text=True, timeout=60, cwd=REPO)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert injection.id in done.stdout
    assert not pid_alive(pid, start)
    assert ctx.ledger.get(injection.id) is None
    assert read_stats(injection.undo["stats_file"]) is None
    fault.undo(injection, ctx)  # idempotent: nothing left to stop


def test_a_recycled_pid_is_never_killed(tmp_path: Path) -> None:
    fault, ctx = ClientFloodFault(), context(tmp_path, "http://127.0.0.1:9")
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        config = fault.parse_config({"target": "replica-0", "duration_s": 5})
        record = fault.new_injection(config, ctx, mode="constant", target="replica-0", undo={
            "url": "http://127.0.0.1:9", "client_id": "x", "stats_file": str(tmp_path / "none.json"), "tag": "t",
            "pid": bystander.pid, "pid_start": (process_start_ticks(bystander.pid) or 0) + 1})  # fmt: skip
        fault.rollback(record, ctx)
        time.sleep(0.1)
        assert bystander.poll() is None  # same pid, other start time: not ours
    finally:
        bystander.kill()
        bystander.wait()


def test_the_worker_stops_by_itself_at_its_deadline(tmp_path: Path) -> None:
    stats = tmp_path / "stats.json"
    proc = subprocess.Popen([sys.executable, "-m", "faultdrill.faults.flood_worker", "--url", "http://127.0.0.1:9",
                             "--client-id", "x", "--rps", "5", "--concurrency", "1",
                             "--deadline", f"{time.time() + 0.5:.3f}", "--stats", str(stats)], cwd=REPO)  # fmt: skip
    assert proc.wait(timeout=20) == 0
    doc = read_stats(stats)
    assert doc is not None and doc["done"] is True and doc["errors"] > 0  # nothing listens on port 9
    refused = subprocess.run([sys.executable, "-m", "faultdrill.faults.flood_worker", "--url", "http://10.1.2.3:80",
                              "--client-id", "x", "--rps", "5", "--deadline", "0", "--stats", str(stats)],
                             capture_output=True, text=True, timeout=20, cwd=REPO)  # fmt: skip
    assert refused.returncode != 0 and "only http:// on loopback" in refused.stderr
