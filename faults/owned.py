"""What a run itself creates — its processes and network namespaces — as ledger records, undone like faults.

A fault's injection is recorded before it takes effect; so is every process and namespace a run
starts, by the same :class:`~faults.records.Ledger` with the same :class:`~faults.records.Injection`
record, under two *record kinds* (the record's ``fault`` field):

* ``process`` — a process this run started: pid + its start time in clock ticks (so a recycled
  pid is never signalled), whether it leads its own process group, argv (for the log only);
* ``netns`` — a network namespace this run created (``fd-…`` only): its name, written *before* it is
  made (its host veth follows from the name; deleting one never made is a no-op).

The owner (pid + start ticks of the process that started them) is in every record, and the
deadline is "never": a resource lives as long as its owner, not for a fault's duration. So
:func:`~faults.ledger.rollback_pending` — run by the dead-man watchdog and by ``faultdrill
rollback --pending`` — stops what a killed run left, newest first (load and Prometheus before
the replicas before the namespace), and skips what a live run still uses. The two kinds are
built into every :class:`~faults.registry.FaultRegistry` (``record_kind``), never injectable from a
spec and never listed as faults.

Example::

    owner = Owner.current(state_dir, on_record=keeper.ensure)   # keeper: a dead-man watchdog
    proc = subprocess.Popen(argv, start_new_session=True, preexec_fn=die_with_parent())
    record = owner.record_process("prometheus", proc.pid, argv)  # durable; the watchdog now runs
    ...
    proc.terminate(); proc.wait()
    owner.release(record)        # orderly stop: the record is cleared
    # SIGKILLed instead? the watchdog (or `faultdrill rollback --pending`) stops it
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import shlex
import signal
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from faultdrill.faults.base import Fault, FaultConfig, FaultContext, Injection, Problem, Verification, new_injection_id
from faultdrill.faults.cgroups import MemoryCgroup
from faultdrill.faults.errors import FaultdrillError, InjectionError
from faultdrill.faults.netns import PREFIX, delete_namespace
from faultdrill.faults.procid import pid_alive, process_start_ticks, wait_gone
from faultdrill.faults.records import RESOURCE_KINDS, Ledger

__all__ = [
    "NO_DEADLINE",
    "RECORD_KINDS",
    "OwnedNetns",
    "OwnedProcess",
    "OwnedResource",
    "Owner",
    "chain",
    "die_with_parent",
    "is_resource",
    "stop_recorded_process",
    "supervisor_gone",
    "supervisor_identity",
]

NO_DEADLINE = 4_102_444_800.0
"""2100-01-01 UTC: a resource has no dead-man deadline of its own (it lives as long as its owner).
Finite on purpose: the record is JSON, where infinity does not survive a round trip."""
_TERM_WAIT_S = 5.0
_KILL_WAIT_S = 3.0
_ARGV_MAX = 24  # the record keeps argv for the log: bounded, and never a secret (tokens travel in files/env)
PR_SET_PDEATHSIG = 1


class _NoConfig(FaultConfig):
    """Resource records have nothing a spec could configure."""


class OwnedResource(Fault):
    """Base of the record kinds: undo only (``rollback``); not a fault a spec can inject."""

    modes: ClassVar[tuple[str, ...]] = ("owned",)
    Config: ClassVar[type[FaultConfig]] = _NoConfig
    def local_preflight(self, config: Any, ctx: FaultContext) -> list[Problem]:
        return [Problem("not_injectable", f"'{self.name}' records are written by a run for what it starts")]

    def local_plan(self, config: Any, ctx: FaultContext) -> list[str]:
        return []

    def local_inject(self, config: Any, ctx: FaultContext) -> Injection:
        raise InjectionError("a run records what it starts itself; this is not an injectable fault", fault=self.name)


class OwnedProcess(OwnedResource):
    """A process a run started: SIGTERM (its group), 5 s, SIGKILL — only while pid + start ticks match."""

    name: ClassVar[str] = "process"

    def local_rollback(self, injection: Injection, ctx: FaultContext) -> None:
        self.undo_note = stop_recorded_process(injection.undo)

    def local_verify(self, injection: Injection, ctx: FaultContext) -> Verification:
        u = injection.undo
        alive = pid_alive(int(u["pid"]), u.get("start_ticks"))
        return Verification(alive, {"pid": u["pid"], "alive": alive}, message=f"{injection.target} pid {u['pid']}")


class OwnedNetns(OwnedResource):
    """A network namespace a run created (``fd-…`` only): deleted with its veth pair."""

    name: ClassVar[str] = "netns"

    def local_rollback(self, injection: Injection, ctx: FaultContext) -> None:
        name = str(injection.undo["name"])
        existed = Path("/run/netns", name).exists()
        delete_namespace(name, host_if=injection.undo.get("host_if"))  # refuses anything not fd-…; idempotent
        self.undo_note = f"deleted namespace {name}" if existed else f"namespace {name} already gone"

    def local_verify(self, injection: Injection, ctx: FaultContext) -> Verification:
        present = Path("/run/netns", str(injection.undo["name"])).exists()
        return Verification(present, {"present": present}, message=str(injection.undo["name"]))


RECORD_KINDS: tuple[type[OwnedResource], ...] = (OwnedProcess, OwnedNetns)
assert frozenset(k.name for k in RECORD_KINDS) == RESOURCE_KINDS  # faults/records.py names them without importing us


def is_resource(record: Injection) -> bool:
    """Whether ``record`` is a run's own process or namespace (not an injected fault)."""
    return record.fault in RESOURCE_KINDS


def _signal(pid: int, start: int | None, group: bool, sig: int) -> bool:
    """Send ``sig`` to the recorded process (its group when it leads one); False if it is gone."""
    # The start ticks are checked immediately before the signal: a pid the kernel gave to another
    # process since (it wraps) has another start time and is never signalled.
    if not pid_alive(pid, start):
        return False
    with contextlib.suppress(ProcessLookupError):
        # A group is signalled only through its live leader: while the leader lives, no other process can
        # hold that number as its pid or group id.
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    return True


def stop_recorded_process(undo: dict[str, Any], term_wait_s: float = _TERM_WAIT_S) -> str:
    """Stop the process an ``process`` record names; idempotent (gone already is success). What was done.

    SIGTERM first (a replica drains, Prometheus flushes), then SIGKILL after ``term_wait_s``;
    ``FaultdrillError`` if it survives even that (the record stays for a later attempt).
    """
    pid, start, group = int(undo["pid"]), undo.get("start_ticks"), bool(undo.get("group"))
    what = f"pid {pid} [{shlex.join(str(a) for a in undo.get('argv', []))[:120]}]"
    if start is None:
        done = f"{what}: no start time recorded, not signalled"  # could be anyone's by now
    elif not _signal(pid, start, group, signal.SIGTERM):
        done = f"{what}: already gone"
    elif (took := wait_gone(pid, start, term_wait_s)) is not None:
        done = f"{what}: SIGTERM, exited in {took:.1f} s"
    else:
        _signal(pid, start, group, signal.SIGKILL)
        if wait_gone(pid, start, _KILL_WAIT_S) is None:
            raise FaultdrillError(f"{what} survived SIGKILL (uninterruptible sleep?)")
        done = f"{what}: SIGTERM ignored for {term_wait_s:g} s, SIGKILL"
    return done + _sweep_container(undo.get("cgroup")) + _remove_sockets(undo.get("sockets") or [])


def _remove_sockets(paths: Sequence[str]) -> str:
    """Remove the unix sockets a stopped process left (only ``$TMPDIR/faultdrill-*.sock``: nothing else is ours)."""
    removed = 0
    for raw in paths:
        path = Path(raw)
        if path.parent != Path(tempfile.gettempdir()) or not path.name.startswith("faultdrill-") \
                or path.suffix != ".sock":  # fmt: skip
            continue
        with contextlib.suppress(OSError):
            if stat.S_ISSOCK(path.lstat().st_mode):
                path.unlink()
                removed += 1
    return f"; removed {removed} socket(s)" if removed else ""


def _sweep_container(path: str | None) -> str:
    """Kill what the process left in its cgroup (workers orphaned when it died) and remove the cgroup."""
    if not path or not Path(path).exists():
        return ""
    cg = MemoryCgroup.owned(path)  # refuses a cgroup that is not faultdrill's
    left = cg.kill_all()
    cg.remove()
    return f"; killed {len(left)} left in its cgroup" if left else ""


@dataclass
class Owner:
    """This process, as the owner of what it records; see the module docstring. Thread-safe."""

    ledger: Ledger
    pid: int
    start_ticks: int | None
    on_record: Callable[[], None] | None = None
    """Called after each record is durable (a run makes sure its dead-man watchdog runs)."""
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @classmethod
    def current(cls, state_dir: str | Path, *, on_record: Callable[[], None] | None = None) -> Owner:
        pid = os.getpid()
        return cls(Ledger(state_dir), pid, process_start_ticks(pid), on_record)

    def _record(self, kind: str, target: str, undo: dict[str, Any]) -> Injection:
        now = time.time()
        record = Injection(id=new_injection_id(), fault=kind, mode="owned", target=target, undo=undo, created_at=now,
                           deadline=NO_DEADLINE, owner_pid=self.pid, owner_start=self.start_ticks)  # fmt: skip
        self.ledger.write(record)
        if self.on_record is not None:
            with self._lock:  # records come from the main thread and the platform's restart thread
                self.on_record()
        return record

    def record_process(self, name: str, pid: int, argv: Sequence[str], *, cgroup: str | None = None,
                       sockets: Sequence[str] = ()) -> Injection | None:  # fmt: skip
        """Record a started process; None if it already exited (nothing left to stop). ``cgroup``: the faultdrill
        cgroup it runs in (its container): undoing the record also kills what is left in it and removes it.
        ``sockets``: unix sockets it listens on that outlive it (``$TMPDIR/faultdrill-*.sock`` only), removed too."""
        start = process_start_ticks(pid)
        if start is None:
            return None
        try:
            group = os.getpgid(pid) == pid  # started with start_new_session: it leads its own group
        except ProcessLookupError:
            return None
        shown = [str(a)[:200] for a in list(argv)[:_ARGV_MAX]]
        undo = {"pid": pid, "start_ticks": start, "group": group, "argv": shown}
        undo |= ({"cgroup": cgroup} if cgroup else {}) | ({"sockets": list(sockets)} if sockets else {})
        return self._record("process", name, undo)

    def record_netns(self, name: str, host_if: str | None = None) -> Injection:
        """Record a namespace *before* creating it (deleting one that was never made is a no-op)."""
        if not name.startswith(PREFIX):
            raise ValueError(f"faultdrill only creates namespaces named {PREFIX}…, got {name!r}")
        return self._record("netns", name, {"name": name, "host_if": host_if})

    def release(self, record: Injection | None) -> None:
        """Forget a record after an orderly stop (the process exited, the namespace is deleted)."""
        if record is not None:
            self.ledger.clear(record.id)


def supervisor_identity(supervisor: object) -> dict[str, Any] | None:
    """pid + start ticks of the process a platform's supervisor lives in (its ``supervisor_pid``), or None
    (unknown, or a platform that outlives any process of ours: a cluster). Faults that hold a service
    down record it, so a rollback from another process can tell a dead platform from a live one."""
    pid = getattr(supervisor, "supervisor_pid", None)
    if not isinstance(pid, int):
        return None
    return {"pid": pid, "start_ticks": process_start_ticks(pid)}


def supervisor_gone(undo: dict[str, Any]) -> bool:
    """Whether the supervisor recorded by ``supervisor_identity`` has died. Its platform went with it (the
    run's processes are its records, stopped once it died), so a service it held down has nothing left to
    be restarted into: undoing the hold is moot, not a failure."""
    sup = undo.get("supervisor")
    return isinstance(sup, dict) and not pid_alive(int(sup["pid"]), sup.get("start_ticks"))


@functools.cache
def _prctl() -> Any:
    return ctypes.CDLL(None, use_errno=True).prctl


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGKILL when its parent dies — or None off the main thread.

    Linux sends the parent-death signal when the *thread* that forked the child exits, not the
    process: a child forked from a worker thread (the platform restarts replicas from its watcher
    thread) would be killed when that thread ends. Those children rely on the ledger record and
    the dead-man watchdog instead; children forked from the main thread get both.
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    prctl, parent = _prctl(), os.getpid()  # looked up here, in the parent: the child only calls it

    def child() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the prctl: nobody would signal us
            os._exit(1)

    return child


def chain(*steps: Callable[[], None] | None) -> Callable[[], None] | None:
    """One ``preexec_fn`` running ``steps`` in order (None when there are none)."""
    todo = [s for s in steps if s is not None]
    if not todo:
        return None

    def run() -> None:
        for step in todo:
            step()

    return run
