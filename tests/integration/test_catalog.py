"""The catalog's detection matrix: ``faultdrill score experiments/suites/catalog.yaml`` runs every catalog
experiment against the default target (each must pass: the baseline) and against every misconfiguration
profile, and every profile must be caught **on damage** — by the expectation an SRE cares about that the
experiment exists for (``CATCHERS``), failing because of what happened, not by a switch read back.

About 80 runs of ~50 s: marked ``catalog`` and run by ``make test-catalog`` rather than by ``make
test``/CI, whose budget it would exceed; ``make test`` runs the smoke experiment and one misconfigured
run end to end.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.catalog, pytest.mark.slow, pytest.mark.root, pytest.mark.system,
              pytest.mark.timeout(3 * 3600)]  # fmt: skip
ROOT = Path(__file__).resolve().parents[2]
COMMAND = "faultdrill score experiments/suites/catalog.yaml"

# profile -> (experiment, the damage expectation that must fail, part of its name)
CATCHERS = {
    "readiness_ignores_model": [
        ("gpu-memory-exhaustion", "availability at least 0.95 during hog"),
        ("oom-kill", "availability at least 0.95 during oom"),
        ("model-load-failure", "at most 0 failed requests during bad"),
    ],
    "no_circuit_breaker": [("dependency-outage", "latency p95 at most 150 ms")],
    "liveness_checks_dependency": [
        ("network-partition", "replica-0 restarts at most 0 times"),
        ("network-partition", "availability at least 0.99 during part"),
    ],
    "no_cache_bypass": [("cache-outage", "availability at least 0.99 during outage")],
    "no_rate_limit": [("noisy-neighbour", "latency p95 at most 100 ms during flood")],
    "unbounded_queue": [
        ("overload", "latency p95 at most 500 ms during spike"),
        ("overload", "requests answered ok (ok within 500 ms) per second at least 40% of capacity during spike"),
        ("gpu-slowdown", "latency p95 at most 500 ms during slow"),
    ],
    "shed_as_server_error": [("overload", "share of requests answered ok, 503, 429 at least 0.99 during spike")],
    "no_canary_analysis": [("canary-rollout", "wrong requests")],
    "shallow_health": [("gpu-sticky-error", "failed requests during zombie"), ("gpu-wrong-output", "wrong requests"),
                       ("gpu-xid", "failed requests during app")],
}


def test_every_profile_is_caught_on_damage(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root: cgroups and network namespaces")
    out = tmp_path / "score"
    env = {**os.environ, "FAULTDRILL_STATE_DIR": str(tmp_path / "state"), "CI": "true"}
    result = subprocess.run(["bash", "-c", f"source .venv/bin/activate && {COMMAND} --out {out}"],
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=3 * 3600)  # fmt: skip
    score = json.loads((out / "score.json").read_text())
    baselines = {b["experiment"]: b for b in score["baselines"]}
    assert all(b["outcome"] == "missed" for b in baselines.values()), {
        name: [f["expectation"] for f in b["failures"]] for name, b in baselines.items() if b["outcome"] != "missed"}
    cells = {(c["variant"], c["experiment"]): c for c in score["cells"]}
    problems = []
    for profile, catchers in CATCHERS.items():
        for experiment, expectation in catchers:
            cell = cells[(profile, experiment)]
            damage = [f["expectation"] for f in cell["failures"] if f["catches"] == "damage"]
            if cell["outcome"] != "caught" or not any(expectation in name for name in damage):
                problems.append((profile, experiment, cell["outcome"], damage))
    assert not problems, problems
    assert score["complete"] and score["gaps"] == [] and score["detection_rate"] == 100.0, score["gaps"]
    assert result.returncode == 0, result.stdout[-4000:]
    assert sorted(v["name"] for v in score["variants"]) == sorted(CATCHERS)
    assert not list((tmp_path / "state" / "ledger").glob("*.json"))
