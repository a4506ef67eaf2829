"""Process faults: kill a service (``process_kill``) or freeze it (``process_freeze``).

``process_kill`` sends SIGKILL or SIGTERM to a service faultdrill started, exactly as a
node or the kernel would; ``process_freeze`` stops it with SIGSTOP (a frozen pod: existing
connections hang, nothing answers) or blocks its inference worker through the target's
admin API (the process answers, but liveness fails). Every signal is sent only after the
pid's start ticks match the record, so a recycled pid is never touched.

Example::

    fault = ProcessFreezeFault()
    cfg = fault.parse_config({"target": "replica-0", "mode": "sigstop", "duration_s": 10})
    inj = fault.inject(cfg, ctx)
    assert fault.verify(inj, ctx).effective          # /proc/<pid>/stat says "T"
    fault.undo(inj, ctx)                             # SIGCONT (same process only)
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

import httpx

from faultdrill.faults.base import Fault, FaultConfig, FaultContext, Injection, Problem, Verification
from faultdrill.faults.errors import FaultdrillError, InjectionError
from faultdrill.faults.kube.pods import FreezeAction, KillAction
from faultdrill.faults.procid import pid_alive, process_start_ticks, wait_gone
from faultdrill.faults.topology import ServiceHandle

__all__ = [
    "ProcessFreezeFault",
    "ProcessKillFault",
    "admin_if_alive",
    "admin_request",
    "process_state",
    "service_undo",
    "settled_exit_status",
    "target_handle",
]

_SIGNALS = {"sigkill": signal.SIGKILL, "sigterm": signal.SIGTERM}
_GONE_WAIT_S = 2.0  # verify: how long a signalled process may take to be gone (delivery is asynchronous)


def target_handle(ctx: FaultContext, name: str) -> ServiceHandle:
    """The live handle of ``name`` (a supervisor knows the pid after restarts), scope-checked."""
    handle = ctx.topology.get(name)  # unknown names: ConfigError with a did-you-mean
    if ctx.supervisor is not None:
        with contextlib.suppress(FaultdrillError, KeyError, RuntimeError):
            handle = ctx.supervisor.handle(name)
    if handle.pid is None:
        raise InjectionError(f"service '{name}' has no pid (is it running?)")
    ctx.scope.check_pid(handle.pid)
    return handle


def service_undo(handle: ServiceHandle) -> dict[str, Any]:
    """What an undo record needs to reach ``handle`` later: pid + start ticks, URLs, token FILE."""
    assert handle.pid is not None
    token_file = str(handle.admin_token_file) if handle.admin_token_file else None
    return {"pid": handle.pid, "pid_start": process_start_ticks(handle.pid), "url": handle.url,
            "admin_url": handle.admin_url, "token_file": token_file}  # fmt: skip


def admin_undo(handle: ServiceHandle, name: str) -> dict[str, Any]:
    """``service_undo`` of a service whose admin API a fault pulls (a ``FaultdrillError`` when it has none)."""
    undo = service_undo(handle)
    if undo["admin_url"] is None or undo["token_file"] is None:
        raise FaultdrillError(f"service '{name}' has no admin API")
    return undo


def device_emulated(undo: dict[str, Any]) -> bool:
    """Read-only, before an injection: whether the target's device is emulated (its record says so)."""
    return bool(admin_request(undo["admin_url"], undo["token_file"], "GET", "/admin/state").get("emulated", True))


def process_state(pid: int) -> str | None:
    """The one-letter state of ``pid`` (``R``, ``S``, ``T``, ``Z``…) from /proc, or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def admin_request(
    admin_url: str, token_file: str | Path, method: str, path: str, body: dict[str, Any] | None = None,
    timeout_s: float = 5.0,
) -> dict[str, Any]:  # fmt: skip
    """Call the target's admin API; the token is read from its file and never recorded."""
    token = Path(token_file).read_text().strip()
    try:
        response = httpx.request(method, f"{admin_url}{path}", json=body, timeout=timeout_s,
                                 headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    except httpx.HTTPError as exc:
        raise FaultdrillError(f"{method} {admin_url}{path} failed: {type(exc).__name__}: {exc}") from exc
    if response.status_code >= 400:
        raise FaultdrillError(f"{method} {path} answered {response.status_code}: {response.text[:200]}")
    doc: dict[str, Any] = response.json()
    return doc


def settled_exit_status(ctx: FaultContext, name: str, timeout_s: float = 1.0) -> int | None:
    """The supervisor's exit status of ``name``; None without a supervisor.

    A killed multi-threaded process shows as a zombie before its last thread is gone, and
    only then can it be reaped: wait (bounded) for the status to settle.
    """
    if ctx.supervisor is None:
        return None
    deadline = time.monotonic() + timeout_s
    for _ in range(int(timeout_s / 0.01) + 1):
        status = ctx.supervisor.exit_status(name)
        if status is not None or time.monotonic() > deadline:
            return status
        time.sleep(0.01)
    return None


def admin_if_alive(undo: dict[str, Any], method: str, path: str, body: dict[str, Any] | None = None) -> None:
    """Undo through the admin API of the recorded process, if it still runs.

    A restarted process (other start ticks) never had the fault; one that dies during the
    call needs no undo either, so only a failure of a process still alive is an error.
    """
    pid, start = int(undo["pid"]), undo.get("pid_start")
    if not undo.get("admin_url") or not pid_alive(pid, start):
        return
    try:
        admin_request(undo["admin_url"], undo["token_file"], method, path, body)
    except FaultdrillError:
        if pid_alive(pid, start):
            raise


def _signal_same(undo: dict[str, Any], sig: int) -> bool:
    """Send ``sig`` only if the recorded process still runs (start ticks match)."""
    pid, start = int(undo["pid"]), undo.get("pid_start")
    if not pid_alive(pid, start):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    return True


def _service_problems(ctx: FaultContext, name: str, *, admin: bool = False) -> list[Problem]:
    handle = ctx.topology.get(name)
    problems = []
    if handle.pid is None:
        problems.append(Problem("no_pid", f"service '{name}' has no pid", "start it through faultdrill"))
    else:
        try:
            ctx.scope.check_pid(handle.pid)
        except FaultdrillError as exc:
            problems.append(Problem("blast_radius", str(exc)))
    if admin and (handle.admin_url is None or handle.admin_token_file is None):
        problems.append(Problem("no_admin_api", f"service '{name}' has no admin API",
                                "use a target started by faultdrill (it has one)"))  # fmt: skip
    return problems


class ProcessKillFault(Fault):
    """Kill a service with SIGKILL or SIGTERM.

    Rollback starts it again through ``ctx.supervisor`` when one is present; from the ledger
    alone (after a crash) there is nothing to restore — a killed process cannot be revived
    without its platform, so the platform's restart policy owns that.
    """

    class Config(FaultConfig):
        target: str
        mode: Literal["sigkill", "sigterm"] = "sigkill"

    name: ClassVar[str] = "process_kill"
    target_roles: ClassVar[tuple[str, ...] | None] = ("replica", "feature_store")
    modes: ClassVar[tuple[str, ...]] = ("sigkill", "sigterm")
    needs: ClassVar[tuple[str, ...]] = ("pid in scope",)
    target_needs: ClassVar[frozenset[str]] = frozenset({"process"})
    verifies: ClassVar[str] = "process gone and its exit status"
    example: ClassVar[dict[str, Any]] = {"target": "replica-0", "mode": "sigkill"}
    kubernetes = KillAction  # on a Kubernetes target: faults/kube/pods.py (the API)

    def local_preflight(self, config: Config, ctx: FaultContext) -> list[Problem]:
        return _service_problems(ctx, config.target)

    def local_plan(self, config: Config, ctx: FaultContext) -> list[str]:
        handle = ctx.topology.get(config.target)
        return [f"kill -{config.mode[3:].upper()} {handle.pid}  # {config.target}",
                f"rollback: supervisor start {config.target} (if a supervisor is present)"]  # fmt: skip

    def local_inject(self, config: Config, ctx: FaultContext) -> Injection:
        handle = target_handle(ctx, config.target)
        assert handle.pid is not None
        undo = {"pid": handle.pid, "pid_start": process_start_ticks(handle.pid), "service": config.target}
        inj = self.new_injection(config, ctx, mode=config.mode, target=config.target, undo=undo)

        def apply() -> None:
            if not _signal_same(undo, _SIGNALS[config.mode]):
                raise FaultdrillError(f"process {handle.pid} of '{config.target}' is not running")

        return self.apply_recorded(inj, ctx, apply)

    def local_rollback(self, injection: Injection, ctx: FaultContext) -> None:
        if ctx.supervisor is None:
            return  # crash case: nothing faultdrill changed remains; the platform restarts it
        name = injection.undo["service"]
        if not pid_alive(int(injection.undo["pid"]), injection.undo.get("pid_start")):
            ctx.supervisor.start(name)  # a no-op for a supervisor whose service already runs

    def local_verify(self, injection: Injection, ctx: FaultContext) -> Verification:
        pid = int(injection.undo["pid"])
        gone = wait_gone(pid, injection.undo.get("pid_start"), _GONE_WAIT_S) is not None  # a kill is asynchronous
        status = settled_exit_status(ctx, injection.target) if gone else None
        expected = -int(_SIGNALS[injection.mode])
        # SIGTERM may end in a clean exit (0) after a graceful drain: that is the real effect.
        ok = gone and (status is None or status == expected or injection.mode == "sigterm")
        return Verification(ok, {"pid": pid, "gone": gone, "exit_status": status},
                            message=f"pid {pid} {'gone' if gone else 'still running'}, exit status {status}")


class ProcessFreezeFault(Fault):
    """Freeze a service: ``sigstop`` (the whole process) or ``worker`` (its inference worker).

    ``worker`` mode asks the target to block for ``duration_s`` itself, so the target thaws
    at the deadline even if every faultdrill process dies.
    """

    class Config(FaultConfig):
        target: str
        mode: Literal["sigstop", "worker"] = "sigstop"

    name: ClassVar[str] = "process_freeze"
    target_roles: ClassVar[tuple[str, ...] | None] = ("replica", "feature_store")
    modes: ClassVar[tuple[str, ...]] = ("sigstop", "worker")
    needs: ClassVar[tuple[str, ...]] = ("pid in scope", "admin API token (worker)")
    target_needs: ClassVar[frozenset[str]] = frozenset({"process"})
    target_needs_by_mode: ClassVar[Mapping[str, frozenset[str]]] = {"worker": frozenset({"admin_api"})}
    verifies: ClassVar[str] = "process state T (sigstop) or liveness 503 (worker)"
    example: ClassVar[dict[str, Any]] = {"target": "replica-0", "mode": "sigstop"}
    kubernetes = FreezeAction  # on a Kubernetes target: faults/kube/pods.py (the API)

    def local_preflight(self, config: Config, ctx: FaultContext) -> list[Problem]:
        return _service_problems(ctx, config.target, admin=config.mode == "worker")

    def local_plan(self, config: Config, ctx: FaultContext) -> list[str]:
        handle = ctx.topology.get(config.target)
        if config.mode == "sigstop":
            return [f"kill -STOP {handle.pid}  # {config.target}", f"rollback: kill -CONT {handle.pid}"]
        return [f"POST {handle.admin_url}/admin/worker/freeze {{\"seconds\": {config.duration_s}}}",
                f"rollback: POST {handle.admin_url}/admin/worker/unfreeze"]  # fmt: skip

    def local_inject(self, config: Config, ctx: FaultContext) -> Injection:
        handle = target_handle(ctx, config.target)
        assert handle.pid is not None
        undo = service_undo(handle)
        inj = self.new_injection(config, ctx, mode=config.mode, target=config.target, undo=undo)

        def apply() -> None:
            if config.mode == "sigstop":
                if not _signal_same(undo, signal.SIGSTOP):
                    raise FaultdrillError(f"process {handle.pid} of '{config.target}' is not running")
                return
            if undo["admin_url"] is None or undo["token_file"] is None:  # sigstop needs none: checked only here
                raise FaultdrillError(f"service '{config.target}' has no admin API")
            admin_request(undo["admin_url"], undo["token_file"], "POST", "/admin/worker/freeze",
                          {"seconds": config.duration_s})  # fmt: skip

        return self.apply_recorded(inj, ctx, apply)

    def local_rollback(self, injection: Injection, ctx: FaultContext) -> None:
        undo = injection.undo
        if injection.mode == "sigstop":
            _signal_same(undo, signal.SIGCONT)  # a different (recycled) process is left alone
            return
        admin_if_alive(undo, "POST", "/admin/worker/unfreeze")

    def local_verify(self, injection: Injection, ctx: FaultContext) -> Verification:
        pid = int(injection.undo["pid"])
        if injection.mode == "sigstop":
            state = process_state(pid) if pid_alive(pid, injection.undo.get("pid_start")) else None
            return Verification(state == "T", {"pid": pid, "state": state},
                                message=f"pid {pid} state {state}")  # fmt: skip
        status: int | None = None
        with contextlib.suppress(httpx.HTTPError):
            status = httpx.get(f"{injection.undo['url']}/v2/health/live", timeout=2.0).status_code
        return Verification(status == 503, {"pid": pid, "liveness_status": status},
                            message=f"liveness answered {status}")  # fmt: skip
