"""Crash safety end to end: faults injected by a process that is then SIGKILLed are undone by
the real ``faultdrill rollback --pending`` command, checked from the system, not the ledger.

(Each fault family also has its own crash test in ``tests/unit/faults``; this one drives the
CLI a user would run, with several faults in effect at once.)
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from faultdrill.experiments.platforms.local.stack import LocalStack
from faultdrill.faults.netns import list_rules

pytestmark = [pytest.mark.slow, pytest.mark.root]
ROOT = Path(__file__).resolve().parents[2]

CHILD = r"""
import json, sys, time
from pathlib import Path
from faultdrill.faults.base import FaultContext, Scope
from faultdrill.faults.registry import FaultRegistry
from faultdrill.faults.topology import Topology

spec = json.loads(Path(sys.argv[1]).read_text())
scope = Scope(pids=frozenset(spec["scope"]["pids"]), cgroups=frozenset(spec["scope"]["cgroups"]),
              netns=frozenset(spec["scope"]["netns"]), paths=frozenset(spec["scope"]["paths"]),
              ports=frozenset(spec["scope"]["ports"]))
ctx = FaultContext.create(spec["state_dir"], scope=scope, topology=Topology.model_validate(spec["topology"]))
registry = FaultRegistry()
registry.load_entry_points()
for name, params in spec["faults"]:
    fault = registry.get(name)()
    fault.inject(fault.parse_config({**params, "duration_s": 600}), ctx)
    print("injected", name, flush=True)
print("all-injected", flush=True)
time.sleep(600)
"""

# In injection order; the partition comes last (it cuts the path the dependency lever uses),
# and rollback --pending undoes newest first.
FAULTS = [
    ("dependency_outage", {"target": "feature-store", "mode": "errors", "error_rate": 1.0}),
    ("network_degradation", {"target": "feature-store-proxy", "mode": "latency", "latency_ms": 300}),
    ("cert_expiry", {"target": "feature-store", "mode": "wrong_ca"}),
    ("gpu_memory_exhaustion", {"target": "replica-0", "mode": "in_process", "leave_free_mib": 0}),
    ("process_freeze", {"target": "replica-1", "mode": "sigstop"}),
    ("network_partition", {"target": "feature-store", "action": "reject"}),
]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _proc_state(pid: int) -> str:
    """'stopped' (SIGSTOP/ptrace: T, t) or 'running' (R, S, D...: whatever the scheduler shows at the instant)."""
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return "stopped" if state in ("T", "t") else "running"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces and iptables")
    with LocalStack(tmp_path_factory.mktemp("crash"), replicas=2, feature_store_netns=True) as s:
        yield s


def _system_snapshot(stack: LocalStack, reach_store: bool = True) -> dict[str, object]:
    topo = stack.topology()
    store = topo.services["feature-store"]
    proxy = topo.services["feature-store-proxy"]
    admin = topo.services["replica-0"]
    token = admin.admin_token()
    fs_token = store.admin_token()
    held = httpx.get(f"{admin.admin_url}/admin/state", headers={"Authorization": f"Bearer {token}"},
                     timeout=5).json()["device_memory_held_bytes"]  # fmt: skip
    import ssl

    ca = ssl.create_default_context(cafile=str(stack.pki.ca.cert))
    levers = None
    if reach_store:  # through the edge the replicas use; partitioned while the faults are in
        levers = httpx.get(f"{store.admin_url}/admin/faults", verify=ca, timeout=5,
                           headers={"Authorization": f"Bearer {fs_token}"}).json()  # fmt: skip
    ptoken = proxy.admin_token()
    mode = httpx.get(f"{proxy.control_url}/state", headers={"Authorization": f"Bearer {ptoken}"},
                     timeout=5).json()["mode"]  # fmt: skip
    assert store.netns and store.cert_file and store.key_file
    return {
        "cert": _sha(store.cert_file),
        "key": _sha(store.key_file),
        "rules": list_rules(store.netns),
        "held": held,
        "levers": levers,
        "proxy_mode": mode["mode"] if isinstance(mode, dict) else mode,
        "replica1_state": _proc_state(topo.services["replica-1"].pid or 0),
    }


def test_sigkilled_injector_is_undone_by_rollback_pending(stack, tmp_path):
    before = _system_snapshot(stack)
    state_dir = tmp_path / "state"
    scope = stack.scope()
    spec = {
        "state_dir": str(state_dir),
        "topology": stack.topology().model_dump(mode="json"),
        "scope": {k: sorted(getattr(scope, k)) for k in ("pids", "cgroups", "netns", "paths", "ports")},
        "faults": FAULTS,
    }
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(spec_file)], stdout=subprocess.PIPE, text=True,
                             env=env, cwd=ROOT)  # fmt: skip
    assert child.stdout is not None
    lines = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = child.stdout.readline()
        if not line:
            break
        lines.append(line.strip())
        if line.startswith("all-injected"):
            break
    assert lines and lines[-1] == "all-injected", lines
    time.sleep(0.5)  # hot reload picks up the certificate swap
    during = _system_snapshot(stack, reach_store=False)
    # Every fault is really in effect, seen from the system.
    assert during["cert"] != before["cert"] and during["rules"] and during["held"] > 0
    assert during["proxy_mode"] == "latency"
    assert during["replica1_state"] == "stopped"

    child.send_signal(signal.SIGKILL)
    child.wait(10)
    cli = [sys.executable, "-m", "faultdrill", "rollback", "--pending"]
    run_env = {**env, "FAULTDRILL_STATE_DIR": str(state_dir)}
    first = subprocess.run(cli, capture_output=True, text=True, env=run_env, cwd=ROOT, timeout=120)
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.count("rolled_back") == len(FAULTS), first.stdout
    after = _system_snapshot(stack)
    assert after == before
    second = subprocess.run(cli, capture_output=True, text=True, env=run_env, cwd=ROOT, timeout=60)
    assert second.returncode == 0 and "nothing pending" in second.stdout
    assert not list((state_dir / "ledger").glob("*.json"))
