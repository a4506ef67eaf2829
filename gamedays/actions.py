"""faultdrill actions: what a runbook step's ``faultdrill`` block can do to the system.

==================================  ============================================================  ==========
action                              what it does                                                  needs
==================================  ============================================================  ==========
``restart <service>``               stop, then start it again and wait until it answers           platform
``kill <service> [SIGNAL]``         send SIGKILL (or SIGNAL); the platform's restart policy runs  platform
``rollback-model <replica>``        set its spec to the previous good model version, restart it   platform
``wait <duration>``                 do nothing for a while (``30s``, ``2m``; stoppable)           —
``release-device-memory <replica>`` ``POST /admin/device-memory/release`` on its admin API        topology
``reset-gpu <replica>``             drain and stop it (held), reset its GPU, start it again       platform
``renew-certificate <service>``     re-issue its certificate from the project's CA, in place      topology
``scale replicas <N>``              set the number of inference replicas                          Scalable
``canary-status``                   the canary rollout's phase, weight, version (its control API)  topology
``rollback-canary``                 roll the canary back now: weight 0, canary replicas stopped    topology
==================================  ============================================================  ==========

*platform* is a :class:`~faults.topology.Supervisor` (``LocalPlatform`` is one); *Scalable*
is the optional :class:`Scalable` capability (the local platform does not have it, so
``faultdrill runbook check --platform local`` reports a ``scale`` step as unsupported).

"Previous good version": the registry's versions whose ``model.pt`` matches the sha256 of
their manifest; the highest one below the version the replica is configured with, or that
version itself when it is good and nothing is below it (it undoes a restart on a version
that does not exist). It is written to the replica's spec (``Supervisor.set_env``, ``FAULTDRILL_MODEL_VERSION``:
what every later start uses, as ``kubectl rollout undo`` changes a Deployment) and the replica is restarted on it.

:class:`RecordingSupervisor` is the shipped test double: a Supervisor over a fixed topology
that records every call.

Example::

    >>> parse_action("restart $REPLICA").args
    ('$REPLICA',)
    >>> sup = RecordingSupervisor(Topology(services={"replica-0": ServiceHandle(name="replica-0", role="replica")}))
    >>> run_action(parse_action("restart replica-0"), ActionContext(supervisor=sup, topology=sup.topology))
    'restarted replica-0'
    >>> sup.calls
    [('restart', 'replica-0', None)]
"""

from __future__ import annotations

import difflib
import hashlib
import json
import signal
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit

from faultdrill.experiments.timespec import parse_duration
from faultdrill.faults.errors import FaultdrillError
from faultdrill.faults.topology import ServiceHandle, Supervisor, Topology, merge_env

__all__ = [
    "ACTIONS",
    "Action",
    "ActionContext",
    "ActionError",
    "ActionSpec",
    "ActionSyntaxError",
    "RecordingSupervisor",
    "Scalable",
    "ScalableRecordingSupervisor",
    "parse_action",
    "run_action",
]


@runtime_checkable
class Scalable(Protocol):
    """Optional platform capability: change the number of inference replicas.

    Example::

        if isinstance(platform, Scalable):
            platform.scale(3)
    """

    def scale(self, replicas: int) -> None:
        """Run ``replicas`` inference replicas (start or stop the difference); wait until they serve."""
        ...


@dataclass(frozen=True)
class ActionSpec:
    name: str
    usage: str
    min_args: int
    max_args: int
    needs: str = ""
    """``platform`` (a Supervisor), ``topology`` (handles with URLs, files), or empty."""
    capability: type | None = None


ACTIONS: dict[str, ActionSpec] = {
    s.name: s
    for s in (
        ActionSpec("restart", "restart <service>", 1, 1, "platform"),
        ActionSpec("kill", "kill <service> [SIGNAL]", 1, 2, "platform"),
        ActionSpec("rollback-model", "rollback-model <replica>", 1, 1, "platform"),
        ActionSpec("wait", "wait <duration>", 1, 1),
        ActionSpec("release-device-memory", "release-device-memory <replica>", 1, 1, "topology"),
        ActionSpec("reset-gpu", "reset-gpu <replica>", 1, 1, "platform"),
        ActionSpec("renew-certificate", "renew-certificate <service>", 1, 1, "topology"),
        ActionSpec("scale", "scale replicas <N>", 2, 2, "platform", Scalable),
        ActionSpec("canary-status", "canary-status", 0, 0, "topology"),
        ActionSpec("rollback-canary", "rollback-canary", 0, 0, "topology"),
    )
}


class ActionSyntaxError(ValueError):
    """A faultdrill action that does not parse; ``suggestion`` is a did-you-mean, if any."""

    def __init__(self, message: str, suggestion: str | None = None) -> None:
        super().__init__(message)
        self.suggestion = suggestion


class ActionError(FaultdrillError):
    """An action that could not be carried out (the step fails with this message)."""


@dataclass(frozen=True)
class Action:
    name: str
    args: tuple[str, ...]
    text: str

    @property
    def spec(self) -> ActionSpec:
        return ACTIONS[self.name]


def parse_action(text: str) -> Action:
    """``restart $REPLICA`` → Action; unknown names, wrong arity and bad arguments raise."""
    words = text.split()
    if not words:
        raise ActionSyntaxError("empty action")
    name, args = words[0], tuple(words[1:])
    spec = ACTIONS.get(name)
    if spec is None:
        close = difflib.get_close_matches(name, list(ACTIONS), n=1)
        raise ActionSyntaxError(f"unknown action '{name}' (known: {', '.join(ACTIONS)})", close[0] if close else None)
    if not spec.min_args <= len(args) <= spec.max_args:
        raise ActionSyntaxError(f"'{name}' takes {_count(spec)}, got {len(args)} (usage: {spec.usage})")
    if name == "wait":
        try:
            seconds = parse_duration(args[0])
        except ValueError:
            raise ActionSyntaxError(f"bad duration '{args[0]}' (expected a duration like 500ms, 30s or 2m)") from None
        if seconds > 3600:
            raise ActionSyntaxError(f"bad duration '{args[0]}': wait is at most 1h")
    if name == "kill" and len(args) == 2 and _signal(args[1]) is None:
        raise ActionSyntaxError(f"unknown signal '{args[1]}' (e.g. SIGKILL, SIGTERM)")
    if name == "scale":
        if args[0] != "replicas":
            raise ActionSyntaxError(f"usage: {spec.usage} (got 'scale {args[0]}')", "replicas")
        if not (args[1].isdigit() or args[1].startswith("$")) or (args[1].isdigit() and not 0 < int(args[1]) <= 64):
            raise ActionSyntaxError(f"replicas must be a whole number from 1 to 64, got '{args[1]}'")
    return Action(name, args, text)


def _count(spec: ActionSpec) -> str:
    n = spec.min_args if spec.min_args == spec.max_args else f"{spec.min_args} or {spec.max_args}"
    return f"{n} argument{'s' if n != 1 else ''}"


def _signal(name: str) -> int | None:
    name = name.upper()
    name = name if name.startswith("SIG") else f"SIG{name}"
    sig = getattr(signal.Signals, name, None)
    return int(sig) if sig is not None else None


@dataclass
class ActionContext:
    """What an action may use; ``variables`` are already substituted into the action's args."""

    supervisor: Supervisor | None
    topology: Callable[[], Topology]
    stop: threading.Event | None = None
    variables: Mapping[str, str] = field(default_factory=dict)


def run_action(action: Action, ctx: ActionContext) -> str:
    """Carry out ``action`` (arguments already substituted); returns what it did, in words.

    ActionError when it cannot; a platform's own errors pass through (the executor reports them).
    """
    spec, args = action.spec, action.args
    sup = ctx.supervisor
    if spec.needs == "platform" and sup is None:
        raise ActionError(f"'{action.name}' needs a platform: actions like restart work inside a faultdrill "
                          "experiment or game day (runbook: FILE), not in a standalone 'faultdrill runbook run'")
    if action.name == "wait":
        seconds = parse_duration(args[0])
        stop = ctx.stop or threading.Event()
        if stop.wait(seconds):
            raise ActionError(f"wait {args[0]} stopped early")
        return f"waited {args[0]}"
    assert sup is not None or spec.needs != "platform"
    if action.name == "restart":
        assert sup is not None
        sup.restart(args[0], wait=True)
        return f"restarted {args[0]}"
    if action.name == "kill":
        assert sup is not None
        sig = _signal(args[1]) if len(args) == 2 else int(signal.SIGKILL)
        sup.kill(args[0], sig or int(signal.SIGKILL))
        return f"sent {signal.Signals(sig or signal.SIGKILL).name} to {args[0]}"
    if action.name == "rollback-model":
        assert sup is not None
        return _rollback_model(sup, _handle(ctx, args[0]))
    if action.name == "release-device-memory":
        return _release(_handle(ctx, args[0]))
    if action.name == "reset-gpu":
        assert sup is not None
        return _reset_gpu(sup, _handle(ctx, args[0]))
    if action.name == "renew-certificate":
        return _renew(_handle(ctx, args[0]))
    if action.name in ("canary-status", "rollback-canary"):
        return _canary(ctx.topology().get("canary-control"), rollback=action.name == "rollback-canary")
    assert action.name == "scale"
    if not isinstance(sup, Scalable):
        raise ActionError(f"this platform ({type(sup).__name__}) cannot scale: it does not implement Scalable")
    if not args[1].isdigit():
        raise ActionError(f"replicas must be a whole number, got '{args[1]}'")
    sup.scale(int(args[1]))
    return f"scaled to {args[1]} replicas"


def _reset_gpu(sup: Supervisor, h: ServiceHandle) -> str:
    """What an SRE does for a reset-class Xid (NVIDIA's catalog: RESET_GPU): drain the replica and stop it — no
    process may hold the GPU during a reset, and a restart alone would start on the same broken GPU — reset the
    GPU (``nvidia-smi -r``; here the emulated device's state, ``target_service/gpu_state.py``), start it again."""
    if h.gpu_state_file is None:
        raise ActionError(f"'{h.name}' has no emulated GPU state to reset: on a GPU node, cordon and drain it, "
                          "then run 'nvidia-smi -r -i <index>' there")  # fmt: skip
    from faultdrill.target_service.gpu_state import GpuState

    sup.stop(h.name, hold=True)
    before = GpuState(h.gpu_state_file).reset()
    sup.start(h.name, wait=True)
    why = before.get("reset_required") or "no reset was required"
    return f"drained and stopped {h.name}, reset its GPU ({why}), started it again"


def _handle(ctx: ActionContext, name: str) -> ServiceHandle:
    if ctx.supervisor is not None:
        try:
            return ctx.supervisor.handle(name)
        except (FaultdrillError, KeyError, RuntimeError):
            pass  # fall back on the topology: its error names the known services
    return ctx.topology().get(name)


_VERSION_ENV = "FAULTDRILL_MODEL_VERSION"


def _version_key(version: str) -> tuple[int, int, str]:
    return (1, int(version), "") if version.isdigit() else (0, 0, version)


def _good(version_dir: Path) -> bool:
    try:
        expected = json.loads((version_dir / "manifest.json").read_text())["sha256"]
        return hashlib.sha256((version_dir / "model.pt").read_bytes()).hexdigest() == expected
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _rollback_model(sup: Supervisor, h: ServiceHandle) -> str:
    if h.model_registry is None or h.model_name is None or h.model_version is None:
        raise ActionError(f"'{h.name}' has no model registry, model name or version in its handle")
    parent = h.model_registry / h.model_name
    versions = sorted((p.name for p in parent.iterdir() if p.is_dir() and not p.name.startswith(".")
                       and (p / "manifest.json").exists()), key=_version_key) if parent.is_dir() else []  # fmt: skip
    current = h.model_version if h.model_version != "latest" else (versions[-1] if versions else "latest")
    good = [v for v in versions if _good(parent / v)]
    below = [v for v in good if _version_key(v) < _version_key(current)]
    if below:
        chosen = below[-1]
    elif current in good:
        chosen = current
    else:
        raise ActionError(f"no good version of model '{h.model_name}' to roll back to (versions: "
                          f"{', '.join(versions) or 'none'}; good: {', '.join(good) or 'none'}; configured: {current})")
    # The spec first (``kubectl rollout undo``): every later start of the replica — the platform's own restarts
    # included — loads the good version, not only this one.
    sup.set_env(h.name, {_VERSION_ENV: chosen})
    sup.restart(h.name, env={_VERSION_ENV: chosen}, wait=True)
    return f"set {h.name}'s spec to {h.model_name} version {chosen} and restarted it on it (was: {current})"


def _canary(h: ServiceHandle, *, rollback: bool) -> str:
    """The canary control API (``experiments/platforms/local/control.py``): status, or a manual rollback."""
    import httpx

    if h.url is None or h.admin_token_file is None:
        raise ActionError("this platform has no canary control API (is target.canary set?)")
    headers = {"Authorization": f"Bearer {h.admin_token()}"}
    try:
        if rollback:
            r = httpx.post(f"{h.url}/canary/rollback", json={"reason": "runbook"}, headers=headers, timeout=10)
        else:
            r = httpx.get(f"{h.url}/canary", headers=headers, timeout=5)
        r.raise_for_status()
        doc = r.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise ActionError(f"canary control API at {h.url}: {type(exc).__name__}: {exc}") from None
    state = f"phase {doc.get('phase')}, weight {doc.get('weight')} %, version {doc.get('version')}"
    if rollback:
        return ("rolled back the canary" if doc.get("rolled_back_now") else "the canary was already rolled back") + \
            f" ({state})"
    return f"canary {state}, failed checks {doc.get('failures')}"


def _release(h: ServiceHandle) -> str:
    from faultdrill.faults.process import admin_request

    if h.admin_url is None or h.admin_token_file is None:
        raise ActionError(f"'{h.name}' has no admin API in this topology")
    doc = admin_request(h.admin_url, h.admin_token_file, "POST", "/admin/device-memory/release", {})
    held = doc.get("device_memory_held_bytes", doc.get("held_bytes"))
    return f"released the device memory held on {h.name}" + (f" (now held: {held} bytes)" if held is not None else "")


def _renew(h: ServiceHandle) -> str:
    from faultdrill.faults.files import write_atomic
    from faultdrill.target_service.pki import CertPaths, cert_info, issue_cert

    if h.cert_file is None or h.key_file is None or h.ca_file is None:
        raise ActionError(f"'{h.name}' serves no certificate of the project's CA (no cert_file/key_file/ca_file)")
    ca = CertPaths(h.ca_file, h.ca_file.with_suffix(".key"))
    if not ca.key.is_file():
        raise ActionError(f"the CA key {ca.key} is missing: renew '{h.name}' with its real issuer")
    host = urlsplit(h.url or "").hostname
    hosts = tuple(dict.fromkeys(x for x in (host, "127.0.0.1", "localhost") if x))
    with tempfile.TemporaryDirectory(prefix="faultdrill-renew-") as tmp:
        fresh = issue_cert(ca, tmp, "renewed", hosts=hosts)
        # Key first: a hot reload that sees the new certificate must find its key already there.
        write_atomic(h.key_file, fresh.key.read_bytes(), 0o600)
        write_atomic(h.cert_file, fresh.cert.read_bytes(), 0o644)
    info = cert_info(h.cert_file)
    return f"renewed the certificate of {h.name} ({h.cert_file}): valid until {info.not_after.isoformat()}"


class RecordingSupervisor:
    """A Supervisor over a fixed topology that records each call (a shipped test double).

    ``fail`` maps a method name to the exception it raises; ``exit_statuses`` are returned by
    :meth:`exit_status` / :meth:`wait_exit`.

    Example::

        sup = RecordingSupervisor(topology, fail={"restart": RuntimeError("no")})
    """

    def __init__(self, topology: Topology | None = None, *, fail: dict[str, Exception] | None = None,
                 exit_statuses: dict[str, int] | None = None) -> None:  # fmt: skip
        self._topology = topology or Topology()
        self.fail = dict(fail or {})
        self.exit_statuses = dict(exit_statuses or {})
        self.calls: list[tuple[object, ...]] = []
        self.spec_env: dict[str, dict[str, str]] = {}
        """Each service's spec as ``set_env`` left it."""

    def topology(self) -> Topology:
        return self._topology

    def _record(self, *call: object) -> None:
        self.calls.append(call)
        method = str(call[0])
        if method in self.fail:
            raise self.fail[method]

    def stop(self, name: str, *, hold: bool = True) -> int | None:
        self._topology.get(name)
        self._record("stop", name, hold)
        return self.exit_statuses.get(name)

    def kill(self, name: str, sig: int) -> None:
        self._topology.get(name)
        self._record("kill", name, sig)

    def start(self, name: str, *, env: dict[str, str] | None = None, wait: bool = True) -> None:
        self._topology.get(name)
        self._record("start", name, env)

    def restart(self, name: str, *, env: dict[str, str] | None = None, wait: bool = True) -> None:
        self._topology.get(name)
        self._record("restart", name, env)

    def set_env(self, name: str, env: Mapping[str, str | None]) -> dict[str, str | None]:
        self._topology.get(name)
        self._record("set_env", name, dict(env))
        return merge_env(self.spec_env.setdefault(name, {}), env)

    def handle(self, name: str) -> ServiceHandle:
        return self._topology.get(name)

    def wait_exit(self, name: str, timeout_s: float) -> int | None:
        return self.exit_statuses.get(name)

    def exit_status(self, name: str) -> int | None:
        return self.exit_statuses.get(name)


class ScalableRecordingSupervisor(RecordingSupervisor):
    """A RecordingSupervisor that also implements :class:`Scalable`."""

    def scale(self, replicas: int) -> None:
        self._record("scale", replicas)
