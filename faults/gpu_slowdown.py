"""``gpu_slowdown``: the slow GPU — nothing fails, every batch takes longer, queues build.

Thermal or power throttling, a clock slowdown, a co-tenant saturating the SMs: the replica's capacity falls while
every health check passes. Two modes:

- ``in_process`` (emulated on every device, and labelled so): the target's admin API makes every forward pass
  ``factor`` times as long (``POST /admin/device/slowdown``); the worker is held for the extra time, so the
  replica's throughput falls by ``factor`` and its device utilisation (the share of time in forward passes)
  rises. The target ends the slowdown by itself at the fault's deadline (its own dead-man).
- ``co_tenant`` (CUDA only; refused by preflight without one): a separate process runs back-to-back matrix
  multiplications on the same GPU (``python -m faultdrill.faults.gpu_hog --compute``), as a noisy neighbour
  does; the hog exits at the deadline by itself. Clock and power limits (``nvidia-smi -lgc``/``-pl``) are not
  used: they need administrator rights on the GPU and change the device for every tenant until reset.

Example::

    fault = GpuSlowdownFault()
    inj = fault.inject(fault.parse_config({"target": "replica-0", "factor": 4, "duration_s": 20}), ctx)
    fault.verify(inj, ctx).details["slowdown_factor"]   # 4.0
    fault.undo(inj, ctx)                                # DELETE /admin/device/slowdown
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from faultdrill.faults.base import Fault, FaultConfig, FaultContext, Injection, Problem, Verification
from faultdrill.faults.gpu_memory import _hog_pid, _stop_hog, gpu_mode_problems, start_hog
from faultdrill.faults.kube.gpu import SlowdownAction
from faultdrill.faults.process import (
    admin_if_alive,
    admin_request,
    admin_undo,
    service_undo,
    target_handle,
)

__all__ = ["NO_CUDA_CO_TENANT", "GpuSlowdownFault"]

NO_CUDA_CO_TENANT = ("co_tenant mode needs a CUDA GPU to share (torch.cuda.is_available() is False); use mode "
                     "in_process, which slows the target's forward passes by a factor (emulated)")  # fmt: skip


class GpuSlowdownFault(Fault):
    """Slow ``target``'s device down: every forward pass ``factor`` times as long, or a co-tenant on its GPU."""

    class Config(FaultConfig):
        target: str
        mode: Literal["in_process", "co_tenant"] = "in_process"
        factor: float = Field(default=4.0, ge=1.0, le=1000.0)
        """``in_process``: how many times as long each forward pass takes."""
        matrix: int = Field(default=8192, ge=256, le=65536)
        """``co_tenant``: the side of the square matrices the hog multiplies (bigger: more SM time per kernel)."""
        device: int = Field(default=0, ge=0)
        """``co_tenant``: the CUDA device index the hog runs on."""

    name: ClassVar[str] = "gpu_slowdown"
    target_roles: ClassVar[tuple[str, ...] | None] = ("replica",)
    modes: ClassVar[tuple[str, ...]] = ("in_process", "co_tenant")
    needs: ClassVar[tuple[str, ...]] = ("admin API token (in_process)", "CUDA GPU + torch (co_tenant)")
    target_needs_by_mode: ClassVar[Mapping[str, frozenset[str]]] = {
        "in_process": frozenset({"admin_api"}), "co_tenant": frozenset({"process"})}
    verifies: ClassVar[str] = "the slowdown factor (admin state) or the co-tenant hog running"
    example: ClassVar[dict[str, Any]] = {"target": "replica-0", "mode": "in_process", "factor": 4}
    kubernetes = SlowdownAction  # on a Kubernetes target: faults/kube/gpu.py (the pod's admin API)

    def local_preflight(self, config: Config, ctx: FaultContext) -> list[Problem]:
        return gpu_mode_problems(ctx, config.target, in_process=config.mode == "in_process", no_cuda=NO_CUDA_CO_TENANT)

    def local_plan(self, config: Config, ctx: FaultContext) -> list[str]:
        handle = ctx.topology.get(config.target)
        if config.mode == "in_process":
            return [f"POST {handle.admin_url}/admin/device/slowdown "
                    f"{{\"factor\": {config.factor}, \"seconds\": {config.duration_s}}}",
                    f"rollback: DELETE {handle.admin_url}/admin/device/slowdown"]  # fmt: skip
        return [" ".join(_co_tenant_argv(config, "<injection-id>", Path("<state>"), 0.0)),
                "rollback: SIGTERM the hog (pid + start ticks recorded), SIGKILL after 5 s"]  # fmt: skip

    def local_inject(self, config: Config, ctx: FaultContext) -> Injection:
        handle = target_handle(ctx, config.target)
        if config.mode == "co_tenant":
            return self._inject_co_tenant(config, ctx, service_undo(handle))
        undo = admin_undo(handle, config.target)
        inj = self.new_injection(config, ctx, mode="in_process", target=config.target, undo=undo, emulated=True)
        return self.apply_recorded(inj, ctx, lambda: admin_request(
            undo["admin_url"], undo["token_file"], "POST", "/admin/device/slowdown",
            {"factor": config.factor, "seconds": config.duration_s}))  # fmt: skip

    def _inject_co_tenant(self, config: Config, ctx: FaultContext, undo: dict[str, Any]) -> Injection:
        inj = self.new_injection(config, ctx, mode="co_tenant", target=config.target, undo=undo)
        return start_hog(self, inj, ctx, lambda pidfile: _co_tenant_argv(config, inj.id, pidfile, inj.deadline),
                         "GPU co-tenant")  # fmt: skip

    def local_rollback(self, injection: Injection, ctx: FaultContext) -> None:
        if injection.mode == "co_tenant":
            _stop_hog(injection.undo)
            return
        admin_if_alive(injection.undo, "DELETE", "/admin/device/slowdown")

    def local_verify(self, injection: Injection, ctx: FaultContext) -> Verification:
        undo = injection.undo
        if injection.mode == "co_tenant":
            alive = _hog_pid(undo) is not None
            return Verification(alive, {"hog_pid": undo.get("hog_pid"), "hog_alive": alive},
                                message=f"co-tenant {'computing' if alive else 'gone'}")  # fmt: skip
        state = admin_request(undo["admin_url"], undo["token_file"], "GET", "/admin/state")
        factor = float(state.get("slowdown_factor") or 1.0)
        return Verification(factor > 1.0, {"slowdown_factor": factor, "ready": state.get("ready")}, emulated=True,
                            message=f"every forward pass {factor:g}x as long (emulated)")  # fmt: skip


def _co_tenant_argv(config: GpuSlowdownFault.Config, tag: str, pidfile: Path, deadline: float) -> list[str]:
    return [sys.executable, "-m", "faultdrill.faults.gpu_hog", "--device", f"cuda:{config.device}", "--compute",
            str(config.matrix), "--deadline", f"{deadline:.3f}", "--pidfile", str(pidfile), "--tag", tag]  # fmt: skip

