"""The seam between a built-in fault and its Kubernetes implementation.

``@kube_dispatch`` wraps a fault class's five operations: when the fault's ``target`` names a
service with a Kubernetes reference (``ServiceHandle.kube``), or an injection record carries
``undo["platform"] == "kubernetes"``, the call goes to the :class:`~faults.kube.actions.KubeAction`
registered under the fault's ``name``; otherwise the class's own (local) code runs unchanged.
So one experiment YAML runs on both platforms, and ``faultdrill rollback --pending`` (which
knows only the record) undoes a Kubernetes injection with the same registry.

The generic part lives here: the namespace allow-list (``Scope.namespaces``), the record
(``platform``, ``cluster`` reference, object names, prior state — written before the change),
the client built from the record. Nothing here imports ``kubernetes``.

Example::

    @kube_dispatch
    class ProcessKillFault(Fault): ...
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from faultdrill.faults.base import Fault, FaultContext, Injection, Problem, Verification
from faultdrill.faults.topology import ServiceHandle

__all__ = ["PLATFORM", "kube_dispatch", "kube_handle"]

PLATFORM = "kubernetes"
F = TypeVar("F", bound=type[Fault])


def kube_handle(config: Any, ctx: FaultContext) -> ServiceHandle | None:
    """The Kubernetes service ``config.target`` names, or None (then the local code runs)."""
    name = getattr(config, "target", None)
    handle = ctx.topology.services.get(name) if isinstance(name, str) else None
    return handle if handle is not None and handle.kube is not None else None


def _is_kube(injection: Injection) -> bool:
    return injection.undo.get("platform") == PLATFORM


def kube_dispatch(cls: F) -> F:
    """Route ``cls``'s operations to ``faults.kube.actions`` for Kubernetes targets."""
    local: dict[str, Callable[..., Any]] = {m: getattr(cls, m) for m in
                                            ("preflight", "plan", "inject", "rollback", "verify")}  # fmt: skip

    def preflight(self: Fault, config: Any, ctx: FaultContext) -> list[Problem]:
        if (handle := kube_handle(config, ctx)) is None:
            return list(local["preflight"](self, config, ctx))
        from faultdrill.faults.kube.actions import preflight as kube_preflight

        return kube_preflight(self, config, ctx, handle)

    def plan(self: Fault, config: Any, ctx: FaultContext) -> list[str]:
        if (handle := kube_handle(config, ctx)) is None:
            return list(local["plan"](self, config, ctx))
        from faultdrill.faults.kube.actions import action_for

        return action_for(self.name).plan(config, handle)

    def inject(self: Fault, config: Any, ctx: FaultContext) -> Injection:
        if (handle := kube_handle(config, ctx)) is None:
            result: Injection = local["inject"](self, config, ctx)
            return result
        from faultdrill.faults.kube.actions import inject as kube_inject

        return kube_inject(self, config, ctx, handle)

    def rollback(self: Fault, injection: Injection, ctx: FaultContext) -> None:
        if not _is_kube(injection):
            local["rollback"](self, injection, ctx)
            return
        from faultdrill.faults.kube.actions import rollback as kube_rollback

        kube_rollback(self, injection)

    def verify(self: Fault, injection: Injection, ctx: FaultContext) -> Verification:
        if not _is_kube(injection):
            result: Verification = local["verify"](self, injection, ctx)
            return result
        from faultdrill.faults.kube.actions import verify as kube_verify

        return kube_verify(self, injection)

    for fn in (preflight, plan, inject, rollback, verify):
        fn.__doc__ = local[fn.__name__].__doc__
        fn.__qualname__ = f"{cls.__qualname__}.{fn.__name__}"
        setattr(cls, fn.__name__, fn)
    return cls
