"""A fault family on Kubernetes: ``KubeAction``, the generic inject/rollback/verify around its API requests.

A fault class declares its action (``kubernetes = KillAction``); ``Fault``'s operations call the five
operations here when the target is a Kubernetes object or the record says ``platform: kubernetes``.
The generic part lives here: the namespace allow-list (``Scope.namespaces``), the record (``platform``,
``cluster`` reference, object names, prior state — written and fsync'd by ``Fault.apply_recorded``
before the change), the client built from the record, errors worded once. A family implements the rest:
``plan`` (the requests, for ``--dry-run``), ``prepare`` (GETs only: the prior state into the record),
``apply`` (the change), ``restore`` (exactly what the record says; idempotent: a 404 is "already
undone"), ``measure`` (the effect, through the API: pod status, exec inside the pod, the object). So
``faultdrill rollback --pending`` in another process needs the record only.

The families live in ``kube/pods.py`` (kill, freeze, OOM, GPU memory, model load) and
``kube/objects.py`` (network partition, certificate expiry, dependency outage). This module imports
no fault module and not ``kubernetes`` (``kube/client.py`` does, lazily).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

from faultdrill.faults.base import KUBERNETES, Fault, FaultContext, Injection, Problem, Verification
from faultdrill.faults.errors import FaultdrillError, PreflightError, RollbackError
from faultdrill.faults.kube.client import api_client, cluster_ref
from faultdrill.faults.topology import ServiceHandle

__all__ = ["KubeAction"]


class KubeAction(ABC):
    """One fault family on Kubernetes (``Fault.kubernetes``). Subclasses implement plan/apply/restore/measure."""

    modes: ClassVar[tuple[str, ...]] = ()
    needs_pod: ClassVar[bool] = True
    needs_server: ClassVar[bool] = False
    """The family acts on the bundled server inside its pod (its process by name, its admin API): a workload of your
    own (a pod without one: ``KubeRef.admin_url`` None) is refused at preflight."""

    # -- the five operations ``Fault`` routes to (``faults.base.PlatformAction``) ---------------------------

    def preflight(self, fault: Fault, config: Any, ctx: FaultContext, handle: ServiceHandle) -> list[Problem]:
        assert handle.kube is not None
        problems: list[Problem] = []
        try:
            ctx.scope.check_namespace(handle.kube.namespace)
        except FaultdrillError as exc:
            problems.append(Problem("blast_radius", str(exc), "allow-list the namespace: target.kubernetes.namespaces"))
        mode = self.mode(config)
        if mode not in self.modes:
            problems.append(Problem("mode_not_on_kubernetes", f"mode '{mode}' of {fault.name} is not available on "
                                    f"Kubernetes (available: {', '.join(self.modes)})"))  # fmt: skip
        if self.needs_pod and handle.kube.pod is None:
            problems.append(Problem("no_pod", f"'{handle.name}' is not a pod (a replica is)"))
        if self.needs_server and handle.kube.admin_url is None:
            problems.append(Problem("not_the_bundled_server", f"{fault.name} on Kubernetes acts on the bundled server "
                                    f"inside its pod; '{handle.name}' is a workload of your own",
                                    "process_kill (it deletes the pod)"))  # fmt: skip
        return problems + self.problems(config, handle, ctx)

    @abstractmethod
    def plan(self, config: Any, handle: ServiceHandle) -> list[str]:
        """The API requests ``inject`` would send, one line each (``--dry-run``)."""

    def inject(self, fault: Fault, config: Any, ctx: FaultContext, handle: ServiceHandle) -> Injection:
        kube = handle.kube
        assert kube is not None
        ctx.scope.check_namespace(kube.namespace)  # BlastRadiusError before anything is read or written
        if problems := self.preflight(fault, config, ctx, handle):
            raise PreflightError(problems, fault=fault.name)
        ref = cluster_ref(kube.namespace, kube.context, kube.kubeconfig)
        api = api_client(ref)
        base = {"platform": KUBERNETES, "cluster": ref, "service": handle.name, "deployment": kube.deployment,
                "pod": kube.pod, "pod_uid": kube.pod_uid, "container": kube.container,
                "admin_url": kube.admin_url, "admin_token_env": kube.admin_token_env}  # fmt: skip
        injection = fault.new_injection(config, ctx, mode=self.mode(config), target=handle.name, undo=base)
        try:
            base.update(self.prepare(config, handle, api, ctx, ctx.state_dir / "backups" / injection.id))
        except FaultdrillError:
            raise
        except Exception as exc:  # an API error while reading the prior state: nothing changed yet
            raise FaultdrillError(f"{fault.name}: reading the prior state failed: {type(exc).__name__}: {exc}") from exc
        injection = injection.model_copy(update={"undo": base})
        return fault.apply_recorded(injection, ctx, lambda: self.apply(config, base, api))

    def rollback(self, fault: Fault, injection: Injection) -> None:
        try:
            self.restore(injection.mode, injection.undo, api_client(injection.undo["cluster"]))
        except RollbackError:
            raise
        except Exception as exc:  # API errors, exec failures: keep the record, say what failed
            raise RollbackError(f"could not undo {injection.mode} on '{injection.target}': {type(exc).__name__}: "
                                f"{exc}", fault=fault.name, injection_id=injection.id) from exc  # fmt: skip

    def verify(self, fault: Fault, injection: Injection) -> Verification:
        try:
            return self.measure(injection.mode, injection.undo, injection.config,
                                api_client(injection.undo["cluster"]))  # fmt: skip
        except Exception as exc:
            return Verification(False, {"error": f"{type(exc).__name__}: {exc}"}, message=f"verify failed: {exc}")

    # -- what a family implements ---------------------------------------------------------------------------

    def mode(self, config: Any) -> str:
        return str(getattr(config, "mode", "default"))

    def problems(self, config: Any, handle: ServiceHandle, ctx: FaultContext) -> list[Problem]:
        return []

    def prepare(self, config: Any, handle: ServiceHandle, api: Any, ctx: FaultContext, backup: Path) -> dict[str, Any]:
        return {}

    @abstractmethod
    def apply(self, config: Any, undo: dict[str, Any], api: Any) -> None:
        """Make the change; ``undo`` is the record's (already durable) ``undo`` mapping."""

    @abstractmethod
    def restore(self, mode: str, undo: dict[str, Any], api: Any) -> None:
        """Undo exactly what ``undo`` records; idempotent (an object already gone is success)."""

    @abstractmethod
    def measure(self, mode: str, undo: dict[str, Any], cfg: dict[str, Any], api: Any) -> Verification:
        """Whether the effect is present, measured through the API."""
