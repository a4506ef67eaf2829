"""``gpu_memory_exhaustion``: leave a replica's device with almost no free memory.

Mode ``in_process`` makes the target hold device memory itself through its admin API (on
a GPU real CUDA allocations, without one the emulated budget, so batches hit torch's own
``OutOfMemoryError`` → 507). Mode ``external`` starts a separate hog process
(``python -m faultdrill.faults.gpu_hog``) that fills the GPU from outside, as a noisy neighbour
would; the hog also exits by itself at the fault's deadline (a dead-man).

Example::

    fault = GpuMemoryExhaustionFault()
    cfg = fault.parse_config({"target": "replica-0", "leave_free_mib": 0, "duration_s": 15})
    inj = fault.inject(cfg, ctx)
    fault.verify(inj, ctx).details["device_memory_free_bytes"]   # measured, ~0
    fault.undo(inj, ctx)                                         # release via the admin API
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from faultdrill.faults.base import Fault, FaultConfig, FaultContext, Injection, Problem, Verification
from faultdrill.faults.errors import FaultdrillError
from faultdrill.faults.kube.pods import GpuAction
from faultdrill.faults.process import (
    _service_problems,
    admin_if_alive,
    admin_request,
    admin_undo,
    device_emulated,
    service_undo,
    target_handle,
)
from faultdrill.faults.procid import pid_alive, process_start_ticks

__all__ = ["NO_CUDA", "GpuMemoryExhaustionFault", "gpu_mode_problems", "start_hog"]

MIB = 1024 * 1024
NO_CUDA = ("external mode needs a CUDA GPU (torch.cuda.is_available() is False); use mode in_process, "
           "which drives the target's emulated device budget")  # fmt: skip
# The allocators round to 2 MiB segments: "leave M free" is met within this slack.
_SLACK = 4 * MIB



def gpu_mode_problems(ctx: FaultContext, target: str, *, in_process: bool, no_cuda: str) -> list[Problem]:
    """Preflight of a GPU fault's two modes: through the target's admin API, or a process of its own on the GPU
    (which needs CUDA here; torch is imported only then: 2-3 s)."""
    if in_process:
        return _service_problems(ctx, target, admin=True)
    problems = _service_problems(ctx, target)
    import torch

    if not torch.cuda.is_available():
        problems.append(Problem("no_cuda", no_cuda, "mode: in_process"))
    return problems

class GpuMemoryExhaustionFault(Fault):
    """Hold device memory until only ``leave_free_mib`` remain (or hold ``hold_mib``)."""

    class Config(FaultConfig):
        target: str
        mode: Literal["in_process", "external"] = "in_process"
        leave_free_mib: float | None = Field(default=None, ge=0)
        hold_mib: float | None = Field(default=None, gt=0)
        device: int = Field(default=0, ge=0)
        """CUDA device index the external hog fills."""
        ready_timeout_s: float = Field(default=60.0, gt=0)

        @model_validator(mode="after")
        def _one_amount(self) -> GpuMemoryExhaustionFault.Config:
            if (self.leave_free_mib is None) == (self.hold_mib is None):
                raise ValueError("give exactly one of leave_free_mib or hold_mib")
            return self

    name: ClassVar[str] = "gpu_memory_exhaustion"
    target_roles: ClassVar[tuple[str, ...] | None] = ("replica",)
    modes: ClassVar[tuple[str, ...]] = ("in_process", "external")
    needs: ClassVar[tuple[str, ...]] = ("admin API token (in_process)", "CUDA GPU + torch (external)")
    target_needs_by_mode: ClassVar[Mapping[str, frozenset[str]]] = {
        "in_process": frozenset({"admin_api"}), "external": frozenset({"process"})}
    verifies: ClassVar[str] = "held/free device memory (admin state or hog), 507s from the target"
    example: ClassVar[dict[str, Any]] = {"target": "replica-0", "mode": "in_process", "leave_free_mib": 0}
    kubernetes = GpuAction  # on a Kubernetes target: faults/kube/pods.py (the API)
    # The admin release is this fault's rollback: a runbook that calls it undoes the fault, it does not repair.
    undo_actions_by_mode: ClassVar[Mapping[str, tuple[str, ...]]] = {"in_process": ("release-device-memory",)}

    @staticmethod
    def _amount(config: Config) -> dict[str, float]:
        if config.hold_mib is not None:
            return {"bytes": int(config.hold_mib * MIB)}
        assert config.leave_free_mib is not None
        return {"leave_free_mib": config.leave_free_mib}

    def local_preflight(self, config: Config, ctx: FaultContext) -> list[Problem]:
        return gpu_mode_problems(ctx, config.target, in_process=config.mode == "in_process", no_cuda=NO_CUDA)

    def local_plan(self, config: Config, ctx: FaultContext) -> list[str]:
        handle = ctx.topology.get(config.target)
        if config.mode == "in_process":
            return [f"POST {handle.admin_url}/admin/device-memory/hold {json.dumps(self._amount(config))}",
                    f"rollback: POST {handle.admin_url}/admin/device-memory/release {{}}"]  # fmt: skip
        return [" ".join(_hog_argv(config, "<injection-id>", Path("<state>"), 0.0)),
                "rollback: SIGTERM the hog (pid + start ticks recorded), SIGKILL after 5 s"]  # fmt: skip

    def local_inject(self, config: Config, ctx: FaultContext) -> Injection:
        handle = target_handle(ctx, config.target)
        assert handle.pid is not None
        if config.mode == "external":
            return self._inject_external(config, ctx, service_undo(handle))
        undo = admin_undo(handle, config.target)
        inj = self.new_injection(config, ctx, mode="in_process", target=config.target, undo=undo,
                                 emulated=device_emulated(undo))  # fmt: skip
        return self.apply_recorded(inj, ctx, lambda: admin_request(
            undo["admin_url"], undo["token_file"], "POST", "/admin/device-memory/hold", self._amount(config)))

    def _inject_external(self, config: Config, ctx: FaultContext, undo: dict[str, Any]) -> Injection:
        inj = self.new_injection(config, ctx, mode="external", target=config.target, undo=undo)
        return start_hog(self, inj, ctx, lambda pidfile: _hog_argv(config, inj.id, pidfile, inj.deadline), "GPU hog")

    def local_rollback(self, injection: Injection, ctx: FaultContext) -> None:
        undo = injection.undo
        if injection.mode == "external":
            _stop_hog(undo)
            return
        # Releases everything held: a replica holds memory only for chaos, and a restarted
        # process (start ticks differ) holds nothing, so it is left alone.
        admin_if_alive(undo, "POST", "/admin/device-memory/release", {})

    def local_verify(self, injection: Injection, ctx: FaultContext) -> Verification:
        undo = injection.undo
        if injection.mode == "external":
            alive = _hog_pid(undo) is not None
            return Verification(alive, {"hog_pid": undo.get("hog_pid"), "hog_alive": alive},
                                message=f"hog {'holding memory' if alive else 'gone'}")  # fmt: skip
        state = admin_request(undo["admin_url"], undo["token_file"], "GET", "/admin/state")
        used, total = int(state.get("device_memory_used_bytes", 0)), int(state.get("device_memory_total_bytes", 0))
        held, free = int(state.get("device_memory_held_bytes", 0)), total - used
        cfg = injection.config
        if cfg.get("hold_mib") is not None:
            ok = held >= int(cfg["hold_mib"] * MIB)
        else:
            ok = held > 0 and free <= cfg["leave_free_mib"] * MIB + _SLACK
        details = {"device_memory_held_bytes": held, "device_memory_used_bytes": used,
                   "device_memory_total_bytes": total, "device_memory_free_bytes": free,
                   "emulated": bool(state.get("emulated")), "ready": state.get("ready")}  # fmt: skip
        return Verification(ok, details, emulated=bool(state.get("emulated")),
                            message=f"{held / MIB:.1f} MiB held, {free / MIB:.1f} MiB free of {total / MIB:.0f}")


def start_hog(fault: Fault, inj: Injection, ctx: FaultContext, argv: Callable[[Path], list[str]],
              what: str) -> Injection:  # fmt: skip
    """Start a ``gpu_hog`` process for ``inj`` (``argv`` given its pidfile), recorded before and after it exists;
    wait for its one line (ready or error). Returns the record with the hog's pid and start ticks."""
    pidfile = ctx.state_dir / f"gpu_hog-{inj.id}.pid"
    # The record names the hog's pidfile before the hog exists: a crash between spawn
    # and the record update below still leaves a way to find (and end) the hog.
    inj = inj.model_copy(update={"undo": {**inj.undo, "hog_pidfile": str(pidfile)}})

    def apply() -> None:
        nonlocal inj
        proc = subprocess.Popen(argv(pidfile), stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                                start_new_session=True)  # fmt: skip
        inj = inj.model_copy(update={"undo": {**inj.undo, "hog_pid": proc.pid,
                                              "hog_start": process_start_ticks(proc.pid)}})  # fmt: skip
        ctx.ledger.write(inj)
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the hog prints exactly one line: ready or error
        doc = json.loads(line) if line.startswith("{") else {"error": f"hog exited ({proc.poll()})"}
        if not doc.get("ready"):
            raise FaultdrillError(f"{what} failed: {doc.get('error')}")

    fault.apply_recorded(inj, ctx, apply)
    return inj


def _hog_argv(config: GpuMemoryExhaustionFault.Config, tag: str, pidfile: Path, deadline: float) -> list[str]:
    amount = (["--hold-mib", str(config.hold_mib)] if config.hold_mib is not None
              else ["--leave-free-mib", str(config.leave_free_mib)])  # fmt: skip
    return [sys.executable, "-m", "faultdrill.faults.gpu_hog", "--device", f"cuda:{config.device}", *amount,
            "--deadline", f"{deadline:.3f}", "--pidfile", str(pidfile), "--tag", tag]  # fmt: skip


def _hog_pid(undo: dict[str, Any]) -> int | None:
    """The live hog's pid: from the record, else from the pidfile the hog wrote itself."""
    if undo.get("hog_pid") and pid_alive(int(undo["hog_pid"]), undo.get("hog_start")):
        return int(undo["hog_pid"])
    with contextlib.suppress(OSError, ValueError):
        pid, start = (int(v) for v in Path(undo["hog_pidfile"]).read_text().split())
        if pid_alive(pid, start):
            return pid
    return None


def _stop_hog(undo: dict[str, Any], timeout_s: float = 5.0) -> None:
    pid = _hog_pid(undo)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for _ in range(int(timeout_s / 0.02) + 1):
            if _hog_pid(undo) is None or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        if _hog_pid(undo) is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    Path(undo["hog_pidfile"]).unlink(missing_ok=True)
