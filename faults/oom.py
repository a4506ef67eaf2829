"""``oom_kill``: get a replica killed by the kernel's OOM killer inside its memory cgroup.

Modes: ``leak`` (the target leaks host memory at ``rate_mib_s`` through its admin API until
the kernel kills it at its cgroup limit), ``limit`` (lower the cgroup limit below current
usage, then make the target allocate with a small leak: killed on its next allocation),
``pressure`` (for any server, no admin API needed: a co-tenant process, ``memhog.py``, joins the
replica's cgroup and allocates at ``rate_mib_s`` until the kernel OOM-kills one of the replica's
own processes at the cgroup's real limit — the replica's memory growing is emulated by the
co-tenant, the kill is the kernel's. The replica's processes get ``oom_score_adj`` 1000 for the
fault, so the kernel picks among them, never the co-tenant: raising it needs no capability,
while exempting the co-tenant (-1000) needs ``CAP_SYS_RESOURCE``, which containers and this
project's CI drop. Rollback puts every value back) and ``signal`` (plain
SIGKILL, for hosts without a memory controller; verify then reports reason ``Signal``, never
``OOMKilled``).

Which process the kernel picks is the kernel's choice (the largest in the cgroup): a server with
worker processes may lose a worker and keep its main process — no restart, and ``verify`` says so
(``killed``: the pids that died; ``main_killed``). That is a finding about the server, not a
failed injection: the kernel's OOM kill happened in the replica's cgroup.

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
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from faultdrill.faults.base import Fault, FaultConfig, FaultContext, Injection, Problem, Verification
from faultdrill.faults.cgroups import MemoryCgroup, detect_memory_controller
from faultdrill.faults.errors import FaultdrillError
from faultdrill.faults.kube.pods import OomAction
from faultdrill.faults.owned import chain, die_with_parent, stop_recorded_process
from faultdrill.faults.process import (
    _service_problems,
    admin_if_alive,
    admin_request,
    service_undo,
    target_handle,
)
from faultdrill.faults.procid import pid_alive, process_start_ticks

__all__ = ["OomKillFault"]

MIB = 1024 * 1024
_UNLIMITED = 2**62


def _cgroup_of(path: str) -> MemoryCgroup:
    return MemoryCgroup.owned(path)


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
        mode: Literal["leak", "limit", "pressure", "signal"] = "leak"
        rate_mib_s: float = Field(default=200.0, gt=0, le=10_000)
        """Leak rate (``leak`` mode; ``limit`` mode nudges with a tenth of it; ``pressure``: the co-tenant's)."""
        max_mib: float | None = Field(default=None, gt=0)
        """Leak ceiling; default twice the cgroup limit (the kernel strikes first)."""
        below_usage_mib: float = Field(default=16.0, gt=0)

    name: ClassVar[str] = "oom_kill"
    target_roles: ClassVar[tuple[str, ...] | None] = ("replica",)
    modes: ClassVar[tuple[str, ...]] = ("leak", "limit", "pressure", "signal")
    needs: ClassVar[tuple[str, ...]] = ("root", "memory cgroup controller", "replica in a faultdrill cgroup")
    target_needs: ClassVar[frozenset[str]] = frozenset({"process"})
    target_needs_by_mode: ClassVar[Mapping[str, frozenset[str]]] = {
        "leak": frozenset({"admin_api", "memory_cgroup"}), "limit": frozenset({"admin_api", "memory_cgroup"}),
        "pressure": frozenset({"memory_cgroup"})}
    verifies: ClassVar[str] = "cgroup oom_kill counter and exit status -9 (OOMKilled)"
    example: ClassVar[dict[str, Any]] = {"target": "replica-0", "mode": "leak", "rate_mib_s": 200}
    kubernetes = OomAction  # on a Kubernetes target: faults/kube/pods.py (the API)
    settle_s: ClassVar[float] = 30.0
    """Longest ``verify`` waits for the process to exit (never longer than the fault's duration)."""

    def local_preflight(self, config: Config, ctx: FaultContext) -> list[Problem]:
        problems = _service_problems(ctx, config.target, admin=config.mode in ("leak", "limit"))
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
        if config.mode == "pressure":
            return [f"raise oom_score_adj of every process in {handle.cgroup} to 1000 (the kernel's first choice)",
                    f"start a co-tenant in {handle.cgroup} allocating {config.rate_mib_s:g} MiB/s until the kernel "
                    "OOM-kills a process of the replica at the cgroup's limit, then it exits",
                    "rollback: stop the co-tenant if it still runs (pid + start time checked), put every "
                    "oom_score_adj back"]  # fmt: skip
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
        if config.mode == "pressure":
            assert cg is not None
            inj = inj.model_copy(update={"undo": {**undo, "pids_before": cg.pids()}})
            return self.apply_recorded(inj, ctx, lambda: self._start_cotenant(config, inj, cg, ctx))
        return self.apply_recorded(inj, ctx, lambda: self._apply(config, undo, cg))

    def _start_cotenant(self, config: Config, inj: Injection, cg: MemoryCgroup, ctx: FaultContext) -> None:
        """The replica's processes made the OOM killer's choice, then ``memhog.py`` started in their cgroup; both
        recorded before the next step (the co-tenant's pid as soon as it runs)."""
        if not pid_alive(int(inj.undo["pid"]), inj.undo["pid_start"]):
            raise FaultdrillError(f"process {inj.undo['pid']} is not running")
        ceiling = config.max_mib or 2 * int(inj.undo["old_limit"]) / MIB
        argv = [sys.executable, "-I", "-S", str(Path(__file__).with_name("memhog.py")), "--cgroup", str(cg.path),
                "--rate-mib-s", str(config.rate_mib_s), "--max-mib", f"{ceiling:.0f}", "--deadline",
                f"{inj.deadline:.3f}"]  # fmt: skip
        adjusted = _prefer_replica(cg.pids())
        inj.undo["oom_score_adj"] = adjusted  # the record apply_recorded rolls back if what follows fails
        ctx.ledger.write(inj)
        hog = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True, preexec_fn=chain(cg.preexec(), die_with_parent()))
        undo = {**inj.undo, "hog_pid": hog.pid, "hog_start": process_start_ticks(hog.pid)}
        ctx.ledger.write(inj.model_copy(update={"undo": undo}))
        # The record apply_recorded holds (and rolls back if this fails) and returns: it must name the co-tenant.
        inj.undo.update(hog_pid=undo["hog_pid"], hog_start=undo["hog_start"])
        threading.Thread(target=hog.wait, name="oom-cotenant-reaper", daemon=True).start()  # no zombie left

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
        if injection.mode == "pressure":
            if undo.get("hog_pid"):  # pid + start ticks checked: a recycled pid is never signalled
                stop_recorded_process({"pid": undo["hog_pid"], "start_ticks": undo.get("hog_start"),
                                       "argv": ["oom_kill co-tenant"]}, term_wait_s=0.5)  # fmt: skip
            _restore_adj(undo.get("oom_score_adj", {}), undo.get("cgroup"))
            return
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
        struck = _struck(undo) if injection.mode == "pressure" else lambda: False
        while pid_alive(pid, start) and not struck() and time.monotonic() - started < wait_s:
            time.sleep(0.01)
        if injection.mode == "pressure" and pid_alive(pid, start):
            time.sleep(0.2)  # the kernel's kill and the main process's own death are a moment apart
        gone = not pid_alive(pid, start)
        if injection.mode == "pressure" and not gone:
            return _spared_main(undo, pid, round(time.monotonic() - started, 3))
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


def _struck(undo: dict[str, Any]) -> Callable[[], bool]:
    """Whether the kernel has OOM-killed something in the replica's cgroup since the injection."""
    cg = _cgroup_of(undo["cgroup"])
    before = int(undo["oom_kills_before"])

    def check() -> bool:
        try:
            return cg.oom_kills() > before
        except OSError:
            return False  # the cgroup went with its replica: the main process's exit decides

    return check


def _spared_main(undo: dict[str, Any], pid: int, waited_s: float) -> Verification:
    """``pressure``: the kernel killed in the replica's cgroup but not its main process (a worker, say)."""
    try:
        oom_kills: int | None = _cgroup_of(undo["cgroup"]).oom_kills() - int(undo["oom_kills_before"])
    except (FaultdrillError, OSError):
        oom_kills = None
    killed = [p for p in undo.get("pids_before", []) if p != pid and not pid_alive(p, None)]
    ok = bool(oom_kills)
    details = {"pid": pid, "gone": False, "waited_s": waited_s, "oom_kills": oom_kills, "killed": killed,
               "main_killed": False, "reason": "OOMKilled" if ok else None}  # fmt: skip
    if not ok:
        return Verification(False, details, message=f"not verified: no OOM kill in {undo['cgroup']} after "
                                                    f"{waited_s:.1f} s; pid {pid} still running")  # fmt: skip
    return Verification(True, details, message=(
        f"verified: the kernel OOM-killed {', '.join(f'pid {k}' for k in killed) or 'a process'} in the replica's "
        f"cgroup (oom_kill +{oom_kills}); its main process, pid {pid}, lives on: no restart"))


_PREFERRED = 1000
"""``oom_score_adj`` of the replica's processes during ``pressure``: the kernel's first choice in their cgroup."""


def _prefer_replica(pids: list[int]) -> dict[str, list[int | None]]:
    """Raise each process's ``oom_score_adj`` to ``_PREFERRED``; ``{pid: [start ticks, old value]}``."""
    old: dict[str, list[int | None]] = {}
    for pid in pids:
        path = Path(f"/proc/{pid}/oom_score_adj")
        try:
            value = int(path.read_text())
            old[str(pid)] = [process_start_ticks(pid), value]
            path.write_text(str(_PREFERRED))
        except (OSError, ValueError):
            continue  # exited meanwhile: nothing to prefer or restore
    return old


def _restore_adj(old: Mapping[str, list[int | None]], cgroup: str | None) -> None:
    """Put back each recorded value (only while pid + start ticks match), and give processes started in the cgroup
    since (a respawned worker inherits the raised value) the value their replica's processes had."""
    for pid, (start, value) in old.items():
        if value is not None and pid_alive(int(pid), start):
            with contextlib.suppress(OSError):
                Path(f"/proc/{pid}/oom_score_adj").write_text(str(value))
    if cgroup is None or not old or not Path(cgroup).exists():
        return
    baseline = min(v for _, v in old.values() if v is not None)
    for member in _cgroup_of(cgroup).pids():
        path = Path(f"/proc/{member}/oom_score_adj")
        with contextlib.suppress(OSError, ValueError):
            if str(member) not in old and int(path.read_text()) == _PREFERRED:
                path.write_text(str(baseline))


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
