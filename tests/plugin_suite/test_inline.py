"""An experiment written in Python as a spec mapping, run with ``faultdrill_run``."""

from __future__ import annotations

FREEZE = {
    "apiVersion": "faultdrill/v1",
    "kind": "Experiment",
    "metadata": {"name": "replica-freeze", "tags": ["smoke"]},
    "target": {"replicas": 2},
    "load": {"users": 4, "spawn_rate": 4},
    "steady_state": {"window": "2s", "slo": {"availability": 0.95}},
    "alerting": {"enabled": False},
    "faults": [{"id": "freeze", "type": "process_freeze", "target": "replica-1", "at": "1s", "duration": "3s",
                "params": {"mode": "sigstop"}}],
    "expect": [
        {"probe": "readiness", "replica": "replica-1", "becomes": False, "within": "3s", "after": "freeze.start"},
        {"recovers": "steady_state", "within": "4s", "after": "freeze.end"},
    ],
}


def test_frozen_replica_leaves_rotation(faultdrill_run):
    result = faultdrill_run(FREEZE, check=True)  # check: failed expectations fail the test, readably
    assert result.journal.outcome == "passed"
