"""The dead-man watchdog undoes a fault whose owning run hangs (SIGSTOP), for real."""

from __future__ import annotations

import os
import signal
import textwrap
import time
from pathlib import Path

from faults_helpers import start_python, wait_for_line

from faultdrill.faults.base import FaultContext, Scope
from faultdrill.faults.deadman import spawn_watchdog, watch
from faultdrill.faults.fake import FakeFault
from faultdrill.faults.procid import pid_alive
from faultdrill.faults.registry import FaultRegistry

CHILD = textwrap.dedent(
    """
    import time
    from faultdrill.faults.base import FaultContext, Scope
    from faultdrill.faults.deadman import spawn_watchdog
    from faultdrill.faults.fake import FakeFault
    ctx = FaultContext.create({state!r}, scope=Scope().with_paths({path!r}), grace_s=0.5)
    fault = FakeFault()
    cfg = fault.parse_config({{"path": {path!r} + "/flag", "content": "broken",
                              "duration_s": 0.5}})
    fault.inject(cfg, ctx)
    dog = spawn_watchdog({state!r}, faults=["faultdrill.faults.fake:FakeFault"], poll_s=0.1,
                         max_runtime_s=30)
    print("injected", dog.pid, flush=True)
    time.sleep(60)
    """
)


def _wait_for(pred, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    for _ in range(1000):
        if pred():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return False


def test_watchdog_undoes_a_hung_run(tmp_path: Path) -> None:
    files, state = tmp_path / "files", tmp_path / "state"
    files.mkdir()
    (files / "flag").write_text("original")
    proc = start_python(CHILD.format(state=str(state), path=str(files)))
    try:
        line = wait_for_line(proc, "injected")
        dog_pid = int(line.split()[1])
        os.kill(proc.pid, signal.SIGSTOP)  # the run hangs, with its fault in place
        assert (files / "flag").read_text() == "broken"  # not undone before the deadline
        assert _wait_for(lambda: (files / "flag").read_text() == "original", timeout=10)
        assert _wait_for(lambda: not list((state / "ledger").glob("*.json")), timeout=5)
        assert _wait_for(lambda: not pid_alive(dog_pid), timeout=5)  # exits when empty
        assert "rolled_back" in (state / "deadman.log").read_text()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)


def test_watchdog_with_empty_ledger_exits(tmp_path: Path) -> None:
    first = spawn_watchdog(tmp_path, poll_s=0.05, max_runtime_s=5)
    assert first.wait(10) == 0  # nothing to watch: exits at once


def test_watch_in_process_respects_deadline(tmp_path: Path) -> None:
    allowed = tmp_path / "files"
    allowed.mkdir()
    ctx = FaultContext.create(tmp_path / "state", scope=Scope().with_paths(allowed), grace_s=0)
    fault = FakeFault()
    inj = fault.inject(fault.parse_config({"path": str(allowed / "f"), "duration_s": 0.3}), ctx)
    registry = FaultRegistry()
    registry.register(FakeFault)
    start = time.monotonic()
    [result] = watch(registry, ctx, poll_s=0.05, max_runtime_s=5)
    assert result.injection_id == inj.id
    assert time.monotonic() - start >= 0.2
    assert not (allowed / "f").exists()
