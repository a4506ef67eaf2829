"""faultdrill's faults as Chaos Toolkit actions: an inject action and a rollback for every registered fault.

For each fault of the installed registry (built-ins and ``faultdrill.faults`` plugins alike)
this module resolves ``inject_<fault>`` and ``rollback_<fault>`` (``inject_oom_kill``,
``rollback_oom_kill``, …), whose arguments are the fault's own ``Config`` fields;
``inject_fault``/``rollback_fault`` take the fault's name as an argument instead. They act on
the bundled target that ``experiments.chaostoolkit.target`` brought up (its Chaos Toolkit control or
its ``faultdrill_up`` action), described by a **state file**: where the ledger is, and a
loopback control API that serves the live topology and scope and stops/restarts services
for the faults that need a :class:`~faults.topology.Supervisor`.

Each injection is in the ledger before it takes effect and the dead-man watchdog runs
after it, so whatever a killed ``chaos run`` left is undone by the target's own process
(it watches its owner), by the watchdog at the deadline (``duration_s`` + grace: set
``duration_s`` at least as long as the fault should last), or by ``faultdrill rollback
--pending``. A rollback undoes what this process injected (or one ``injection_id``) and is a
no-op when there is nothing to undo, so it belongs in ``rollbacks`` unconditionally.

The state file is the ``state`` argument, else the experiment's configuration key
``faultdrill_state``, else ``$FAULTDRILL_CTK_STATE``, else ``.faultdrill/ctk/target.json``.

This module's annotations are real types (no ``from __future__ import annotations``):
Chaos Toolkit's discovery reads them to describe each argument.

Example (a step of an experiment's method)::

    {"type": "action", "name": "exhaust-gpu-memory",
     "provider": {"type": "python", "module": "faultdrill.faults.chaostoolkit", "func": "inject_gpu_memory_exhaustion",
                  "arguments": {"target": "replica-0", "leave_free_mib": 0, "duration_s": 60}}}
"""

import functools
import inspect
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict
from pydantic_core import PydanticUndefined

from faultdrill.faults.base import FaultContext, Injection, Scope
from faultdrill.faults.errors import ConfigError, FaultdrillError, PreflightError, RollbackError
from faultdrill.faults.owned import is_resource
from faultdrill.faults.procid import pid_alive
from faultdrill.faults.records import Ledger, default_state_dir
from faultdrill.faults.registry import FaultRegistry
from faultdrill.faults.topology import ServiceHandle, Topology

__all__ = [
    "DEFAULT_STATE",
    "RemoteSupervisor",
    "RemoteSupervisorError",
    "TargetState",
    "discover",
    "inject_fault",
    "read_state",
    "rollback_fault",
    "state_path",
    "write_state",
]

DEFAULT_STATE = Path(".faultdrill") / "ctk" / "target.json"
STATE_ENV = "FAULTDRILL_CTK_STATE"
CONFIG_KEY = "faultdrill_state"
# Reserved argument names of every generated activity (a fault's Config field of that name
# is reachable through ``inject_fault(params=…)`` only).
_RESERVED = ("state", "configuration", "verify")


class RemoteSupervisorError(RuntimeError):
    """The target's control API refused or failed a supervisor call (its message says why)."""


class TargetState(BaseModel):
    """The state file of a bundled target started for Chaos Toolkit (written by ``experiments.chaostoolkit.target``).

    >>> TargetState(status="starting", pid=1, owner_pid=2, state_dir=Path("/s"), workdir=Path("/w")).ready
    False
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    status: Literal["starting", "ready", "failed", "stopping"]
    pid: int
    """The target process (it supervises the replicas and feature store)."""
    pid_start: int | None = None
    owner_pid: int
    """The process that started it (``chaos run``): when it dies, the target rolls back and exits."""
    state_dir: Path
    """The ledger's directory."""
    workdir: Path
    control_url: str | None = None
    token_file: Path | None = None
    service_url: str | None = None
    replicas: dict[str, str] = {}
    """Replica name → its own URL (the service URL balances over the ready ones)."""
    prometheus_url: str | None = None
    alertmanager_url: str | None = None
    misconfigurations: list[str] = []
    log_file: Path | None = None
    error: str = ""

    @property
    def ready(self) -> bool:
        return self.status == "ready" and self.control_url is not None

    def alive(self) -> bool:
        return pid_alive(self.pid, self.pid_start)


def state_path(state: str | None = None, configuration: Mapping[str, Any] | None = None) -> Path:
    """Where the state file is: argument, configuration ``faultdrill_state``, ``$FAULTDRILL_CTK_STATE``, default."""
    value = state or (configuration or {}).get(CONFIG_KEY) or os.environ.get(STATE_ENV) or str(DEFAULT_STATE)
    return Path(str(value)).expanduser().absolute()


def read_state(path: Path) -> TargetState:
    """The state file at ``path``; a ConfigError saying how to start a target when there is none."""
    try:
        return TargetState.model_validate_json(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no faultdrill target is up (no state file {path})", field=CONFIG_KEY,
                          suggestion="start it with the control 'faultdrill.experiments.chaostoolkit.target' or "
                          "the action 'faultdrill_up' before any faultdrill activity") from None  # fmt: skip
    except (OSError, ValueError) as exc:
        raise ConfigError(f"unreadable target state file {path}: {exc}", field=CONFIG_KEY) from exc


def write_state(path: Path, state: TargetState) -> None:
    """Replace the state file atomically (readers see the old or the new one, never half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    with os.fdopen(fd, "w") as fh:
        fh.write(state.model_dump_json(indent=2))
    os.replace(tmp, path)


class RemoteSupervisor:
    """:class:`~faults.topology.Supervisor` over the target's control API (bearer token, loopback).

    Example::

        sup = RemoteSupervisor(read_state(state_path()))
        sup.topology().get("replica-0").url; sup.restart("replica-0", wait=True)
    """

    def __init__(self, target: TargetState, *, timeout_s: float = 150.0) -> None:
        if not target.ready or target.token_file is None:
            raise ConfigError(f"the faultdrill target is not ready (status {target.status}"
                              + (f": {target.error}" if target.error else "") + ")", field=CONFIG_KEY)  # fmt: skip
        self.url = str(target.control_url)
        self._headers = {"Authorization": f"Bearer {target.token_file.read_text().strip()}"}
        self.timeout_s = timeout_s

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        try:
            r = httpx.request(method, f"{self.url}{path}", json=body, headers=self._headers,
                              timeout=timeout or self.timeout_s)  # fmt: skip
        except httpx.HTTPError as exc:
            raise RemoteSupervisorError(f"the faultdrill target at {self.url} did not answer {path}: {exc}") from exc
        doc = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
        if r.status_code != 200:
            raise RemoteSupervisorError(str(doc.get("error") or f"{path}: HTTP {r.status_code}"))
        return doc.get("result")

    def _call(self, op: str, **args: Any) -> Any:
        timeout = float(args.get("timeout_s") or 0) + 10.0 if op == "wait_exit" else None
        return self._request("POST", "/supervisor", {"op": op, **args}, timeout)

    # -- what faults see ---------------------------------------------------------------
    def topology(self) -> Topology:
        return Topology.model_validate(self._request("GET", "/topology"))

    def scope(self) -> Scope:
        doc = self._request("GET", "/scope")
        return Scope(**{k: frozenset(v) for k, v in doc.items()})

    # -- Supervisor protocol -------------------------------------------------------------
    def stop(self, name: str, *, hold: bool = True) -> int | None:
        result = self._call("stop", name=name, hold=hold)
        return None if result is None else int(result)

    def kill(self, name: str, sig: int) -> None:
        self._call("kill", name=name, sig=int(sig))

    def start(self, name: str, *, env: dict[str, str] | None = None, wait: bool = True) -> None:
        self._call("start", name=name, env=env, wait=wait)

    def restart(self, name: str, *, env: dict[str, str] | None = None, wait: bool = True) -> None:
        self._call("restart", name=name, env=env, wait=wait)

    def set_env(self, name: str, env: Mapping[str, str | None]) -> dict[str, str | None]:
        result = self._call("set_env", name=name, env=dict(env))
        return {str(k): None if v is None else str(v) for k, v in (result or {}).items()}

    def handle(self, name: str) -> ServiceHandle:
        return ServiceHandle.model_validate(self._call("handle", name=name))

    def wait_exit(self, name: str, timeout_s: float) -> int | None:
        result = self._call("wait_exit", name=name, timeout_s=timeout_s)
        return None if result is None else int(result)

    def exit_status(self, name: str) -> int | None:
        result = self._call("exit_status", name=name)
        return None if result is None else int(result)


# -- contexts ----------------------------------------------------------------------------
def target_context(state: str | None = None, configuration: Mapping[str, Any] | None = None) -> FaultContext:
    """A fault context on the running target: its ledger, live scope and topology, remote supervisor."""
    target = read_state(state_path(state, configuration))
    supervisor = RemoteSupervisor(target)
    return FaultContext.create(target.state_dir, scope=supervisor.scope(), topology=supervisor.topology(),
                               supervisor=supervisor)  # fmt: skip


def _ledger_context(state: str | None, configuration: Mapping[str, Any] | None) -> FaultContext:
    """The running target's context, or (it is gone) a ledger-only one: rollbacks still work."""
    path = state_path(state, configuration)
    try:
        return target_context(state, configuration)
    except (ConfigError, RemoteSupervisorError):
        try:
            return FaultContext.create(read_state(path).state_dir)
        except ConfigError:
            return FaultContext.create(default_state_dir())


# -- the activities ----------------------------------------------------------------------
def inject_fault(fault: str, target: str | None = None, params: dict[str, Any] | None = None,
                 duration_s: float = 60.0, verify: bool = True, state: str | None = None,
                 configuration: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """Inject the registered fault ``fault`` (``faultdrill faults list``) into the running target.

    ``params`` are the fault's own settings (``faultdrill faults describe FAULT``); ``duration_s``
    is its dead-man bound: the watchdog undoes it after that (plus a grace) if no rollback
    came. Returns the injection record's id and what ``verify`` measured.
    """
    args = {**(params or {}), "duration_s": duration_s, **({"target": target} if target is not None else {})}
    return _inject(_installed(), fault, args, verify=verify, state=state, configuration=configuration)


def rollback_fault(fault: str | None = None, target: str | None = None, injection_id: str | None = None,
                   state: str | None = None,
                   configuration: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """Undo what this process injected: every fault, or those of type ``fault`` (on ``target``),
    or the one ``injection_id``. Nothing to undo is not an error (rollbacks run unconditionally).
    """
    return _rollback(_installed(), fault, target, injection_id, state, configuration)


def _rollback(registry: FaultRegistry, fault: str | None, target: str | None, injection_id: str | None,
              state: str | None, configuration: Mapping[str, Any] | None) -> dict[str, Any]:  # fmt: skip
    ctx = _ledger_context(state, configuration)
    undone, failed = [], []
    for record in reversed(ctx.ledger.pending()):  # newest first, like the ledger's own rollback
        if not _selected(record, fault, target, injection_id):
            continue
        with ctx.ledger.locked(record.id) as held:
            if not held or ctx.ledger.get(record.id) is None:
                continue  # someone else is undoing it, or has
            try:
                registry.get(record.fault)().undo(record, ctx)
                undone.append(record.id)
            except (FaultdrillError, OSError, RuntimeError, ValueError) as exc:
                failed.append(f"{record.id} ({record.fault}): {type(exc).__name__}: {exc}")
    if failed:
        raise RollbackError("kept in the ledger (faultdrill rollback --pending retries): " + "; ".join(failed),
                            fault=fault)  # fmt: skip
    return {"rolled_back": undone, "fault": fault, "target": target}


def _selected(record: Injection, fault: str | None, target: str | None, injection_id: str | None) -> bool:
    if is_resource(record):
        return False  # a run's own processes and namespaces (a CTK step inside a run shares its pid): never a fault
    if injection_id is not None:
        return record.id == injection_id
    mine = record.owner_pid == os.getpid()
    return mine and fault in (None, record.fault) and target in (None, record.config.get("target"))


def _inject(registry: FaultRegistry, name: str, args: dict[str, Any], *, verify: bool, state: str | None,
            configuration: Mapping[str, Any] | None) -> dict[str, Any]:  # fmt: skip
    from faultdrill.faults.deadman import spawn_watchdog

    fault = registry.get(name)()
    config = fault.parse_config(args)
    ctx = target_context(state, configuration)
    if problems := fault.preflight(config, ctx):
        raise PreflightError(problems, fault=name)
    injection = fault.inject(config, ctx)
    spawn_watchdog(ctx.state_dir, max_runtime_s=3600.0)  # exits by itself once the ledger is empty
    out: dict[str, Any] = {"injection_id": injection.id, "fault": name, "mode": injection.mode,
                           "target": config.model_dump(mode="json").get("target"), "emulated": injection.emulated,
                           "deadline": injection.deadline}  # fmt: skip
    if verify:
        try:
            result = fault.verify(injection, ctx)
            out["verified"] = {"effective": result.effective, "emulated": result.emulated,
                               "message": result.message[:300]}  # fmt: skip
        except Exception as exc:  # verification never undoes an injection, nor fails the action
            out["verified"] = {"effective": False, "message": f"verify failed: {type(exc).__name__}: {exc}"}
    return out


# -- one inject/rollback pair per registered fault, resolved by name ---------------------
def _param(name: str, field: Any) -> inspect.Parameter:
    if field.is_required():
        return inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=field.annotation)
    default = None if field.default is PydanticUndefined else field.default
    return inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default,
                             annotation=field.annotation)  # fmt: skip


def _tail(*extra: inspect.Parameter) -> list[inspect.Parameter]:
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    return [*extra, inspect.Parameter("state", kind, default=None, annotation=str | None),
            inspect.Parameter("configuration", kind, default=None, annotation=dict[str, Any] | None)]  # fmt: skip


def _first_line(cls: type) -> str:
    return (inspect.getdoc(cls) or cls.__name__).splitlines()[0]


def fault_injector(name: str, registry: FaultRegistry) -> Callable[..., dict[str, Any]]:
    """``inject_<name>``: its arguments are the fault's ``Config`` fields (plus ``verify``, ``state``)."""
    cls = registry.get(name)
    fields = {k: f for k, f in cls.Config.model_fields.items() if k not in _RESERVED}
    params = [_param(k, f) for k, f in fields.items() if f.is_required()]
    params += [_param(k, f) for k, f in fields.items() if not f.is_required()]
    verify = inspect.Parameter("verify", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=True, annotation=bool)

    def action(**kwargs: Any) -> dict[str, Any]:
        state, configuration = kwargs.pop("state", None), kwargs.pop("configuration", None)
        check = bool(kwargs.pop("verify", True))
        return _inject(registry, name, kwargs, verify=check, state=state, configuration=configuration)

    return _named(action, f"inject_{name}", inspect.Signature(_tail(*params, verify), return_annotation=dict),
                  f"Inject {name}: {_first_line(cls)}\n\nModes: {', '.join(cls.modes)}. "
                  f"duration_s is the dead-man bound (the watchdog undoes it after that plus a grace); "
                  f"returns the injection id and what verify measured ({cls.verifies or 'its effect'}).")  # fmt: skip


def fault_rollbacker(name: str, registry: FaultRegistry) -> Callable[..., dict[str, Any]]:
    """``rollback_<name>``: undo this process's ``name`` injections (on ``target``, or one ``injection_id``)."""
    cls = registry.get(name)
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    params = [inspect.Parameter("target", kind, default=None, annotation=str | None),
              inspect.Parameter("injection_id", kind, default=None, annotation=str | None)]  # fmt: skip

    def rollback(target: str | None = None, injection_id: str | None = None, state: str | None = None,
                 configuration: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
        return _rollback(registry, name, target, injection_id, state, configuration)

    return _named(rollback, f"rollback_{name}", inspect.Signature(_tail(*params), return_annotation=dict),
                  f"Roll back {name} ({_first_line(cls)}): what this process injected, on target if given; "
                  "nothing to undo is not an error.")  # fmt: skip


def _named(fn: Callable[..., Any], name: str, sig: inspect.Signature, doc: str) -> Callable[..., Any]:
    fn.__name__ = fn.__qualname__ = name
    fn.__module__ = __name__
    fn.__doc__ = doc
    fn.__signature__ = sig  # type: ignore[attr-defined]
    return fn


def fault_activities(registry: FaultRegistry) -> dict[str, Callable[..., dict[str, Any]]]:
    """Every ``inject_<fault>``/``rollback_<fault>`` of ``registry``, by function name."""
    out: dict[str, Callable[..., dict[str, Any]]] = {}
    for name in registry.names():
        out[f"inject_{name}"] = fault_injector(name, registry)
        out[f"rollback_{name}"] = fault_rollbacker(name, registry)
    return out


@functools.cache
def _installed() -> FaultRegistry:
    # Chaos Toolkit resolves every ``func`` by getattr, and validates each activity by listing this
    # module (``dir`` + getattr of every name): the installed faults do not change while a process
    # runs, so the entry points are read once, not hundreds of times.
    return FaultRegistry.installed()


def __getattr__(attr: str) -> Any:
    # Each installed fault's pair, plugins included, is built on demand from the registry.
    for prefix, build in (("inject_", fault_injector), ("rollback_", fault_rollbacker)):
        if attr.startswith(prefix) and attr[len(prefix) :] in _installed():
            return build(attr[len(prefix) :], _installed())
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def __dir__() -> list[str]:
    names = _installed().names()
    return sorted({*globals(), *(f"inject_{n}" for n in names), *(f"rollback_{n}" for n in names)})


# -- discovery -----------------------------------------------------------------------------
_PROBE_MODULES = ("faultdrill.experiments.chaostoolkit.probes",)
_ACTION_MODULES = ("faultdrill.experiments.chaostoolkit.target",)


def describe_activity(fn: Callable[..., Any], kind: str) -> dict[str, Any]:
    """One activity as ``chaos discover`` lists it (the shape of chaoslib's ``discover_activities``)."""
    from chaoslib.discovery.discover import portable_type_name

    sig = inspect.signature(fn)
    activity: dict[str, Any] = {"type": kind, "name": fn.__name__, "mod": fn.__module__, "doc": inspect.getdoc(fn),
                                "arguments": []}  # fmt: skip
    if sig.return_annotation is not inspect.Signature.empty:
        activity["return_type"] = portable_type_name(sig.return_annotation)
    for p in sig.parameters.values():
        arg: dict[str, Any] = {"name": p.name}
        if p.default is not inspect.Parameter.empty:
            arg["default"] = p.default
        if p.annotation is not inspect.Parameter.empty:
            arg["type"] = portable_type_name(p.annotation)
        activity["arguments"].append(arg)
    return activity


def discover(discover_system: bool = True) -> dict[str, Any]:
    """What ``chaos discover faultdrill`` prints: every fault's inject and rollback action, the
    target's up/down actions, the probes, and (``discover_system``) the faults installed here
    and the target that is up, if any."""
    from importlib.metadata import version

    from chaoslib.discovery.discover import discover_activities, initialize_discovery_result

    discovery: dict[str, Any] = initialize_discovery_result("faultdrill", version("faultdrill"), "faultdrill")
    registry = FaultRegistry.installed()
    activities = [describe_activity(fn, "action") for fn in fault_activities(registry).values()]
    activities += [describe_activity(fn, "action") for fn in (inject_fault, rollback_fault)]
    for module in _ACTION_MODULES:
        activities += discover_activities(module, "action")
    for module in _PROBE_MODULES:
        activities += discover_activities(module, "probe")
    discovery["activities"] = activities
    if discover_system:
        classes = {n: registry.get(n) for n in registry.names()}
        faults = [{"name": n, "modes": list(c.modes), "needs": list(c.needs), "verifies": c.verifies,
                   "source": registry.source(n)} for n, c in classes.items()]  # fmt: skip
        target = None
        try:
            found = read_state(state_path())
            target = json.loads(found.model_dump_json()) if found.alive() else None
        except ConfigError:
            pass
        discovery["system"] = {"faults": faults, "target": target, "ledger": str(Ledger(default_state_dir()).dir)}
    return discovery
