"""Each built-in fault on Kubernetes: the generic inject/rollback/verify around a ``KubeAction``.

A :class:`KubeAction` translates one fault family into Kubernetes API requests:
``prepare`` reads the prior state (GETs only) into the record, ``apply`` makes the change,
``rollback`` restores exactly what the record says (idempotent: a 404 is "already undone"),
``verify`` measures the effect through the API (pod status, exec inside the pod, the object).
The record is written and fsync'd (``Fault.apply_recorded``) before ``apply`` runs, and holds
the cluster reference, namespace, object names and uids and the prior state — everything
``faultdrill rollback --pending`` in another process needs.

The families live in ``kube/pods.py`` (kill, freeze, OOM, GPU memory, model load) and
``kube/objects.py`` (network partition, certificate expiry, dependency outage).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

from faultdrill.faults.base import Fault, FaultContext, Injection, Problem, Verification
from faultdrill.faults.errors import FaultdrillError, PreflightError, RollbackError
from faultdrill.faults.kube.client import api_client, cluster_ref
from faultdrill.faults.kube.dispatch import PLATFORM
from faultdrill.faults.topology import ServiceHandle

__all__ = ["KubeAction", "action_for", "inject", "preflight", "rollback", "verify"]


class KubeAction(ABC):
    """One fault family on Kubernetes: subclasses implement plan/apply/rollback/verify (abstract)."""

    modes: ClassVar[tuple[str, ...]] = ()
    needs_pod: ClassVar[bool] = True

    def mode(self, config: Any) -> str:
        return str(getattr(config, "mode", "default"))

    def problems(self, config: Any, handle: ServiceHandle, ctx: FaultContext) -> list[Problem]:
        return []

    @abstractmethod
    def plan(self, config: Any, handle: ServiceHandle) -> list[str]:
        ...

    def prepare(self, config: Any, handle: ServiceHandle, api: Any, ctx: FaultContext, backup: Path) -> dict[str, Any]:
        return {}

    @abstractmethod
    def apply(self, config: Any, undo: dict[str, Any], api: Any) -> None:
        ...

    @abstractmethod
    def rollback(self, mode: str, undo: dict[str, Any], api: Any) -> None:
        ...

    @abstractmethod
    def verify(self, mode: str, undo: dict[str, Any], cfg: dict[str, Any], api: Any) -> Verification:
        ...


def action_for(fault_name: str) -> KubeAction:
    from faultdrill.faults.kube import objects, pods

    table: dict[str, KubeAction] = {**pods.ACTIONS, **objects.ACTIONS}
    if fault_name not in table:
        raise FaultdrillError(f"fault '{fault_name}' has no Kubernetes implementation "
                              f"(available: {', '.join(sorted(table))})")  # fmt: skip
    return table[fault_name]


def preflight(fault: Fault, config: Any, ctx: FaultContext, handle: ServiceHandle) -> list[Problem]:
    assert handle.kube is not None
    problems: list[Problem] = []
    try:
        ctx.scope.check_namespace(handle.kube.namespace)
    except FaultdrillError as exc:
        problems.append(Problem("blast_radius", str(exc), "allow-list the namespace: target.kubernetes.namespaces"))
    try:
        action = action_for(fault.name)
    except FaultdrillError as exc:
        return [*problems, Problem("not_on_kubernetes", str(exc))]
    mode = action.mode(config)
    if mode not in action.modes:
        problems.append(Problem("mode_not_on_kubernetes", f"mode '{mode}' of {fault.name} is not available on "
                                f"Kubernetes (available: {', '.join(action.modes)})"))  # fmt: skip
    if action.needs_pod and handle.kube.pod is None:
        problems.append(Problem("no_pod", f"'{handle.name}' is not a pod (a replica is)"))
    return problems + action.problems(config, handle, ctx)


def inject(fault: Fault, config: Any, ctx: FaultContext, handle: ServiceHandle) -> Injection:
    kube = handle.kube
    assert kube is not None
    ctx.scope.check_namespace(kube.namespace)  # BlastRadiusError before anything is read or written
    if problems := preflight(fault, config, ctx, handle):
        raise PreflightError(problems, fault=fault.name)
    action = action_for(fault.name)
    ref = cluster_ref(kube.namespace, kube.context, kube.kubeconfig)
    api = api_client(ref)
    base = {"platform": PLATFORM, "cluster": ref, "service": handle.name, "deployment": kube.deployment,
            "pod": kube.pod, "pod_uid": kube.pod_uid, "container": kube.container,
            "admin_url": kube.admin_url, "admin_token_env": kube.admin_token_env}  # fmt: skip
    injection = fault.new_injection(config, ctx, mode=action.mode(config), target=handle.name, undo=base)
    try:
        base.update(action.prepare(config, handle, api, ctx, ctx.state_dir / "backups" / injection.id))
    except FaultdrillError:
        raise
    except Exception as exc:  # an API error while reading the prior state: nothing changed yet
        raise FaultdrillError(f"{fault.name}: reading the prior state failed: {type(exc).__name__}: {exc}") from exc
    injection = injection.model_copy(update={"undo": base})
    return fault.apply_recorded(injection, ctx, lambda: action.apply(config, base, api))


def rollback(fault: Fault, injection: Injection) -> None:
    action = action_for(fault.name)
    try:
        action.rollback(injection.mode, injection.undo, api_client(injection.undo["cluster"]))
    except RollbackError:
        raise
    except Exception as exc:  # API errors, exec failures: keep the record, say what failed
        raise RollbackError(f"could not undo {injection.mode} on '{injection.target}': {type(exc).__name__}: {exc}",
                            fault=fault.name, injection_id=injection.id) from exc  # fmt: skip


def verify(fault: Fault, injection: Injection) -> Verification:
    action = action_for(fault.name)
    try:
        return action.verify(injection.mode, injection.undo, injection.config,
                             api_client(injection.undo["cluster"]))  # fmt: skip
    except Exception as exc:
        return Verification(False, {"error": f"{type(exc).__name__}: {exc}"}, message=f"verify failed: {exc}")
