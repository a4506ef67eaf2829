"""Alert expectations judged on synthetic timelines; MTTD from notifications; spec checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from faultdrill.experiments.engine.run import run_experiment
from faultdrill.experiments.expect import judge as assertions
from faultdrill.experiments.expect.judge import describe, evaluate
from faultdrill.experiments.journal.timeline import Timeline
from faultdrill.experiments.spec.alerting import AlertExpectation, AlertingSpec, NoAlerts
from faultdrill.experiments.spec.loader import check_experiment_text, load_experiment_text
from faultdrill.faults.errors import ConfigError

RULES = """
groups:
  - name: t
    rules:
      - alert: GpuHot
        expr: gpu > 0.9
        labels: {severity: warning}
      - alert: TargetGone
        expr: up == 0
        labels: {severity: critical}
"""


def _tl() -> Timeline:
    tl = Timeline(start=0.0, clock=lambda: 0.0)
    tl.start_wall = 1_000_000.0
    tl.add("phase", "run", t=2.0, phase="steady")
    tl.add("fault", "hog", t=10.0, event="start", fault="gpu_memory_exhaustion")
    tl.add("fault", "hog", t=30.0, event="end", fault="gpu_memory_exhaustion")
    tl.add("phase", "run", t=50.0, phase="teardown")
    return tl


def _page(tl: Timeline, *, pending: float = 11.0, firing: float = 13.0, notified: float = 14.0,
          resolved: float | None = 35.0, receiver: str = "chat", severity: str = "warning") -> None:  # fmt: skip
    labels = {"alertname": "GpuHot", "pod": "replica-0", "severity": severity}
    tl.add("alert", "GpuHot", t=pending, state="pending", labels=labels, severity=severity)
    tl.add("alert", "GpuHot", t=firing, state="firing", labels=labels, severity=severity)
    tl.add("notification", receiver, t=notified, alert="GpuHot", status="firing", labels=labels,
           starts_at=tl.start_wall + pending)  # fmt: skip
    if resolved is not None:
        tl.add("alert", "GpuHot", t=resolved, state="resolved", labels=labels, severity=severity)
        tl.add("notification", receiver, t=resolved + 1, alert="GpuHot", status="resolved", labels=labels)


def _x(**raw: object) -> AlertExpectation:
    return AlertExpectation.model_validate(raw)


FIRES = {"within": "5s", "after": "hog.start"}


def test_fires_notifies_and_resolves_within_their_limits() -> None:
    tl = _tl()
    _page(tl)
    x = _x(alert="GpuHot", fires=FIRES, severity="warning", notifies="chat",
           resolves={"within": "10s", "after": "hog.end"}, labels={"pod": "replica-0"})  # fmt: skip
    v = evaluate(x, tl)
    assert v.passed, v.observed
    assert v.measured == {"fired_s": 3.0, "notified_s": 4.0, "resolved_s": 5.0}
    assert v.observed == ("GpuHot fired 3.0 s after hog.start (limit 5 s); chat notified 4.0 s after hog.start "
                          "(limit 5 s); GpuHot resolved 5.0 s after hog.end (limit 10 s)")
    assert v.name == ("alert GpuHot pod=replica-0 fires within 5 s after hog.start with severity warning, notifying "
                      "chat and resolves within 10 s after hog.end")


def test_late_wrong_receiver_wrong_severity_each_fail_with_the_reason() -> None:
    tl = _tl()
    _page(tl, firing=18.0, notified=19.0, receiver="pager", severity="critical")
    v = evaluate(_x(alert="GpuHot", fires=FIRES, severity="warning", notifies="chat"), tl)
    assert not v.passed
    assert "GpuHot fired 8.0 s after hog.start (limit 5 s)" in v.observed
    assert "carried severity critical, not warning" in v.observed
    assert "chat was never notified of GpuHot after hog.start: it went to pager instead" in v.observed


def test_never_fired_names_the_alert_and_what_fired_instead() -> None:
    tl = _tl()
    tl.add("alert", "TargetGone", t=12.0, state="firing", labels={}, severity="critical")
    v = evaluate(_x(alert="GpuHot", fires=FIRES), tl)
    assert not v.passed
    assert v.observed.startswith("GpuHot never went pending or firing after hog.start (t=10.0 s")
    assert "alerts that did fire: TargetGone at t=12.0 s" in v.observed
    tl2 = _tl()
    tl2.add("alert", "GpuHot", t=12.0, state="pending", labels={})
    assert "was pending from t=12.0 s but never firing" in evaluate(_x(alert="GpuHot", fires=FIRES), tl2).observed


def test_an_alert_firing_before_the_moment_is_not_a_detection() -> None:
    tl = _tl()
    _page(tl, pending=3.0, firing=4.0, notified=5.0, resolved=None)
    v = evaluate(_x(alert="GpuHot", fires=FIRES), tl)
    assert not v.passed and "already firing since t=4.0 s, before hog.start" in v.observed


def test_resolves_fails_while_still_firing_and_when_it_never_fired() -> None:
    tl = _tl()
    _page(tl, resolved=None)
    v = evaluate(_x(alert="GpuHot", resolves={"within": "10s", "after": "hog.end"}), tl)
    assert not v.passed and "still firing at the end of the run" in v.observed
    v2 = evaluate(_x(alert="GpuHot", resolves={"within": "10s", "after": "hog.end"}), _tl())
    assert not v2.passed and v2.observed == "GpuHot never fired, so it cannot resolve"
    early = _tl()
    _page(early, resolved=20.0)  # cleared before the fault even ended
    assert evaluate(_x(alert="GpuHot", resolves={"within": "1s", "after": "hog.end"}), early).passed


def test_a_missing_moment_is_a_failed_verdict() -> None:
    v = evaluate(_x(alert="GpuHot", fires={"within": "5s", "after": "nope.start"}), _tl())
    assert not v.passed and "nope.start never happened" in v.observed


def test_no_alerts_covers_steady_state_only_by_default() -> None:
    tl = _tl()
    _page(tl)  # fires after hog.start: outside steady state
    x = NoAlerts.model_validate({"no_alerts": "firing"})
    v = evaluate(x, tl)
    assert v.passed and v.observed == "no alert was firing during steady state (t=2.0–10.0 s)"
    assert describe(x) == "no alert fires during steady state"
    tl.add("alert", "TargetGone", t=6.0, state="firing", labels={}, severity="critical")
    v = evaluate(x, tl)
    assert not v.passed and "TargetGone" in v.observed and "first TargetGone firing at t=6.0 s" in v.observed
    assert evaluate(NoAlerts.model_validate({"no_alerts": "firing", "allow": ["TargetGone"]}), tl).passed
    # A window of its own, and the strict form that counts pending too.
    assert not evaluate(NoAlerts.model_validate({"no_alerts": "firing", "during": "hog"}), tl).passed
    pend = _tl()
    pend.add("alert", "GpuHot", t=5.0, state="pending", labels={})
    assert evaluate(NoAlerts.model_validate({"no_alerts": "firing"}), pend).passed
    assert not evaluate(NoAlerts.model_validate({"no_alerts": "pending"}), pend).passed


def test_an_alert_active_before_the_window_counts_in_it() -> None:
    tl = _tl()
    tl.add("alert", "TargetGone", t=1.0, state="firing", labels={"pod": "a"})
    assert not evaluate(NoAlerts.model_validate({"no_alerts": "firing"}), tl).passed
    tl.add("alert", "TargetGone", t=1.5, state="resolved", labels={"pod": "a"})
    assert evaluate(NoAlerts.model_validate({"no_alerts": "firing"}), tl).passed


def test_mttd_is_fault_start_to_the_first_page_of_a_fresh_alert() -> None:
    tl = _tl()
    tl.add("probe", "replica-0", t=10.5, probe="readiness", value=False)
    _page(tl)
    row = assertions.mttd_mttr(tl)["hog"]
    assert row["mttd_s"] == 4.0 and row["detected_by"] == "GpuHot" and row["receiver"] == "chat"
    assert row["first_signal_s"] == 0.5
    # A re-notification of an alert active since before the fault is not a detection.
    old = _tl()
    _page(old, pending=3.0, firing=4.0, notified=12.0, resolved=None)
    assert assertions.mttd_mttr(old)["hog"]["mttd_s"] is None


def test_mttd_survives_a_journal_round_trip() -> None:
    tl = _tl()
    _page(tl)
    again = Timeline(tl.events(), start=0.0)  # as Journal.timeline() rebuilds it: another start_wall
    assert assertions.mttd_mttr(again)["hog"]["mttd_s"] == 4.0


def test_alert_expectation_shape_errors() -> None:
    with pytest.raises(ValueError, match="give fires"):
        _x(alert="GpuHot")
    with pytest.raises(ValueError, match="judged on the firing alert"):
        _x(alert="GpuHot", resolves=FIRES, notifies="chat")
    with pytest.raises(ValueError):
        _x(alert="GpuHot", fires=FIRES, notifies="email")
    with pytest.raises(ValueError, match="scrape_interval"):
        AlertingSpec.model_validate({"scrape_interval": "90s"})


def _spec(expect: str, alerting: str = "") -> str:
    return f"""apiVersion: faultdrill/v1
kind: Experiment
metadata: {{name: t}}
faults:
  - {{id: hog, type: gpu_memory_exhaustion, target: replica-0, at: 1s, duration: 5s, params: {{leave_free_mib: 32}}}}
expect:
{expect}
{alerting}
"""


def test_loader_checks_alert_names_against_the_rules_file(tmp_path: Path) -> None:
    (tmp_path / "rules.yml").write_text(RULES)
    spec = tmp_path / "x.yaml"
    text = _spec("  - {alert: GpuHott, fires: {within: 5s, after: hog.start}}\n"
                 "  - {no_alerts: firing, allow: [TargetGone]}", "alerting: {rules: rules.yml}")  # fmt: skip
    errors = check_experiment_text(text, file=str(spec))
    assert len(errors) == 1
    e = errors[0]
    assert (e.line, e.field, e.suggestion) == (7, "expect[0].alert", "GpuHot")
    assert "no alert named 'GpuHott' in rules.yml" in str(e)
    ok = load_experiment_text(text.replace("GpuHott", "GpuHot"), file=str(spec))
    assert ok.alert_expectations() == [0, 1]


def test_loader_reports_a_missing_rules_file_and_disabled_alerting(tmp_path: Path) -> None:
    spec = str(tmp_path / "x.yaml")
    text = _spec("  - {alert: GpuHot, fires: {within: 5s, after: hog.start}}", "alerting: {rules: nope.yml}")
    [e] = check_experiment_text(text, file=spec)
    assert e.field == "alerting.rules" and "cannot read the alert rules" in str(e)
    text = _spec("  - {alert: GpuHot, fires: {within: 5s, after: hog.start}}", "alerting: {enabled: false}")
    [e] = check_experiment_text(text, file=spec)
    assert e.field == "expect[0]" and "alerting.enabled is false" in str(e)
    bad_ref = _spec("  - {alert: GpuHot, fires: {within: 5s, after: hgo.start}}", "alerting: {rules: nope.yml}")
    e, rules = check_experiment_text(bad_ref, file=spec)  # both, in file order
    assert e.field == "expect[0].fires.after" and e.suggestion == "hog" and rules.field == "alerting.rules"


def test_no_alerts_flag_refuses_a_spec_with_alert_expectations_before_anything_starts(tmp_path: Path) -> None:
    (tmp_path / "rules.yml").write_text(RULES)
    spec = tmp_path / "x.yaml"
    spec.write_text(_spec("  - {alert: GpuHot, fires: {within: 5s, after: hog.start}}", "alerting: {rules: rules.yml}"))
    with pytest.raises(ConfigError, match="--no-alerts, but expectation 1") as info:
        run_experiment(spec, out=tmp_path / "runs", no_alerts=True)
    assert info.value.field == "expect[0]"
    assert not (tmp_path / "runs").exists()


def test_mttd_prefers_a_page_about_the_faulted_service_when_faults_overlap() -> None:
    tl = _tl()
    tl.add("fault", "oom", t=10.0, event="start", fault="oom_kill", target="replica-1")
    _page(tl)  # GpuHot about replica-0 at 14 s
    tl.add("notification", "chat", t=15.0, alert="OOMKilled", status="firing", labels={"pod": "replica-1"},
           starts_at=tl.start_wall + 14.5)  # fmt: skip
    times = assertions.mttd_mttr(tl)
    assert times["oom"]["detected_by"] == "OOMKilled" and times["oom"]["mttd_s"] == 5.0
    assert times["hog"]["detected_by"] == "GpuHot"
