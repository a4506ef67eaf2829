"""``oom_kill``: get a replica killed by the kernel's OOM killer inside its memory cgroup.

Modes: ``leak`` (the target leaks host memory at ``rate_mib_s`` through its admin API until
the kernel kills it at its cgroup limit), ``limit`` (lower the cgroup limit below current
usage, then make the target allocate with a small leak: killed on its next allocation) and
``signal`` (plain SIGKILL, for hosts without a memory controller; verify then reports
reason ``Signal``, never ``OOMKilled``).

cgroup v1 refuses (EBUSY) a limit below what it cannot reclaim; there ``limit`` mode falls
back to current usage plus one MiB, and the leak crosses it within one leak step.

Rollback restores the limit exactly (v1: memsw too, in the order the kernel accepts) and
stops the leak if the process still lives. It never restarts the replica: the caller (or
the platform's restart policy) decides that, as a kubelet would.

Example::

    fault = OomKillFault()
    inj = fault.inject(fault.parse_config({"target": "replica-0", "mode": "limit"}), ctx)
    fault.verify(inj, ctx).details["reason"]      # "OOMKilled" once the kernel struck
    fault.undo(inj, ctx)                          # old limit back
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from faults.base import Fault, FaultConfig, FaultContext, Injection, Problem, Verification
from faults.cgroups import MemoryCgroup, detect_memory_controller
from faults.errors import FaultdrillError
from faults.kube.dispatch import kube_dispatch
from faults.ledger import pid_alive
from faults.process import (
    _service_problems,
    admin_if_alive,
    admin_request,
    service_undo,
    settled_exit_status,
    target_handle,
)

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


@kube_dispatch  # on a Kubernetes target: faults/kube (the API), else this class
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
    modes: ClassVar[tuple[str, ...]] = ("leak", "limit", "signal")
    needs: ClassVar[tuple[str, ...]] = ("root", "memory cgroup controller", "replica in a faultdrill cgroup")
    verifies: ClassVar[str] = "cgroup oom_kill counter and exit status -9 (OOMKilled)"
    example: ClassVar[dict[str, Any]] = {"target": "replica-0", "mode": "leak", "rate_mib_s": 200}

    def preflight(self, config: Config, ctx: FaultContext) -> list[Problem]:
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

    def plan(self, config: Config, ctx: FaultContext) -> list[str]:
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

    def inject(self, config: Config, ctx: FaultContext) -> Injection:
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

    def rollback(self, injection: Injection, ctx: FaultContext) -> None:
        undo = injection.undo
        if undo.get("cgroup") is None or injection.mode == "signal":
            return  # SIGKILL changed nothing that can be put back; the platform restarts it
        admin_if_alive(undo, "DELETE", "/admin/host-memory/leak")
        cg = _cgroup_of(undo["cgroup"])
        if not cg.path.exists():
            return  # the platform removed the cgroup with its service: nothing left to restore
        old, old_sw = undo["old_limit"], undo.get("old_memsw")
        if _read(cg._v("memory.limit_in_bytes", "memory.max")) != old or (
            old_sw is not None and _read(cg.path / "memory.memsw.limit_in_bytes") != old_sw
        ):
            _write_limits(cg, int(old), old_sw)

    def verify(self, injection: Injection, ctx: FaultContext) -> Verification:
        undo = injection.undo
        gone = not pid_alive(int(undo["pid"]), undo.get("pid_start"))
        status = settled_exit_status(ctx, injection.target) if gone else None
        killed = status in (None, -signal.SIGKILL, 137)  # None: not our child, status unreadable
        oom_kills = None
        if injection.mode != "signal" and undo.get("cgroup"):
            with contextlib.suppress(FaultdrillError, OSError):
                oom_kills = _cgroup_of(undo["cgroup"]).oom_kills() - int(undo["oom_kills_before"])
        reason = "OOMKilled" if oom_kills and gone and killed else ("Signal" if gone and killed else None)
        ok = reason == "OOMKilled" if injection.mode != "signal" else reason is not None
        details = {"pid": undo["pid"], "gone": gone, "exit_status": status, "oom_kills": oom_kills,
                   "reason": reason, "exit_code": 137 if reason else None}  # fmt: skip
        return Verification(ok, details, message=f"pid {undo['pid']} {'gone' if gone else 'alive'}, "
                                                 f"reason {reason}, oom_kill +{oom_kills}")  # fmt: skip


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
