"""The dead-man watchdog: undoes faults whose run hung or died, from its own process.

Started detached (own session) right after an injection — or a run's first process or
namespace (``faults/owned.py``) — is recorded; it polls the ledger, rolls back every record past
its deadline (inject time + duration + grace) or whose owner died, newest first, and exits once
the ledger is empty. While a live owner's process or namespace records remain it keeps watching,
past ``max_runtime_s`` too: the run it guards may outlive any fixed bound. One watchdog per state
directory (file lock); :class:`Keeper` starts one only when none holds that lock.

Example::

    ledger.write(injection)                    # deadline is already in the record
    spawn_watchdog(ctx.state_dir, faults=["mypkg.faults:MyFault"])
    # the run may now hang or be killed: the fault is undone within a poll of its deadline
    keeper = Keeper(state_dir)                 # a run: Owner(on_record=keeper.ensure)
"""

from __future__ import annotations

import argparse
import fcntl
import importlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from faultdrill.faults.base import FaultContext
from faultdrill.faults.errors import LedgerError, PluginError
from faultdrill.faults.ledger import RollbackOutcome, RollbackResult, rollback_pending
from faultdrill.faults.owned import is_resource
from faultdrill.faults.procid import pid_alive
from faultdrill.faults.records import Ledger
from faultdrill.faults.registry import FaultRegistry

__all__ = ["Keeper", "main", "spawn_watchdog", "watch", "watchdog_running"]

_LOCK = "deadman.lock"


def watch(
    registry: FaultRegistry, ctx: FaultContext, *, poll_s: float = 0.2, max_runtime_s: float
) -> list[RollbackResult]:
    """Poll until the ledger is empty, or ``max_runtime_s`` is over and no live owner's process or
    namespace record remains (those owners bound it instead); return what was undone."""
    done: list[RollbackResult] = []
    deadline = time.monotonic() + max_runtime_s
    while True:
        results = rollback_pending(registry, ctx)
        for result in results:
            if result.outcome is not RollbackOutcome.SKIPPED_LIVE:
                _log(ctx.state_dir, str(result))
        done += [r for r in results if r.outcome is RollbackOutcome.ROLLED_BACK]
        if not ctx.ledger.ids() or (time.monotonic() > deadline and not _live_resources(ctx.ledger)):
            break
        time.sleep(poll_s)
    return done


def _live_resources(ledger: Ledger) -> bool:
    """A process or namespace record whose owner still runs: its run may die any moment, stay."""
    for record_id in ledger.ids():
        try:
            record = ledger.get(record_id)
        except LedgerError:
            continue  # reported by rollback_pending; not a reason to stay
        if record is not None and is_resource(record) and pid_alive(record.owner_pid, record.owner_start):
            return True
    return False


def _log(state_dir: Path, line: str) -> None:
    with open(state_dir / "deadman.log", "a") as fh:
        fh.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} pid={os.getpid()} {line}\n")


def spawn_watchdog(
    state_dir: str | Path, *, faults: Sequence[str] = (), poll_s: float = 0.2,
    max_runtime_s: float = 86_400.0,
) -> subprocess.Popen[bytes]:
    """Start ``python -m faultdrill.faults.deadman`` detached; ``faults`` are extra ``module:Class``."""
    state = Path(state_dir)
    state.mkdir(parents=True, exist_ok=True)
    from faultdrill import faults as package

    env = dict(os.environ)
    # The watchdog must import this very package, installed or not.
    root = str(Path(package.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "faultdrill.faults.deadman", "--state-dir", str(state),
           "--poll", str(poll_s), "--max-runtime", str(max_runtime_s)]
    for ref in faults:
        cmd += ["--fault", ref]
    with open(state / "deadman.log", "ab") as log:
        # New session: a Ctrl-C or SIGKILL aimed at the run's process group spares it.
        return subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=log, start_new_session=True, close_fds=True)


def watchdog_running(state_dir: str | Path) -> bool:
    """Whether a watchdog holds ``state_dir``'s lock right now."""
    path = Path(state_dir) / _LOCK
    if not path.exists():
        return False
    fd = _try_lock(path)
    if fd is None:
        return True
    os.close(fd)  # we only looked; closing releases it
    return False


class Keeper:
    """Makes sure a watchdog guards ``state_dir`` whenever this process records something; thread-safe.

    ``ensure`` after each durable record: a watchdog that found the ledger empty and exited is
    replaced; one that runs (ours or another process's: the lock says) is left alone.
    """

    def __init__(self, state_dir: str | Path, *, max_runtime_s: float = 3600.0, poll_s: float = 0.2) -> None:
        self.state_dir, self.max_runtime_s, self.poll_s = Path(state_dir), max_runtime_s, poll_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def ensure(self) -> None:
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                return  # ours still runs (poll() also reaps one that exited)
            if watchdog_running(self.state_dir):
                return  # a watchdog that exits re-reads the ledger after letting go: it sees our record
            self._proc = spawn_watchdog(self.state_dir, poll_s=self.poll_s, max_runtime_s=self.max_runtime_s)

    def settle(self, timeout_s: float = 2.0) -> bool:
        """Once the ledger is empty, wait (bounded) for our watchdog to notice and exit, so a finished run
        leaves no process behind even for a poll. False if it still runs (the ledger is not empty)."""
        with self._lock:
            proc = self._proc
        if proc is None:
            return True
        ledger, deadline = Ledger(self.state_dir), time.monotonic() + timeout_s
        while proc.poll() is None and not ledger.ids() and time.monotonic() < deadline:
            time.sleep(0.02)
        return proc.poll() is not None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None


def _registry(refs: Sequence[str], state_dir: Path) -> FaultRegistry:
    registry = FaultRegistry()
    try:
        registry.load_entry_points()
    except PluginError as exc:
        _log(state_dir, f"entry points: {exc}")  # still undo what the explicit faults can
    for ref in refs:
        module, _, attr = ref.partition(":")
        try:
            registry.register(getattr(importlib.import_module(module), attr), source=ref)
        except (ImportError, AttributeError, PluginError) as exc:
            _log(state_dir, f"fault {ref}: {exc}")
    return registry


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m faultdrill.faults.deadman")
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--fault", action="append", default=[], help="module:Class")
    parser.add_argument("--poll", type=float, default=0.2)
    parser.add_argument("--max-runtime", type=float, default=86_400.0)
    args = parser.parse_args(argv)
    ctx = FaultContext(state_dir=args.state_dir, ledger=Ledger(args.state_dir))
    registry = _registry(args.fault, args.state_dir)
    lock_path = args.state_dir / _LOCK
    for _ in range(100):
        fd = _try_lock(lock_path)
        if fd is None:
            return 0  # another watchdog owns this state dir
        try:
            watch(registry, ctx, poll_s=args.poll, max_runtime_s=args.max_runtime)
        finally:
            os.close(fd)
        # A record written just as we found the ledger empty would find the lock taken
        # and its own watchdog gone: look once more after letting go.
        if not ctx.ledger.ids():
            return 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
