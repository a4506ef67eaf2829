"""The fault schedule with a real (shipped) test double: on time, chained, always rolled back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from faultdrill.experiments.engine.plan import build_plan
from faultdrill.experiments.engine.schedule import FaultScheduler
from faultdrill.experiments.journal.timeline import Timeline
from faultdrill.experiments.spec.experiment import Experiment
from faultdrill.faults.base import FaultContext, Scope
from faultdrill.faults.fake import FakeFault
from faultdrill.faults.registry import FaultRegistry


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _setup(tmp_path: Path, faults: list[dict[str, Any]], on_injected: Any = None
           ) -> tuple[FaultScheduler, Timeline, Clock]:  # fmt: skip
    registry = FaultRegistry()
    registry.register(FakeFault, source="test")
    spec = Experiment.model_validate({"apiVersion": "faultdrill/v1", "kind": "Experiment",
                                      "metadata": {"name": "t"}, "faults": faults})  # fmt: skip
    plan = build_plan(spec, registry, source="<test>")
    clock = Clock()
    timeline = Timeline(start=0.0, clock=clock)
    scope = Scope().with_paths(tmp_path)
    scheduler = FaultScheduler(plan.faults, timeline,
                               lambda: FaultContext.create(tmp_path / "state", scope=scope),
                               on_injected=on_injected)  # fmt: skip
    return scheduler, timeline, clock


def _fault(fid: str, path: Path, **when: Any) -> dict[str, Any]:
    return {"id": fid, "type": "fake", "duration": "2s", "params": {"path": str(path), "content": fid}, **when}


def test_at_and_after_schedule_and_file_effects(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("orig-a")
    scheduler, timeline, clock = _setup(tmp_path, [_fault("one", a, at="1s"), _fault("two", b, after="one")])
    scheduler.start(steady_at=10.0)
    for t in (10.0, 10.5, 11.0, 12.5, 13.0, 13.1, 14.0, 15.2):
        clock.now = t
        scheduler.tick(t)
        if t == 12.5:
            assert a.read_text() == "one" and not b.exists()
    assert scheduler.done()
    starts = {e.source: e.t for e in timeline.select("fault", event="start")}
    ends = {e.source: e.t for e in timeline.select("fault", event="end")}
    assert starts == {"one": 11.0, "two": 13.0} and ends == {"one": 13.0, "two": 15.2}
    assert a.read_text() == "orig-a" and not b.exists()  # both rolled back exactly
    assert not list((tmp_path / "state" / "ledger").glob("*.json"))


def test_rollback_all_undoes_what_is_active(tmp_path):
    a = tmp_path / "a"
    scheduler, timeline, _clock = _setup(tmp_path, [_fault("one", a, at="0s")])
    scheduler.start(steady_at=0.0)
    scheduler.tick(0.0)
    assert a.read_text() == "one" and [f.id for f in scheduler.active()] == ["one"]
    assert scheduler.rollback_all() == ["one"]
    assert not a.exists() and scheduler.done()
    assert timeline.last("fault").get("event") == "rolled_back"


def test_failed_injection_is_an_event_not_an_exception(tmp_path):
    outside = Path("/proc/definitely-not-allowed")
    scheduler, timeline, _clock = _setup(tmp_path, [_fault("bad", outside, at="0s")])
    scheduler.start(steady_at=0.0)
    scheduler.tick(0.0)
    error = timeline.first("fault", event="error")
    assert error is not None and "refused" in error.get("error")
    assert scheduler.done() and scheduler.summary()["bad"]["state"] == "failed"


def test_on_injected_runs_after_each_successful_injection_only(tmp_path):
    calls: list[float] = []
    faults = [_fault("one", tmp_path / "a", at="0s"), _fault("bad", Path("/proc/nope"), at="0s")]
    scheduler, _timeline, _clock = _setup(tmp_path, faults, on_injected=lambda: calls.append(1.0))
    scheduler.start(steady_at=0.0)
    scheduler.tick(0.0)
    assert len(calls) == 1  # the refused injection never needs the watchdog
    scheduler.rollback_all()
