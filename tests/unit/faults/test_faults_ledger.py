"""The ledger: durable records, orphan detection, idempotent rollback_pending."""

from __future__ import annotations

import os
import signal
import textwrap
from pathlib import Path

import pytest
from faults_helpers import start_python, wait_for_line

from faultdrill.faults.base import FaultContext, Scope
from faultdrill.faults.errors import LedgerError
from faultdrill.faults.fake import FakeFault
from faultdrill.faults.ledger import RollbackOutcome, rollback_pending
from faultdrill.faults.procid import pid_alive
from faultdrill.faults.records import Ledger, default_state_dir
from faultdrill.faults.registry import FaultRegistry


@pytest.fixture
def registry() -> FaultRegistry:
    reg = FaultRegistry()
    reg.register(FakeFault, source="tests")
    return reg


@pytest.fixture
def allowed(tmp_path: Path) -> Path:
    path = tmp_path / "allowed"
    path.mkdir()
    return path


@pytest.fixture
def ctx(tmp_path: Path, allowed: Path) -> FaultContext:
    return FaultContext.create(tmp_path / "state", scope=Scope().with_paths(allowed))


def test_default_state_dir() -> None:
    assert default_state_dir({"FAULTDRILL_STATE_DIR": "/x"}) == Path("/x")
    assert default_state_dir({"HOME": "/home/u"}) == Path("/home/u/.local/state/faultdrill")


def test_record_is_on_disk_before_the_change(ctx: FaultContext, allowed: Path) -> None:
    seen: list[list[str]] = []
    fault = FakeFault()
    cfg = fault.parse_config({"path": str(allowed / "f")})
    original_apply = fault.apply_recorded

    def spy(inj, c, apply):  # type: ignore[no-untyped-def]
        def checked() -> None:
            seen.append(Ledger(ctx.state_dir).ids())
            apply()

        return original_apply(inj, c, checked)

    fault.apply_recorded = spy  # type: ignore[method-assign]
    inj = fault.inject(cfg, ctx)
    assert seen == [[inj.id]]
    files = list((ctx.state_dir / "ledger").glob("*.json"))
    assert [p.name for p in files] == [f"{inj.id}.json"]
    assert oct(files[0].stat().st_mode & 0o777) != "0o777"


def test_unreadable_record_is_reported_and_kept(ctx: FaultContext, registry) -> None:  # type: ignore[no-untyped-def]
    ctx.ledger.dir.mkdir(parents=True)
    bad = ctx.ledger.dir / "deadbeef.json"
    bad.write_text("{not json")
    with pytest.raises(LedgerError, match=r"deadbeef\.json"):
        ctx.ledger.pending()
    results = rollback_pending(registry, ctx)
    assert [r.outcome for r in results] == [RollbackOutcome.UNREADABLE]
    assert bad.exists()


def test_live_owner_is_skipped_unless_forced(
    ctx: FaultContext, registry: FaultRegistry, allowed: Path
) -> None:
    fault = FakeFault()
    inj = fault.inject(fault.parse_config({"path": str(allowed / "f")}), ctx)
    assert not Ledger.is_orphaned(inj, ctx.clock.time())
    [res] = rollback_pending(registry, ctx)
    assert res.outcome is RollbackOutcome.SKIPPED_LIVE
    assert (allowed / "f").exists()
    [res] = rollback_pending(registry, ctx, include_live=True)
    assert res.outcome is RollbackOutcome.ROLLED_BACK
    assert not (allowed / "f").exists()
    assert rollback_pending(registry, ctx) == []


def test_past_deadline_is_orphaned(ctx: FaultContext, allowed: Path) -> None:
    fault = FakeFault()
    inj = fault.inject(fault.parse_config({"path": str(allowed / "f"), "duration_s": 1}), ctx)
    assert Ledger.is_orphaned(inj, inj.deadline + 0.1)
    fault.undo(inj, ctx)


def test_failed_rollback_keeps_record(ctx: FaultContext, allowed: Path) -> None:
    empty = FaultRegistry()  # no fault class to undo with
    fault = FakeFault()
    inj = fault.inject(fault.parse_config({"path": str(allowed / "f")}), ctx)
    [res] = rollback_pending(empty, ctx, include_live=True)
    assert res.outcome is RollbackOutcome.FAILED
    assert "unknown fault 'fake'" in res.message
    assert ctx.ledger.ids() == [inj.id]
    fault.undo(inj, ctx)


def test_locked_record_is_skipped(
    ctx: FaultContext, registry: FaultRegistry, allowed: Path
) -> None:
    fault = FakeFault()
    inj = fault.inject(fault.parse_config({"path": str(allowed / "f")}), ctx)
    other = Ledger(ctx.state_dir)  # separate fd, as another process would have
    with other.locked(inj.id) as held:
        assert held
        [res] = rollback_pending(registry, ctx, include_live=True)
        assert res.outcome is RollbackOutcome.SKIPPED_LOCKED
    fault.undo(inj, ctx)


def test_pid_alive() -> None:
    assert pid_alive(os.getpid())
    assert not pid_alive(os.getpid(), start_ticks=1)  # same pid, different process


CHILD = textwrap.dedent(
    """
    import time
    from faultdrill.faults.base import FaultContext, Scope
    from faultdrill.faults.fake import FakeFault
    state, allowed = {state!r}, {allowed!r}
    ctx = FaultContext.create(state, scope=Scope().with_paths(allowed))
    fault = FakeFault()
    for name in ("a", "b"):
        fault.inject(fault.parse_config({{"path": allowed + "/" + name,
                                          "content": "broken"}}), ctx)
    print("injected", flush=True)
    time.sleep(60)
    """
)


def test_crash_mid_fault_then_rollback_pending_twice(
    ctx: FaultContext, registry: FaultRegistry, allowed: Path
) -> None:
    (allowed / "a").write_text("original-a")
    proc = start_python(CHILD.format(state=str(ctx.state_dir), allowed=str(allowed)))
    try:
        wait_for_line(proc, "injected")
        assert (allowed / "a").read_text() == "broken"
        assert (allowed / "b").exists()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    assert len(ctx.ledger.ids()) == 2
    results = rollback_pending(registry, ctx)
    assert [r.outcome for r in results] == [RollbackOutcome.ROLLED_BACK] * 2
    # The system, not just the ledger, is back to how it was.
    assert (allowed / "a").read_text() == "original-a"
    assert not (allowed / "b").exists()
    assert sorted(p.name for p in allowed.iterdir()) == ["a"]
    assert ctx.ledger.ids() == []
    assert rollback_pending(registry, ctx) == []
    assert (allowed / "a").read_text() == "original-a"
