"""The crash-safe ledger: one durable JSON undo record per live injection.

A record is written (temp file, fsync, rename, fsync of the directory) *before* the
change is made and removed after it is undone, so whatever a killed run left behind is
listed here and ``rollback_pending`` can undo it. A per-record ``fcntl`` lock keeps two
processes (a CLI and the dead-man watchdog, say) from undoing the same record at once. The
processes and network namespaces a run starts are records here too (``faults/owned.py``), undone
by the same path.

Example::

    ledger = Ledger(default_state_dir())
    ledger.write(injection)                   # durable before the change
    ...                                       # apply the change
    for result in rollback_pending(registry, ctx):
        print(result)                         # "rolled back 3f2a… (fake): ok"
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from faultdrill.faults.base import FaultContext, Injection
from faultdrill.faults.errors import FaultdrillError, LedgerError

if TYPE_CHECKING:
    from faultdrill.faults.registry import FaultRegistry

__all__ = ["RESOURCE_KINDS", "Ledger", "RollbackOutcome", "RollbackResult", "default_state_dir", "pid_alive",
           "process_start_ticks", "rollback_owned", "rollback_pending"]


def default_state_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$FAULTDRILL_STATE_DIR``, else ``~/.local/state/faultdrill``."""
    env = os.environ if env is None else env
    if value := env.get("FAULTDRILL_STATE_DIR"):
        return Path(value)
    return Path(env.get("HOME") or Path.home()) / ".local" / "state" / "faultdrill"


def process_start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks (field 22 of /proc/PID/stat), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and ')': split after the last ')'.
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[19])


def pid_alive(pid: int, start_ticks: int | None = None) -> bool:
    """Whether ``pid`` runs and is the same process (start time) that wrote the record."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    rest = stat.rsplit(")", 1)[1].split()
    if rest[0] == "Z":
        return False  # a zombie has already exited; only its exit status remains
    return start_ticks is None or int(rest[19]) == start_ticks


class Ledger:
    """Records under ``<state_dir>/ledger/<id>.json``; see the module docstring."""

    def __init__(self, state_dir: str | Path) -> None:
        self.state_dir = Path(state_dir)
        self.dir = self.state_dir / "ledger"

    def _path(self, injection_id: str) -> Path:
        return self.dir / f"{injection_id}.json"

    def _ensure_dir(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            (self.dir / ".locks").mkdir(exist_ok=True, mode=0o700)
        except OSError as exc:
            raise LedgerError(f"cannot create ledger directory: {exc}", path=str(self.dir)) from exc

    def write(self, injection: Injection) -> Path:
        """Durably store ``injection``; returns only once it survives a power cut."""
        self._ensure_dir()
        final = self._path(injection.id)
        try:
            fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".tmp-", suffix=".json")
            try:
                with os.fdopen(fd, "w") as fh:
                    fh.write(injection.model_dump_json(indent=2))
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, final)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            self._fsync_dir()
        except OSError as exc:
            raise LedgerError(f"cannot write record: {exc}", path=str(final)) from exc
        return final

    def clear(self, injection_id: str) -> bool:
        """Remove a record (durably); False if it was already gone."""
        path = self._path(injection_id)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise LedgerError(f"cannot remove record: {exc}", path=str(path)) from exc
        self._fsync_dir()
        (self.dir / ".locks" / f"{injection_id}.lock").unlink(missing_ok=True)
        return True

    def _fsync_dir(self) -> None:
        # Without this the rename/unlink itself may be lost on a crash.
        fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def get(self, injection_id: str) -> Injection | None:
        path = self._path(injection_id)
        try:
            return Injection.model_validate_json(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValidationError, json.JSONDecodeError) as exc:
            raise LedgerError(f"unreadable record: {exc}", path=str(path)) from exc

    def ids(self) -> list[str]:
        if not self.dir.is_dir():
            return []
        return sorted(p.stem for p in self.dir.glob("*.json") if not p.name.startswith("."))

    def pending(self) -> list[Injection]:
        """Every record, oldest first; an unreadable one raises ``LedgerError``."""
        records = [r for r in (self.get(i) for i in self.ids()) if r is not None]
        return sorted(records, key=lambda r: r.created_at)

    @staticmethod
    def is_orphaned(injection: Injection, now: float) -> bool:
        """Owner process gone, or past the dead-man deadline."""
        return now > injection.deadline or not pid_alive(
            injection.owner_pid, injection.owner_start
        )

    @contextmanager
    def locked(self, injection_id: str) -> Iterator[bool]:
        """Try to take the record's lock without waiting; yields whether we hold it."""
        self._ensure_dir()
        fd = os.open(self.dir / ".locks" / f"{injection_id}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)  # closing releases the flock


class RollbackOutcome(StrEnum):
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"
    SKIPPED_LIVE = "skipped_live"  # owner alive and within its deadline
    SKIPPED_LOCKED = "skipped_locked"  # another process is undoing it right now
    UNREADABLE = "unreadable"


@dataclass(frozen=True)
class RollbackResult:
    """What happened to one pending record."""

    injection_id: str
    fault: str
    outcome: RollbackOutcome
    message: str = ""
    kind: str = "fault"
    """``fault``, or a run's own ``process`` / ``netns`` (faults/owned.py)."""
    target: str = ""

    def __str__(self) -> str:
        what = self.fault if self.kind == "fault" else f"{self.kind} {self.target}"
        return f"{self.outcome.value} {self.injection_id} ({what}): {self.message}"


def rollback_pending(
    registry: FaultRegistry, ctx: FaultContext, *, include_live: bool = False
) -> list[RollbackResult]:
    """Undo every orphaned record (all records with ``include_live``); keep failed ones.

    Newest first, like a stack: a fault injected on top of another (a partition over a
    dependency lever) is undone before the one beneath it needs the path back.
    Idempotent: a second call finds nothing and returns ``[]``.
    """
    ledger = ctx.ledger
    results = []
    for injection_id in _newest_first(ledger):
        with ledger.locked(injection_id) as held:
            if not held:
                results.append(
                    RollbackResult(injection_id, "?", RollbackOutcome.SKIPPED_LOCKED, "locked")
                )
                continue
            try:
                injection = ledger.get(injection_id)
            except LedgerError as exc:
                results.append(
                    RollbackResult(injection_id, "?", RollbackOutcome.UNREADABLE, str(exc))
                )
                continue
            if injection is None:
                continue  # undone by someone else between listing and locking
            if not include_live and not ledger.is_orphaned(injection, ctx.clock.time()):
                why = "its run still uses it" if _kind(injection) != "fault" else "within its deadline"
                results.append(
                    RollbackResult(
                        injection_id,
                        injection.fault,
                        RollbackOutcome.SKIPPED_LIVE,
                        f"owner pid {injection.owner_pid} is alive and {why}",
                        _kind(injection),
                        injection.target,
                    )
                )
                continue
            results.append(_undo_one(registry, ctx, injection))
    return results


def _newest_first(ledger: Ledger) -> list[str]:
    created: dict[str, float] = {}
    for injection_id in ledger.ids():
        try:
            record = ledger.get(injection_id)
        except LedgerError:
            record = None  # reported as unreadable when its turn comes
        created[injection_id] = record.created_at if record is not None else float("inf")
    return sorted(created, key=lambda i: created[i], reverse=True)


RESOURCE_KINDS = frozenset({"process", "netns"})
"""The record kinds for what a run itself starts (``faults/owned.py`` undoes them); every other record is a fault."""


def _kind(record: Injection) -> str:
    return record.fault if record.fault in RESOURCE_KINDS else "fault"


def _undo_one(registry: FaultRegistry, ctx: FaultContext, injection: Injection) -> RollbackResult:
    kind = _kind(injection)
    try:
        # record_kind: the registry's faults and the ledger's own process/netns records alike
        fault = registry.record_kind(injection.fault)()
        fault.rollback(injection, ctx)
    except (FaultdrillError, OSError, ValueError, KeyError, RuntimeError) as exc:
        # Keep the record: the change may still be in place and must stay visible.
        return RollbackResult(injection.id, injection.fault, RollbackOutcome.FAILED, f"{type(exc).__name__}: {exc}",
                              kind, injection.target)  # fmt: skip
    ctx.ledger.clear(injection.id)
    return RollbackResult(injection.id, injection.fault, RollbackOutcome.ROLLED_BACK, fault.undo_note or "ok", kind,
                          injection.target)  # fmt: skip


def rollback_owned(registry: Any, ctx: Any, owner_pid: int) -> list[str]:
    """Undo, newest first, every record ``owner_pid`` made (a process cleaning up after itself:
    the Chaos Toolkit target when its owner exits, the pytest plugin at session end), the processes
    and namespaces it recorded included. Each record
    is locked while undone; a failed undo stays in the ledger for ``faultdrill rollback --pending``.
    Returns one line per record."""
    lines: list[str] = []
    for record in reversed(ctx.ledger.pending()):
        if record.owner_pid != owner_pid:
            continue
        with ctx.ledger.locked(record.id) as held:
            if not held or ctx.ledger.get(record.id) is None:
                continue
            try:
                registry.record_kind(record.fault)().undo(record, ctx)
                lines.append(f"rolled back {record.id} ({record.fault})")
            except Exception as exc:  # kept in the ledger: faultdrill rollback --pending retries it
                lines.append(f"rollback of {record.id} ({record.fault}) failed: {type(exc).__name__}: {exc}")
    return lines
