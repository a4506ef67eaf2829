"""oom_kill ``verify``: the exit status is read from the supervisor, never assumed.

The first tests hand ``verify`` a supervisor that reports a chosen status for a real, exited
process (no root needed); the others make the kernel OOM-kill a real process in a real memory
cgroup, or end it otherwise, and read what the supervisor (``Popen``'s ``waitpid``) observed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from faultdrill.faults.base import FaultContext, Injection
from faultdrill.faults.cgroups import MemoryCgroup, detect_memory_controller
from faultdrill.faults.oom import OomKillFault
from faultdrill.faults.procid import process_start_ticks
from faultdrill.faults.topology import ServiceHandle

CONTROLLER = detect_memory_controller()
needs_cgroup = pytest.mark.skipif(
    CONTROLLER is None or os.geteuid() != 0, reason="needs root and a cgroup memory controller"
)
MIB = 1024 * 1024


class _Supervisor:
    """The two Supervisor calls verify makes, answered from a ``Popen`` (or a fixed status)."""

    def __init__(self, proc: subprocess.Popen[bytes], status: Any = "popen", pid: int | None = None) -> None:
        self.proc, self.status, self.pid = proc, status, pid

    def handle(self, name: str) -> ServiceHandle:
        return ServiceHandle(name=name, role="replica", pid=self.pid if self.pid is not None else self.proc.pid)

    def exit_status(self, name: str) -> int | None:
        return self.proc.poll() if self.status == "popen" else self.status

    # The rest of the Supervisor protocol: verify must never need it.
    def stop(self, name: str, *, hold: bool = True) -> int | None:
        raise AssertionError("verify stopped a service")

    def kill(self, name: str, sig: int) -> None:
        raise AssertionError("verify signalled a service")

    def start(self, name: str, *, env: dict[str, str] | None = None, wait: bool = True) -> None:
        raise AssertionError("verify started a service")

    def restart(self, name: str, *, env: dict[str, str] | None = None, wait: bool = True) -> None:
        raise AssertionError("verify restarted a service")

    def wait_exit(self, name: str, timeout_s: float) -> int | None:
        raise AssertionError("verify reaped a service itself")


def _injection(
    ctx: FaultContext, proc: subprocess.Popen[bytes], mode: str, cg: MemoryCgroup | None = None
) -> Injection:
    fault = OomKillFault()
    cfg = fault.parse_config({"target": "replica-0", "mode": mode, "duration_s": 10})
    undo = {"pid": proc.pid, "pid_start": process_start_ticks(proc.pid), "cgroup": str(cg.path) if cg else None,
            "oom_kills_before": cg.oom_kills() if cg else None}  # fmt: skip
    return fault.new_injection(cfg, ctx, mode=mode, target="replica-0", undo=undo)


@pytest.fixture
def exited(tmp_path: Path) -> Iterator[tuple[FaultContext, subprocess.Popen[bytes], Injection]]:
    """A real process, recorded while alive, then SIGKILLed and reaped."""
    proc = subprocess.Popen(["sleep", "60"])
    ctx = FaultContext.create(tmp_path / "state")
    inj = _injection(ctx, proc, "signal")
    proc.kill()
    proc.wait(timeout=10)
    yield ctx, proc, inj


def test_unreadable_status_is_not_verified_and_claims_no_137(
    exited: tuple[FaultContext, subprocess.Popen[bytes], Injection],
) -> None:
    ctx, proc, inj = exited
    ctx.supervisor = _Supervisor(proc, status=None)  # gone, but the supervisor has no status
    v = OomKillFault().verify(inj, ctx)
    assert not v.effective
    assert v.details["gone"] is True and v.details["exit_status"] is None and v.details["exit_code"] is None
    assert v.details["reason"] is None and "no exit status" in v.details["status_unknown"]
    assert v.message.startswith("not verified: ") and "unknown" in v.message and "137" not in v.message


def test_no_supervisor_is_not_verified(exited: tuple[FaultContext, subprocess.Popen[bytes], Injection]) -> None:
    ctx, _, inj = exited
    v = OomKillFault().verify(inj, ctx)  # ctx.supervisor is None: nobody can read the status
    assert not v.effective and v.details["exit_code"] is None and "no supervisor" in v.message
    assert "137" not in v.message


def test_status_of_a_restarted_service_is_not_borrowed(
    exited: tuple[FaultContext, subprocess.Popen[bytes], Injection],
) -> None:
    ctx, proc, inj = exited
    ctx.supervisor = _Supervisor(proc, status=-signal.SIGKILL, pid=proc.pid + 100_000)  # runs again, as another pid
    v = OomKillFault().verify(inj, ctx)
    assert not v.effective and v.details["exit_status"] is None and "runs again as pid" in v.message


@pytest.mark.parametrize(
    ("status", "code", "reason"),
    [(-signal.SIGTERM, 143, "Signal"), (-signal.SIGINT, 130, "Signal"), (1, 1, "Error"), (0, 0, "Completed")],
)
def test_other_exits_are_reported_as_observed_not_as_oom(
    exited: tuple[FaultContext, subprocess.Popen[bytes], Injection], status: int, code: int, reason: str
) -> None:
    ctx, proc, inj = exited
    ctx.supervisor = _Supervisor(proc, status=status)
    v = OomKillFault().verify(inj, ctx)
    assert not v.effective
    assert (v.details["exit_status"], v.details["exit_code"], v.details["reason"]) == (status, code, reason)
    assert f"exit code {code}" in v.message and "OOMKilled" not in v.message


def test_signal_mode_reads_the_real_sigkill(exited: tuple[FaultContext, subprocess.Popen[bytes], Injection]) -> None:
    ctx, proc, inj = exited
    ctx.supervisor = _Supervisor(proc)  # Popen's own waitpid status: -9
    v = OomKillFault().verify(inj, ctx)
    assert v.effective and v.details["exit_status"] == -9 and v.details["exit_code"] == 137
    assert v.details["reason"] == "Signal" and v.message.startswith("verified: ")


def test_a_process_still_running_is_not_verified(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(OomKillFault, "settle_s", 0.3)
    proc = subprocess.Popen(["sleep", "60"])
    try:
        ctx = FaultContext.create(tmp_path / "state")
        ctx.supervisor = _Supervisor(proc)
        inj = _injection(ctx, proc, "leak")
        v = OomKillFault().verify(inj, ctx)
        assert not v.effective and v.details["gone"] is False and v.details["waited_s"] >= 0.3
        assert v.details["exit_code"] is None and "still running" in v.message
    finally:
        proc.kill()
        proc.wait(timeout=10)


# -- real processes in a real memory cgroup -----------------------------------------------

HOG = "import sys; sys.stdout.write('up\\n'); sys.stdout.flush(); sys.stdin.readline(); b = bytearray(400 * 2**20)\n" \
      "for i in range(0, len(b), 4096): b[i] = 1\n"  # fmt: skip


@pytest.fixture
def cgroup() -> Iterator[MemoryCgroup]:
    assert CONTROLLER is not None
    cg = MemoryCgroup.create(CONTROLLER, f"test-oomv-{uuid.uuid4().hex[:8]}")
    cg.set_limit(100 * MIB)
    try:
        yield cg
    finally:
        cg.remove()


def _start_in(cg: MemoryCgroup, code: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-c", code], preexec_fn=cg.preexec(),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline() == b"up\n"  # alive in the cgroup, recorded next
    return proc


@pytest.mark.slow
@pytest.mark.root
@needs_cgroup
@pytest.mark.parametrize("with_supervisor", [True, False])
def test_real_kernel_oom_kill(tmp_path: Path, cgroup: MemoryCgroup, with_supervisor: bool) -> None:
    proc = _start_in(cgroup, HOG)
    ctx = FaultContext.create(tmp_path / "state")
    inj = _injection(ctx, proc, "leak", cgroup)
    if with_supervisor:
        ctx.supervisor = _Supervisor(proc)
    before = int(inj.undo["oom_kills_before"])
    assert proc.stdin is not None
    proc.stdin.write(b"go\n")
    proc.stdin.flush()
    started = time.monotonic()
    v = OomKillFault().verify(inj, ctx)  # waits for the kernel to strike
    counter = cgroup.oom_kills() - before  # read independently of the fault
    if not with_supervisor:
        proc.wait(timeout=10)  # reaped here: the kernel did kill it, but verify could not read that
        assert proc.returncode == -signal.SIGKILL and counter >= 1
        assert not v.effective and v.details["gone"] is True and v.details["exit_code"] is None
        assert v.details["oom_kills"] == counter and "137" not in v.message and "unknown" in v.message
        return
    assert v.effective, v.message
    assert v.details["exit_status"] == -signal.SIGKILL == proc.returncode  # what waitpid said
    assert v.details["exit_code"] == 137 and v.details["reason"] == "OOMKilled"
    assert v.details["oom_kills"] == counter >= 1
    print(f"\noom verify: {v.message} (observed {time.monotonic() - started:.2f} s after the hog started)")


@pytest.mark.slow
@pytest.mark.root
@needs_cgroup
@pytest.mark.parametrize(
    ("end", "status", "code"),
    [("sigterm", -signal.SIGTERM, 143), ("exit1", 1, 1), ("sigkill", -signal.SIGKILL, 137)],
)
def test_real_other_exits_in_a_cgroup_are_not_oom(
    tmp_path: Path, cgroup: MemoryCgroup, end: str, status: int, code: int
) -> None:
    idle = "import sys; sys.stdout.write('up\\n'); sys.stdout.flush(); sys.exit(int(sys.stdin.readline()))"
    proc = _start_in(cgroup, idle)
    ctx = FaultContext.create(tmp_path / "state")
    ctx.supervisor = _Supervisor(proc)
    inj = _injection(ctx, proc, "limit", cgroup)
    assert proc.stdin is not None
    if end == "exit1":
        proc.stdin.write(b"1\n")
        proc.stdin.flush()
    else:
        proc.send_signal(signal.SIGTERM if end == "sigterm" else signal.SIGKILL)
    v = OomKillFault().verify(inj, ctx)
    assert not v.effective, v.message
    assert v.details["exit_status"] == status == proc.returncode and v.details["exit_code"] == code
    assert v.details["oom_kills"] == 0 and v.details["reason"] != "OOMKilled"  # a SIGKILL alone is no OOM kill
    assert f"exit code {code}" in v.message and "oom_kill +0" in v.message
