"""Proxy-edge network faults and kernel partitions of a named service, for real on LocalStack."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from faults_helpers import child_env, wait_for_line

from faultdrill.experiments.platforms.local.stack import LocalStack
from faultdrill.faults.base import FaultContext
from faultdrill.faults.errors import BlastRadiusError, ConfigError
from faultdrill.faults.ledger import RollbackOutcome, rollback_pending
from faultdrill.faults.netns import list_rules, netns_exec
from faultdrill.faults.network import NetworkDegradationFault, timed_exchange
from faultdrill.faults.partition import NetworkPartitionFault
from faultdrill.faults.proxy_control import ProxyControl
from faultdrill.faults.registry import FaultRegistry
from faultdrill.faults.topology import ServiceHandle, Topology

can_netns = os.geteuid() == 0 and bool(shutil.which("ip")) and bool(shutil.which("iptables"))


def _registry() -> FaultRegistry:
    registry = FaultRegistry()
    registry.register(NetworkDegradationFault)
    registry.register(NetworkPartitionFault)
    return registry


# -- bad configs: located, readable, nothing injected --------------------------------------
def _proxy_topology() -> Topology:
    return Topology(services={"feature-store-proxy": ServiceHandle(
        name="feature-store-proxy", role="proxy", pid=1, port=1, url="tcp://127.0.0.1:1",
        control_url="http://127.0.0.1:1", admin_token_file=Path("/nonexistent"))})  # fmt: skip


def test_bad_configs_are_located_and_inject_nothing(tmp_path: Path) -> None:
    fault = NetworkDegradationFault()
    with pytest.raises(ConfigError, match="did you mean 'latency_ms'") as err:
        fault.parse_config({"target": "feature-store-proxy", "mode": "latency", "latncy_ms": 5})
    assert err.value.field == "latncy_ms"
    with pytest.raises(ConfigError, match="latency_ms"):
        fault.parse_config({"target": "feature-store-proxy", "mode": "latency", "latency_ms": "fast"})
    with pytest.raises(ConfigError, match="needs latency_ms > 0"):
        fault.parse_config({"target": "feature-store-proxy", "mode": "latency"})
    with pytest.raises(ConfigError, match="bandwidth_bps"):
        fault.parse_config({"target": "feature-store-proxy", "mode": "bandwidth"})
    with pytest.raises(ConfigError, match="mode"):
        fault.parse_config({"target": "feature-store-proxy", "mode": "teleport"})
    ctx = FaultContext.create(tmp_path, topology=_proxy_topology())
    cfg = fault.parse_config({"target": "feature-store-prxy", "mode": "blackhole"})
    with pytest.raises(ConfigError, match="did you mean 'feature-store-proxy'"):
        fault.inject(cfg, ctx)
    with pytest.raises(ConfigError, match="unknown target"):
        fault.plan(cfg, ctx)
    part = NetworkPartitionFault()
    with pytest.raises(ConfigError, match="exactly one of"):
        part.parse_config({"namespace": "fd-a", "target": "feature-store"})
    with pytest.raises(ConfigError, match="did you mean 'feature-store-proxy'"):
        part.inject(part.parse_config({"target": "feature-store-proxi"}), ctx)
    with pytest.raises(ConfigError, match="no network namespace"):
        part.inject(part.parse_config({"target": "feature-store-proxy"}), ctx)
    # Outside the scope: refused before anything is touched.
    with pytest.raises(BlastRadiusError, match="pid"):
        fault.inject(fault.parse_config({"target": "feature-store-proxy", "mode": "drop"}), ctx)
    assert ctx.ledger.ids() == []


# -- the real stack -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(tmp_path_factory.mktemp("netstack"), replicas=0, feature_store_netns=can_netns) as st:
        yield st
    if can_netns:  # the namespace went with the stack
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert str(st.topology().services["feature-store"].netns) not in listed


@pytest.fixture
def ctx(stack: LocalStack, tmp_path: Path) -> FaultContext:
    return FaultContext.create(tmp_path / "state", scope=stack.scope(), topology=stack.topology(),
                               supervisor=stack)  # fmt: skip


def _tls(stack: LocalStack) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(stack.pki.ca.cert))


def _through_proxy(stack: LocalStack, timeout: float = 2.0) -> Any:
    port = stack.topology().services["feature-store-proxy"].port
    assert port is not None
    return timed_exchange("127.0.0.1", port, ssl_context=_tls(stack), timeout=timeout)


def _ms_until_healthy(probe: Any, limit_s: float = 5.0) -> float:
    started = time.perf_counter()
    for _ in range(1000):
        if probe().outcome == "ok" or time.perf_counter() - started > limit_s:
            break
        time.sleep(0.005)
    return round((time.perf_counter() - started) * 1000, 1)


PROXY_CASES = [
    ("latency", {"latency_ms": 100, "jitter_ms": 10}),
    ("bandwidth", {"bandwidth_bps": 2000}),
    ("blackhole", {}),
    ("reset", {"reset_after_bytes": 64}),
    ("slow_close", {"close_delay_ms": 400}),
    ("refuse", {}),
    ("drop", {}),
]


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "params"), PROXY_CASES, ids=[c[0] for c in PROXY_CASES])
def test_proxy_mode_injects_verifies_rolls_back(
    stack: LocalStack, ctx: FaultContext, mode: str, params: dict[str, Any]
) -> None:
    fault = NetworkDegradationFault()
    cfg = fault.parse_config({"target": "feature-store-proxy", "mode": mode, **params})
    assert fault.preflight(cfg, ctx) == []
    assert "PUT" in fault.plan(cfg, ctx)[0]
    inj = fault.inject(cfg, ctx)
    t0 = time.perf_counter()
    try:
        check = fault.verify(inj, ctx)
        effect_ms = (time.perf_counter() - t0) * 1000
        assert check.effective, check.message
        assert check.emulated
    finally:
        fault.undo(inj, ctx)
    healthy_ms = _ms_until_healthy(lambda: _through_proxy(stack))
    print(f"\nFIGURE network_degradation/{mode}: verify {effect_ms:.1f} ms "
          f"(probe {check.details['outcome']} {check.details['total_ms']} ms), "
          f"rollback->healthy {healthy_ms} ms")
    assert healthy_ms < 1000
    after = _through_proxy(stack)
    assert after.outcome == "ok" and after.status == 200
    fault.rollback(inj, ctx)  # idempotent
    assert ctx.ledger.ids() == []


@pytest.mark.slow
def test_dry_run_changes_nothing(stack: LocalStack, ctx: FaultContext) -> None:
    fault = NetworkDegradationFault()
    cfg = fault.parse_config({"target": "feature-store-proxy", "mode": "blackhole"})
    ctx.dry_run = True
    [line] = fault.plan(cfg, ctx)
    assert '"mode":"blackhole"' in line and "passthrough" in line
    with pytest.raises(Exception, match="dry-run"):
        fault.inject(cfg, ctx)
    handle = ctx.topology.get("feature-store-proxy")
    assert ProxyControl(str(handle.control_url), handle.admin_token()).state()["mode"]["mode"] == "passthrough"
    assert ctx.ledger.ids() == []


def needs_netns(test: Callable[..., None]) -> Callable[..., None]:
    """Root (skip without: this machine cannot), and iproute2 + iptables (`make setup`: with CI=true, required)."""
    return pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces")(
        pytest.mark.tools("ip", "iptables")(test))


@pytest.mark.slow
@needs_netns
def test_kernel_drop_on_named_target_hits_existing_connections(stack: LocalStack, ctx: FaultContext) -> None:
    store = ctx.topology.get("feature-store")
    host, port = str(urlsplit(store.url).hostname), int(urlsplit(store.url).port or 0)
    fault = NetworkPartitionFault()
    cfg = fault.parse_config({"target": "feature-store", "action": "drop"})
    assert fault.preflight(cfg, ctx) == []
    assert all(line.startswith(f"ip netns exec {store.netns} iptables -I") for line in fault.plan(cfg, ctx))
    keepalive = _tls(stack).wrap_socket(socket.create_connection((host, int(port)), timeout=1.0),
                                        server_hostname=host)  # fmt: skip
    inj = fault.inject(cfg, ctx)
    t0 = time.perf_counter()
    try:
        check = fault.verify(inj, ctx)
        effect_ms = (time.perf_counter() - t0) * 1000
        assert check.effective and check.details["probe"] == "timeout", check.message
        keepalive.settimeout(0.5)
        with pytest.raises(TimeoutError):  # an existing connection sees the partition
            keepalive.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            keepalive.recv(100)
    finally:
        fault.undo(inj, ctx)
        keepalive.close()
    healthy_ms = _ms_until_healthy(lambda: timed_exchange(host, int(port), ssl_context=_tls(stack)))
    print(f"\nFIGURE network_partition/drop(target): verify {effect_ms:.1f} ms "
          f"(probe {check.details['probe_ms']} ms), rollback->healthy {healthy_ms} ms")
    assert list_rules(str(store.netns)) == []


@pytest.mark.slow
@needs_netns
def test_kernel_reject_on_named_target_refuses(stack: LocalStack, ctx: FaultContext) -> None:
    fault = NetworkPartitionFault()
    inj = fault.inject(fault.parse_config({"target": "feature-store", "action": "reject",
                                           "direction": "ingress"}), ctx)  # fmt: skip
    t0 = time.perf_counter()
    try:
        check = fault.verify(inj, ctx)
        effect_ms = (time.perf_counter() - t0) * 1000
        assert check.effective and check.details["probe"] == "refused", check.message
        assert check.details["probe_ms"] < 100
        # Through the proxy the replicas see it too: the proxy's upstream connect is refused.
        assert _through_proxy(stack, timeout=1.0).outcome in ("refused", "reset")
    finally:
        fault.undo(inj, ctx)
    healthy_ms = _ms_until_healthy(lambda: _through_proxy(stack))
    print(f"\nFIGURE network_partition/reject(target): verify {effect_ms:.1f} ms, "
          f"rollback->healthy {healthy_ms} ms")
    assert _through_proxy(stack).outcome == "ok"


CHILD = textwrap.dedent(
    """
    import json, sys, time
    from faultdrill.faults.base import FaultContext, Scope
    from faultdrill.faults.network import NetworkDegradationFault
    from faultdrill.faults.partition import NetworkPartitionFault
    from faultdrill.faults.topology import Topology
    spec = json.loads(sys.argv[1])
    scope = Scope(pids=frozenset(spec["pids"]), ports=frozenset(spec["ports"]),
                  netns=frozenset(spec["netns"]))
    ctx = FaultContext.create(spec["state"], scope=scope,
                              topology=Topology.model_validate_json(spec["topology"]))
    net = NetworkDegradationFault()
    net.inject(net.parse_config({"target": "feature-store-proxy", "mode": "blackhole"}), ctx)
    if spec["netns"]:
        part = NetworkPartitionFault()
        part.inject(part.parse_config({"target": "feature-store", "action": "reject"}), ctx)
    print("injected", flush=True)
    time.sleep(60)
    """
)


@pytest.mark.slow
def test_crash_mid_fault_then_rollback_pending(stack: LocalStack, ctx: FaultContext) -> None:
    spec = {"state": str(ctx.state_dir), "topology": ctx.topology.model_dump_json(),
            "pids": sorted(ctx.scope.pids), "ports": sorted(ctx.scope.ports), "netns": sorted(ctx.scope.netns)}
    proc = _start_child(spec)
    store = ctx.topology.get("feature-store")
    try:
        wait_for_line(proc, "injected", timeout=60)
        assert _through_proxy(stack, timeout=0.5).outcome == "timeout"
        if store.netns:
            assert len(list_rules(store.netns)) == 2
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    results = rollback_pending(_registry(), FaultContext.create(ctx.state_dir))
    expected = 2 if store.netns else 1
    assert [r.outcome for r in results] == [RollbackOutcome.ROLLED_BACK] * expected, results
    # From the system: the proxy is back in passthrough, no rule is left, a real exchange works.
    handle = ctx.topology.get("feature-store-proxy")
    assert ProxyControl(str(handle.control_url), handle.admin_token()).state()["mode"]["mode"] == "passthrough"
    if store.netns:
        rules = subprocess.run(netns_exec(store.netns, ["iptables", "-S"]), capture_output=True, text=True).stdout
        assert "faultdrill:" not in rules
    assert _through_proxy(stack).outcome == "ok"
    assert rollback_pending(_registry(), FaultContext.create(ctx.state_dir)) == []


def _start_child(spec: dict[str, Any]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(spec)], env=child_env(),
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
