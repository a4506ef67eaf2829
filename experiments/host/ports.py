"""Listening ports for the services a run starts, chosen so that nothing else takes them first.

A port the kernel picks with ``bind((host, 0))`` comes from the *ephemeral* range — the range it
also draws the source port of every outgoing connection from. Between the probe socket closing and
the child binding the port, any ``connect()`` on the host (Locust, a Prometheus scrape, a probe, a
parallel test) may take it as its source port: CI saw a replica die with ``[Errno 98] address
already in use`` on its admin port that way. So ports here come from *below* the ephemeral range
(``/proc/sys/net/ipv4/ip_local_port_range``), which ``connect()`` never uses, and each port handed
out is reserved host-wide while the process that asked for it lives (at most an hour): two runs on
one host, or two pytest workers, never pick the same port, and a replica restarted on its old port
finds it still free.

Hand-written because no library reserves ports across processes without a daemon (``portpicker``
needs its port server for that and still draws from the ephemeral range when it has none).
Reservations are one small file per asking process, under a host-wide lock (``faults.hostlock``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import socket
import time
from pathlib import Path

from faultdrill.faults.hostlock import host_lock, lock_folder
from faultdrill.faults.procid import pid_alive, process_start_ticks

__all__ = ["free_port", "port_range"]

_LOWEST = 15000
"""Below this, ports that well-known servers listen on are common."""
_MIN_SPAN = 1000
_HOLD_S = 3600.0
"""A reservation lapses after this even if its process lives (a long pytest worker asks for thousands)."""
_TRIES = 256


def port_range(proc_file: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> tuple[int, int] | None:
    """The ports (inclusive) that outgoing connections never use, or None when the ephemeral range leaves
    too few of them (then ``free_port`` falls back to a kernel-picked port)."""
    try:
        low, high = (int(x) for x in proc_file.read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's default
    if low - _LOWEST >= _MIN_SPAN:
        return _LOWEST, low - 1
    if 65535 - high >= _MIN_SPAN:
        return high + 1, 65535
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on at ``host`` right now, outside the ephemeral range, and reserved for
    the calling process (see the module docstring)."""
    span = port_range()
    if span is not None:
        folder = _folder()
        with host_lock("ports", folder):
            held = _held(folder)
            rng = random.SystemRandom()
            for _ in range(_TRIES):
                port = rng.randint(*span)
                if port not in held and _bindable(host, port):
                    _reserve(folder, port)
                    return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # range exhausted or too narrow
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def _folder() -> Path:
    folder = lock_folder() / f"faultdrill-ports-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder


def _held(folder: Path) -> set[int]:
    """Ports reserved by live processes; the files of dead ones are removed."""
    held: set[int] = set()
    oldest = time.time() - _HOLD_S
    for path in folder.glob("*-*"):
        pid_s, _, ticks_s = path.name.partition("-")
        try:
            alive = pid_alive(int(pid_s), int(ticks_s) if ticks_s != "x" else None)
        except ValueError:
            alive = False
        if not alive:
            path.unlink(missing_ok=True)
            continue
        with contextlib.suppress(OSError):
            for line in path.read_text().splitlines():
                port, _, at = line.partition(" ")
                with contextlib.suppress(ValueError):
                    if float(at) >= oldest:
                        held.add(int(port))
    return held


def _reserve(folder: Path, port: int) -> None:
    pid = os.getpid()
    ticks = process_start_ticks(pid)
    with open(folder / f"{pid}-{ticks if ticks is not None else 'x'}", "a", encoding="ascii") as fh:
        fh.write(f"{port} {time.time():.0f}\n")
