"""A whole run through Envoy (``target.endpoint: envoy``): a kill under load passes as through the python endpoint,
Envoy's counters reach the timeline, nothing is left. ~45 s: ``make test-catalog``; ``make test`` keeps the
endpoint's own tests (``tests/unit/experiments/test_exp_envoy_endpoint.py``), ``http_fault``'s and the crash test.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.catalog, pytest.mark.tools("envoy")]


RUN = """\
apiVersion: faultdrill/v1
kind: Experiment
metadata: {name: envoy-kill}
target: {replicas: 2, endpoint: envoy}
load: {users: 8}
steady_state: {window: 3s, slo: {availability: 0.99}}
faults:
  - {id: kill, type: process_kill, target: replica-0, at: 2s, duration: 8s}
expect:
  - {restarts: replica-0, at_least: 1, between: [kill.start, kill.end]}
  - {slo: availability, at_least: 0.97, during: kill}
  - {recovers: steady_state, within: 15s, after: kill.end}
alerting: {enabled: false}
"""


@pytest.mark.system
def test_a_run_through_envoy_keeps_its_expectations_and_leaves_nothing(tmp_path: Path) -> None:
    """``target.endpoint: envoy``: a kill under load through Envoy passes as through the python endpoint; the
    environment says which endpoint carried the load; no Envoy is left after the run."""
    import json
    import subprocess
    import sys

    import psutil

    spec = tmp_path / "envoy.yaml"
    spec.write_text(RUN)
    done = subprocess.run([sys.executable, "-m", "faultdrill", "run", str(spec), "--out", str(tmp_path / "runs"),
                           "--plain"], capture_output=True, text=True, timeout=240,
                          env={**os.environ, "FAULTDRILL_STATE_DIR": str(tmp_path / "state")})  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    [journal] = [j for j in (tmp_path / "runs").glob("*/journal.json") if not j.parent.is_symlink()]
    doc = json.loads(journal.read_text())
    assert any("Envoy out of process" in n for n in doc["environment"]["notes"])
    requests = sum(e["attrs"]["count"] for e in doc["events"] if e["kind"] == "requests")
    assert requests > 1000
    # Envoy's own counters on the timeline: what it answered matches, within what was in flight, what the load saw.
    completed = [e["attrs"]["value"] for e in doc["events"]
                 if e["kind"] == "metric" and e["attrs"].get("name") == "envoy_upstream_rq_completed"]  # fmt: skip
    assert completed and completed == sorted(completed) and 0.8 * requests <= completed[-1] <= 1.2 * requests
    assert not [p for p in psutil.process_iter(["cmdline"]) if str(journal.parent) in " ".join(p.info["cmdline"] or [])]
