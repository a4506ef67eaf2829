"""Undoing what the ledger holds: ``rollback_pending`` (a killed run's leftovers) and ``rollback_owned``.

The ledger itself — the durable record (``Injection``) and its directory (``Ledger``) — lives in
``faults/records.py``; this module is what reads it back and undoes each record through the fault
(or the run's own ``process``/``netns`` kind, ``faults/owned.py``) that the record names, found in
a ``FaultRegistry``. It sits above ``faults/base.py`` and ``faults/registry.py`` and imports them;
nothing below imports it.

Example::

    ledger = Ledger(default_state_dir())      # faults/records.py
    ledger.write(injection)                   # durable before the change
    ...                                       # apply the change
    for result in rollback_pending(registry, ctx):
        print(result)                         # "rolled back 3f2a… (fake): ok"
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from faultdrill.faults.base import FaultContext
from faultdrill.faults.errors import FaultdrillError, LedgerError
from faultdrill.faults.records import RESOURCE_KINDS, Injection, Ledger
from faultdrill.faults.registry import FaultRegistry

__all__ = ["RollbackOutcome", "RollbackResult", "rollback_owned", "rollback_pending"]


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


def rollback_owned(registry: FaultRegistry, ctx: FaultContext, owner_pid: int) -> list[str]:
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
