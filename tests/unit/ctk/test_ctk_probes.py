"""experiments.chaostoolkit.probes against a tiny server that answers like a replica and like Prometheus,
and experiments.chaostoolkit.target's up/down guards (the real target is started by the integration tests)."""

from __future__ import annotations

import os

import pytest

from faultdrill.experiments.chaostoolkit import probes
from faultdrill.experiments.chaostoolkit.target import faultdrill_down, faultdrill_up
from faultdrill.faults.chaostoolkit import TargetState, write_state
from faultdrill.faults.errors import ConfigError, FaultdrillError


@pytest.fixture
def target(tmp_path, replica):
    state = TargetState(status="ready", pid=os.getpid(), owner_pid=os.getpid(), state_dir=tmp_path,
                        workdir=tmp_path, control_url="http://127.0.0.1:9", token_file=tmp_path / "t",
                        service_url=replica.url, replicas={"replica-0": replica.url},
                        prometheus_url=replica.url)  # fmt: skip
    path = tmp_path / "target.json"
    write_state(path, state)
    return str(path)


def test_ctk_probes_public_api_is_pinned():
    assert probes.__all__ == ["alert_firing", "breaker_state", "replica_live", "replica_ready", "slo_availability",
                              "slo_latency_p95_ms"]  # fmt: skip


def test_ctk_readiness_liveness_and_breaker(target, replica):
    assert probes.replica_ready("replica-0", state=target) is True
    replica.ready = False
    assert probes.replica_ready("replica-0", state=target) is False
    assert probes.replica_live("replica-0", state=target) is True
    replica.breaker = "open"
    assert probes.breaker_state("replica-0", state=target) == "open"
    with pytest.raises(ConfigError, match=r"unknown replica 'replica-7'.*replica-0"):
        probes.replica_ready("replica-7", state=target)


def test_ctk_alert_firing_reads_prometheus(target, replica):
    replica.alerts = [{"labels": {"alertname": "InferenceOOMKilled", "pod": "replica-1"}, "state": "firing"},
                      {"labels": {"alertname": "TLSCertificateExpired"}, "state": "pending"}]  # fmt: skip
    assert probes.alert_firing("InferenceOOMKilled", state=target)
    assert probes.alert_firing("InferenceOOMKilled", labels={"pod": "replica-1"}, state=target)
    assert not probes.alert_firing("InferenceOOMKilled", labels={"pod": "replica-0"}, state=target)
    assert not probes.alert_firing("TLSCertificateExpired", state=target)  # pending is not firing


def test_ctk_slo_probes_measure_their_own_sampling_load(target, replica):
    assert probes.slo_availability(window_s=0.3, concurrency=2, state=target) == 1.0
    replica.fail_every = 4
    assert probes.slo_availability(window_s=0.3, concurrency=2, state=target) == pytest.approx(0.75, abs=0.02)
    p95 = probes.slo_latency_p95_ms(window_s=0.2, concurrency=1, state=target)
    assert 0 < p95 < 500


def test_ctk_slo_availability_is_zero_when_nothing_answers(tmp_path):
    state = TargetState(status="ready", pid=os.getpid(), owner_pid=os.getpid(), state_dir=tmp_path,
                        workdir=tmp_path, control_url="http://127.0.0.1:9", token_file=tmp_path / "t",
                        service_url="http://127.0.0.1:9")  # fmt: skip
    write_state(tmp_path / "s.json", state)
    assert probes.slo_availability(window_s=0.2, concurrency=1, state=str(tmp_path / "s.json")) == 0.0


def test_ctk_alert_firing_needs_alerting(tmp_path, target, replica):
    state = TargetState(status="ready", pid=os.getpid(), owner_pid=os.getpid(), state_dir=tmp_path,
                        workdir=tmp_path, control_url="http://x", token_file=tmp_path / "t")  # fmt: skip
    write_state(tmp_path / "no-alerting.json", state)
    with pytest.raises(ConfigError, match="alerting: true"):
        probes.alert_firing("X", state=str(tmp_path / "no-alerting.json"))


def test_ctk_up_refuses_unknown_misconfigurations_and_a_second_target(tmp_path, target, monkeypatch):
    monkeypatch.delenv("FAULTDRILL_MISCONFIGURATIONS", raising=False)
    with pytest.raises(ConfigError, match=r"unknown misconfiguration 'readiness_lies'.*readiness_ignores_model"):
        faultdrill_up(misconfigurations="readiness_lies", state=str(tmp_path / "new.json"))
    with pytest.raises(FaultdrillError, match="already up"):  # the state file names a live process (this one)
        faultdrill_up(state=target)


def test_ctk_down_without_a_target_is_a_no_op(tmp_path):
    stale = TargetState(status="ready", pid=2**22 + 1, owner_pid=1, state_dir=tmp_path, workdir=tmp_path)
    write_state(tmp_path / "stale.json", stale)
    assert faultdrill_down(state=str(tmp_path / "stale.json")) == {"stopped": False,
                                                                   "state": str(tmp_path / "stale.json")}
    assert not (tmp_path / "stale.json").exists()
    assert faultdrill_down(state=str(tmp_path / "none.json"))["stopped"] is False
