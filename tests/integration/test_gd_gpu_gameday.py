"""The GPU-failures game day end to end: the zombie, the slow GPU, the wrong GPU and a reset-class Xid, each with
the response its class needs and the runbook its page points to. It passes on the default target, and fails with
``shallow_health`` — naming the damage: requests failed while the zombie stayed in rotation, and wrong answers
while the corrupted replica did.

About 4 minutes per game day on a 2-core machine: marked ``catalog`` (``make test-catalog``), not CI; CI runs
each fault against a real replica (``tests/unit/faults/test_faults_gpu_device.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.catalog, pytest.mark.slow, pytest.mark.system]
ROOT = Path(__file__).resolve().parents[2]
PLAN = ROOT / "gamedays" / "plans" / "gpu_failures.yaml"


@pytest.mark.parametrize(("misconfig", "broken"), [
    (None, ()),
    ("shallow_health", ("at most 3% failed requests during zombie",
                        "at most 0.5% wrong requests between sdc.start+4s and sdc.end")),
])  # fmt: skip
def test_gpu_failures_gameday(tmp_path: Path, misconfig: str | None, broken: tuple[str, ...]) -> None:
    cmd = [sys.executable, "-m", "faultdrill", "gameday", "run", str(PLAN), "--out", str(tmp_path / "runs"), "--plain"]
    if misconfig:
        cmd += ["--misconfig", misconfig]
    env = {**os.environ, "FAULTDRILL_STATE_DIR": str(tmp_path / "state"), "CI": "true",
           "FAULTDRILL_HISTORY": str(tmp_path / "history.db")}  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=1200)
    summary = json.loads(next((tmp_path / "runs").glob("gameday-*/gameday.json")).read_text())
    failed = []
    for scenario in summary["scenarios"]:
        journal = json.loads((Path(scenario["run_dir"]) / "journal.json").read_text())
        failed += [v["name"] for v in journal["verdicts"] if not v["passed"]]
    if misconfig is None:
        assert result.returncode == 0, (failed, result.stdout[-3000:])
        assert [s["outcome"] for s in summary["scenarios"]] == ["passed"] * 4
    else:
        assert result.returncode in (1, 3), result.stdout[-3000:]
        for name in broken:
            assert name in failed, failed
    assert not list((tmp_path / "state" / "ledger").glob("*.json"))
