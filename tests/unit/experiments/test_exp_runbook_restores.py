"""``{runbook: FAULT, restores: steady_state, within: T}``, runbook triggers and timeline slices."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from faultdrill.experiments.engine.runbook_hook import LaunchContext, RunbookTriggers
from faultdrill.experiments.expect import RunbookRestores
from faultdrill.experiments.expect.judge import evaluate
from faultdrill.experiments.expect.stats import SteadyCriteria, mttd_mttr
from faultdrill.experiments.journal.timeline import Timeline
from faultdrill.experiments.spec.experiment import Experiment
from faultdrill.faults.errors import ConfigError

STEADY = SteadyCriteria(window_s=2.0, availability=0.99)


def _tl(outage: tuple[float, float] | None = (10.0, 20.0), end: float = 40.0) -> Timeline:
    """Requests every 0.1 s, failing during ``outage``; fault hog 8 s → 35 s."""
    tl = Timeline(start=0.0, clock=lambda: 0.0)
    for i in range(int(end * 10)):
        t = i * 0.1
        bad = outage is not None and outage[0] <= t < outage[1]
        tl.add("request", "load", t=t, ok=not bad, status=503 if bad else 200, latency_s=0.01)
    tl.add("fault", "hog", t=8.0, event="start", fault="gpu_memory_exhaustion", target="replica-0")
    tl.add("fault", "hog", t=35.0, event="end", fault="gpu_memory_exhaustion", target="replica-0")
    if outage is not None:
        tl.add("metric", "run", t=outage[0] + 0.5, name="steady_state", value=0.0)
    return tl


def _runbook(tl: Timeline, *, launched: float = 12.0, steps: list[tuple[float, str]] | None = None) -> None:
    tl.add("runbook", "gpu-memory", t=launched, status="launched", fault="hog", trigger="alert X firing")
    for i, (t, status) in enumerate(steps or [(13.0, "done"), (19.0, "done")], 1):
        tl.add("runbook", "gpu-memory", t=t, step=i, title=f"step{i}", status=status,
               check="probe readiness replica-0 is true within 30s" if status == "failed" else None)  # fmt: skip


X = RunbookRestores(runbook="hog", restores="steady_state", within=15.0)  # type: ignore[arg-type]


def test_restores_when_steady_state_returns_after_the_fixing_step_before_the_fault_ends() -> None:
    tl = _tl()
    _runbook(tl)
    v = evaluate(X, tl, steady_state=STEADY)
    assert v.passed, v.observed
    assert "repaired by step 2 'step2' (done at t=19.0 s)" in v.observed, v.observed
    assert "while hog was still in effect" in v.observed
    assert v.measured["steps_done"] == 2 and 8.0 <= (v.measured["seconds"] or 0) <= 12.0


def test_a_failed_step_fails_naming_it() -> None:
    tl = _tl(outage=(10.0, 36.0))
    _runbook(tl, steps=[(13.0, "done"), (19.0, "failed")])
    v = evaluate(X, tl, steady_state=STEADY)
    assert not v.passed
    assert "step 2 'step2' failed at t=19.0 s: probe readiness replica-0 is true within 30s" in v.observed


def test_recovery_by_the_faults_own_rollback_is_not_the_runbooks() -> None:
    tl = _tl(outage=(10.0, 35.5))  # healed only when the fault ended
    _runbook(tl)
    v = evaluate(X, tl, steady_state=STEADY)
    assert not v.passed
    assert "recovery did not happen after step 2 'step2' (done at t=19.0 s)" in v.observed
    assert "the fault's rollback restored it, not the runbook" in v.observed


def test_a_step_whose_check_passed_only_thanks_to_the_faults_rollback_is_the_one_named() -> None:
    """Seen in CI: the broken fixing step's check waited until the fault ended (35 s) and passed at 35.2 s;
    the next step finished at 36.2 s, after steady state returned (~35.5 s). Step 2 failed to fix it."""
    tl = _tl(outage=(10.0, 35.5))
    _runbook(tl, steps=[(13.0, "done"), (35.2, "done"), (36.2, "done")])
    v = evaluate(X, tl, steady_state=STEADY)
    assert not v.passed
    assert "recovery did not happen after step 2 'step2' (done at t=35.2 s)" in v.observed, v.observed
    assert "the fault's rollback restored it, not the runbook" in v.observed


def test_too_slow_and_never_launched() -> None:
    tl = _tl(outage=(10.0, 31.0))
    _runbook(tl)
    v = evaluate(X, tl, steady_state=STEADY)
    assert not v.passed and "limit 15 s" in v.observed
    v = evaluate(X, _tl(), steady_state=STEADY)
    assert not v.passed and "never ran" in v.observed


def test_when_steady_state_never_broke_the_runbook_must_complete_in_the_fault() -> None:
    tl = _tl(outage=None)
    _runbook(tl)
    v = evaluate(X, tl, steady_state=STEADY)
    assert v.passed and "steady state never broke" in v.observed and "all 2 steps done" in v.observed
    tl = _tl(outage=None)
    _runbook(tl, steps=[(13.0, "done"), (36.0, "done")])  # finished only after the fault ended
    assert not evaluate(X, tl, steady_state=STEADY).passed


class _Launcher:
    def __init__(self) -> None:
        self.launched: list[tuple[str, dict[str, str]]] = []

    def check(self, path: Path) -> None:
        if not path.name.endswith(".md"):
            raise ConfigError("not a runbook", file=str(path))

    def launch(self, path: Path, *, name: str, variables: dict[str, str], guided: bool, context: Any) -> Any:
        self.launched.append((name, variables))

        class Done:
            def join(self, timeout_s: float) -> bool:
                return True

        return Done()


class _F:
    def __init__(self, id: str, state: str) -> None:
        self.id, self.state = id, state


def _spec(runbook: Any) -> Experiment:
    return Experiment.model_validate({
        "apiVersion": "faultdrill/v1", "kind": "Experiment", "metadata": {"name": "t"}, "target": {"replicas": 2},
        "faults": [{"id": "hog", "type": "gpu_memory_exhaustion", "target": "replica-0", "at": "1s",
                    "runbook": runbook}]})  # fmt: skip


def test_triggers_launch_on_fault_start_or_on_the_alert_about_the_target() -> None:
    tl = Timeline(start=0.0, clock=lambda: 5.0)
    tl.add("fault", "hog", t=1.0, event="start")
    launcher = _Launcher()
    ctx = LaunchContext(tl, topology=lambda: None, supervisor=None, service_url="http://x", prometheus_url="http://p")  # type: ignore[arg-type]
    triggers = RunbookTriggers(_spec("rb.md"), "/tmp/spec.yaml", launcher, ctx)
    triggers.tick(5.0, [_F("hog", "pending")])
    assert launcher.launched == []
    triggers.tick(5.0, [_F("hog", "active")])
    triggers.tick(5.1, [_F("hog", "active")])  # once only
    assert len(launcher.launched) == 1
    name, variables = launcher.launched[0]
    assert name == "rb" and variables == {"FAULT": "hog", "SERVICE": "replica-0", "REPLICA": "replica-0",
                                          "TARGET": "http://x", "PROM": "http://p"}
    assert tl.first("runbook", status="launched").attrs["trigger"] == "fault start"  # type: ignore[union-attr]

    tl2 = Timeline(start=0.0, clock=lambda: 5.0)
    tl2.add("fault", "hog", t=1.0, event="start")
    on_alert = RunbookTriggers(_spec({"file": "rb.md", "on_alert": "Hot", "vars": {"X": "1"}}), None, launcher,
                               LaunchContext(tl2, topology=lambda: None, supervisor=None))  # type: ignore[arg-type]
    tl2.add("alert", "Hot", t=2.0, state="firing", labels={"pod": "replica-1"})  # about another replica
    on_alert.tick(3.0, [_F("hog", "active")])
    assert len(launcher.launched) == 1
    tl2.add("alert", "Hot", t=3.5, state="firing", labels={"pod": "replica-0"})
    on_alert.tick(4.0, [_F("hog", "active")])
    assert len(launcher.launched) == 2 and launcher.launched[1][1]["X"] == "1"


def test_triggers_refuse_runbooks_without_an_engine_or_with_a_bad_file() -> None:
    ctx = LaunchContext(Timeline(), topology=lambda: None, supervisor=None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="no runbook engine"):
        RunbookTriggers(_spec("rb.md"), None, None, ctx)
    with pytest.raises(ConfigError, match="not a runbook"):
        RunbookTriggers(_spec("rb.txt"), None, _Launcher(), ctx)


def test_slice_rebases_and_keeps_the_state_at_its_start() -> None:
    tl = Timeline(start=0.0, clock=lambda: 0.0)
    tl.add("process", "replica-0", t=1.0, event="ready")
    tl.add("alert", "A", t=2.0, state="firing", labels={"pod": "r"})
    tl.add("request", "load", t=3.0, ok=True)
    tl.add("request", "load", t=12.0, ok=True)
    part = tl.slice(10.0)
    assert [(e.kind, e.t) for e in part.events()] == [("process", -9.0), ("alert", -8.0), ("request", 2.0)]
    assert part.start_wall == pytest.approx(tl.start_wall + 10.0)


def test_slice_rebases_the_run_times_inside_events_too() -> None:
    """A game day's later scenario: a bucket's raw failed samples and an alert's activation move with their event,
    so the first signal of a fault is measured in the scenario's time (it read 56 s for a fault of 25 s)."""
    tl = Timeline(start=0.0, clock=lambda: 0.0)
    tl.add("fault", "slow", t=62.0, event="start")
    tl.add("requests", "load", t=62.5, span_s=0.1, name="/infer", count=10, ok=9, lost=0, statuses={"200": 9, "503": 1},
           samples=[{"t": 62.55, "ok": False, "status": 503, "latency_s": 0.002}])  # fmt: skip
    tl.add("alert", "A", t=64.0, state="pending", labels={}, active_at=63.5, last_seen=63.0)
    tl.add("fault", "slow", t=80.0, event="end")
    part = tl.slice(60.0)
    bucket = part.select("requests")[0]
    assert bucket.t == pytest.approx(2.5) and bucket.attrs["samples"][0]["t"] == pytest.approx(2.55)
    alert = part.select("alert")[0].attrs
    assert (alert["active_at"], alert["last_seen"]) == (pytest.approx(3.5), pytest.approx(3.0))
    assert mttd_mttr(part)["slow"]["first_signal_s"] == pytest.approx(0.55)
    assert tl.select("requests")[0].attrs["samples"][0]["t"] == 62.55  # the whole run's timeline is unchanged


# -- repairs, not undoes --------------------------------------------------------------------
def _repairing_runbook(tl: Timeline, *, fix: str, undo: list[str]) -> None:
    tl.add("runbook", "gpu-memory", t=12.0, status="launched", fault="hog", trigger="alert X firing",
           undo_actions=undo)  # fmt: skip
    for i, (start, end, command) in enumerate([(12.0, 12.5, "sh"), (12.5, 15.0, "sh"), (15.0, 21.0, fix),
                                               (21.0, 23.0, None)], 1):  # fmt: skip
        extra = {} if command is None else {"command": "sh"} if command == "sh" else {"command": "faultdrill",
                                                                                      "action": command}
        tl.add("runbook", "gpu-memory", t=start, step=i, title=f"step{i}", status="started", **extra)
        tl.add("runbook", "gpu-memory", t=end, step=i, title=f"step{i}", status="done", **extra)


def test_a_pass_names_the_repairing_step_and_shows_the_fault_still_in_effect() -> None:
    tl = _tl()  # outage 10 → 20 s, hog 8 → 35 s
    tl.add("fault", "hog", t=8.5, event="verified", effective=True, message="255.0 MiB held, 0.0 MiB free of 256")
    tl.add("process", "replica-0", t=15.5, event="spec", env={"FAULTDRILL_MODEL_VERSION": "1"})
    _repairing_runbook(tl, fix="restart", undo=["release-device-memory"])
    v = evaluate(X, tl, steady_state=STEADY)
    assert v.passed, v.observed
    # Step 3 was the last step with a command to start before the first whole steady window (t≈20 s); step 4, of
    # checks only, ended after it but changes nothing.
    assert "repaired by step 3 'step3' (restart; t=15.0–21.0 s)" in v.observed, v.observed
    assert "hog's rollback began only at t=35.0 s" in v.observed
    assert "its own check found it in effect at t=8.5 s (255.0 MiB held" in v.observed
    assert "replica-0's spec changed meanwhile (t=15.5 s FAULTDRILL_MODEL_VERSION=1)" in v.observed
    assert v.measured["repair_step"] == 3 and v.measured["fault_end_t"] == 35.0
    assert 19.9 <= (v.measured["regained_t"] or 0) <= 20.1
    assert v.evidence[0]["attrs"]["step"] == 3 and v.evidence[0]["attrs"]["status"] == "done"


def test_a_runbook_that_runs_the_faults_own_undo_gets_no_credit() -> None:
    tl = _tl()  # steady state returns at 20 s, well inside the fault: it would pass on timing alone
    _repairing_runbook(tl, fix="release-device-memory", undo=["release-device-memory"])
    v = evaluate(X, tl, steady_state=STEADY)
    assert not v.passed
    assert "step 3 'step3' runs release-device-memory, the undo of hog itself" in v.observed, v.observed
    assert "no credit" in v.observed
    # The same step is no undo of a fault that declares none (an external hog: the admin release frees nothing).
    tl = _tl()
    _repairing_runbook(tl, fix="release-device-memory", undo=[])
    assert evaluate(X, tl, steady_state=STEADY).passed


def test_triggers_record_the_faults_own_undo_actions_at_launch() -> None:
    from faultdrill.faults.gpu_memory import GpuMemoryExhaustionFault

    fault = GpuMemoryExhaustionFault()

    class _Scheduled(_F):
        def __init__(self, mode: str) -> None:
            super().__init__("hog", "active")
            self.fault, self.config = fault, fault.parse_config({"target": "replica-0", "mode": mode,
                                                                 "leave_free_mib": 0})  # fmt: skip

    for mode, undo in (("in_process", ["release-device-memory"]), ("external", [])):
        tl = Timeline(start=0.0, clock=lambda: 5.0)
        tl.add("fault", "hog", t=1.0, event="start")
        ctx = LaunchContext(tl, topology=lambda: None, supervisor=None)  # type: ignore[arg-type]
        RunbookTriggers(_spec("rb.md"), None, _Launcher(), ctx).tick(5.0, [_Scheduled(mode)])
        assert tl.first("runbook", status="launched").attrs["undo_actions"] == undo  # type: ignore[union-attr]


def test_the_repairing_step_is_one_that_changes_something() -> None:
    """Seen in the smoke game day: the fixing step's check and the next step's (checks only) ended at the moment the
    first steady window began; the fixing step is named, not the step of checks."""
    tl = _tl()  # steady from t≈20 s
    tl.add("runbook", "rb", t=12.0, status="launched", fault="hog", trigger="fault start", undo_actions=[])
    for i, (start, end, extra) in enumerate([(12.0, 12.1, {"command": "sh"}),
                                             (12.1, 19.99, {"command": "faultdrill", "action": "rollback-model"}),
                                             (19.99, 20.0, {})], 1):  # fmt: skip
        tl.add("runbook", "rb", t=start, step=i, title=f"step{i}", status="started", **extra)
        tl.add("runbook", "rb", t=end, step=i, title=f"step{i}", status="done", **extra)
    v = evaluate(X, tl, steady_state=STEADY)
    assert v.passed and "repaired by step 2 'step2' (rollback-model; t=12.1–20.0 s)" in v.observed, v.observed
