"""dependency_outage for real: the feature store killed, hung, refusing, failing, slow."""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from faults_helpers import child_env, wait_for_line

from faultdrill.experiments.platforms.local.stack import LocalStack
from faultdrill.faults.base import FaultContext, Scope
from faultdrill.faults.dependency import DependencyOutageFault
from faultdrill.faults.errors import BlastRadiusError, ConfigError, RollbackError
from faultdrill.faults.ledger import RollbackOutcome, rollback_pending
from faultdrill.faults.network import NetworkDegradationFault, timed_exchange
from faultdrill.faults.procid import process_start_ticks
from faultdrill.faults.proxy_control import ProxyControl
from faultdrill.faults.registry import FaultRegistry
from faultdrill.faults.topology import ServiceHandle, Topology


def _registry() -> FaultRegistry:
    registry = FaultRegistry()
    registry.register(DependencyOutageFault)
    registry.register(NetworkDegradationFault)
    return registry


def test_bad_configs_are_located_and_inject_nothing(tmp_path: Path) -> None:
    fault = DependencyOutageFault()
    with pytest.raises(ConfigError, match="did you mean 'error_rate'") as err:
        fault.parse_config({"target": "feature-store", "mode": "errors", "eror_rate": 0.5})
    assert err.value.field == "eror_rate"
    with pytest.raises(ConfigError, match="delay_ms"):
        fault.parse_config({"target": "feature-store", "mode": "slow", "delay_ms": "lots"})
    with pytest.raises(ConfigError, match="error_status"):
        fault.parse_config({"target": "feature-store", "mode": "errors", "error_status": 404})
    with pytest.raises(ConfigError, match="mode"):
        fault.parse_config({"target": "feature-store", "mode": "exploded"})
    topo = Topology(services={"feature-store": ServiceHandle(
        name="feature-store", role="feature_store", pid=1, port=1, url="https://127.0.0.1:1")})  # fmt: skip
    ctx = FaultContext.create(tmp_path, topology=topo)
    with pytest.raises(ConfigError, match="did you mean 'feature-store'"):
        fault.inject(fault.parse_config({"target": "feature-stor", "mode": "hung"}), ctx)
    with pytest.raises(ConfigError, match="needs a fault proxy"):
        fault.inject(fault.parse_config({"target": "feature-store", "mode": "refusing"}), ctx)
    with pytest.raises(BlastRadiusError, match="pid '1'"):  # pid 1 was not started by us
        fault.inject(fault.parse_config({"target": "feature-store", "mode": "hung"}), ctx)
    assert ctx.ledger.ids() == []


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(tmp_path_factory.mktemp("depstack"), replicas=1) as st:
        yield st


@pytest.fixture
def ctx(stack: LocalStack, tmp_path: Path) -> FaultContext:
    # Fresh each test: a restarted store has a new pid.
    return FaultContext.create(tmp_path / "state", scope=stack.scope(), topology=stack.topology(),
                               supervisor=stack)  # fmt: skip


def _store_probe(stack: LocalStack, timeout: float = 2.0) -> Any:
    parts = urlsplit(stack.topology().services["feature-store"].url)
    tls = ssl.create_default_context(cafile=str(stack.pki.ca.cert))
    return timed_exchange(str(parts.hostname), int(parts.port or 0), ssl_context=tls,
                          path="/v1/features/u1", timeout=timeout)  # fmt: skip


def _healthy_ms(stack: LocalStack, limit_s: float = 10.0) -> float:
    started = time.perf_counter()
    for _ in range(2000):
        ex = _store_probe(stack, timeout=1.0)
        if (ex.outcome == "ok" and ex.status == 200) or time.perf_counter() - started > limit_s:
            break
        time.sleep(0.005)
    return round((time.perf_counter() - started) * 1000, 1)


def _levers(stack: LocalStack) -> dict[str, Any]:
    store = stack.topology().services["feature-store"]
    response = httpx.get(f"{store.admin_url}/admin/faults", headers={"Authorization": f"Bearer {store.admin_token()}"},
                         verify=ssl.create_default_context(cafile=str(stack.pki.ca.cert)), timeout=3)  # fmt: skip
    data: dict[str, Any] = response.json()
    return data


def _run(fault: DependencyOutageFault, ctx: FaultContext, stack: LocalStack, raw: dict[str, Any]) -> Any:
    cfg = fault.parse_config({"target": "feature-store", **raw})
    assert fault.preflight(cfg, ctx) == []
    assert fault.plan(cfg, ctx)
    inj = fault.inject(cfg, ctx)
    t0 = time.perf_counter()
    try:
        check = fault.verify(inj, ctx)
        effect_ms = (time.perf_counter() - t0) * 1000
        assert check.effective, (check.message, check.details)
    finally:
        fault.undo(inj, ctx)
    healthy_ms = _healthy_ms(stack)
    print(f"\nFIGURE dependency_outage/{raw['mode']}: verify {effect_ms:.1f} ms, rollback->healthy {healthy_ms} ms")
    fault.rollback(inj, ctx)  # idempotent
    assert ctx.ledger.ids() == []
    return check


@pytest.mark.slow
def test_errors_open_the_replica_breaker_then_clear(stack: LocalStack, ctx: FaultContext) -> None:
    fault = DependencyOutageFault()
    cfg = fault.parse_config({"target": "feature-store", "mode": "errors", "error_status": 502})
    inj = fault.inject(cfg, ctx)
    try:
        check = fault.verify(inj, ctx)
        assert check.effective and check.details["errors"] >= 1, check.details
        replica = ctx.topology.get("replica-0")
        body: dict[str, Any] = {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}]}
        breaker = "closed"
        for i in range(30):  # distinct entities: no cache hit hides the failures
            body["parameters"] = {"entity_id": f"e{i}"}
            assert httpx.post(f"{replica.url}/v2/models/digits/infer", json=body, timeout=5).status_code == 200
            breaker = httpx.get(f"{replica.url}/v2", timeout=2).json()["dependency"]["breaker"]
            if breaker == "open":
                break
        assert breaker == "open"  # the replica saw it, and degraded instead of failing
        assert fault.verify(inj, ctx).details["replicas"]["replica-0"]["breaker"] == "open"
    finally:
        fault.undo(inj, ctx)
    assert _levers(stack)["error_rate"] == 0.0
    print(f"\nFIGURE dependency_outage/errors: rollback->healthy {_healthy_ms(stack)} ms")


@pytest.mark.slow
def test_slow(stack: LocalStack, ctx: FaultContext) -> None:
    check = _run(DependencyOutageFault(), ctx, stack, {"mode": "slow", "delay_ms": 300})
    assert check.details["direct"]["total_ms"] >= 270
    assert _levers(stack)["delay_ms"] == 0.0


@pytest.mark.slow
def test_hung(stack: LocalStack, ctx: FaultContext) -> None:
    check = _run(DependencyOutageFault(), ctx, stack, {"mode": "hung"})
    assert check.details["direct"]["connected"] and check.details["direct"]["outcome"] == "timeout"


@pytest.mark.slow
def test_refusing(stack: LocalStack, ctx: FaultContext) -> None:
    check = _run(DependencyOutageFault(), ctx, stack, {"mode": "refusing"})
    assert check.details["via_proxy"]["outcome"] in ("refused", "reset")
    proxy = ctx.topology.get("feature-store-proxy")
    assert ProxyControl(str(proxy.control_url), proxy.admin_token()).state()["mode"]["mode"] == "passthrough"


@pytest.mark.slow
def test_killed_with_supervisor_restarts(stack: LocalStack, ctx: FaultContext) -> None:
    old_pid = ctx.topology.get("feature-store").pid
    _run(DependencyOutageFault(), ctx, stack, {"mode": "killed"})
    assert stack.topology().services["feature-store"].pid != old_pid


@pytest.mark.slow
def test_killed_without_supervisor_keeps_record_until_back(stack: LocalStack, ctx: FaultContext) -> None:
    ctx.supervisor = None  # the crash case: nobody here can start the store
    fault = DependencyOutageFault()
    inj = fault.inject(fault.parse_config({"target": "feature-store", "mode": "killed"}), ctx)
    assert fault.verify(inj, ctx).effective
    with pytest.raises(RollbackError, match="no supervisor"):
        fault.undo(inj, ctx)
    assert ctx.ledger.ids() == [inj.id]  # still visible
    stack.start("feature-store")
    fault.undo(inj, ctx)
    assert ctx.ledger.ids() == []


CHILD = textwrap.dedent(
    """
    import json, sys, time
    from faultdrill.faults.base import FaultContext, Scope
    from faultdrill.faults.dependency import DependencyOutageFault
    from faultdrill.faults.topology import Topology
    spec = json.loads(sys.argv[1])
    ctx = FaultContext.create(spec["state"], scope=Scope(pids=frozenset(spec["pids"]),
                              ports=frozenset(spec["ports"])),
                              topology=Topology.model_validate_json(spec["topology"]))
    fault = DependencyOutageFault()
    for mode in spec["modes"]:
        fault.inject(fault.parse_config({"target": "feature-store", "mode": mode,
                                         "delay_ms": 2000}), ctx)
    print("injected", flush=True)
    time.sleep(60)
    """
)


def _crash(ctx: FaultContext, modes: list[str]) -> tuple[str, list[Any]]:
    """Inject ``modes`` in a child, SIGKILL it, roll back; (store state while injected, results)."""
    spec = {"state": str(ctx.state_dir), "topology": ctx.topology.model_dump_json(), "modes": modes,
            "pids": sorted(ctx.scope.pids), "ports": sorted(ctx.scope.ports)}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(spec)], env=child_env(),
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_for_line(proc, "injected", timeout=60)
        state_during = _proc_state(ctx.topology.get("feature-store").pid)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    results = rollback_pending(_registry(), FaultContext.create(ctx.state_dir))
    return state_during, results


def _proc_state(pid: int | None) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


@pytest.mark.slow
def test_crash_while_hung_then_rollback_pending(stack: LocalStack, ctx: FaultContext) -> None:
    pid = ctx.topology.get("feature-store").pid
    assert pid is not None
    ticks = process_start_ticks(pid)
    state_during, results = _crash(ctx, ["hung"])
    assert state_during == "T"
    assert [r.outcome for r in results] == [RollbackOutcome.ROLLED_BACK], results
    # From the system: the same process runs again and answers.
    assert _proc_state(pid) in ("S", "R") and process_start_ticks(pid) == ticks
    assert _store_probe(stack).status == 200
    assert rollback_pending(_registry(), FaultContext.create(ctx.state_dir)) == []


@pytest.mark.slow
def test_crash_with_levers_and_refusal_then_rollback_pending(stack: LocalStack, ctx: FaultContext) -> None:
    _, results = _crash(ctx, ["slow", "refusing"])
    assert [r.outcome for r in results] == [RollbackOutcome.ROLLED_BACK] * 2, results
    assert _levers(stack) == {"error_rate": 0.0, "error_status": 503, "delay_ms": 0.0}
    proxy = ctx.topology.get("feature-store-proxy")
    assert ProxyControl(str(proxy.control_url), proxy.admin_token()).state()["mode"]["mode"] == "passthrough"
    via = timed_exchange("127.0.0.1", int(proxy.port or 0), path="/v1/features/u1",
                         ssl_context=ssl.create_default_context(cafile=str(stack.pki.ca.cert)))  # fmt: skip
    assert via.status == 200 and via.total_ms < 1000
    assert rollback_pending(_registry(), FaultContext.create(ctx.state_dir)) == []


def test_foreign_store_is_refused(tmp_path: Path) -> None:
    topo = Topology(services={"feature-store": ServiceHandle(
        name="feature-store", role="feature_store", pid=1, port=443, url="https://127.0.0.1:443")})  # fmt: skip
    ctx = FaultContext.create(tmp_path, topology=topo, scope=Scope().with_ports(443))
    fault = DependencyOutageFault()
    cfg = fault.parse_config({"target": "feature-store", "mode": "killed"})
    assert "blast_radius" in [p.code for p in fault.preflight(cfg, ctx)]
    with pytest.raises(BlastRadiusError):
        fault.inject(cfg, ctx)
    assert ctx.ledger.ids() == []


def test_rollback_retries_a_store_that_is_briefly_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rolled back next to a certificate swap, the store's TLS fails for a moment: the levers still come off."""
    import faultdrill.faults.dependency as dep

    calls: list[str] = []

    def flaky(undo: dict, method: str, body: dict | None = None) -> httpx.Response:
        calls.append(method)
        if len(calls) < 3:
            raise httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] unable to get local issuer certificate")
        return httpx.Response(200, request=httpx.Request(method, "https://store/admin/faults"))

    monkeypatch.setattr(dep, "_admin", flaky)
    dep._admin_until({"name": "feature-store"}, "DELETE", within_s=5.0)
    assert calls == ["DELETE"] * 3
    calls.clear()
    with pytest.raises(httpx.ConnectError):  # bounded: a store that stays unreachable is an error
        dep._admin_until({"name": "feature-store"}, "DELETE", within_s=0.0)
    assert calls == ["DELETE"]
