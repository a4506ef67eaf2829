"""The journal round-trips, says its outcome's exit code, and refuses what it cannot read."""

from __future__ import annotations

import json

import pytest

from faultdrill.experiments.journal import EXIT_CODES, Journal, collect_environment
from faultdrill.experiments.journal.timeline import Timeline
from faultdrill.faults.errors import ConfigError


def _journal() -> Journal:
    env = collect_environment(device="cpu", emulated=True, notes=["no GPU: emulated device-memory budget"])
    return Journal.new({"metadata": {"name": "smoke"}, "faults": []}, env)


def test_round_trip_keeps_events_verdicts_and_outcome(tmp_path):
    journal = _journal()
    tl = Timeline(start=0.0, clock=lambda: 0.0)
    tl.add("fault", "hog", t=1.0, event="start", fault="gpu_memory_exhaustion")
    tl.add("probe", "replica-0", t=1.4, probe="readiness", value=False)
    journal.finish(tl, verdicts=[{"name": "readiness drops", "passed": True}], outcome="passed",
                   faults={"hog": {"mttd_s": 0.4}})  # fmt: skip
    again = Journal.read(journal.write(tmp_path))
    assert again.exit_code == 0 and again.outcome == "passed"
    assert again.environment.device_label == "cpu (emulated)"
    assert [e.kind for e in again.timeline().events()] == ["fault", "probe"]
    assert again.faults["hog"]["mttd_s"] == 0.4


@pytest.mark.parametrize(("outcome", "code"), sorted(EXIT_CODES.items()))
def test_exit_codes(outcome, code):
    journal = _journal()
    journal.finish(Timeline(), verdicts=[], outcome=outcome)
    assert journal.exit_code == code


def test_unknown_version_and_bad_json_are_located_errors(tmp_path):
    bad = tmp_path / "journal.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not a journal"):
        Journal.read(bad)
    bad.write_text(json.dumps({"version": 99}))
    with pytest.raises(ConfigError, match="version 99 is not supported"):
        Journal.read(bad)
    with pytest.raises(ConfigError, match="cannot read journal"):
        Journal.read(tmp_path / "missing.json")
