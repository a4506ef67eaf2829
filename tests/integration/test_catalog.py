"""Every catalog experiment passes against the default target and fails, naming the broken
expectation, against the misconfiguration profile it exists to catch.

About 45 s per run (12 runs): marked ``catalog`` and run by ``make test-catalog`` rather than
by ``make test``/CI, whose budget it would exceed; ``make test`` runs the smoke experiment and
one misconfigured run end to end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.catalog, pytest.mark.slow, pytest.mark.root, pytest.mark.system]
ROOT = Path(__file__).resolve().parents[2]

CASES = [
    ("gpu_memory_exhaustion", None, None),
    ("gpu_memory_exhaustion", "readiness_ignores_model", "readiness of replica-0 becomes false"),
    ("oom_kill", None, None),
    ("oom_kill", "readiness_ignores_model", "availability at least 0.95 during oom"),
    ("network_partition", None, None),
    ("network_partition", "liveness_checks_dependency", "liveness of replica-0 holds true during part"),
    ("cert_expiry", None, None),
    ("cert_expiry", "no_circuit_breaker", "breaker of replica-0 goes closed → open"),
    ("dependency_outage", None, None),
    ("dependency_outage", "no_circuit_breaker", "latency p95 at most 150 ms"),
    ("model_load_failure", None, None),
    ("model_load_failure", "readiness_ignores_model", "at most 0 failed requests during bad"),
    ("noisy_neighbour", None, None),
    ("noisy_neighbour", "no_rate_limit", "latency p95 at most 100 ms during flood (clients tenant-a, tenant-b)"),
    ("cache_outage", None, None),
    ("cache_outage", "no_cache_bypass", "availability at least 0.99 during outage"),
]


@pytest.mark.parametrize(("experiment", "misconfig", "broken"), CASES)
def test_catalog_experiment(tmp_path, experiment, misconfig, broken):
    if os.geteuid() != 0:
        pytest.skip("needs root: cgroups and network namespaces")
    cmd = [sys.executable, "-m", "faultdrill", "run", str(ROOT / "experiments" / "catalog" / f"{experiment}.yaml"),
           "--out", str(tmp_path / "runs")]  # fmt: skip
    if misconfig:
        cmd += ["--misconfig", misconfig]
    env = {**os.environ, "FAULTDRILL_STATE_DIR": str(tmp_path / "state"), "CI": "true"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    journal = json.loads(next((tmp_path / "runs").glob("*/journal.json")).read_text())
    failed = [v["name"] for v in journal["verdicts"] if not v["passed"]]
    if misconfig is None:
        assert result.returncode == 0, (failed, result.stdout[-3000:])
    else:
        assert result.returncode == 1, result.stdout[-3000:]
        assert any(broken in name for name in failed), failed
    assert not list((tmp_path / "state" / "ledger").glob("*.json"))
