"""Memory cgroups owned by faultdrill: detect, create, limit, observe OOM kills, remove.

Every cgroup lives under a ``faultdrill/`` parent, so ownership is provable from the path
and nothing else is ever touched. v1 (``/sys/fs/cgroup/memory``) and v2 (a ``memory``
entry in ``cgroup.controllers``) are detected, never assumed.

Example::

    controller = detect_memory_controller()
    if controller is None:
        ...  # report a Problem: no memory controller
    cg = MemoryCgroup.create(controller, "replica-0")
    cg.set_limit(100 * 2**20)
    proc = subprocess.Popen(cmd, preexec_fn=cg.preexec())  # charged from its first byte
    proc.wait(); print(cg.oom_kills())
    cg.remove()
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from faultdrill.faults.errors import BlastRadiusError, FaultdrillError

__all__ = ["OWNER_DIR", "MemoryCgroup", "MemoryController", "detect_memory_controller"]

OWNER_DIR = "faultdrill"
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True)
class MemoryController:
    """Where the memory controller is mounted, and which cgroup version it speaks."""

    version: Literal[1, 2]
    root: Path

    @property
    def owner_root(self) -> Path:
        return self.root / OWNER_DIR


def detect_memory_controller(base: Path = Path("/sys/fs/cgroup")) -> MemoryController | None:
    """The usable memory controller under ``base``, or None (then report a Problem)."""
    v1 = base / "memory"
    if (v1 / "memory.limit_in_bytes").exists():
        return MemoryController(1, v1)
    # Pure v2 mounts at base; hybrid hosts mount it at base/unified.
    for root in (base, base / "unified"):
        controllers = root / "cgroup.controllers"
        try:
            if "memory" in controllers.read_text().split():
                return MemoryController(2, root)
        except OSError:
            continue
    return None


class MemoryCgroup:
    """One faultdrill-owned memory cgroup at ``<root>/faultdrill/<name>``."""

    def __init__(self, controller: MemoryController, name: str) -> None:
        if not _NAME.match(name):
            raise BlastRadiusError("cgroup", name, allowed=[f"{OWNER_DIR}/<name>"])
        self.controller = controller
        self.name = name
        self.path = controller.owner_root / name

    @classmethod
    def owned(cls, path: str | Path) -> MemoryCgroup:
        """The faultdrill cgroup at ``path`` (from a handle or a ledger record); anything else is refused."""
        controller = detect_memory_controller()
        if controller is None:
            raise FaultdrillError("this host has no memory cgroup controller")
        cg = cls(controller, Path(path).name)
        if cg.path != Path(path):  # only faultdrill-owned cgroups (<root>/faultdrill/<name>)
            raise FaultdrillError(f"cgroup {path} is not a faultdrill cgroup ({cg.path})")
        return cg

    @classmethod
    def create(cls, controller: MemoryController, name: str) -> MemoryCgroup:
        cg = cls(controller, name)
        owner = controller.owner_root
        owner.mkdir(exist_ok=True)
        if controller.version == 2:
            # v2 children only get memory files if every ancestor delegates the controller.
            for parent in (controller.root, owner):
                (parent / "cgroup.subtree_control").write_text("+memory")
        cg.path.mkdir(exist_ok=True)
        return cg

    def _v(self, v1_file: str, v2_file: str) -> Path:
        return self.path / (v1_file if self.controller.version == 1 else v2_file)

    def set_limit(self, limit_bytes: int) -> None:
        """Hard limit; swap is capped too, or the kernel would swap instead of OOM-killing."""
        self._v("memory.limit_in_bytes", "memory.max").write_text(str(limit_bytes))
        if self.controller.version == 1:
            memsw = self.path / "memory.memsw.limit_in_bytes"
            if memsw.exists():
                memsw.write_text(str(limit_bytes))  # must follow limit_in_bytes (memsw >= mem)
        else:
            swap = self.path / "memory.swap.max"
            if swap.exists():
                swap.write_text("0")

    def limit(self) -> int | None:
        """The current limit in bytes; None when unlimited."""
        text = self._v("memory.limit_in_bytes", "memory.max").read_text().strip()
        if text == "max" or int(text) >= 2**62:  # v1 reports "unlimited" as a huge number
            return None
        return int(text)

    def usage(self) -> int:
        return int(self._v("memory.usage_in_bytes", "memory.current").read_text())

    def oom_kills(self) -> int:
        """Processes the kernel OOM-killed in this cgroup (0 if the kernel doesn't count)."""
        text = self._v("memory.oom_control", "memory.events").read_text()
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def pids(self) -> list[int]:
        try:
            text = (self.path / "cgroup.procs").read_text()
        except FileNotFoundError:
            return []
        return [int(p) for p in text.split()]

    def add_pid(self, pid: int) -> None:
        """Move a running process in (memory it already holds stays charged elsewhere)."""
        (self.path / "cgroup.procs").write_text(str(pid))

    def preexec(self) -> Callable[[], None]:
        """A ``preexec_fn`` that joins this cgroup in the child, after fork, before exec.

        Joining before exec means every page the program touches is charged here.
        """
        procs = os.fsencode(self.path / "cgroup.procs")

        def join() -> None:
            # Only async-signal-safe-ish calls between fork and exec: raw os.open/write.
            fd = os.open(procs, os.O_WRONLY)
            try:
                os.write(fd, b"0")  # "0" means the writing process itself
            finally:
                os.close(fd)

        return join

    def kill_all(self, timeout: float = 5.0) -> list[int]:
        """SIGKILL every process inside until none is left (bounded); the pids that were there.

        What a container runtime does when a container's main process exits: nothing it started outlives it
        (a server's worker processes, a child that ignores its parent's death)."""
        deadline = time.monotonic() + timeout
        seen: list[int] = []
        for _ in range(1000):
            pids = self.pids()
            if not pids:
                break
            if time.monotonic() > deadline:
                raise FaultdrillError(f"cgroup {self.path} still has processes {pids}")
            for pid in pids:
                if pid not in seen:
                    seen.append(pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)
        return seen

    def remove(self, timeout: float = 5.0) -> None:
        """Kill what is left inside, then delete the cgroup; a no-op if already gone."""
        if not self.path.exists():
            return
        deadline = time.monotonic() + timeout
        self.kill_all(timeout)
        for _ in range(100):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                # The kernel releases a cgroup only after its last task is fully reaped.
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
