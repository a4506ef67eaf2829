"""``gpu_sticky_error``: poison a replica's GPU context, so every later inference fails while the process lives.

The zombie of GPU serving: an illegal memory access or a device-side assert leaves the CUDA context unusable;
the process stays up, its HTTP server and a shallow health endpoint keep answering 200, and every inference
fails. The target triggers it through its admin API (``POST /admin/device/sticky-error``): on CUDA a real
out-of-bounds index trips PyTorch's device-side assert and the context is poisoned for real; on the CPU's
emulated device, the device refuses every forward pass with the same ``torch.AcceleratorError`` (the journal
says emulated).

The driver logs an Xid 43 for such a fault; the target records it in the replica's GPU state (which outlives
the process, ``target_service/gpu_state.py``), so ``InferenceGPUXidRestartApp`` pages even when the deep probes
restart the zombie before Prometheus scraped its compute-check counters. The rollback takes that record back.

Nothing inside the process can undo it, on a GPU or emulated: the repair is a new process. So the rollback ends
the poisoned process if it still runs (same pid and start ticks) — through the platform's supervisor, which
starts it again, or with SIGTERM from the ledger alone (its platform's restart policy applies) — and a replica
that the platform already restarted (the deep liveness probe did its job) needs nothing.

Example::

    fault = GpuStickyErrorFault()
    inj = fault.inject(fault.parse_config({"target": "replica-0", "duration_s": 20}), ctx)
    fault.verify(inj, ctx).details["sticky_error"]   # "CUDA error: device-side assert triggered …"
    fault.undo(inj, ctx)                             # restarts replica-0 if it is still the poisoned process
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any, ClassVar

from faultdrill.faults.base import Fault, FaultConfig, FaultContext, Injection, Problem, Verification
from faultdrill.faults.kube.gpu import StickyAction
from faultdrill.faults.process import (
    _service_problems,
    admin_request,
    admin_undo,
    device_emulated,
    target_handle,
)
from faultdrill.faults.procid import pid_alive
from faultdrill.target_service.gpu_state import STICKY_XID, GpuState

__all__ = ["GpuStickyErrorFault"]


class GpuStickyErrorFault(Fault):
    """Poison ``target``'s device: every forward pass fails until the process exits."""

    class Config(FaultConfig):
        target: str
        why: str = "out-of-bounds index in a kernel"
        """Shown in the error the device raises (emulated); a real device says what it says."""

    name: ClassVar[str] = "gpu_sticky_error"
    target_roles: ClassVar[tuple[str, ...] | None] = ("replica",)
    modes: ClassVar[tuple[str, ...]] = ("in_process",)
    needs: ClassVar[tuple[str, ...]] = ("admin API token",)
    target_needs: ClassVar[frozenset[str]] = frozenset({"admin_api"})
    verifies: ClassVar[str] = "the device's sticky error (admin state) and a failing inference"
    example: ClassVar[dict[str, Any]] = {"target": "replica-0"}
    kubernetes = StickyAction  # on a Kubernetes target: faults/kube/gpu.py (the pod's admin API)

    def local_preflight(self, config: Config, ctx: FaultContext) -> list[Problem]:
        return _service_problems(ctx, config.target, admin=True)

    def local_plan(self, config: Config, ctx: FaultContext) -> list[str]:
        handle = ctx.topology.get(config.target)
        return [f"POST {handle.admin_url}/admin/device/sticky-error {{\"why\": \"{config.why}\"}}",
                f"rollback: restart {config.target} if pid {handle.pid} (the poisoned process) still runs; "
                f"remove the Xid {STICKY_XID} it recorded from {handle.gpu_state_file or 'its GPU state'}"]  # fmt: skip

    def local_inject(self, config: Config, ctx: FaultContext) -> Injection:
        handle = target_handle(ctx, config.target)
        undo = {**admin_undo(handle, config.target), "service": config.target}
        if handle.gpu_state_file is not None:  # where the target records the Xid the fault makes the driver log
            ctx.scope.check_path(handle.gpu_state_file)
            undo["gpu_state_file"], undo["since"] = str(handle.gpu_state_file), time.time()
        inj = self.new_injection(config, ctx, mode="in_process", target=config.target, undo=undo,
                                 emulated=device_emulated(undo))  # fmt: skip
        return self.apply_recorded(inj, ctx, lambda: admin_request(
            undo["admin_url"], undo["token_file"], "POST", "/admin/device/sticky-error", {"why": config.why}))

    def local_rollback(self, injection: Injection, ctx: FaultContext) -> None:
        undo = injection.undo
        if undo.get("gpu_state_file"):  # the recorded Xid 43 goes; any other event on that GPU stays
            GpuState(Path(undo["gpu_state_file"])).forget_xid(STICKY_XID, float(undo["since"]))
        pid, start = int(undo["pid"]), undo.get("pid_start")
        if not pid_alive(pid, start):
            return  # already a new process (the platform restarted it): nothing of the fault is left
        if ctx.supervisor is not None:
            with contextlib.suppress(KeyError):
                if ctx.supervisor.handle(undo["service"]).pid == pid:
                    ctx.supervisor.restart(undo["service"])
                    return
        with contextlib.suppress(ProcessLookupError):  # from the ledger alone: end it; its platform restarts it
            os.kill(pid, signal.SIGTERM)

    def local_verify(self, injection: Injection, ctx: FaultContext) -> Verification:
        undo = injection.undo
        if not pid_alive(int(undo["pid"]), undo.get("pid_start")):
            return Verification(False, {"pid": undo["pid"], "alive": False},
                                message="the poisoned process is gone (restarted)")  # fmt: skip
        state = admin_request(undo["admin_url"], undo["token_file"], "GET", "/admin/state")
        error = state.get("sticky_error")
        details = {"sticky_error": error, "ready": state.get("ready"), "live": state.get("live"),
                   "compute_check": state.get("compute_check")}  # fmt: skip
        message = f"device refuses every call: {error}" if error else "device not poisoned"
        return Verification(bool(error), details, emulated=bool(state.get("emulated")), message=message)
