"""``gpu_wrong_output``: corrupt a replica's weights where they live, so it answers HTTP 200 and wrong.

Silent data corruption, as a failing GPU causes it: bits flipped in device memory (``bitflip``: ``bit`` of
``count`` elements of one layer, chosen by ``seed``; bit 30 of a float32 is its exponent's top bit, so a small
weight becomes ~1e38 and outputs go non-finite) or a layer gone wrong (``scale``: every element times
``factor``; -1 reverses the ranking of a final layer's classes while every output stays a valid probability).
The corruption is real on both devices — the model's own tensors, in GPU memory on CUDA — and the target keeps
the changed elements' values, so the rollback (``POST /admin/device/restore``) writes them back bit for bit; its
verification compares a digest of every parameter with the one taken at load.

What catches it is a known-answer check: the target's deep readiness (its compute check, ``health.py``) and the
load's answer SLI (``{requests: wrong, at_most: …}``).

Example::

    fault = GpuWrongOutputFault()
    inj = fault.inject(fault.parse_config({"target": "replica-0", "mode": "scale", "factor": -1}), ctx)
    fault.verify(inj, ctx).details["weights_intact"]   # False
    fault.undo(inj, ctx)                               # restored bit for bit: weights_intact True
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from faultdrill.faults.base import Fault, FaultConfig, FaultContext, Injection, Problem, Verification
from faultdrill.faults.kube.gpu import CorruptAction
from faultdrill.faults.process import (
    _service_problems,
    admin_if_alive,
    admin_request,
    admin_undo,
    target_handle,
)
from faultdrill.faults.procid import pid_alive

__all__ = ["GpuWrongOutputFault"]


class GpuWrongOutputFault(Fault):
    """Corrupt one layer of ``target``'s model in place (``bitflip`` or ``scale``)."""

    class Config(FaultConfig):
        target: str
        mode: Literal["bitflip", "scale"] = "bitflip"
        layer: str | None = None
        """Parameter name (``net.2.weight``); None: the model's last weight."""
        count: int = Field(default=16, ge=1)
        """``bitflip``: elements whose bit is flipped."""
        bit: int = Field(default=30, ge=0, le=63)
        """``bitflip``: which bit (30: float32's top exponent bit)."""
        seed: int = Field(default=0, ge=0)
        factor: float = -1.0
        """``scale``: what every element is multiplied by."""

        def lever(self) -> dict[str, Any]:
            """The admin API's body."""
            how = {"count": self.count, "bit": self.bit, "seed": self.seed} if self.mode == "bitflip" else {
                "factor": self.factor}  # fmt: skip
            return {"mode": self.mode, **({"layer": self.layer} if self.layer else {}), **how}

    name: ClassVar[str] = "gpu_wrong_output"
    target_roles: ClassVar[tuple[str, ...] | None] = ("replica",)
    modes: ClassVar[tuple[str, ...]] = ("bitflip", "scale")
    needs: ClassVar[tuple[str, ...]] = ("admin API token",)
    target_needs: ClassVar[frozenset[str]] = frozenset({"admin_api"})
    verifies: ClassVar[str] = "the weights' digest differs from the loaded one (admin state)"
    example: ClassVar[dict[str, Any]] = {"target": "replica-0", "mode": "bitflip", "count": 16}
    kubernetes = CorruptAction  # on a Kubernetes target: faults/kube/gpu.py (the pod's admin API)

    def local_preflight(self, config: Config, ctx: FaultContext) -> list[Problem]:
        return _service_problems(ctx, config.target, admin=True)

    def local_plan(self, config: Config, ctx: FaultContext) -> list[str]:
        handle = ctx.topology.get(config.target)
        return [f"POST {handle.admin_url}/admin/device/corrupt {config.lever()}",
                f"rollback: POST {handle.admin_url}/admin/device/restore (bit for bit)"]  # fmt: skip

    def local_inject(self, config: Config, ctx: FaultContext) -> Injection:
        handle = target_handle(ctx, config.target)
        undo = admin_undo(handle, config.target)
        inj = self.new_injection(config, ctx, mode=config.mode, target=config.target, undo=undo)
        return self.apply_recorded(inj, ctx, lambda: admin_request(
            undo["admin_url"], undo["token_file"], "POST", "/admin/device/corrupt", config.lever()))

    def local_rollback(self, injection: Injection, ctx: FaultContext) -> None:
        # A restarted process loaded its weights afresh from the registry: only the corrupted one is restored.
        admin_if_alive(injection.undo, "POST", "/admin/device/restore", {})

    def local_verify(self, injection: Injection, ctx: FaultContext) -> Verification:
        undo = injection.undo
        if not pid_alive(int(undo["pid"]), undo.get("pid_start")):
            return Verification(False, {"alive": False}, message="the corrupted process is gone (restarted)")
        state = admin_request(undo["admin_url"], undo["token_file"], "GET", "/admin/state")
        intact = state.get("weights_intact")
        return Verification(intact is False, {"weights_intact": intact, "corruption": state.get("corruption"),
                                              "ready": state.get("ready"), "compute_check": state.get("compute_check")},
                            message=f"weights {'corrupted' if intact is False else 'intact'}: "
                                    f"{state.get('corruption')}")  # fmt: skip
