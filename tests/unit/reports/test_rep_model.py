"""The typed view over a journal: per-second series, fault windows, SLO budget, lanes, tables."""

from __future__ import annotations

import math

import numpy as np
import pytest

from faultdrill.experiments.expect.stats import percentile
from faultdrill.reports.model import RunView


def test_series_per_second_match_the_slo_arithmetic(journal_factory):
    view = RunView.of(journal_factory())
    s = view.series
    assert len(s.t) == 30 and s.throughput[0] == 10 and s.throughput.sum() == 300
    assert s.error_ratio[10] == 1.0 and s.error_ratio[9] == 0.0
    assert math.isnan(s.p95_ms[10])  # every request of that second failed: no latency to show
    # each second's percentiles are experiments.expect.stats.percentile (nearest rank) over its ok requests
    lat = sorted(0.05 + i / 1000 for i in range(10))
    assert s.p50_ms[20] == pytest.approx(percentile(lat, 0.5) * 1000)
    assert s.p99_ms[20] == pytest.approx(percentile(lat, 0.99) * 1000)
    assert s.p95_ms[6] == pytest.approx(300.0)


def test_faults_slo_and_budget(journal_factory):
    view = RunView.of(journal_factory())
    (hog,) = view.faults
    assert (hog.id, hog.type, hog.target, hog.mode, hog.emulated) == ("hog", "gpu_memory_exhaustion", "replica-0",
                                                                      "in_process", True)  # fmt: skip
    assert (hog.start, hog.end, hog.mttd_s, hog.mttr_s, hog.effective) == (5.0, 15.0, 1.0, 2.0, True)
    assert hog.requests == 101 and hog.availability == pytest.approx(81 / 101)
    slo = view.slo
    assert slo.availability_target == 0.99 and slo.latency_p95_target_s == 0.2 and slo.window_s == 2.0
    assert (slo.measured_from, slo.measured_to) == (2.0, 30.0)
    assert slo.requests == 280 and slo.failed == 20
    assert slo.budget_consumed == pytest.approx((20 / 280) / 0.01)
    assert slo.fault_availability == pytest.approx(81 / 101)


def test_lanes_merge_states_and_show_restarts_alerts_runbook(journal_factory):
    lanes = {lane.label: lane for lane in RunView.of(journal_factory()).lanes}
    ready = lanes["replica-0 readiness"]
    assert [(s.state, s.start) for s in ready.spans if s.state != "down"] == [
        ("ready", 0.05), ("not ready", 6.05), ("ready", 14.05)]  # fmt: skip
    assert [(s.state, s.start, s.end) for s in ready.spans if s.state == "down"] == [("down", 11.0, 12.0)]
    assert [s.state for s in lanes["replica-1 breaker"].spans] == ["closed", "open", "half-open", "closed"]
    assert [m.text for m in lanes["restarts"].marks] == ["replica-0: OOMKilled"]
    alert = lanes["alert InferenceGPUMemoryPressure"]
    assert [(s.state, s.start, s.end) for s in alert.spans] == [("pending", 6.0, 8.0), ("firing", 8.0, 17.0)]
    assert [m.text for m in alert.marks] == ["→ oncall", "→ oncall", "resolved"]
    assert [m.text for m in lanes["runbook"].marks] == ["check nvidia-smi", "drain replica-0"]
    assert list(lanes)[-1] == "runbook"


def test_alert_and_runbook_tables(journal_factory):
    view = RunView.of(journal_factory())
    (a,) = view.alerts
    assert (a.pending, a.firing, a.notified, a.resolved, a.receivers, a.severity, a.notifications) == (
        6.0, 8.0, 8.4, 17.0, ("oncall",), "page", 2)  # fmt: skip
    assert a.after_fault == "hog.start + 3.0 s"
    assert [(r.step, r.status, r.note) for r in view.runbook] == [
        ("check nvidia-smi", "done", "hog found"), ("drain replica-0", "failed", "<b>no</b>")]  # fmt: skip


@pytest.mark.parametrize(
    "kw",
    [{"load": False}, {"faults": False}, {"events": False}, {"alerts": False, "runbook": False},
     {"outcome": "error", "events": False, "reason": "preflight: no cgroup v2"}],
    ids=["no-load", "no-faults", "no-events", "no-alerts", "error"],
)  # fmt: skip
def test_edge_cases_build_a_view(journal_factory, kw):
    view = RunView.of(journal_factory(**kw))
    assert view.duration >= 0
    if kw.get("load") is False or kw.get("events") is False:
        assert len(view.series.t) == 0 and view.slo.requests == 0 and view.slo.availability is None
        assert view.slo.budget_consumed is None
    if kw.get("faults") is False or kw.get("events") is False:
        assert view.faults == () and view.slo.fault_availability is None


def test_real_run_agrees_with_its_verdicts(smoke_view):
    """The report's per-fault figures are the verdicts' own: same windows, same arithmetic."""
    verdict = next(v for v in smoke_view.verdicts if v.name == "availability at least 0.95 during outage")
    outage = next(f for f in smoke_view.faults if f.id == "outage")
    assert outage.requests == verdict.measured["requests"]
    assert outage.availability == pytest.approx(verdict.measured["availability"])
    assert (outage.start, outage.end) == pytest.approx(verdict.window)
    assert smoke_view.counts["request"] == int(np.sum(smoke_view.series.throughput))
    assert smoke_view.journal.load["requests"] == smoke_view.counts["request"]
    labels = [lane.label for lane in smoke_view.lanes]
    assert {"replica-0 readiness", "replica-1 liveness", "replica-1 breaker", "restarts"} <= set(labels)
    restarts = next(lane for lane in smoke_view.lanes if lane.label == "restarts")
    assert "replica-1: OOMKilled" in [m.text for m in restarts.marks]
