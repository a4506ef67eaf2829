"""The canary analysis' decisions on synthetic SLI series, its controller and control API, the
expectation's judgement and the spec's located errors."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from faultdrill.experiments.expect import CanaryExpectation
from faultdrill.experiments.expect.canary import judge_canary
from faultdrill.experiments.expect.judge import evaluate
from faultdrill.experiments.journal.timeline import Timeline
from faultdrill.experiments.platforms.local.canary import CanaryAnalyzer, CanaryController, check_slis
from faultdrill.experiments.platforms.local.control import ControlServer
from faultdrill.experiments.platforms.local.split import Outcome, PoolStats, Slis, TrafficSplit
from faultdrill.experiments.spec.canary import CanarySpec
from faultdrill.experiments.spec.loader import check_experiment_text
from faultdrill.faults.registry import FaultRegistry

SPEC = CanarySpec.model_validate({
    "version": "2", "initial_weight": 10, "step_weight": 20, "max_weight": 50,
    "analysis": {"interval": "1s", "window": "2s", "threshold": 2, "progress_deadline": "5s",
                 "checks": {"success_rate": 0.99, "latency_p95": "200ms", "confidence": 0.6, "burn_rate": 10,
                            "min_requests": 5}},
})  # fmt: skip
GOOD = Slis(50, 1.0, 0.05, 0.95, "2")
STABLE = Slis(200, 1.0, 0.04, 0.95, "1")


def _start(analyzer: CanaryAnalyzer, version: str) -> None:
    """A revision at t=0 whose canary is ready at t=0.5 (its traffic begins)."""
    assert analyzer.new_revision(version, now=0.0)["weight"] == 0
    opened = analyzer.tick(0.5, canary=Slis(0, None, None, None, None), stable=STABLE, canary_ready=True)
    assert opened == [{"event": "weight", "version": version, "weight": SPEC.initial_weight,
                       "reason": "canary ready: its traffic begins"}]  # fmt: skip


def _run(analyzer: CanaryAnalyzer, series: list[Slis], ready: bool = True) -> list[dict]:
    events: list[dict] = []
    for i, slis in enumerate(series, start=1):
        events += analyzer.tick(float(i), canary=slis, stable=STABLE, canary_ready=ready, first_traffic=0.5)
    return events


def test_a_healthy_canary_steps_up_to_max_weight_then_is_promoted() -> None:
    analyzer = CanaryAnalyzer(SPEC)
    _start(analyzer, "2")
    events = _run(analyzer, [GOOD] * 6)
    assert [e["weight"] for e in events if e["event"] == "weight"] == [30, 50]
    promote = [e for e in events if e["event"] == "promote"]
    assert len(promote) == 1 and promote[0]["seconds"] == 3.0 and analyzer.phase == "promoted"
    assert analyzer.weight == 100
    assert analyzer.tick(9.0, canary=GOOD, stable=STABLE, canary_ready=True) == []  # done: nothing more


@pytest.mark.parametrize(("bad", "names"), [
    (Slis(50, 0.0, 0.05, None, "3"), ["success_rate", "confidence", "burn_rate"]),  # NaN answers
    (Slis(50, 1.0, 0.05, 0.40, "3"), ["confidence"]),
    (Slis(50, 1.0, 0.90, 0.95, "3"), ["latency_p95"]),
])  # fmt: skip
def test_threshold_failed_checks_roll_back_with_the_reason(bad: Slis, names: list[str]) -> None:
    analyzer = CanaryAnalyzer(SPEC)
    _start(analyzer, "3")
    events = _run(analyzer, [bad, GOOD, bad])  # failures are counted, not reset by a good interval
    checks = [e for e in events if e["event"] == "check"]
    assert [c["result"] for c in checks] == ["failed", "passed", "failed"]
    assert [c["check"] for c in checks[0]["checks"] if not c["ok"]] == names
    rollback = events[-1]
    assert rollback["event"] == "rollback" and rollback["by"] == "analysis" and rollback["weight"] == 0
    assert "2 failed checks (threshold 2)" in rollback["reason"] and names[0] in rollback["reason"]
    assert rollback["seconds"] == 2.5  # from the revision's first canary request (t=0.5) to t=3
    assert analyzer.phase == "rolled_back"


def test_few_requests_or_a_starting_canary_are_inconclusive_until_the_progress_deadline() -> None:
    analyzer = CanaryAnalyzer(SPEC)
    _start(analyzer, "3")
    few = Slis(3, 0.0, 0.05, None, "3")
    assert [e["result"] for e in _run(analyzer, [few, few]) if e["event"] == "check"] == ["inconclusive"] * 2
    starting = [analyzer.tick(t, canary=Slis(0, None, None, None, None), stable=STABLE, canary_ready=False)
                for t in (3.0, 6.0, 7.0)]  # fmt: skip
    assert [ev[0]["result"] for ev in starting] == ["inconclusive", "failed", "failed"]
    assert starting[-1][-1]["event"] == "rollback" and "not ready" in starting[-1][-1]["reason"]


def test_a_canary_never_ready_is_rolled_back_at_its_deadline_without_having_taken_traffic() -> None:
    analyzer = CanaryAnalyzer(SPEC)
    analyzer.new_revision("nan", now=0.0)
    events = [e for t in (1.0, 4.0, 6.0, 7.0)
              for e in analyzer.tick(t, canary=Slis(0, None, None, None, None), stable=STABLE, canary_ready=False)]
    rollback = events[-1]
    assert rollback["event"] == "rollback" and rollback["took_traffic"] is False and analyzer.weight == 0, events
    tl = Timeline()
    tl.add("canary", "canary", t=7.0, **rollback)
    finding = judge_canary(CanaryExpectation.model_validate({"canary": "rolled_back", "within": "30s"}), tl, 0.0)
    assert finding.passed and "before it ever took traffic (never ready)" in finding.observed, finding.observed


def test_no_canary_analysis_shifts_weight_and_promotes_a_bad_canary() -> None:
    analyzer = CanaryAnalyzer(SPEC, judge=False)
    _start(analyzer, "3")
    events = _run(analyzer, [Slis(50, 0.0, 0.9, None, "3")] * 4)
    assert {e["result"] for e in events if e["event"] == "check"} == {"not_judged"}
    assert [e["event"] for e in events if e["event"] != "check"] == ["weight", "weight", "promote"]
    assert analyzer.failures == 0 and analyzer.phase == "promoted"


def test_a_new_revision_starts_over_and_a_manual_rollback_is_marked() -> None:
    analyzer = CanaryAnalyzer(SPEC)
    _start(analyzer, "2")
    _run(analyzer, [GOOD] * 6)
    assert analyzer.new_revision("3", now=10.0) == {"event": "revision", "version": "3", "weight": 0}
    assert (analyzer.phase, analyzer.failures) == ("progressing", 0)
    not_yet = analyzer.tick(11.0, canary=GOOD, stable=STABLE, canary_ready=False)  # still starting: no traffic
    assert analyzer.weight == 0 and not_yet[0]["result"] == "inconclusive"
    manual = analyzer.abort(11.0, "manual: runbook")
    assert manual is not None and manual["by"] == "manual" and analyzer.abort(12.0, "again") is None


def test_checks_with_no_data_fail_and_only_configured_checks_run() -> None:
    only = CanarySpec.model_validate({"analysis": {"checks": {"success_rate": None, "confidence": 0.5}}})
    assert [c["check"] for c in check_slis(only, GOOD)] == ["confidence"]
    assert check_slis(only, Slis(9, 1.0, 0.1, None, "2"))[0]["ok"] is False


def test_the_controller_acts_on_the_split_and_the_control_api_is_token_guarded(tmp_path: Path) -> None:
    now = [0.0]
    stats, split, tl = PoolStats(clock=lambda: now[0]), TrafficSplit(SPEC.initial_weight), Timeline()
    stopped: list[str] = []
    ctl = CanaryController(SPEC, split, stats, tl, canary_ready=lambda: True,
                           stop_canary=lambda: stopped.append("canary-0"))  # fmt: skip
    ctl.new_revision("3")
    assert split.canary_weight == 0  # no traffic before the revision's canary is ready
    for i in range(1, 16):
        stats.record("canary", Outcome(i * 0.2, False, 0.01, None, "3"))
    now[0] = 1.0
    ctl.tick()
    assert split.canary_weight == 10 and not stopped
    now[0] = 2.0
    ctl.tick()
    assert split.canary_weight == 10 and not stopped and ctl.status()["failures"] == 1
    now[0] = 3.0
    ctl.tick()
    assert split.canary_weight == 0 and stopped == ["canary-0"]
    rollback = tl.select("canary")[-1]
    assert rollback.get("event") == "rollback"
    assert rollback.get("seconds") == 2.0  # exposure from its traffic's start (t=1), not from answers before it
    server = ControlServer(ctl, tmp_path / "canary.token")
    server.start()
    try:
        token = (tmp_path / "canary.token").read_text().strip()
        assert (tmp_path / "canary.token").stat().st_mode & 0o777 == 0o600
        assert httpx.get(f"{server.url}/canary", timeout=5).status_code == 401
        assert httpx.get(f"{server.url}/canary", headers={"Authorization": "Bearer nope"}, timeout=5).status_code == 401
        auth = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{server.url}/canary", headers=auth, timeout=5).json()["phase"] == "rolled_back"
        ctl.new_revision("4")
        doc = httpx.post(f"{server.url}/canary/rollback", json={"reason": "on-call"}, headers=auth, timeout=5).json()
        assert doc["rolled_back_now"] is True and doc["weight"] == 0 and stopped == ["canary-0", "canary-0"]
        assert tl.select("canary")[-1].get("reason") == "manual: on-call"
    finally:
        server.stop()


def _timeline(*events: tuple[float, str, dict]) -> Timeline:
    tl = Timeline()
    for t, kind, attrs in events:
        tl.add(kind, attrs.pop("source", "canary"), t=t, **attrs)  # type: ignore[arg-type]
    return tl


def test_the_expectation_judges_rollback_promotion_bounds_and_manual_rollbacks() -> None:
    tl = _timeline((5.0, "fault", {"source": "bad", "event": "start"}),
                   (9.0, "canary", {"event": "rollback", "version": "3", "reason": "r", "seconds": 2.0,
                                    "by": "manual"}),
                   (12.0, "canary", {"event": "rollback", "version": "3", "reason": "success_rate 0 below 0.99",
                                     "seconds": 4.0, "by": "analysis"}))  # fmt: skip
    auto = evaluate(CanaryExpectation.model_validate({"canary": "rolled_back", "within": "10s", "after": "bad.start"}),
                    tl)  # fmt: skip
    assert auto.passed and auto.measured == {"seconds": 7.0, "exposed_s": 4.0} and "success_rate" in auto.observed
    tight = evaluate(CanaryExpectation.model_validate({"canary": "rolled_back", "within": "5s", "after": "bad.start"}),
                     tl)  # fmt: skip
    assert not tight.passed and "limit 5 s" in tight.observed
    manual_ok = CanaryExpectation.model_validate({"canary": "rolled_back", "within": "5s", "after": "bad.start",
                                                  "automatic": False})  # fmt: skip
    assert evaluate(manual_ok, tl).passed
    promoted = evaluate(CanaryExpectation(canary="promoted"), tl)
    assert not promoted.passed and "rolled back" in promoted.observed
    none = evaluate(CanaryExpectation(canary="promoted"), Timeline())
    assert not none.passed and "neither promoted nor rolled back" in none.observed


MINIMAL = "apiVersion: faultdrill/v1\nkind: Experiment\nmetadata: {name: t}\n"


@pytest.fixture(scope="module")
def registry() -> FaultRegistry:
    reg = FaultRegistry()
    reg.load_entry_points()
    return reg


@pytest.mark.parametrize(("text", "field", "line", "fragment"), [
    ("target:\n  canary: {version: '2', max_weight: 30, initial_weight: 40}\n", "target.canary", 5,
     "initial_weight 40 is above max_weight 30"),
    ("target:\n  canary:\n    analysis: {treshold: 3}\n", "target.canary.analysis.treshold", 6, "threshold"),
    ("target:\n  canary:\n    analysis: {checks: {success_rate: null}}\n", "target.canary.analysis.checks", 6,
     "at least one of"),
    ("target:\n  canary: {version: 'a/b'}\n", "target.canary.version", 5, "pattern"),
    ("expect:\n  - {canary: promoted}\n", "expect[0].canary", 5, "target.canary is not set"),
    ("expect:\n  - {canary: rolled_bak}\n", "expect[0].canary", 5, "rolled_back"),
])  # fmt: skip
def test_spec_errors_are_located(registry: FaultRegistry, text: str, field: str, line: int, fragment: str) -> None:
    errors = check_experiment_text(MINIMAL + text, file="exp.yaml", registry=registry)
    assert errors, "expected a located error"
    err = errors[0]
    assert (err.file, err.field, err.line) == ("exp.yaml", field, line)
    assert fragment in str(err)


def test_a_canary_spec_with_a_bad_canary_fault_loads(registry: FaultRegistry) -> None:
    text = MINIMAL + ("target: {replicas: 2, canary: {version: '2'}}\n"
                      "faults:\n  - {id: bad, type: bad_canary, target: canary-0, at: 2s, params: {mode: slow}}\n"
                      "expect:\n  - {canary: rolled_back, within: 30s, after: bad.start}\n")  # fmt: skip
    assert check_experiment_text(text, registry=registry) == []
    wrong = text.replace("target: canary-0", "target: canary-1")
    err = check_experiment_text(wrong, file="e.yaml", registry=registry)[0]
    assert err.field == "faults[0].target" and err.suggestion == "canary-0"
