"""The undo record (``Injection``) and the directory that keeps it durably (``Ledger``).

A record is written (temp file, fsync, rename, fsync of the directory) *before* the change it
describes is made and removed after the change is undone, so whatever a killed run left behind
is listed here. A per-record ``fcntl`` lock keeps two processes (a CLI and the dead-man watchdog,
say) from undoing the same record at once.

This is what everything about faults stands on — a ``FaultContext`` holds a ``Ledger``
(``faults/base.py``), the undo driver reads it (``faults/ledger.py``: ``rollback_pending``), a
run records its own processes in it (``faults/owned.py``) — so it imports none of them.

Example::

    ledger = Ledger(default_state_dir())
    ledger.write(injection)                   # durable before the change
    ...                                       # apply the change; later, undo it
    ledger.clear(injection.id)
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from faultdrill.faults.errors import LedgerError
from faultdrill.faults.procid import pid_alive

__all__ = ["RESOURCE_KINDS", "Injection", "Ledger", "default_state_dir", "new_injection_id"]

RESOURCE_KINDS = frozenset({"process", "netns"})
"""The record kinds for what a run itself starts (``faults/owned.py`` undoes them); every other record is a fault."""


def new_injection_id() -> str:
    """Short, unique, safe in file names, interface names and iptables comments."""
    return uuid.uuid4().hex[:12]


class Injection(BaseModel):
    """Frozen, JSON-ready record of exactly what one injection changed and how to undo it.

    >>> inj = Injection(id="ab12", fault="fake", mode="overwrite", target="/tmp/x",
    ...                 undo={"existed": False}, created_at=0.0, deadline=40.0, owner_pid=1)
    >>> Injection.model_validate_json(inj.model_dump_json()) == inj
    True
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    fault: str
    mode: str
    target: str
    undo: dict[str, Any]
    created_at: float
    deadline: float
    owner_pid: int
    owner_start: int | None = None
    emulated: bool = False
    config: dict[str, Any] = Field(default_factory=dict)


def default_state_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$FAULTDRILL_STATE_DIR``, else ``~/.local/state/faultdrill``."""
    env = os.environ if env is None else env
    if value := env.get("FAULTDRILL_STATE_DIR"):
        return Path(value)
    return Path(env.get("HOME") or Path.home()) / ".local" / "state" / "faultdrill"


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
