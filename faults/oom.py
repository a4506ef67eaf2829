"""``oom_kill``: get a replica killed by the kernel's OOM killer inside its memory cgroup.

Modes: ``leak`` (the target leaks host memory at ``rate_mib_s`` through its admin API until
the kernel kills it at its cgroup limit), ``limit`` (lower the cgroup limit below current
usage, then make the target allocate with a small leak: killed on its next allocation) and
``signal`` (plain SIGKILL, for hosts without a memory controller; verify then reports
reason ``Signal``, never ``OOMKilled``).

cgroup v1 refuses (EBUSY) a limit below what it cannot reclaim; there ``limit`` mode falls
back to current usage plus one MiB, and the leak crosses it within one leak step.

``verify`` waits (bounded by the fault's duration) for the recorded process to exit and
reports what was observed: the supervisor's exit status (``-9`` → exit code 137), the rise of
the cgroup's ``oom_kill`` counter, and ``OOMKilled`` only when both say so. An exit status
that cannot be read is reported as unknown: not verified, never assumed to be 137.

Rollback restores the limit exactly (v1: memsw too, in the order the kernel accepts) and
stops the leak if the process still lives. It never restarts the replica: the caller (or
the platform's restart policy) decides that, as a kubelet would.

Example::

    fault = OomKillFault()
    inj = fault.inject(fault.parse_config({"target": "replica-0", "mode": "limit"}), ctx)
    fault.verify(inj, ctx).details["reason"]      # waits for the exit: "OOMKilled", exit_code 137
    fault.undo(inj, ctx)                          # old limit back
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from faultdrill.faults.base import Fault, FaultConfig, FaultContext, Injection, Problem, Verification
from faultdrill.faults.cgroups import MemoryCgroup, detect_memory_controller
from faultdrill.faults.errors import FaultdrillError
from faultdrill.faults.kube.pods import OomAction
from faultdrill.faults.process import (
    _service_problems,
    admin_if_alive,
    admin_request,
    service_undo,
    target_handle,
)
from faultdrill.faults.procid import pid_alive

__all__ = ["OomKillFault"]

MIB = 1024 * 1024
_UNLIMITED = 2**62


def _cgroup_of(path: str) -> MemoryCgroup:
    controller = detect_memory_controller()
    if controller is None:
        raise FaultdrillError("this host has no memory cgroup controller")
    cg = MemoryCgroup(controller, Path(path).name)
    if cg.path != Path(path):  # only faultdrill-owned cgroups (<root>/faultdrill/<name>)
        raise FaultdrillError(f"cgroup {path} is not a faultdrill cgroup ({cg.path})")
    return cg


def _read(path: Path) -> int | None:
    try:
        return int(path.read_text().strip().replace("max", str(_UNLIMITED)))
    except (OSError, ValueError):
        return None


def _write_limits(cg: MemoryCgroup, mem: int, memsw: int | None) -> None:
    """Write v1 ``limit_in_bytes`` and ``memsw`` in the order the kernel accepts (memsw >= mem)."""
    if cg.controller.version == 2:
        (cg.path / "memory.max").write_text("max" if mem >= _UNLIMITED else str(mem))
        return
    mem_file, sw_file = cg.path / "memory.limit_in_bytes", cg.path / "memory.memsw.limit_in_bytes"
    current = _read(mem_file) or 0
    order = [(mem_file, mem), (sw_file, memsw)] if mem < current else [(sw_file, memsw), (mem_file, mem)]
    for file, value in order:
        if value is not None and file.exists():
            file.write_text(str(min(value, _UNLIMITED)) if value < _UNLIMITED else "-1")


class OomKillFault(Fault):
    """Have the kernel OOM-kill a replica (``leak``/``limit``), or SIGKILL it (``signal``)."""

    class Config(FaultConfig):
        target: str
        mode: Literal["leak", "limit", "signal"] = "leak"
        rate_mib_s: float = Field(default=200.0, gt=0)
        """Leak rate (``leak`` mode; ``limit`` mode nudges with a tenth of it)."""
        max_mib: float | None = Field(default=None, gt=0)
        """Leak ceiling; default twice the cgroup limit (the kernel strikes first)."""
        below_usage_mib: float = Field(default=16.0, gt=0)

    name: ClassVar[str] = "oom_kill"
    target_roles: ClassVar[tuple[str, ...] | None] = ("replica",)
    modes: ClassVar[tuple[str, ...]] = ("leak", "limit", "signal")
    needs: ClassVar[tuple[str, ...]] = ("root", "memory cgroup controller", "replica in a faultdrill cgroup")
    target_needs: ClassVar[frozenset[str]] = frozenset({"process"})
    target_needs_by_mode: ClassVar[Mapping[str, frozenset[str]]] = {
        "leak": frozenset({"admin_api", "memory_cgroup"}), "limit": frozenset({"admin_api", "memory_cgroup"})}
    verifies: ClassVar[str] = "cgroup oom_kill counter and exit status -9 (OOMKilled)"
    example: ClassVar[dict[str, Any]] = {"target": "replica-0", "mode": "leak", "rate_mib_s": 200}
    kubernetes = OomAction  # on a Kubernetes target: faults/kube/pods.py (the API)
    settle_s: ClassVar[float] = 30.0
    """Longest ``verify`` waits for the process to exit (never longer than the fault's duration)."""

    def local_preflight(self, config: Config, ctx: FaultContext) -> list[Problem]:
        problems = _service_problems(ctx, config.target, admin=config.mode != "signal")
        if config.mode == "signal":
            return problems
        handle = ctx.topology.get(config.target)
        if os.geteuid() != 0:
            problems.append(Problem("not_root", "changing cgroup limits needs root", "run faultdrill as root"))
        if detect_memory_controller() is None:
            problems.append(Problem("no_memory_controller", "no cgroup memory controller on this host",
                                    "use mode 'signal' (reported as reason Signal, not OOMKilled)"))  # fmt: skip
        elif handle.cgroup is None:
            problems.append(Problem("no_cgroup", f"'{config.target}' runs in no memory cgroup",
                                    "start the stack with a memory limit"))  # fmt: skip
        else:
            try:
                ctx.scope.check_cgroup(handle.cgroup)
                if _cgroup_of(handle.cgroup).limit() is None:
                    problems.append(Problem("no_limit", f"cgroup {handle.cgroup} has no memory limit",
                                            "start the stack with a memory limit"))  # fmt: skip
            except (FaultdrillError, OSError) as exc:
                problems.append(Problem("cgroup", str(exc)))
        return problems

    def local_plan(self, config: Config, ctx: FaultContext) -> list[str]:
        handle = ctx.topology.get(config.target)
        if config.mode == "signal":
            return [f"kill -KILL {handle.pid}  # {config.target}"]
        leak = f"POST {handle.admin_url}/admin/host-memory/leak"
        if config.mode == "leak":
            return [f"{leak} {{\"rate_mib_s\": {config.rate_mib_s}}} until the kernel kills it at the "
                    f"limit of {handle.cgroup}", "rollback: DELETE the leak if the process lives"]  # fmt: skip
        return [f"write {handle.cgroup}/memory.limit_in_bytes := usage - {config.below_usage_mib} MiB "
                "(v1: usage + 1 MiB if refused)", f"{leak} {{\"rate_mib_s\": {config.rate_mib_s / 10}}}",
                "rollback: restore the old limit (and memsw) exactly"]  # fmt: skip

    def local_inject(self, config: Config, ctx: FaultContext) -> Injection:
        handle = target_handle(ctx, config.target)
        assert handle.pid is not None
        undo = {**service_undo(handle), "cgroup": handle.cgroup}
        cg: MemoryCgroup | None = None
        if config.mode != "signal":
            if handle.cgroup is None:
                raise FaultdrillError(f"'{config.target}' runs in no memory cgroup")
            ctx.scope.check_cgroup(handle.cgroup)
            cg = _cgroup_of(handle.cgroup)
            undo.update(cgroup_version=cg.controller.version, oom_kills_before=cg.oom_kills(),
                        old_limit=_read(cg._v("memory.limit_in_bytes", "memory.max")),
                        old_memsw=_read(cg.path / "memory.memsw.limit_in_bytes"))  # fmt: skip
        inj = self.new_injection(config, ctx, mode=config.mode, target=config.target, undo=undo)
        return self.apply_recorded(inj, ctx, lambda: self._apply(config, undo, cg))

    def _apply(self, config: Config, undo: dict[str, Any], cg: MemoryCgroup | None) -> None:
        if not pid_alive(int(undo["pid"]), undo["pid_start"]):
            raise FaultdrillError(f"process {undo['pid']} is not running")
        if cg is None:
            os.kill(int(undo["pid"]), signal.SIGKILL)
            return
        limit = int(undo["old_limit"])
        rate = config.rate_mib_s
        if config.mode == "limit":
            rate = config.rate_mib_s / 10
            _lower_below_usage(cg, config.below_usage_mib)
        ceiling = config.max_mib or 2 * limit / MIB
        try:
            admin_request(undo["admin_url"], undo["token_file"], "POST", "/admin/host-memory/leak",
                          {"rate_mib_s": rate, "max_mib": ceiling})  # fmt: skip
        except FaultdrillError:
            # Under a lowered limit the kernel may kill it before it answers: that is the effect.
            if pid_alive(int(undo["pid"]), undo["pid_start"]):
                raise

    def local_rollback(self, injection: Injection, ctx: FaultContext) -> None:
        undo = injection.undo
        if undo.get("cgroup") is None or injection.mode == "signal":
            return  # SIGKILL changed nothing that can be put back; the platform restarts it
        failed: FaultdrillError | None = None
        try:
            admin_if_alive(undo, "DELETE", "/admin/host-memory/leak")
        except FaultdrillError as exc:
            # Under a lowered limit the kernel may be killing it as it answers (connection reset):
            # a process that is gone a moment later needs no undo. Either way the limit goes back.
            pid, start = int(undo["pid"]), undo.get("pid_start")
            deadline = time.monotonic() + 1.0
            while pid_alive(pid, start) and time.monotonic() < deadline:
                time.sleep(0.01)
            failed = exc if pid_alive(pid, start) else None
        self._restore_limit(undo)
        if failed is not None:
            raise failed  # the leak may still run: keep the ledger record, a later rollback retries

    def _restore_limit(self, undo: dict[str, Any]) -> None:
        cg = _cgroup_of(undo["cgroup"])
        if not cg.path.exists():
            return  # the platform removed the cgroup with its service: nothing left to restore
        old, old_sw = undo["old_limit"], undo.get("old_memsw")
        if _read(cg._v("memory.limit_in_bytes", "memory.max")) != old or (
            old_sw is not None and _read(cg.path / "memory.memsw.limit_in_bytes") != old_sw
        ):
            _write_limits(cg, int(old), old_sw)

    def local_verify(self, injection: Injection, ctx: FaultContext) -> Verification:
        """Wait (bounded) for the recorded process to exit, then read how it exited.

        The exit status is the supervisor's (``waitpid``: -9 is SIGKILL, shell code 137) and is
        read only while the supervisor's handle still names the recorded pid; ``OOMKilled``
        needs that SIGKILL *and* a rise of the cgroup's ``oom_kill`` counter. A status that
        cannot be read (no supervisor, already restarted, never reaped) is not verified.
        """
        undo = injection.undo
        pid, start = int(undo["pid"]), undo.get("pid_start")
        wait_s = min(self.settle_s, float(injection.config.get("duration_s", self.settle_s)))
        started = time.monotonic()
        while pid_alive(pid, start) and time.monotonic() - started < wait_s:
            time.sleep(0.01)
        gone = not pid_alive(pid, start)
        waited_s = round(time.monotonic() - started, 3)
        status, why = _exit_status_of(ctx, injection.target, pid) if gone else (None, "")
        oom_kills: int | None = None
        if injection.mode != "signal" and undo.get("cgroup") and undo.get("oom_kills_before") is not None:
            with contextlib.suppress(FaultdrillError, OSError, ValueError):
                oom_kills = _cgroup_of(undo["cgroup"]).oom_kills() - int(undo["oom_kills_before"])
        code, sig, reason = _exit_reason(status, oom_killed=bool(oom_kills))
        ok = reason == "OOMKilled" if injection.mode != "signal" else status == -signal.SIGKILL
        details = {"pid": pid, "gone": gone, "waited_s": waited_s, "exit_status": status, "exit_code": code,
                   "signal": sig, "reason": reason, "oom_kills": oom_kills, "status_unknown": why or None}  # fmt: skip
        counter = "n/a" if oom_kills is None else f"+{oom_kills}"
        if not gone:
            message = f"not verified: pid {pid} still running after {waited_s:.1f} s (cgroup oom_kill {counter})"
        elif status is None:
            message = f"not verified: pid {pid} gone, exit status unknown ({why}); cgroup oom_kill {counter}"
        else:
            message = (f"{'verified' if ok else 'not verified'}: pid {pid} exited with status {status} "
                       f"(exit code {code}, reason {reason}), cgroup oom_kill {counter}")  # fmt: skip
        return Verification(ok, details, message=message)


def _exit_status_of(ctx: FaultContext, name: str, pid: int, timeout_s: float = 1.0) -> tuple[int | None, str]:
    """``pid``'s exit status as its supervisor recorded it, or ``(None, why it is unknown)``.

    The supervisor reports the status of the *current* process of ``name``: it counts only
    while its handle still names ``pid`` (after a restart the status belongs to another
    process). A killed multi-threaded process is a zombie before it can be reaped: the
    status may take a moment to settle, so the read is retried (bounded).
    """
    sup = ctx.supervisor
    if sup is None:
        return None, "no supervisor: only the platform that started the process can read its status"
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            before = sup.handle(name).pid
            status = sup.exit_status(name)
            after = sup.handle(name).pid
        except (FaultdrillError, KeyError, RuntimeError) as exc:
            return None, f"the supervisor cannot tell: {exc}"
        if before != pid or after != pid:
            return None, f"'{name}' runs again as pid {after}; the status of pid {pid} is gone"
        if status is not None:
            return status, ""
        if time.monotonic() > deadline:
            return None, f"the supervisor recorded no exit status for pid {pid} within {timeout_s:.0f} s"
        time.sleep(0.01)


def _exit_reason(status: int | None, *, oom_killed: bool) -> tuple[int | None, int | None, str | None]:
    """``(exit code, signal, reason)`` of a ``waitpid`` status, as Kubernetes reports them.

    >>> _exit_reason(-9, oom_killed=True), _exit_reason(-9, oom_killed=False), _exit_reason(-15, oom_killed=True)
    ((137, 9, 'OOMKilled'), (137, 9, 'Signal'), (143, 15, 'Signal'))
    >>> _exit_reason(1, oom_killed=True), _exit_reason(None, oom_killed=True)
    ((1, None, 'Error'), (None, None, None))
    """
    if status is None:
        return None, None, None
    if status < 0:
        sig = -status
        return 128 + sig, sig, "OOMKilled" if sig == signal.SIGKILL and oom_killed else "Signal"
    return status, None, "Completed" if status == 0 else "Error"


def _lower_below_usage(cg: MemoryCgroup, below_mib: float) -> None:
    """Set the limit under current usage; v1 refuses what it cannot reclaim (EBUSY)."""
    sw = cg.path / "memory.memsw.limit_in_bytes"
    for attempt in range(5):  # bounded: usage moves between reading and writing
        usage = cg.usage()
        target = max(4 * MIB, usage - int(below_mib * MIB)) if attempt == 0 else usage + MIB * attempt
        try:
            _write_limits(cg, target, target if sw.exists() else None)
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
    raise FaultdrillError(f"the kernel refused every lower limit for {cg.path}")
