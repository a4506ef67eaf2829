"""GPU faults beyond memory on Kubernetes: the sticky error, the slowdown and the wrong output, through the pod.

Each pulls the same lever of the target's admin API as the local fault, from inside the pod (``admin_exec``: the
token stays in the container's env):

- ``gpu_sticky_error``: ``POST /admin/device/sticky-error``. Rollback: if the recorded pod still runs the poisoned
  container (same pod uid and the container never restarted), the pod is deleted (uid precondition) and its
  ReplicaSet replaces it: a poisoned CUDA context has no other repair.
- ``gpu_slowdown`` (``in_process``): ``POST /admin/device/slowdown`` with the fault's duration as the target's own
  dead-man; rollback ``DELETE /admin/device/slowdown``.
- ``gpu_wrong_output``: ``POST /admin/device/corrupt``; rollback ``POST /admin/device/restore`` (bit for bit).
- ``gpu_xid``: ``POST /admin/device/inject`` (the GPU state lives in the pod's ``gpu-state`` emptyDir, which
  outlives a container restart); rollback: the pod is deleted if its container is still the one the event
  poisoned, or a reset-class Xid left the GPU needing a reset — a new pod starts on a reset device (an emptyDir is
  per pod). On real GPU nodes, DCGM's own injection (``dcgmi test --inject``) in the dcgm-exporter pod is the
  way to reach dcgm-exporter's series; this action drives the application's side.

Not run against a cluster here (no cluster on this machine); ``tests/unit/k8s`` drives the calls against the
recorded API shape.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from faultdrill.faults.base import FaultContext, Verification
from faultdrill.faults.kube.actions import KubeAction
from faultdrill.faults.kube.client import core
from faultdrill.faults.kube.pods import admin_exec, delete_same_pod, restart_count, same_pod
from faultdrill.faults.topology import ServiceHandle

__all__ = ["CorruptAction", "SlowdownAction", "StickyAction", "XidAction"]


def _restarts_before(h: ServiceHandle, api: Any) -> dict[str, Any]:
    """The container's restart count, in the record before the change: a restart since means a new process."""
    assert h.kube is not None
    return {"restarts_before": restart_count(core(api).read_namespaced_pod(h.kube.pod, h.kube.namespace),
                                             h.kube.container)}  # fmt: skip


class StickyAction(KubeAction):
    needs_server: ClassVar[bool] = True
    modes: ClassVar[tuple[str, ...]] = ("in_process",)

    def mode(self, config: Any) -> str:
        return "in_process"

    def plan(self, config: Any, h: ServiceHandle) -> list[str]:
        assert h.kube is not None
        return [f"exec in pods/{h.kube.pod}: POST {h.kube.admin_url}/admin/device/sticky-error",
                "rollback: DELETE the pod (uid precondition) if its container was not restarted since"]  # fmt: skip

    def prepare(self, config: Any, h: ServiceHandle, api: Any, ctx: FaultContext, backup: Path) -> dict[str, Any]:
        return _restarts_before(h, api)

    def apply(self, config: Any, undo: dict[str, Any], api: Any) -> None:
        admin_exec(api, undo, "POST", "/admin/device/sticky-error", {"why": config.why})

    def restore(self, mode: str, undo: dict[str, Any], api: Any) -> None:
        pod = same_pod(api, undo)
        if pod is None or restart_count(pod, undo["container"]) > int(undo.get("restarts_before", 0)):
            return  # replaced, or its liveness probe restarted the container: the poisoned process is gone
        delete_same_pod(api, undo)

    def measure(self, mode: str, undo: dict[str, Any], cfg: dict[str, Any], api: Any) -> Verification:
        _, state = admin_exec(api, undo, "GET", "/admin/state")
        error = state.get("sticky_error")
        return Verification(bool(error), {"state": state}, emulated=bool(state.get("emulated", False)),
                            message=f"device refuses every call: {error}" if error else "device not poisoned")


class SlowdownAction(KubeAction):
    needs_server: ClassVar[bool] = True
    modes: ClassVar[tuple[str, ...]] = ("in_process",)

    def plan(self, config: Any, h: ServiceHandle) -> list[str]:
        assert h.kube is not None
        return [f"exec in pods/{h.kube.pod}: POST {h.kube.admin_url}/admin/device/slowdown "
                f"{{\"factor\": {config.factor}, \"seconds\": {config.duration_s}}}",
                "rollback: exec DELETE /admin/device/slowdown"]  # fmt: skip

    def apply(self, config: Any, undo: dict[str, Any], api: Any) -> None:
        admin_exec(api, undo, "POST", "/admin/device/slowdown", {"factor": config.factor, "seconds": config.duration_s})

    def restore(self, mode: str, undo: dict[str, Any], api: Any) -> None:
        if same_pod(api, undo) is not None:
            admin_exec(api, undo, "DELETE", "/admin/device/slowdown")

    def measure(self, mode: str, undo: dict[str, Any], cfg: dict[str, Any], api: Any) -> Verification:
        _, state = admin_exec(api, undo, "GET", "/admin/state")
        factor = float(state.get("slowdown_factor") or 1.0)
        return Verification(factor > 1.0, {"state": state}, emulated=True, message=f"slowdown factor {factor:g}")


class CorruptAction(KubeAction):
    needs_server: ClassVar[bool] = True
    modes: ClassVar[tuple[str, ...]] = ("bitflip", "scale")

    def plan(self, config: Any, h: ServiceHandle) -> list[str]:
        assert h.kube is not None
        return [f"exec in pods/{h.kube.pod}: POST {h.kube.admin_url}/admin/device/corrupt {config.lever()}",
                "rollback: exec POST /admin/device/restore (bit for bit)"]  # fmt: skip

    def apply(self, config: Any, undo: dict[str, Any], api: Any) -> None:
        admin_exec(api, undo, "POST", "/admin/device/corrupt", config.lever())

    def restore(self, mode: str, undo: dict[str, Any], api: Any) -> None:
        if same_pod(api, undo) is not None:
            admin_exec(api, undo, "POST", "/admin/device/restore")

    def measure(self, mode: str, undo: dict[str, Any], cfg: dict[str, Any], api: Any) -> Verification:
        _, state = admin_exec(api, undo, "GET", "/admin/state")
        intact = state.get("weights_intact")
        message = f"weights {'corrupted' if intact is False else 'intact'}: {state.get('corruption')}"
        return Verification(intact is False, {"state": state}, emulated=False, message=message)


class XidAction(KubeAction):
    needs_server: ClassVar[bool] = True
    modes: ClassVar[tuple[str, ...]] = ("xid", "field")

    def mode(self, config: Any) -> str:
        return "xid" if getattr(config, "xid", None) is not None else "field"

    def plan(self, config: Any, h: ServiceHandle) -> list[str]:
        assert h.kube is not None
        return [f"exec in pods/{h.kube.pod}: POST {h.kube.admin_url}/admin/device/inject {config.lever()}",
                "rollback: DELETE the pod (uid precondition) if the event poisoned its container"]  # fmt: skip

    def prepare(self, config: Any, h: ServiceHandle, api: Any, ctx: FaultContext, backup: Path) -> dict[str, Any]:
        return _restarts_before(h, api)

    def apply(self, config: Any, undo: dict[str, Any], api: Any) -> None:
        admin_exec(api, undo, "POST", "/admin/device/inject", config.lever())

    def restore(self, mode: str, undo: dict[str, Any], api: Any) -> None:
        pod = same_pod(api, undo)
        if pod is None:
            return  # replaced: a new pod has a new emptyDir, a GPU state without the event
        _, state = admin_exec(api, undo, "GET", "/admin/state")
        gpu = state.get("gpu") or {}
        if not state.get("sticky_error") and not gpu.get("reset_required") and not gpu.get("clocks_event_reasons"):
            return
        delete_same_pod(api, undo)

    def measure(self, mode: str, undo: dict[str, Any], cfg: dict[str, Any], api: Any) -> Verification:
        _, state = admin_exec(api, undo, "GET", "/admin/state")
        gpu = state.get("gpu") or {}
        ok = bool(gpu.get("xid_last") or gpu.get("clocks_event_reasons") or gpu.get("ecc_dbe_vol"))
        return Verification(ok, {"state": state}, emulated=True, message=f"GPU state {gpu}")
