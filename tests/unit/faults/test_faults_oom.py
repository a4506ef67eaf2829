"""oom_kill against a real LocalStack replica in its own memory cgroup (root, cgroup memory controller)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from faults_helpers import start_python, wait_for_line

from faultdrill.experiments.platforms.local.stack import LocalStack
from faultdrill.faults.base import FaultContext, Scope
from faultdrill.faults.cgroups import MemoryCgroup, detect_memory_controller
from faultdrill.faults.errors import ConfigError
from faultdrill.faults.ledger import RollbackOutcome, rollback_pending
from faultdrill.faults.oom import OomKillFault
from faultdrill.faults.process import admin_request
from faultdrill.faults.procid import pid_alive
from faultdrill.faults.registry import FaultRegistry
from faultdrill.faults.topology import ServiceHandle, Topology

pytestmark = [
    pytest.mark.slow,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0 or detect_memory_controller() is None,
                       reason="needs root and a cgroup memory controller"),
]

MIB = 1024 * 1024
LIMIT = 700 * MIB

CHILD = """
import time
from faultdrill.faults.base import FaultContext, Scope
from faultdrill.faults.topology import ServiceHandle, Topology
from faultdrill.faults.oom import OomKillFault
topo = Topology.model_validate_json({topo!r})
ctx = FaultContext.create({state!r}, topology=topo,
                          scope=Scope(pids=frozenset({pids!r}), cgroups=frozenset({cgroups!r})))
fault = OomKillFault()
inj = fault.inject(fault.parse_config({cfg!r}), ctx)
print("injected", inj.id, flush=True)
time.sleep(60)
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(tmp_path_factory.mktemp("ostack"), with_proxy=False, memory_limit_bytes=LIMIT) as s:
        yield s


@pytest.fixture
def ctx(stack: LocalStack, tmp_path: Path) -> FaultContext:
    stack.start("replica-0")  # killed by the previous test: the caller restarts, not rollback
    return FaultContext.create(tmp_path / "state", topology=stack.topology(), scope=stack.scope(),
                               supervisor=stack)  # fmt: skip


@pytest.fixture
def registry() -> FaultRegistry:
    reg = FaultRegistry()
    reg.register(OomKillFault, source="test")
    return reg


def _limits(ctx: FaultContext) -> tuple[str, str]:
    cg = Path(str(ctx.topology.get("replica-0").cgroup))
    return (cg / "memory.limit_in_bytes").read_text(), (cg / "memory.memsw.limit_in_bytes").read_text()


def _poll(check: Any, timeout: float = 20.0) -> float:
    t0 = time.monotonic()
    for _ in range(int(timeout / 0.005)):
        if check():
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            break
        time.sleep(0.005)
    raise AssertionError(f"condition not met within {timeout}s")


def _oom_kills(ctx: FaultContext) -> int:
    for line in (Path(str(ctx.topology.get("replica-0").cgroup)) / "memory.oom_control").read_text().splitlines():
        if line.startswith("oom_kill "):
            return int(line.split()[1])
    raise AssertionError("no oom_kill counter")


def _state(ctx: FaultContext) -> dict[str, Any]:
    h = ctx.topology.get("replica-0")
    assert h.admin_url is not None and h.admin_token_file is not None
    return admin_request(h.admin_url, h.admin_token_file, "GET", "/admin/state")


def test_bad_configs_are_located_and_inject_nothing(ctx: FaultContext) -> None:
    fault = OomKillFault()
    before = _limits(ctx)
    with pytest.raises(ConfigError, match="did you mean 'rate_mib_s'"):
        fault.parse_config({"target": "replica-0", "rate_mib": 5})
    with pytest.raises(ConfigError, match=r"^rate_mib_s: "):
        fault.parse_config({"target": "replica-0", "rate_mib_s": -1})
    with pytest.raises(ConfigError, match=r"^mode: "):
        fault.parse_config({"target": "replica-0", "mode": "oom"})
    with pytest.raises(ConfigError, match="did you mean 'replica-0'"):
        fault.inject(fault.parse_config({"target": "replica-1", "mode": "limit"}), ctx)
    assert ctx.ledger.ids() == [] and _limits(ctx) == before and _state(ctx)["host_memory_leaked_bytes"] == 0


def test_preflight_needs_a_cgroup_with_a_limit(ctx: FaultContext) -> None:
    fault = OomKillFault()
    assert fault.preflight(fault.parse_config({"target": "replica-0"}), ctx) == []
    bare = ctx.topology.get("replica-0").model_copy(update={"cgroup": None})
    ctx.topology = Topology(services={"replica-0": bare})
    codes = [p.code for p in fault.preflight(fault.parse_config({"target": "replica-0"}), ctx)]
    assert codes == ["no_cgroup"]
    assert fault.preflight(fault.parse_config({"target": "replica-0", "mode": "signal"}), ctx) == []


@pytest.mark.parametrize("mode", ["leak", "limit", "pressure"])
def test_kernel_oom_kills_the_replica(stack: LocalStack, ctx: FaultContext, mode: str) -> None:
    fault = OomKillFault()
    before = _limits(ctx)
    cfg = fault.parse_config({"target": "replica-0", "mode": mode})
    assert fault.preflight(cfg, ctx) == [] and fault.plan(cfg, ctx)
    counter_before = _oom_kills(ctx)
    inj = fault.inject(cfg, ctx)
    try:
        t0 = time.monotonic()
        v = fault.verify(inj, ctx)  # once, as a run calls it: it waits for the kernel itself
        killed = time.monotonic() - t0
        details = v.details
        assert v.effective, v.message
        assert details["reason"] == "OOMKilled" and details["exit_status"] == -9 == stack.exit_status("replica-0")
        assert details["exit_code"] == 137 and details["oom_kills"] == _oom_kills(ctx) - counter_before >= 1
        print(f"\noom_kill {mode}: {v.message}")
    finally:
        t1 = time.monotonic()
        fault.undo(inj, ctx)
        undo_ms = (time.monotonic() - t1) * 1000
    assert _limits(ctx) == before  # restored exactly, memsw included; never restarted by rollback
    assert not pid_alive(int(inj.undo["pid"]), inj.undo["pid_start"])
    if mode == "pressure":  # the co-tenant left when the kernel struck (or with the rollback): nothing left behind
        assert inj.undo["hog_pid"] and not pid_alive(int(inj.undo["hog_pid"]), inj.undo["hog_start"])
    t2 = time.monotonic()
    stack.start("replica-0")
    print(f"\noom_kill {mode}: inject->OOMKilled {killed * 1000:.0f} ms, rollback {undo_ms:.0f} ms, "
          f"restart->ready {(time.monotonic() - t2) * 1000:.0f} ms")
    fault.rollback(inj, ctx)  # idempotent
    assert _limits(ctx) == before


def test_signal_mode_reports_signal_not_oomkilled(ctx: FaultContext) -> None:
    fault = OomKillFault()
    inj = fault.inject(fault.parse_config({"target": "replica-0", "mode": "signal"}), ctx)
    v = fault.verify(inj, ctx)
    assert v.effective, v.message
    details = v.details
    assert details["reason"] == "Signal" and details["exit_status"] == -9 and details["exit_code"] == 137
    fault.undo(inj, ctx)


def test_replica_ended_by_sigterm_is_not_an_oom_kill(
    stack: LocalStack, ctx: FaultContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(OomKillFault, "settle_s", 15.0)
    fault = OomKillFault()
    # A slow, capped leak that stays under the limit: the kernel never strikes.
    inj = fault.inject(fault.parse_config({"target": "replica-0", "mode": "leak", "rate_mib_s": 5,
                                           "max_mib": 20}), ctx)  # fmt: skip
    try:
        stack.kill("replica-0", signal.SIGTERM)
        v = fault.verify(inj, ctx)
        status = stack.exit_status("replica-0")
        assert status is not None and not v.effective, v.message
        # Whatever the replica did with SIGTERM (a graceful drain exits 0), it is reported as observed.
        assert v.details["exit_status"] == status and v.details["exit_code"] == (128 - status if status < 0 else status)
        assert v.details["reason"] != "OOMKilled" and v.details["oom_kills"] == 0 and "137" not in v.message
        print(f"\noom_kill after SIGTERM: {v.message}")
    finally:
        fault.undo(inj, ctx)


def _crash(ctx: FaultContext, cfg: dict[str, object]) -> None:
    topo = Topology(services={"replica-0": ctx.topology.get("replica-0")}).model_dump_json()
    code = CHILD.format(topo=topo, state=str(ctx.state_dir), pids=sorted(ctx.scope.pids),
                        cgroups=sorted(ctx.scope.cgroups), cfg=cfg)  # fmt: skip
    proc = start_python(code)
    try:
        wait_for_line(proc, "injected", timeout=30)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL


def test_crash_mid_leak_then_rollback_pending_stops_it(ctx: FaultContext, registry: FaultRegistry) -> None:
    pid = ctx.topology.get("replica-0").pid
    before = _limits(ctx)
    _crash(ctx, {"target": "replica-0", "mode": "leak", "rate_mib_s": 20, "max_mib": 100})
    _poll(lambda: _state(ctx)["host_memory_leaked_bytes"] > 0)
    results = rollback_pending(registry, FaultContext.create(ctx.state_dir))
    assert [r.outcome for r in results] == [RollbackOutcome.ROLLED_BACK], results
    # The system: the leak is stopped and freed, the replica lives, the limit is untouched.
    assert _state(ctx)["host_memory_leaked_bytes"] == 0 and pid is not None and pid_alive(pid)
    assert _limits(ctx) == before
    assert rollback_pending(registry, FaultContext.create(ctx.state_dir)) == []


def test_crash_mid_limit_then_rollback_pending_restores_it(
    stack: LocalStack, ctx: FaultContext, registry: FaultRegistry
) -> None:
    before = _limits(ctx)
    _crash(ctx, {"target": "replica-0", "mode": "limit", "duration_s": 60})
    assert _limits(ctx) != before  # the lowered limit outlived its injector
    results = rollback_pending(registry, FaultContext.create(ctx.state_dir))
    assert [r.outcome for r in results] == [RollbackOutcome.ROLLED_BACK], results
    assert _limits(ctx) == before
    assert rollback_pending(registry, FaultContext.create(ctx.state_dir)) == []
    _poll(lambda: stack.exit_status("replica-0") is not None)  # the kernel still killed it


def test_crash_mid_pressure_leaves_no_cotenant(ctx: FaultContext, registry: FaultRegistry) -> None:
    """A slow co-tenant (capped below the limit: the kernel never strikes) outlives nothing: not its injector's
    SIGKILL (parent-death signal, its own deadline) and not ``rollback --pending``; the replica is untouched."""
    pid = ctx.topology.get("replica-0").pid
    cgroup = ctx.topology.get("replica-0").cgroup
    assert pid is not None and cgroup is not None
    members = set(Path(cgroup, "cgroup.procs").read_text().split())
    adj = Path(f"/proc/{pid}/oom_score_adj").read_text()
    _crash(ctx, {"target": "replica-0", "mode": "pressure", "rate_mib_s": 20, "max_mib": 100, "duration_s": 60})
    [record] = ctx.ledger.pending()
    hog = int(record.undo["hog_pid"])
    results = rollback_pending(registry, FaultContext.create(ctx.state_dir))
    assert [r.outcome for r in results] == [RollbackOutcome.ROLLED_BACK], results
    assert not pid_alive(hog, record.undo["hog_start"]) and pid_alive(pid)
    assert set(Path(cgroup, "cgroup.procs").read_text().split()) == members  # only the replica's own again
    assert Path(f"/proc/{pid}/oom_score_adj").read_text() == adj  # the kernel's preference put back
    assert rollback_pending(registry, FaultContext.create(ctx.state_dir)) == []


SERVER_WITH_A_BIG_WORKER = """
import subprocess, sys, time
worker = subprocess.Popen([sys.executable, "-c", "import time; b = bytearray(b'x') * (200 << 20); "
                           "print(1, flush=True); time.sleep(600)"], stdout=subprocess.PIPE)
worker.stdout.readline()
print(worker.pid, flush=True)
time.sleep(600)
"""


def test_pressure_on_a_server_whose_worker_is_largest_kills_the_worker(tmp_path: Path) -> None:
    """Any process, no admin API: the kernel picks the replica's largest process — here a 200 MB worker, not the
    main process — and verify says so (effective: the kernel's kill happened; main_killed false: no restart)."""
    import subprocess
    import sys

    controller = detect_memory_controller()
    assert controller is not None
    cg = MemoryCgroup.create(controller, f"oomtest-{os.getpid()}")
    cg.set_limit(400 * MIB)
    server = subprocess.Popen([sys.executable, "-c", SERVER_WITH_A_BIG_WORKER], stdout=subprocess.PIPE, text=True,
                              preexec_fn=cg.preexec(), start_new_session=True)  # fmt: skip
    try:
        assert server.stdout is not None
        worker = int(server.stdout.readline())
        handle = ServiceHandle(name="web-0", role="replica", pid=server.pid, cgroup=str(cg.path))
        ctx = FaultContext.create(tmp_path / "state", topology=Topology(services={"web-0": handle}),
                                  scope=Scope().with_pids(server.pid).with_cgroups(str(cg.path)))  # fmt: skip
        fault = OomKillFault()
        cfg = fault.parse_config({"target": "web-0", "mode": "pressure", "duration_s": 20})
        assert fault.preflight(cfg, ctx) == []  # no admin API asked for
        inj = fault.inject(cfg, ctx)
        try:
            v = fault.verify(inj, ctx)
            assert v.effective, v.message
            assert v.details["main_killed"] is False and v.details["killed"] == [worker], v.details
            assert server.poll() is None and "lives on: no restart" in v.message
            print(f"\noom_kill pressure, big worker: {v.message}")
        finally:
            fault.undo(inj, ctx)
        assert not pid_alive(int(inj.undo["hog_pid"]), inj.undo["hog_start"])
        assert Path(f"/proc/{server.pid}/oom_score_adj").read_text().strip() == "0"
    finally:
        server.kill()
        server.wait(5)
        cg.remove()
