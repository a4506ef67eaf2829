"""A run's own processes and namespaces as ledger records (faults/owned.py), undone for real.

Real child processes (``sleep``), a real namespace (root), a real fresh process running
``faultdrill rollback --pending``, and the real dead-man watchdog."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from faults_helpers import REPO_ROOT, child_env, start_python, wait_for_line

from faultdrill.faults.base import FaultContext, Injection
from faultdrill.faults.deadman import watch
from faultdrill.faults.errors import InjectionError, PluginError
from faultdrill.faults.ledger import RollbackOutcome, rollback_pending
from faultdrill.faults.owned import (
    NO_DEADLINE,
    OwnedProcess,
    Owner,
    die_with_parent,
    is_resource,
    stop_recorded_process,
)
from faultdrill.faults.procid import pid_alive, process_start_ticks
from faultdrill.faults.records import Ledger
from faultdrill.faults.registry import FaultRegistry


def _wait_for(pred: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return bool(pred())


@pytest.fixture
def sleepers() -> Iterator[list[subprocess.Popen[bytes]]]:
    """``sleep 600`` children in their own sessions; whatever a test leaves is killed."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(5)


def _sleep(procs: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(["sleep", "600"], start_new_session=True)
    procs.append(proc)
    return proc


def _dead_owner(state: Path) -> Owner:
    """An owner that has exited (its pid + start ticks match no live process)."""
    gone = subprocess.Popen(["true"])
    start = process_start_ticks(gone.pid)
    gone.wait()
    return Owner(Ledger(state), gone.pid, start if start is not None else 1)


def _alive(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is None


OWNER_CHILD = textwrap.dedent(
    """
    import subprocess, sys, time
    from faultdrill.faults.owned import Owner
    owner = Owner.current(sys.argv[1])
    # No die_with_parent here on purpose: only the ledger record can stop it once we are killed.
    proc = subprocess.Popen(["sleep", "600"], start_new_session=True)
    owner.record_process("sleeper", proc.pid, ["sleep", "600"])
    print("recorded", proc.pid, flush=True)
    time.sleep(600)
    """
)


def test_a_killed_owners_process_is_stopped_by_rollback_pending_in_a_fresh_process(tmp_path: Path) -> None:
    state = tmp_path / "state"
    owner = subprocess.Popen([sys.executable, "-c", OWNER_CHILD, str(state)], env=child_env(), stdout=subprocess.PIPE,
                             text=True)  # fmt: skip
    try:
        pid = int(wait_for_line(owner, "recorded").split()[1])
        start = process_start_ticks(pid)
        assert pid_alive(pid, start)
        env = {**child_env(), "FAULTDRILL_STATE_DIR": str(state)}
        cli = [sys.executable, "-m", "faultdrill", "rollback", "--pending"]
        live = subprocess.run(cli, capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=60)
        assert live.returncode == 0 and "skipped_live" in live.stdout and pid_alive(pid, start)  # its run uses it
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
        first = subprocess.run(cli, capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=60)
        assert first.returncode == 0, first.stdout + first.stderr
        assert "process" in first.stdout and "rolled_back" in first.stdout and "SIGTERM" in first.stdout
        assert _wait_for(lambda: not pid_alive(pid, start), 5)  # checked in the process table, not the ledger
        assert not list((state / "ledger").glob("*.json"))
        second = subprocess.run(cli, capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=60)
        assert second.returncode == 0 and "nothing pending" in second.stdout
    finally:
        owner.kill()
        owner.wait(10)


def test_a_recycled_pid_is_never_signalled(tmp_path: Path, sleepers: list[subprocess.Popen[bytes]]) -> None:
    proc = _sleep(sleepers)
    owner = _dead_owner(tmp_path)
    record = owner.record_process("sleeper", proc.pid, ["sleep", "600"])
    assert record is not None
    # As if the recorded process had exited and the kernel had given its pid to this one: other start ticks.
    recycled = record.model_copy(update={"undo": {**record.undo, "start_ticks": record.undo["start_ticks"] - 1}})
    owner.ledger.write(recycled)
    [result] = rollback_pending(FaultRegistry(), FaultContext.create(tmp_path))
    assert result.outcome is RollbackOutcome.ROLLED_BACK and "already gone" in result.message
    assert result.kind == "process" and result.target == "sleeper"
    time.sleep(0.2)
    assert _alive(proc)  # not ours any more: untouched
    assert stop_recorded_process({**record.undo, "start_ticks": None}).endswith("not signalled") and _alive(proc)


Sleepers = list[subprocess.Popen[bytes]]


def test_undo_is_idempotent_and_a_gone_process_is_success(tmp_path: Path, sleepers: Sleepers) -> None:
    proc = _sleep(sleepers)
    owner = _dead_owner(tmp_path)
    record = owner.record_process("sleeper", proc.pid, ["sleep", "600"])
    assert record is not None and record.deadline == NO_DEADLINE and is_resource(record)
    ctx = FaultContext.create(tmp_path)
    fault = OwnedProcess()
    fault.rollback(record, ctx)
    assert proc.wait(5) == -signal.SIGTERM
    fault.rollback(record, ctx)  # again: already gone, no error
    assert "already gone" in fault.undo_note
    [result] = rollback_pending(FaultRegistry(), ctx)
    assert result.outcome is RollbackOutcome.ROLLED_BACK and "already gone" in result.message
    assert rollback_pending(FaultRegistry(), ctx) == []


def test_sigterm_ignored_then_sigkill(tmp_path: Path) -> None:
    code = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); "
            "time.sleep(600)")
    proc = start_python(code)
    try:
        wait_for_line(proc, "up")
        record = _dead_owner(tmp_path).record_process("stubborn", proc.pid, ["python"])
        assert record is not None
        began = time.monotonic()
        note = stop_recorded_process(record.undo, term_wait_s=0.5)
        assert "SIGKILL" in note and proc.wait(5) == -signal.SIGKILL and time.monotonic() - began < 5
    finally:
        proc.kill()
        proc.wait(5)


def test_a_live_owners_records_are_skipped_unless_asked(tmp_path: Path, sleepers: Sleepers) -> None:
    proc = _sleep(sleepers)
    owner = Owner.current(tmp_path)  # this test process: alive
    record = owner.record_process("sleeper", proc.pid, ["sleep", "600"])
    ctx = FaultContext.create(tmp_path)
    [skipped] = rollback_pending(FaultRegistry(), ctx)
    assert skipped.outcome is RollbackOutcome.SKIPPED_LIVE and "still uses it" in skipped.message and _alive(proc)
    [done] = rollback_pending(FaultRegistry(), ctx, include_live=True)
    assert done.outcome is RollbackOutcome.ROLLED_BACK and proc.wait(5) == -signal.SIGTERM
    owner.release(record)  # already cleared by the rollback: a no-op
    assert not Ledger(tmp_path).ids()


def test_newest_first(tmp_path: Path, sleepers: list[subprocess.Popen[bytes]]) -> None:
    owner = _dead_owner(tmp_path)
    names = ["replica-0", "prometheus", "locust"]  # in start order
    for name in names:
        owner.record_process(name, _sleep(sleepers).pid, ["sleep", "600"])
        time.sleep(0.01)  # distinct creation times
    results = rollback_pending(FaultRegistry(), FaultContext.create(tmp_path))
    assert [r.target for r in results] == names[::-1]  # load before Prometheus before the replicas
    assert all(r.outcome is RollbackOutcome.ROLLED_BACK for r in results)
    assert all(p.wait(5) == -signal.SIGTERM for p in sleepers)


@pytest.mark.root
def test_a_namespace_record_is_deleted(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces")
    from faultdrill.faults.netns import create_namespace, delete_namespace

    suffix = "t" + secrets.token_hex(4)
    owner = _dead_owner(tmp_path)
    record = owner.record_netns("fd-" + suffix)  # before it exists, as the platform does
    ns = create_namespace(suffix)
    try:
        assert Path("/run/netns", ns.name).exists()
        [result] = rollback_pending(FaultRegistry(), FaultContext.create(tmp_path))
        assert result.outcome is RollbackOutcome.ROLLED_BACK and result.kind == "netns"
        assert result.message == f"deleted namespace {ns.name}"
        assert not Path("/run/netns", ns.name).exists() and not Path("/sys/class/net", ns.host_if).exists()
        owner.ledger.write(record)  # undone twice: the second finds nothing, and says so
        [again] = rollback_pending(FaultRegistry(), FaultContext.create(tmp_path))
        assert again.outcome is RollbackOutcome.ROLLED_BACK and "already gone" in again.message
    finally:
        delete_namespace(ns.name)


def test_only_faultdrill_namespaces_are_recorded(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fd-"):
        Owner.current(tmp_path).record_netns("production")
    forged = Injection(id="forged", fault="netns", mode="owned", target="x", undo={"name": "production"},
                       created_at=0.0, deadline=NO_DEADLINE, owner_pid=2**22 + 1)  # fmt: skip
    Ledger(tmp_path).write(forged)  # a hand-edited record: still refused at undo time, and kept
    [result] = rollback_pending(FaultRegistry(), FaultContext.create(tmp_path))
    assert result.outcome is RollbackOutcome.FAILED and "BlastRadiusError" in result.message
    assert Ledger(tmp_path).ids() == ["forged"]


def test_record_kinds_are_in_every_registry_but_never_a_fault() -> None:
    registry = FaultRegistry.installed()
    assert registry.record_kind("process") is OwnedProcess and registry.record_kind("netns").name == "netns"
    assert "process" not in registry.names() and "netns" not in registry
    with pytest.raises(PluginError):
        registry.get("process")  # a spec cannot name it
    impostor = type("Impostor", (OwnedProcess,), {"name": "netns"})
    with pytest.raises(PluginError, match="reserved"):
        FaultRegistry().register(impostor)
    with pytest.raises(InjectionError):
        OwnedProcess().inject(None, None)  # type: ignore[arg-type]


def test_the_watchdog_stays_while_a_live_owner_has_resources(tmp_path: Path, sleepers: Sleepers) -> None:
    owner = Owner.current(tmp_path)
    record = owner.record_process("sleeper", _sleep(sleepers).pid, ["sleep", "600"])
    done: list[object] = []
    dog = threading.Thread(target=lambda: done.extend(watch(FaultRegistry(), FaultContext.create(tmp_path),
                                                            poll_s=0.02, max_runtime_s=0.05)))  # fmt: skip
    dog.start()
    time.sleep(0.5)
    assert dog.is_alive()  # past max_runtime_s, but the owner lives and its process runs
    owner.release(record)  # orderly stop
    dog.join(5)
    assert not dog.is_alive() and done == [] and _alive(sleepers[0])


KEEPER_CHILD = textwrap.dedent(
    """
    import subprocess, sys, time
    from faultdrill.faults.deadman import Keeper
    from faultdrill.faults.owned import Owner
    keeper = Keeper(sys.argv[1], poll_s=0.1)
    owner = Owner.current(sys.argv[1], on_record=keeper.ensure)
    proc = subprocess.Popen(["sleep", "600"], start_new_session=True)
    owner.record_process("sleeper", proc.pid, ["sleep", "600"])
    print("recorded", proc.pid, keeper.pid, flush=True)
    time.sleep(600)
    """
)


def test_the_watchdog_stops_a_killed_owners_processes_by_itself(tmp_path: Path) -> None:
    state = tmp_path / "state"
    owner = subprocess.Popen([sys.executable, "-c", KEEPER_CHILD, str(state)], env=child_env(), stdout=subprocess.PIPE,
                             text=True)  # fmt: skip
    try:
        _, pid_text, dog_text = wait_for_line(owner, "recorded").split()
        pid, dog = int(pid_text), int(dog_text)
        start = process_start_ticks(pid)
        time.sleep(0.5)
        assert pid_alive(pid, start) and pid_alive(dog)  # started with the first record; waits while the owner lives
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
        killed = time.monotonic()
        assert _wait_for(lambda: not pid_alive(pid, start), 10), "the watchdog did not stop the orphan"
        assert time.monotonic() - killed < 8  # a poll (0.1 s) + SIGTERM; generous for a loaded machine
        assert _wait_for(lambda: not list((state / "ledger").glob("*.json")), 5)
        assert _wait_for(lambda: not pid_alive(dog), 5)  # ledger empty: it exits
        assert "(process sleeper): pid" in (state / "deadman.log").read_text()
    finally:
        owner.kill()
        owner.wait(10)


PDEATH_CHILD = textwrap.dedent(
    """
    import sys, threading, time
    from faultdrill.experiments.host.process import ServiceProcess
    from faultdrill.faults.owned import die_with_parent
    svc = ServiceProcess("sleeper", ["sleep", "600"])
    svc.start()
    off_main = []
    t = threading.Thread(target=lambda: off_main.append(die_with_parent()))
    t.start(); t.join()
    print("started", svc.pid, off_main[0] is None, flush=True)
    time.sleep(600)
    """
)


def test_a_child_started_from_the_main_thread_dies_with_its_parent() -> None:
    parent = start_python(PDEATH_CHILD)
    try:
        _, pid_text, off_main = wait_for_line(parent, "started").split()
        pid = int(pid_text)
        start = process_start_ticks(pid)
        assert off_main == "True"  # never from another thread: the signal would follow that thread's exit
        assert pid_alive(pid, start)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        assert _wait_for(lambda: not pid_alive(pid, start), 5)
    finally:
        parent.kill()
        parent.wait(10)
    assert die_with_parent() is not None  # pytest runs tests on the main thread


def test_a_service_process_is_recorded_while_it_runs(tmp_path: Path) -> None:
    from faultdrill.experiments.host.process import ServiceProcess

    ledger = Ledger(tmp_path)
    svc = ServiceProcess("sleeper", ["sleep", "600"], owner=Owner.current(tmp_path))
    svc.start()
    try:
        [record] = ledger.pending()
        assert (record.fault, record.target, record.undo["pid"], record.undo["group"]) == ("process", "sleeper",
                                                                                             svc.pid, True)  # fmt: skip
        assert record.undo["start_ticks"] == process_start_ticks(svc.pid) and record.owner_pid == os.getpid()
        first = svc.pid
        svc.proc.kill()  # type: ignore[union-attr]
        svc.proc.wait(5)  # type: ignore[union-attr]
        svc.start()  # a restart: the old record goes, the new process is recorded
        [again] = ledger.pending()
        assert again.undo["pid"] == svc.pid != first
    finally:
        svc.stop(5)
    assert ledger.ids() == []


def test_a_hold_is_moot_once_the_platforms_supervisor_died(tmp_path: Path) -> None:
    from faultdrill.faults.owned import supervisor_gone, supervisor_identity

    class Here:
        supervisor_pid = os.getpid()

    class Cluster:  # no process of ours: unknown, so never moot
        pass

    assert supervisor_identity(Cluster()) is None and not supervisor_gone({"supervisor": None})
    live = supervisor_identity(Here())
    assert live == {"pid": os.getpid(), "start_ticks": process_start_ticks(os.getpid())}
    assert not supervisor_gone({"supervisor": live})
    dead = _dead_owner(tmp_path)
    assert supervisor_gone({"supervisor": {"pid": dead.pid, "start_ticks": dead.start_ticks}})


def test_the_keeper_starts_one_watchdog_and_settles_when_the_ledger_empties(tmp_path: Path, sleepers: Sleepers) -> None:
    from faultdrill.faults.deadman import Keeper, watchdog_running

    keeper = Keeper(tmp_path, poll_s=0.05)
    owner = Owner.current(tmp_path, on_record=keeper.ensure)
    first = owner.record_process("a", _sleep(sleepers).pid, ["sleep"])
    dog = keeper.pid
    assert dog is not None and _wait_for(lambda: watchdog_running(tmp_path), 10)
    second = owner.record_process("b", _sleep(sleepers).pid, ["sleep"])
    assert keeper.pid == dog  # one watchdog per state dir
    assert not keeper.settle(0.3)  # records remain: it stays
    owner.release(second)
    owner.release(first)
    assert keeper.settle(5) and not pid_alive(dog)
    assert all(_alive(p) for p in sleepers)  # a live owner's processes are never touched
