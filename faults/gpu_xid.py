"""``gpu_xid``: the driver reports an Xid (or an ECC or clock event) on a replica's GPU, with its effect.

Injected in the shape of NVIDIA's own DCGM injection (``dcgmi test --inject --gpuid 0 -f 230 -v 79``): a DCGM
field, by name or id, and a value — ``{xid: 79}`` is short for ``{field: DCGM_FI_DEV_XID_ERRORS, value: 79}``.
The target's admin API (``POST /admin/device/inject``) records it in the replica's GPU state (the emulated
device's, which outlives the process; ``target_service/gpu_state.py``), where the DCGM-compatible exporter
shows it (``DCGM_FI_DEV_XID_ERRORS``, ``DCGM_EXP_XID_ERRORS_COUNT``, ``DCGM_FI_DEV_ECC_DBE_VOL_TOTAL``,
``DCGM_FI_DEV_CLOCKS_EVENT_REASONS``), and applies the effect the event has on the application, by the class
NVIDIA's Xid catalog gives it:

- ``RESTART_APP`` (Xid 13, 31, 43, 94, …): the process's CUDA context is lost; a restart of the application
  repairs it.
- ``RESET_GPU`` (Xid 48, 74, 79, 95, 119, …): the GPU is unusable until it is reset — every process started on it
  fails too — so the repair is to drain the replica and reset the GPU (the ``reset-gpu`` action).
- clock-event reasons (hardware slowdown, thermal, power brake) slow every forward pass down.

On a CUDA machine the DCGM fields and the "reset required" state are the emulated device's (DCGM's own
injection would need its host engine); the effect on the application is real — the context is poisoned by a
real device-side assert (``gpu_sticky_error``'s mechanism).

Rollback puts the GPU state back as it was before the injection (a reset of what the fault did, no more) and
restarts the replica if it still runs a process the event poisoned.

Example::

    fault = GpuXidFault()
    inj = fault.inject(fault.parse_config({"target": "replica-0", "xid": 79, "duration_s": 20}), ctx)
    fault.verify(inj, ctx).details["reset_required"]   # "Xid 79 (GPU has fallen off the bus): reset the GPU"
    fault.undo(inj, ctx)
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, model_validator

from faultdrill.faults.base import Fault, FaultConfig, FaultContext, Injection, Problem, Verification
from faultdrill.faults.errors import FaultdrillError
from faultdrill.faults.kube.gpu import XidAction
from faultdrill.faults.process import (
    _service_problems,
    admin_request,
    admin_undo,
    device_emulated,
    target_handle,
)
from faultdrill.faults.procid import pid_alive
from faultdrill.target_service.gpu_state import XID_CATALOG, GpuState, field_id

__all__ = ["GpuXidFault"]


class GpuXidFault(Fault):
    """Inject a DCGM field (an Xid, ECC errors, clock-event reasons) on ``target``'s GPU, with its effect."""

    class Config(FaultConfig):
        target: str
        xid: int | None = Field(default=None, ge=1, le=1023)
        """Short for ``field: DCGM_FI_DEV_XID_ERRORS, value: <xid>``."""
        field: str | int | None = None
        """A DCGM field name or id (``DCGM_FI_DEV_CLOCKS_EVENT_REASONS``, ``112``)."""
        value: float | None = Field(default=None, ge=0)

        @model_validator(mode="after")
        def _one(self) -> GpuXidFault.Config:
            if (self.xid is None) == (self.field is None):
                raise ValueError("give either xid, or field and value")
            if self.field is not None:
                if self.value is None:
                    raise ValueError("field needs a value")
                field_id(self.field)  # its error lists the injectable fields
            return self

        def lever(self) -> dict[str, Any]:
            if self.xid is not None:
                return {"field": "DCGM_FI_DEV_XID_ERRORS", "value": self.xid}
            assert self.field is not None
            return {"field": field_id(self.field), "value": self.value}

    name: ClassVar[str] = "gpu_xid"
    target_roles: ClassVar[tuple[str, ...] | None] = ("replica",)
    modes: ClassVar[tuple[str, ...]] = ("xid", "field")
    needs: ClassVar[tuple[str, ...]] = ("admin API token", "the replica's GPU state file (local platform)")
    target_needs: ClassVar[frozenset[str]] = frozenset({"admin_api"})
    verifies: ClassVar[str] = "the GPU state (last Xid, reset required, clock events) and its effect on the replica"
    example: ClassVar[dict[str, Any]] = {"target": "replica-0", "xid": 79}
    kubernetes = XidAction  # on a Kubernetes target: faults/kube/gpu.py (the pod's admin API)

    def mode_of(self, config: Any) -> str:
        return "xid" if getattr(config, "xid", None) is not None else "field"

    def local_preflight(self, config: Config, ctx: FaultContext) -> list[Problem]:
        problems = _service_problems(ctx, config.target, admin=True)
        if ctx.topology.get(config.target).gpu_state_file is None:
            problems.append(Problem("no_gpu_state", f"'{config.target}' has no GPU state file: its GPU's state would "
                                    "not outlive the process", "a replica of the bundled target on the local "
                                    "platform has one"))  # fmt: skip
        return problems

    def local_plan(self, config: Config, ctx: FaultContext) -> list[str]:
        handle = ctx.topology.get(config.target)
        lever = config.lever()
        what = ""
        if lever["field"] == "DCGM_FI_DEV_XID_ERRORS":
            known = XID_CATALOG.get(int(lever["value"]))
            what = f"  # {known.description}: {known.action}" if known else "  # not in the catalog: RESET_GPU"
        return [f"POST {handle.admin_url}/admin/device/inject {lever}{what}",
                f"rollback: restore {handle.gpu_state_file} as it was; restart {config.target} if "
                "poisoned"]  # fmt: skip

    def local_inject(self, config: Config, ctx: FaultContext) -> Injection:
        handle = target_handle(ctx, config.target)
        undo = {**admin_undo(handle, config.target), "service": config.target}
        if handle.gpu_state_file is None:
            raise FaultdrillError(f"service '{config.target}' has no GPU state file")
        ctx.scope.check_path(handle.gpu_state_file)
        undo["gpu_state_file"] = str(handle.gpu_state_file)
        undo["gpu_state_before"] = GpuState(handle.gpu_state_file).read()
        inj = self.new_injection(config, ctx, mode=self.mode_of(config), target=config.target, undo=undo,
                                 emulated=device_emulated(undo))  # fmt: skip
        return self.apply_recorded(inj, ctx, lambda: admin_request(
            undo["admin_url"], undo["token_file"], "POST", "/admin/device/inject", config.lever()))

    def local_rollback(self, injection: Injection, ctx: FaultContext) -> None:
        undo = injection.undo
        GpuState(Path(undo["gpu_state_file"])).restore(undo["gpu_state_before"])
        # The process the event poisoned (or one started on the GPU while it needed a reset) keeps its lost
        # context: a new process is the repair. Only the replica's current process is asked, by its admin API.
        handle = None
        if ctx.supervisor is not None:
            with contextlib.suppress(Exception):
                handle = ctx.supervisor.handle(undo["service"])
        pid, start = (handle.pid, None) if handle is not None and handle.pid else (undo["pid"], undo.get("pid_start"))
        if not pid or not pid_alive(int(pid), start):
            return
        admin_url = str(handle.admin_url if handle is not None and handle.admin_url else undo["admin_url"])
        token = str(handle.admin_token_file) if handle is not None and handle.admin_token_file else undo["token_file"]
        try:
            poisoned = bool(admin_request(admin_url, token, "GET", "/admin/state").get("sticky_error"))
        except FaultdrillError:
            return  # not answering: its platform restarts it, on a GPU whose state is back
        if not poisoned:
            return
        if ctx.supervisor is not None and handle is not None:
            ctx.supervisor.restart(undo["service"])
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGTERM)

    def local_verify(self, injection: Injection, ctx: FaultContext) -> Verification:
        undo = injection.undo
        gpu = GpuState(Path(undo["gpu_state_file"])).read()
        lever = GpuXidFault.Config.model_validate(injection.config).lever()
        field = lever["field"]
        if field == "DCGM_FI_DEV_XID_ERRORS":
            ok = int(gpu.get("xid_last") or 0) == int(lever["value"])
        elif field == "DCGM_FI_DEV_CLOCKS_EVENT_REASONS":
            ok = int(gpu.get("clocks_event_reasons") or 0) == int(lever["value"])
        else:
            ok = True  # temperature, power, ECC totals: recorded as given
        details: dict[str, Any] = {"xid_last": gpu.get("xid_last"), "reset_required": gpu.get("reset_required"),
                                   "clocks_event_reasons": gpu.get("clocks_event_reasons"),
                                   "ecc_dbe_vol": gpu.get("ecc_dbe_vol")}  # fmt: skip
        if pid_alive(int(undo["pid"]), undo.get("pid_start")):
            with contextlib.suppress(FaultdrillError):
                state = admin_request(undo["admin_url"], undo["token_file"], "GET", "/admin/state")
                details.update(sticky_error=state.get("sticky_error"), ready=state.get("ready"),
                               slowdown_factor=state.get("slowdown_factor"))  # fmt: skip
        return Verification(ok, details, emulated=True,
                            message=f"{field}={lever['value']:g} on {injection.target}'s GPU (emulated DCGM state)"
                                    + (f"; {gpu['reset_required']}" if gpu.get("reset_required") else ""))  # fmt: skip

