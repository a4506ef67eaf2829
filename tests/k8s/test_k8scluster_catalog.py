"""A catalog experiment, unchanged but for the platform, passes on the cluster (`faultdrill run`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_k8scluster_catalog_dependency_outage_passes(deployed: dict[str, Any], tmp_path: Path) -> None:
    spec = yaml.safe_load((ROOT / "experiments" / "catalog" / "dependency_outage.yaml").read_text())
    spec["target"] = {**spec["target"], "platform": "kubernetes", "replicas": 2}
    # alerts: the cluster's Prometheus Operator; breaker: no breaker poller on this platform yet
    spec["expect"] = [e for e in spec["expect"] if not {"alert", "no_alerts", "breaker"} & set(e)]
    spec["alerting"] = {"enabled": False}  # the cluster's Prometheus Operator evaluates the rules
    path = tmp_path / "dependency_outage_k8s.yaml"
    path.write_text(yaml.safe_dump(spec))
    env = {**os.environ, "FAULTDRILL_STATE_DIR": str(tmp_path / "state")}
    done = subprocess.run([sys.executable, "-m", "faultdrill", "run", str(path), "--plain", "--no-alerts",
                           "--out", str(tmp_path / "runs")], env=env, capture_output=True, text=True,
                          timeout=900, cwd=ROOT)  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
