"""A service process faultdrill starts, waits for, and always stops.

The seed of the local platform: one child process with its log file, a readiness URL to
wait on, and a stop that sends SIGTERM (graceful drain) and escalates to SIGKILL after a
timeout. Children run in their own session so a terminal's Ctrl-C reaches faultdrill
first, which then stops them in order. With an ``owner`` (``faults.owned.Owner``) each start
is recorded in the ledger and each stop clears the record, so a killed run's children are
stopped by the dead-man watchdog or ``faultdrill rollback --pending``; a child started from the
main thread also dies with its parent (``PR_SET_PDEATHSIG``).

Example::

    svc = ServiceProcess("target", [sys.executable, "-m", "faultdrill.target_service", "serve"],
                         env={"FAULTDRILL_PORT": "8000"}, log_path=Path("target.log"),
                         owner=Owner.current(state_dir))   # owner: optional
    svc.start()
    svc.wait_http("http://127.0.0.1:8000/v2/health/ready", timeout_s=30)
    svc.stop()
"""

from __future__ import annotations

import contextlib
import os
import signal
import ssl
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from faultdrill.experiments.host.ports import free_port
from faultdrill.faults.base import Injection
from faultdrill.faults.cgroups import MemoryCgroup
from faultdrill.faults.errors import LedgerError
from faultdrill.faults.owned import Owner, chain, die_with_parent

__all__ = ["ServiceError", "ServiceProcess", "free_port"]


class ServiceError(RuntimeError):
    """A service did not start, died, or did not become ready in time (with its log tail)."""


@dataclass
class ServiceProcess:
    """One supervised child process."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    preexec: Callable[[], None] | None = None
    """Runs in the child before exec (e.g. join a memory cgroup, so all memory is charged)."""
    owner: Owner | None = None
    """Records each start in the ledger (cleared by ``stop``); None: not recorded (standalone use)."""
    sockets: tuple[Path, ...] = ()
    """Unix sockets it listens on that would outlive a crash (``$TMPDIR/faultdrill-*.sock``): named in its ledger
    record, so ``rollback --pending`` removes them."""
    container: MemoryCgroup | None = None
    """The cgroup it runs in (``preexec`` joins it). A container's semantics: what the process leaves in it when it
    exits is killed (``sweep``), and its ledger record names the cgroup, so a crashed run's leftovers go too."""
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    _record: Injection | None = field(default=None, init=False, repr=False)

    def start(self) -> None:
        self.sweep()  # what an earlier start of it left behind: a container starts empty
        env = {**os.environ, **self.env}
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            # die_with_parent() is None off the main thread (a replica restarted by the platform's watcher
            # thread would die with that thread): such a child relies on its ledger record alone.
            self.proc = subprocess.Popen(
                self.argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=chain(die_with_parent(), self.preexec),
            )  # fmt: skip
        finally:
            if out is not subprocess.DEVNULL:
                out.close()  # type: ignore[union-attr]
        self.started_at = time.monotonic()
        if self.owner is not None:
            self.owner.release(self._record)  # the previous run of this service (a restart) has exited
            try:
                self._record = self.owner.record_process(
                    self.name, self.proc.pid, self.argv, cgroup=str(self.container.path) if self.container else None,
                    sockets=[str(s) for s in self.sockets])  # fmt: skip
            except LedgerError:
                # Unrecorded, a crash of this run would leave it running for good: refuse to keep it.
                self.proc.kill()
                self.proc.wait(5)
                raise

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise ServiceError(f"{self.name} was never started")
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait_http(
        self, url: str, timeout_s: float = 30.0, verify: ssl.SSLContext | bool = True
    ) -> float:
        """Poll ``url`` until it answers 200; return seconds since start. Bounded by ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=1.0, verify=verify) as client:
            while time.monotonic() < deadline:
                if not self.running():
                    code = self.proc.returncode if self.proc else None
                    raise ServiceError(f"{self.name} exited with code {code}:\n{self.log_tail()}")
                try:
                    if client.get(url).status_code == 200:
                        return time.monotonic() - self.started_at
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
        raise ServiceError(f"{self.name} not ready at {url} after {timeout_s:.0f}s:\n{self.log_tail()}")

    def signal(self, sig: int) -> None:
        if self.running():
            os.kill(self.pid, sig)

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM, wait up to ``timeout_s``, then SIGKILL. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.sweep()
        if self.owner is not None:  # exited (wait returned) and swept: nothing left to undo
            self.owner.release(self._record)
            self._record = None
        return self.proc.returncode

    def sweep(self) -> list[int]:
        """Once the process has exited: SIGKILL what it left running — its process group (it leads one), every
        process in its cgroup. The pids killed in the cgroup (the group's are not listed: it is signalled whole).

        A server's worker processes or a child that outlives its parent (a launcher's real server) would otherwise
        keep the replica's memory and ports, and the next start would crash on them (port in use): in a container
        they die with its main process."""
        if self.proc is None or self.proc.poll() is None:
            return []
        with contextlib.suppress(ProcessLookupError, PermissionError):
            # The group outlives its reaped leader only while members remain, and the kernel never reuses a pid
            # that is still some group's id: this reaches the leftovers of this process only.
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.container is None or not self.container.path.exists():
            return []
        return self.container.kill_all()
