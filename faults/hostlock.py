"""Host-wide locks: one ``flock``-ed file per purpose, shared by every faultdrill process on the machine.

Used where several runs (or pytest workers) claim a shared resource between reading what is taken and
taking one: network-namespace address blocks (``faults.netns``), listening ports
(``faultdrill.experiments.host.ports``). The lock is released when the block exits, or when the process dies.

Example::

    with host_lock("netns"):
        block = first_free_block(); claim(block)
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["host_lock", "lock_folder"]


def lock_folder() -> Path:
    """``/run/lock`` where this user may write there, else the temporary directory."""
    return Path("/run/lock") if os.access("/run/lock", os.W_OK) else Path(tempfile.gettempdir())


@contextmanager
def host_lock(name: str, folder: Path | None = None) -> Iterator[None]:
    """Hold the host-wide lock ``faultdrill-<name>.lock`` (in ``folder``, default ``lock_folder()``)."""
    fd = os.open((folder or lock_folder()) / f"faultdrill-{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
