"""gpu_memory_exhaustion against a real LocalStack replica (emulated device without a GPU)."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from faults_helpers import start_python, wait_for_line

from faultdrill.experiments.platforms.local.stack import LocalStack
from faultdrill.faults.base import FaultContext
from faultdrill.faults.errors import ConfigError, InjectionError
from faultdrill.faults.gpu_memory import MIB, NO_CUDA, GpuMemoryExhaustionFault
from faultdrill.faults.ledger import RollbackOutcome, rollback_pending
from faultdrill.faults.process import admin_request
from faultdrill.faults.procid import pid_alive
from faultdrill.faults.registry import FaultRegistry
from faultdrill.faults.topology import Topology

pytestmark = pytest.mark.slow

CHILD = """
import time
from faultdrill.faults.base import FaultContext, Scope
from faultdrill.faults.topology import Topology
from faultdrill.faults.gpu_memory import GpuMemoryExhaustionFault
topo = Topology.model_validate_json({topo!r})
ctx = FaultContext.create({state!r}, topology=topo, scope=Scope(pids=frozenset({pids!r})))
fault = GpuMemoryExhaustionFault()
inj = fault.inject(fault.parse_config({cfg!r}), ctx)
print("injected", inj.id, flush=True)
time.sleep(60)
"""


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(tmp_path_factory.mktemp("gstack"), with_proxy=False) as s:
        yield s


@pytest.fixture
def ctx(stack: LocalStack, tmp_path: Path) -> FaultContext:
    return FaultContext.create(tmp_path / "state", topology=stack.topology(), scope=stack.scope(),
                               supervisor=stack)  # fmt: skip


def _state(ctx: FaultContext) -> dict[str, Any]:
    h = ctx.topology.get("replica-0")
    assert h.admin_url is not None and h.admin_token_file is not None
    return admin_request(h.admin_url, h.admin_token_file, "GET", "/admin/state")


def _infer(ctx: FaultContext, rows: int = 4) -> int:
    url = ctx.topology.get("replica-0").url
    body = {"inputs": [{"name": "input", "shape": [rows, 64], "datatype": "FP32", "data": [0.5] * (64 * rows)}]}
    return httpx.post(f"{url}/v2/models/digits/infer", json=body, timeout=5).status_code


def _poll(check: Any, timeout: float = 10.0) -> float:
    t0 = time.monotonic()
    for _ in range(int(timeout / 0.005)):
        if check():
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            break
        time.sleep(0.005)
    raise AssertionError(f"condition not met within {timeout}s")


def test_bad_configs_are_located_and_inject_nothing(ctx: FaultContext) -> None:
    fault = GpuMemoryExhaustionFault()
    with pytest.raises(ConfigError, match="did you mean 'leave_free_mib'"):
        fault.parse_config({"target": "replica-0", "leave_free_mb": 32})
    with pytest.raises(ConfigError, match=r"^leave_free_mib: "):
        fault.parse_config({"target": "replica-0", "leave_free_mib": "lots"})
    with pytest.raises(ConfigError, match="exactly one of leave_free_mib or hold_mib"):
        fault.parse_config({"target": "replica-0", "leave_free_mib": 1, "hold_mib": 2})
    with pytest.raises(ConfigError, match=r"^mode: "):
        fault.parse_config({"target": "replica-0", "mode": "outside", "hold_mib": 2})
    cfg = fault.parse_config({"target": "replica0", "leave_free_mib": 0})
    with pytest.raises(ConfigError, match="did you mean 'replica-0'"):
        fault.inject(cfg, ctx)
    assert ctx.ledger.ids() == [] and _state(ctx)["device_memory_held_bytes"] == 0


@pytest.mark.skipif(_cuda(), reason="this host has a CUDA GPU")
def test_external_mode_without_cuda_is_refused_and_leaves_nothing(ctx: FaultContext) -> None:
    fault = GpuMemoryExhaustionFault()
    cfg = fault.parse_config({"target": "replica-0", "mode": "external", "leave_free_mib": 64})
    problems = fault.preflight(cfg, ctx)
    assert [(p.code, p.message) for p in problems] == [("no_cuda", NO_CUDA)]
    planned = " ".join(fault.plan(cfg, ctx)[0:1])
    assert "python -m faultdrill.faults.gpu_hog --device cuda:0 --leave-free-mib 64.0" in planned
    with pytest.raises(InjectionError, match=r"GPU hog failed: torch.cuda.is_available"):
        fault.inject(cfg, ctx)  # the hog checks for itself too, and is reaped
    assert ctx.ledger.ids() == [] and not list(ctx.state_dir.glob("gpu_hog-*"))


def test_in_process_hold_makes_batches_oom_then_release_recovers(ctx: FaultContext) -> None:
    fault = GpuMemoryExhaustionFault()
    cfg = fault.parse_config({"target": "replica-0", "leave_free_mib": 0, "duration_s": 30})
    assert fault.preflight(cfg, ctx) == []
    assert "/admin/device-memory/hold" in fault.plan(cfg, ctx)[0] and ctx.ledger.ids() == []
    inj = fault.inject(cfg, ctx)
    t0 = time.monotonic()
    try:
        assert _infer(ctx) == 507  # the measured effect: torch's OutOfMemoryError → 507
        observed = time.monotonic() - t0
        result = fault.verify(inj, ctx)
        assert result.effective and result.emulated == inj.emulated == (not _cuda()), result
        assert result.details["device_memory_free_bytes"] <= 4 * MIB
        for _ in range(5):  # repeated OOMs make readiness false (threshold 3)
            _infer(ctx)
        assert _state(ctx)["ready"] is False
    finally:
        t1 = time.monotonic()
        fault.undo(inj, ctx)
    _poll(lambda: _infer(ctx) == 200)
    served = time.monotonic() - t1  # from the start of rollback
    _poll(lambda: _state(ctx)["ready"])
    ready = time.monotonic() - t1
    assert _state(ctx)["device_memory_held_bytes"] == 0
    print(f"\ngpu_memory in_process: inject->507 {observed * 1000:.0f} ms, rollback->200 {served * 1000:.0f} ms, "
          f"rollback->ready {ready * 1000:.0f} ms")
    assert not fault.verify(inj, ctx).effective
    fault.rollback(inj, ctx)  # idempotent


def test_in_process_hold_mib(ctx: FaultContext) -> None:
    fault = GpuMemoryExhaustionFault()
    inj = fault.inject(fault.parse_config({"target": "replica-0", "hold_mib": 64}), ctx)
    try:
        result = fault.verify(inj, ctx)
        assert result.effective and result.details["device_memory_held_bytes"] == 64 * MIB
        assert _infer(ctx) == 200  # room is left: a partial squeeze, not an outage
    finally:
        fault.undo(inj, ctx)
    assert _state(ctx)["device_memory_held_bytes"] == 0


def test_crash_mid_hold_then_rollback_pending(ctx: FaultContext) -> None:
    registry = FaultRegistry()
    registry.register(GpuMemoryExhaustionFault, source="test")
    topo = Topology(services={"replica-0": ctx.topology.get("replica-0")}).model_dump_json()
    cfg = {"target": "replica-0", "leave_free_mib": 0, "duration_s": 60}
    code = CHILD.format(topo=topo, state=str(ctx.state_dir), pids=sorted(ctx.scope.pids), cfg=cfg)
    proc = start_python(code)
    try:
        wait_for_line(proc, "injected", timeout=30)
        assert _state(ctx)["device_memory_held_bytes"] > 0
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    results = rollback_pending(registry, FaultContext.create(ctx.state_dir))
    assert [r.outcome for r in results] == [RollbackOutcome.ROLLED_BACK], results
    assert _state(ctx)["device_memory_held_bytes"] == 0 and _infer(ctx) == 200  # the system, not the ledger
    assert rollback_pending(registry, FaultContext.create(ctx.state_dir)) == []


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda(), reason=NO_CUDA)
def test_external_hog_fills_the_gpu_and_rollback_frees_it(ctx: FaultContext) -> None:
    import torch

    fault = GpuMemoryExhaustionFault()
    cfg = fault.parse_config({"target": "replica-0", "mode": "external", "leave_free_mib": 1024})
    assert fault.preflight(cfg, ctx) == []
    free_before, _ = torch.cuda.mem_get_info()
    inj = fault.inject(cfg, ctx)
    try:
        assert fault.verify(inj, ctx).effective
        free, _ = torch.cuda.mem_get_info()
        assert free <= 1024 * MIB + 512 * MIB < free_before
    finally:
        fault.undo(inj, ctx)
    assert not pid_alive(int(inj.undo["hog_pid"]), inj.undo["hog_start"])
    assert _poll(lambda: torch.cuda.mem_get_info()[0] > free_before - 512 * MIB) >= 0
