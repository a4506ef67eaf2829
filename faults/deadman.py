"""The dead-man watchdog: undoes faults whose run hung or died, from its own process.

Started detached (own session) right after an injection is recorded; it polls the ledger,
rolls back every record past its deadline (inject time + duration + grace) or whose owner
died, and exits once the ledger is empty. One watchdog per state directory (file lock).

Example::

    ledger.write(injection)                    # deadline is already in the record
    spawn_watchdog(ctx.state_dir, faults=["mypkg.faults:MyFault"])
    # the run may now hang or be killed: the fault is undone within a poll of its deadline
"""

from __future__ import annotations

import argparse
import fcntl
import importlib
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from faults.base import FaultContext
from faults.errors import PluginError
from faults.ledger import Ledger, RollbackOutcome, RollbackResult, rollback_pending
from faults.registry import FaultRegistry

__all__ = ["main", "spawn_watchdog", "watch"]

_LOCK = "deadman.lock"


def watch(
    registry: FaultRegistry, ctx: FaultContext, *, poll_s: float = 0.2, max_runtime_s: float
) -> list[RollbackResult]:
    """Poll until the ledger is empty (or ``max_runtime_s``); return what was undone."""
    done: list[RollbackResult] = []
    deadline = time.monotonic() + max_runtime_s
    for _ in range(int(max_runtime_s / poll_s) + 2):
        results = rollback_pending(registry, ctx)
        for result in results:
            if result.outcome is not RollbackOutcome.SKIPPED_LIVE:
                _log(ctx.state_dir, str(result))
        done += [r for r in results if r.outcome is RollbackOutcome.ROLLED_BACK]
        if not ctx.ledger.ids() or time.monotonic() > deadline:
            break
        time.sleep(poll_s)
    return done


def _log(state_dir: Path, line: str) -> None:
    with open(state_dir / "deadman.log", "a") as fh:
        fh.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} pid={os.getpid()} {line}\n")


def spawn_watchdog(
    state_dir: str | Path, *, faults: Sequence[str] = (), poll_s: float = 0.2,
    max_runtime_s: float = 86_400.0,
) -> subprocess.Popen[bytes]:
    """Start ``python -m faults.deadman`` detached; ``faults`` are extra ``module:Class``."""
    state = Path(state_dir)
    state.mkdir(parents=True, exist_ok=True)
    import faults as package

    env = dict(os.environ)
    # The watchdog must import this very package, installed or not.
    root = str(Path(package.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "faults.deadman", "--state-dir", str(state),
           "--poll", str(poll_s), "--max-runtime", str(max_runtime_s)]
    for ref in faults:
        cmd += ["--fault", ref]
    with open(state / "deadman.log", "ab") as log:
        # New session: a Ctrl-C or SIGKILL aimed at the run's process group spares it.
        return subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=log, start_new_session=True, close_fds=True)


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
    parser = argparse.ArgumentParser(prog="python -m faults.deadman")
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
