"""process_kill and process_freeze against a real LocalStack replica (slow: real processes)."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from faults_helpers import start_python, wait_for_line

from faultdrill.experiments.platforms.local.stack import LocalStack
from faultdrill.faults.base import FaultContext, Scope
from faultdrill.faults.errors import BlastRadiusError, ConfigError
from faultdrill.faults.ledger import RollbackOutcome, rollback_pending
from faultdrill.faults.process import ProcessFreezeFault, ProcessKillFault, process_state
from faultdrill.faults.procid import pid_alive
from faultdrill.faults.registry import FaultRegistry
from faultdrill.faults.topology import ServiceHandle, Topology

pytestmark = pytest.mark.slow

CHILD = """
import time
from faultdrill.faults.base import FaultContext, Scope
from faultdrill.faults.topology import Topology
from faultdrill.faults.process import {cls}
topo = Topology.model_validate_json({topo!r})
ctx = FaultContext.create({state!r}, topology=topo, scope=Scope(pids=frozenset({pids!r})))
fault = {cls}()
inj = fault.inject(fault.parse_config({cfg!r}), ctx)
print("injected", inj.id, flush=True)
time.sleep(60)
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    # A short stall threshold so a frozen worker fails liveness in 0.5 s, not 3 s.
    with LocalStack(tmp_path_factory.mktemp("pstack"), with_proxy=False,
                    replica_env={"FAULTDRILL_LIVENESS_STALL_S": "0.5"}) as s:  # fmt: skip
        yield s


@pytest.fixture
def ctx(stack: LocalStack, tmp_path: Path) -> FaultContext:
    stack.start("replica-0")  # a previous test may have left it killed
    return FaultContext.create(tmp_path / "state", topology=stack.topology(), scope=stack.scope(),
                               supervisor=stack)  # fmt: skip


@pytest.fixture
def registry() -> FaultRegistry:
    reg = FaultRegistry()
    reg.register(ProcessKillFault, source="test")
    reg.register(ProcessFreezeFault, source="test")
    return reg


def _poll(check: object, timeout: float = 10.0) -> float:
    """Seconds until ``check()`` is true (bounded by count and time)."""
    t0 = time.monotonic()
    for _ in range(int(timeout / 0.005)):
        if check():  # type: ignore[operator]
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            break
        time.sleep(0.005)
    raise AssertionError(f"condition not met within {timeout}s")


def _status(url: str, timeout: float = 1.0) -> int | None:
    try:
        return httpx.get(url, timeout=timeout).status_code
    except httpx.HTTPError:
        return None


def test_bad_configs_are_located_and_inject_nothing(ctx: FaultContext) -> None:
    fault = ProcessFreezeFault()
    with pytest.raises(ConfigError) as err:
        fault.parse_config({"target": "replica-0", "mdoe": "sigstop"})
    assert "unknown key 'mdoe'" in str(err.value) and "did you mean 'mode'" in str(err.value)
    with pytest.raises(ConfigError, match=r"^mode: "):
        fault.parse_config({"target": "replica-0", "mode": "sigint"})
    with pytest.raises(ConfigError, match="duration_s"):
        ProcessKillFault().parse_config({"target": "replica-0", "duration_s": "soon"})
    cfg = fault.parse_config({"target": "replica-O"})
    with pytest.raises(ConfigError, match="did you mean 'replica-0'"):
        fault.inject(cfg, ctx)
    pid = ctx.topology.get("replica-0").pid
    assert ctx.ledger.ids() == [] and pid is not None and process_state(pid) != "T"


def test_refuses_a_pid_faultdrill_did_not_start(tmp_path: Path) -> None:
    topo = Topology(services={"init": ServiceHandle(name="init", role="other", pid=1)})
    ctx = FaultContext.create(tmp_path, topology=topo, scope=Scope())
    fault = ProcessKillFault()
    cfg = fault.parse_config({"target": "init"})
    assert [p.code for p in fault.preflight(cfg, ctx)] == ["blast_radius"]
    with pytest.raises(BlastRadiusError, match="refused to touch pid '1'"):
        fault.inject(cfg, ctx)
    assert ctx.ledger.ids() == []


@pytest.mark.parametrize("mode", ["sigkill", "sigterm"])
def test_kill_then_supervisor_restarts(stack: LocalStack, ctx: FaultContext, mode: str) -> None:
    fault = ProcessKillFault()
    cfg = fault.parse_config({"target": "replica-0", "mode": mode})
    assert fault.preflight(cfg, ctx) == [] and "kill -" in fault.plan(cfg, ctx)[0]
    inj = fault.inject(cfg, ctx)
    observed = _poll(lambda: fault.verify(inj, ctx).effective)
    details = fault.verify(inj, ctx).details
    assert details["gone"] and details["exit_status"] == (-9 if mode == "sigkill" else details["exit_status"])
    t0 = time.monotonic()
    fault.undo(inj, ctx)
    url = stack.handle("replica-0").url
    _poll(lambda: _status(f"{url}/v2/health/ready") == 200, 60)
    print(f"\nprocess_kill {mode}: inject->gone {observed * 1000:.0f} ms, "
          f"rollback->ready {(time.monotonic() - t0) * 1000:.0f} ms")
    assert stack.handle("replica-0").pid != inj.undo["pid"] and ctx.ledger.ids() == []


def test_sigstop_freezes_connections_and_sigcont_heals(ctx: FaultContext) -> None:
    fault = ProcessFreezeFault()
    handle = ctx.topology.get("replica-0")
    inj = fault.inject(fault.parse_config({"target": "replica-0", "mode": "sigstop"}), ctx)
    try:
        observed = _poll(lambda: fault.verify(inj, ctx).effective)
        assert _status(f"{handle.url}/v2/health/live", timeout=0.5) is None  # hangs, as a frozen pod
    finally:
        t0 = time.monotonic()
        fault.undo(inj, ctx)
    healed = _poll(lambda: _status(f"{handle.url}/v2/health/live") == 200)
    print(f"\nprocess_freeze sigstop: inject->T {observed * 1000:.0f} ms, rollback->live {healed * 1000:.0f} ms")
    assert handle.pid is not None and process_state(handle.pid) in ("R", "S") and time.monotonic() - t0 < 5
    fault.rollback(inj, ctx)  # idempotent


def test_worker_freeze_fails_liveness_while_alive(ctx: FaultContext) -> None:
    fault = ProcessFreezeFault()
    handle = ctx.topology.get("replica-0")
    inj = fault.inject(fault.parse_config({"target": "replica-0", "mode": "worker", "duration_s": 30}), ctx)
    try:
        observed = _poll(lambda: fault.verify(inj, ctx).effective)
        assert handle.pid is not None and pid_alive(handle.pid)
    finally:
        fault.undo(inj, ctx)
    healed = _poll(lambda: _status(f"{handle.url}/v2/health/live") == 200)
    print(f"\nprocess_freeze worker: inject->liveness 503 {observed * 1000:.0f} ms, "
          f"rollback->live {healed * 1000:.0f} ms")
    fault.rollback(inj, ctx)


def _crash(ctx: FaultContext, cls: str, cfg: dict[str, object]) -> None:
    pids = sorted(ctx.scope.pids)
    topo = Topology(services={"replica-0": ctx.topology.get("replica-0")}).model_dump_json()
    proc = start_python(CHILD.format(cls=cls, topo=topo, state=str(ctx.state_dir), pids=pids, cfg=cfg))
    try:
        wait_for_line(proc, "injected", timeout=30)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.parametrize("mode", ["sigstop", "worker"])
def test_crash_mid_freeze_then_rollback_pending(ctx: FaultContext, registry: FaultRegistry, mode: str) -> None:
    handle = ctx.topology.get("replica-0")
    assert handle.pid is not None
    _crash(ctx, "ProcessFreezeFault", {"target": "replica-0", "mode": mode, "duration_s": 60})
    if mode == "sigstop":
        assert process_state(handle.pid) == "T"
    else:
        _poll(lambda: _status(f"{handle.url}/v2/health/live") == 503)
    fresh = FaultContext.create(ctx.state_dir)  # a new process: empty topology, no supervisor
    results = rollback_pending(registry, fresh)
    assert [r.outcome for r in results] == [RollbackOutcome.ROLLED_BACK], results
    # The system, not the ledger: running again, and live.
    assert process_state(handle.pid) in ("R", "S")
    _poll(lambda: _status(f"{handle.url}/v2/health/live") == 200)
    assert rollback_pending(registry, fresh) == []


def test_crash_mid_kill_then_rollback_pending(stack: LocalStack, ctx: FaultContext, registry: FaultRegistry) -> None:
    handle = ctx.topology.get("replica-0")
    assert handle.pid is not None
    _crash(ctx, "ProcessKillFault", {"target": "replica-0", "mode": "sigkill"})
    fresh = FaultContext.create(ctx.state_dir)
    results = rollback_pending(registry, fresh)
    assert [r.outcome for r in results] == [RollbackOutcome.ROLLED_BACK], results
    # Without a supervisor nothing can be restarted (documented): the process stays gone,
    # and nothing else of the fault remains; the platform (here the test) restarts it.
    _poll(lambda: stack.exit_status("replica-0") == -9)
    assert not pid_alive(handle.pid)
    assert rollback_pending(registry, fresh) == []
    stack.start("replica-0")
