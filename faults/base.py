"""The fault contract: what every fault implements and what it is handed.

A fault is a class with a ``name``, its ``modes``, a pydantic ``Config`` (unknown keys
rejected) and five operations: ``preflight`` (capabilities, nothing touched), ``plan``
(the exact changes, for ``--dry-run``), ``inject`` (write the undo record to the ledger,
then change the system), ``rollback`` (idempotent undo) and ``verify`` (measure the effect).

A subclass implements them as ``local_preflight`` … ``local_verify``: its own mechanism, on this
host. It may also declare another, ``kubernetes = SomeKubeAction`` (``faults/kube/``): the public
operations here are the one place that chooses — the Kubernetes action when ``config.target``
names a service with a Kubernetes reference, or when the record says ``platform: kubernetes`` (so
``faultdrill rollback --pending``, which has only the record, undoes it the same way) — and the
class's own code otherwise. This module imports nothing of ``faults/kube``: the action is reached
through the class attribute, typed by the ``PlatformAction`` protocol below.

Example::

    ctx = FaultContext.create(state_dir, scope=Scope(paths=frozenset({"/tmp/fd"})))
    fault = FakeFault()
    config = fault.parse_config({"path": "/tmp/fd/flag", "content": "x"})
    if problems := fault.preflight(config, ctx):
        raise PreflightError(problems, fault=fault.name)
    injection = fault.inject(config, ctx)       # ledger record is durable before the write
    assert fault.verify(injection, ctx).effective
    fault.undo(injection, ctx)                  # rollback + clear the ledger record
"""

from __future__ import annotations

import difflib
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from faultdrill.faults.errors import BlastRadiusError, ConfigError, InjectionError
from faultdrill.faults.procid import process_start_ticks
from faultdrill.faults.records import Injection, Ledger, new_injection_id
from faultdrill.faults.topology import ServiceHandle, Supervisor, Topology

__all__ = [
    "KUBERNETES",
    "Clock",
    "Fault",
    "FaultConfig",
    "FaultContext",
    "Injection",
    "PlatformAction",
    "Problem",
    "Scope",
    "SystemClock",
    "Verification",
    "new_injection_id",
]

KUBERNETES = "kubernetes"
"""``undo["platform"]`` of a record the Kubernetes action wrote: its rollback and verify go there too."""


def _empty_topology() -> Topology:
    return Topology()


@dataclass(frozen=True)
class Problem:
    """One capability problem found by ``preflight``, before anything is touched.

    >>> Problem("not_root", "iptables needs root", hint="run as root")
    Problem(code='not_root', message='iptables needs root', hint='run as root')
    """

    code: str
    message: str
    hint: str = ""


class Clock(Protocol):
    """Wall time for deadlines (survive restarts), monotonic time for measuring."""

    def time(self) -> float: ...
    def monotonic(self) -> float: ...


class SystemClock:
    """The real clock. ``SystemClock().time()`` is ``time.time()``."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


@dataclass(frozen=True)
class Scope:
    """What faults may touch: what faultdrill started, plus what was explicitly allowed.

    Paths cover everything below them. ``check_*`` raises ``BlastRadiusError``.

    >>> scope = Scope(paths=frozenset({"/tmp/fd"})).with_pids(42)
    >>> scope.check_path("/tmp/fd/x"); scope.check_pid(42)
    >>> scope.check_pid(1)
    Traceback (most recent call last):
    faults.errors.BlastRadiusError: refused to touch pid '1': ...
    """

    pids: frozenset[int] = frozenset()
    cgroups: frozenset[str] = frozenset()
    netns: frozenset[str] = frozenset()
    paths: frozenset[str] = frozenset()
    ports: frozenset[int] = frozenset()
    namespaces: frozenset[str] = frozenset()
    """Kubernetes namespaces allow-listed for faults (the kubernetes platform's allow-list)."""

    def with_pids(self, *pids: int) -> Scope:
        return replace(self, pids=self.pids | set(pids))

    def with_cgroups(self, *paths: str) -> Scope:
        return replace(self, cgroups=self.cgroups | set(paths))

    def with_netns(self, *names: str) -> Scope:
        return replace(self, netns=self.netns | set(names))

    def with_paths(self, *paths: str | Path) -> Scope:
        return replace(self, paths=self.paths | {str(p) for p in paths})

    def with_ports(self, *ports: int) -> Scope:
        return replace(self, ports=self.ports | set(ports))

    def check_pid(self, pid: int) -> None:
        if pid not in self.pids:
            raise BlastRadiusError("pid", str(pid), allowed=_shown(self.pids))

    def check_port(self, port: int) -> None:
        if port not in self.ports:
            raise BlastRadiusError("port", str(port), allowed=_shown(self.ports))

    def check_netns(self, name: str) -> None:
        if name not in self.netns:
            raise BlastRadiusError("network namespace", name, allowed=_shown(self.netns))

    def check_namespace(self, name: str) -> None:
        if name not in self.namespaces:
            raise BlastRadiusError("Kubernetes namespace", name, allowed=_shown(self.namespaces))

    def check_cgroup(self, path: str | Path) -> None:
        if not _under_any(Path(path), self.cgroups):
            raise BlastRadiusError("cgroup", str(path), allowed=_shown(self.cgroups))

    def check_path(self, path: str | Path) -> None:
        if not _under_any(Path(path), self.paths):
            raise BlastRadiusError("path", str(path), allowed=_shown(self.paths))


def _shown(values: Iterable[object]) -> list[str]:
    return sorted(str(v) for v in values)


def _under_any(path: Path, roots: Iterable[str]) -> bool:
    # Resolve both sides so "allowed/../../etc/passwd" and symlinks cannot escape.
    resolved = path.resolve()
    return any(resolved.is_relative_to(Path(root).resolve()) for root in roots)


@dataclass
class FaultContext:
    """Everything a fault is handed: state dir, ledger, scope, dry-run flag, clock, and the
    run's topology (what it can aim at) and supervisor (a live platform's control, if any).

    ``grace_s`` is added to a fault's duration to form its dead-man deadline.
    """

    state_dir: Path
    ledger: Ledger
    scope: Scope = field(default_factory=Scope)
    dry_run: bool = False
    clock: Clock = field(default_factory=SystemClock)
    grace_s: float = 10.0
    topology: Topology = field(default_factory=lambda: _empty_topology())
    supervisor: Supervisor | None = None

    @classmethod
    def create(cls, state_dir: str | Path, **kwargs: Any) -> FaultContext:
        """A context whose ledger lives under ``state_dir``."""
        path = Path(state_dir)
        return cls(state_dir=path, ledger=Ledger(path), **kwargs)


@dataclass(frozen=True)
class Verification:
    """Whether an injected effect is really present, with what was measured.

    ``emulated`` is true when the effect is produced by an emulation (e.g. a proxy)
    rather than the real mechanism.
    """

    effective: bool
    details: Mapping[str, Any] = field(default_factory=dict)
    emulated: bool = False
    message: str = ""


class FaultConfig(BaseModel):
    """Base of every fault's ``Config``: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    duration_s: float = Field(default=30.0, gt=0)


class PlatformAction(Protocol):
    """A fault's five operations carried out through a platform's API on one service: what ``Fault.kubernetes``
    names (``faults.kube.actions.KubeAction``). A structural type, so this module imports nothing of ``faults/kube``
    (which imports this one). ``rollback`` and ``verify`` have the record only: it holds all they need."""

    def preflight(self, fault: Fault, config: Any, ctx: FaultContext, handle: ServiceHandle) -> list[Problem]: ...
    def plan(self, config: Any, handle: ServiceHandle) -> list[str]: ...
    def inject(self, fault: Fault, config: Any, ctx: FaultContext, handle: ServiceHandle) -> Injection: ...
    def rollback(self, fault: Fault, injection: Injection) -> None: ...
    def verify(self, fault: Fault, injection: Injection) -> Verification: ...


class Fault(ABC):
    """The contract every fault implements. Subclasses set ``name``, ``modes``, ``Config`` and implement
    ``local_preflight`` … ``local_verify``; callers use ``preflight`` … ``verify``, which subclasses leave as
    they are: they are where the Kubernetes action (``kubernetes``) or the class's own code is chosen.

    ``rollback`` must be idempotent: it is called again after crashes and by the dead-man
    watchdog, possibly for a change that was never (fully) applied.
    """

    name: ClassVar[str]
    modes: ClassVar[tuple[str, ...]]
    Config: ClassVar[type[FaultConfig]]
    # Shown by ``faultdrill faults list/describe``; optional for plugins.
    needs: ClassVar[tuple[str, ...]] = ()
    """Capabilities the fault may need (root, cgroup memory controller, CUDA, faketime…)."""
    verifies: ClassVar[str] = ""
    """What ``verify`` measures, in a few words."""
    example: ClassVar[dict[str, Any]] = {}
    """An example ``params`` mapping for the experiment spec."""
    target_roles: ClassVar[tuple[str, ...] | None] = None
    """The roles of the services this fault may aim at (``experiments.spec.system``: replica, feature_store,
    proxy, cache…); None: any service. The loader refuses a target of another role, with the ones that fit."""
    target_needs: ClassVar[frozenset[str]] = frozenset()
    """What the aimed-at service must offer in every mode (``experiments.spec.system.CAPABILITIES``: ``admin_api``,
    ``model_repository``, ``tls``, ``memory_cgroup``, ``process``; or ``supervised``). A fault aimed at a service of
    the user's that lacks one is refused before anything starts (``experiments.spec.needs``)."""
    target_needs_by_mode: ClassVar[Mapping[str, frozenset[str]]] = {}
    """What a mode needs on top of ``target_needs`` (``{"in_process": frozenset({"admin_api"})}``)."""
    writes_models: ClassVar[bool] = False
    """It changes the bundled target's model registry (corrupts an artifact, publishes a version): a run with it gets
    a private registry in its folder; others share one read-only cache (``experiments.spec.system``)."""
    undo_actions: ClassVar[tuple[str, ...]] = ()
    """Runbook actions (``faultdrill.gamedays.actions``: ``release-device-memory``, …) that are this fault's own undo —
    the same admin call as its rollback — in every mode. A runbook that runs one rolls the fault back instead of
    repairing the service: ``{runbook: F, restores: steady_state}`` gives it no credit."""
    undo_actions_by_mode: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    """What a mode adds to ``undo_actions`` (``{"in_process": ("release-device-memory",)}``)."""
    undo_note: str = ""
    """What the last ``rollback`` did, when it has more to say than "ok" (``faultdrill rollback --pending``)."""
    kubernetes: ClassVar[type[PlatformAction] | None] = None
    """How this fault is carried out on a Kubernetes target (a ``faults/kube`` action class); None: the class's own
    code runs whatever the target is."""

    def writes_models_for(self, config: Any) -> bool:
        """Whether this configuration changes the model registry (``writes_models``; a fault may say per mode)."""
        return self.writes_models

    def undo_actions_of(self, config: Any) -> tuple[str, ...]:
        """The runbook actions that are ``config``'s own undo (``undo_actions`` and its mode's)."""
        return (*self.undo_actions, *self.undo_actions_by_mode.get(self.mode_of(config), ()))

    def target_needs_for(self, mode: str) -> frozenset[str]:
        """What the target must offer for ``mode`` (see ``target_needs``)."""
        return self.target_needs | self.target_needs_by_mode.get(mode, frozenset())

    def target_needs_of(self, config: Any) -> frozenset[str]:
        """What the target must offer for ``config`` (its mode's needs)."""
        return self.target_needs_for(self.mode_of(config))

    def mode_of(self, config: Any) -> str:
        """The variant ``config`` selects (its ``mode``, or a partition's ``action``), for the timeline."""
        return str(getattr(config, "mode", None) or getattr(config, "action", None) or "")

    def parse_config(self, raw: Mapping[str, Any], *, file: str | None = None) -> Any:
        """Validate ``raw`` into ``self.Config``; the first error becomes a ``ConfigError``."""
        try:
            return self.Config.model_validate(dict(raw))
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            suggestion = None
            if err["type"] == "extra_forbidden":
                close = difflib.get_close_matches(
                    str(err["loc"][-1]), list(self.Config.model_fields), n=1
                )
                suggestion = close[0] if close else None
                message = f"unknown key '{err['loc'][-1]}' for fault '{self.name}'"
            else:
                message = err["msg"]
            raise ConfigError(message, file=file, field=loc, suggestion=suggestion) from exc

    # -- the five operations: the one place that picks the Kubernetes action or the class's own code ----------

    def preflight(self, config: Any, ctx: FaultContext) -> list[Problem]:
        """Capability and scope problems; must not change anything."""
        if route := self._kubernetes_for(config, ctx):
            action, handle = route
            return action.preflight(self, config, ctx, handle)
        return self.local_preflight(config, ctx)

    def plan(self, config: Any, ctx: FaultContext) -> list[str]:
        """The exact changes ``inject`` would make, one human-readable line each."""
        if route := self._kubernetes_for(config, ctx):
            action, handle = route
            return action.plan(config, handle)
        return self.local_plan(config, ctx)

    def inject(self, config: Any, ctx: FaultContext) -> Injection:
        """Record the undo in the ledger (durably), then apply; return the record."""
        if route := self._kubernetes_for(config, ctx):
            action, handle = route
            return action.inject(self, config, ctx, handle)
        return self.local_inject(config, ctx)

    def rollback(self, injection: Injection, ctx: FaultContext) -> None:
        """Undo ``injection``; a no-op when it is already undone."""
        if (action := self._kubernetes_record(injection)) is not None:
            action.rollback(self, injection)
        else:
            self.local_rollback(injection, ctx)

    def verify(self, injection: Injection, ctx: FaultContext) -> Verification:
        """Measure whether the effect is present (never assume it)."""
        if (action := self._kubernetes_record(injection)) is not None:
            return action.verify(self, injection)
        return self.local_verify(injection, ctx)

    def _kubernetes_for(self, config: Any, ctx: FaultContext) -> tuple[PlatformAction, ServiceHandle] | None:
        """The declared Kubernetes action and the service ``config.target`` names, when that is a Kubernetes object."""
        target = getattr(config, "target", None)
        handle = ctx.topology.services.get(target) if isinstance(target, str) else None
        if self.kubernetes is None or handle is None or handle.kube is None:
            return None
        return self.kubernetes(), handle

    def _kubernetes_record(self, injection: Injection) -> PlatformAction | None:
        """The declared Kubernetes action, when ``injection`` was made by it (its record says so)."""
        if self.kubernetes is None or injection.undo.get("platform") != KUBERNETES:
            return None
        return self.kubernetes()

    # -- what a subclass implements: its own mechanism ---------------------------------------------------------

    @abstractmethod
    def local_preflight(self, config: Any, ctx: FaultContext) -> list[Problem]:
        """``preflight`` by the class's own mechanism."""

    @abstractmethod
    def local_plan(self, config: Any, ctx: FaultContext) -> list[str]:
        """``plan`` by the class's own mechanism."""

    @abstractmethod
    def local_inject(self, config: Any, ctx: FaultContext) -> Injection:
        """``inject`` by the class's own mechanism (``apply_recorded`` writes the record before the change)."""

    @abstractmethod
    def local_rollback(self, injection: Injection, ctx: FaultContext) -> None:
        """``rollback`` of a record the class's own ``local_inject`` made; idempotent."""

    @abstractmethod
    def local_verify(self, injection: Injection, ctx: FaultContext) -> Verification:
        """``verify`` of a record the class's own ``local_inject`` made."""

    # -- helpers shared by implementations ------------------------------------------

    def new_injection(
        self,
        config: FaultConfig,
        ctx: FaultContext,
        *,
        mode: str,
        target: str,
        undo: dict[str, Any],
        emulated: bool = False,
    ) -> Injection:
        """Build the record; deadline = now + duration + grace (the dead-man bound)."""
        now = ctx.clock.time()
        return Injection(
            id=new_injection_id(),
            fault=self.name,
            mode=mode,
            target=target,
            undo=undo,
            created_at=now,
            deadline=now + config.duration_s + ctx.grace_s,
            owner_pid=os.getpid(),
            owner_start=process_start_ticks(os.getpid()),
            emulated=emulated,
            config=config.model_dump(mode="json"),
        )

    def apply_recorded(
        self, injection: Injection, ctx: FaultContext, apply: Callable[[], object]
    ) -> Injection:
        """Write the ledger record durably, then ``apply``; undo everything if it fails."""
        if ctx.dry_run:
            raise InjectionError("refusing to inject in dry-run mode", fault=self.name)
        ctx.ledger.write(injection)
        try:
            apply()
        except Exception as exc:
            # A half-applied change is still described by the record: undo, then forget it.
            self.rollback(injection, ctx)
            ctx.ledger.clear(injection.id)
            raise InjectionError(str(exc), fault=self.name, injection_id=injection.id) from exc
        return injection

    def undo(self, injection: Injection, ctx: FaultContext) -> None:
        """Rollback, then clear the ledger record (kept if rollback raises)."""
        self.rollback(injection, ctx)
        ctx.ledger.clear(injection.id)
