"""A process's identity: its pid *and* its start time, so a recycled pid is never taken for the recorded process.

Every record that names a process (a fault's owner, a signalled service, a run's own child) keeps the start
time in clock ticks next to the pid; the checks here compare both. It is the bottom of the ledger's imports —
the record, the undo driver, the run's own resources and the faults all need it — so it imports nothing of ours.

Example::

    start = process_start_ticks(pid)       # when the record is written
    ...
    if pid_alive(pid, start):              # later, maybe in another process: still the same one?
        os.kill(pid, signal.SIGCONT)
"""

from __future__ import annotations

import os
import time
from pathlib import Path

__all__ = ["pid_alive", "process_start_ticks", "wait_gone"]


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


def wait_gone(pid: int, start_ticks: int | None, timeout_s: float) -> float | None:
    """Seconds until the process is gone (a zombie counts), or None after ``timeout_s``.

    A signal is delivered asynchronously: right after ``kill(SIGKILL)`` the process may still be tearing down
    (its sockets already closed), so whoever checks an effect waits here, briefly, instead of looking once.
    Never reaps: a parent's ``Popen`` must still get the exit status (a reap would leave it ECHILD, read as 0).
    """
    began = time.monotonic()
    while pid_alive(pid, start_ticks):
        if time.monotonic() - began > timeout_s:
            return None
        time.sleep(0.02)
    return time.monotonic() - began
