"""Game days end to end: a broken runbook step makes the game day fail naming that step, and a runbook
whose fix is the fault's own undo gets no credit. Real platform, alerts, faults, runbooks. (The smoke plan
passing with its runbooks restoring service is `make demo`, run exactly as the README shows:
tests/integration/test_readme.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.root, pytest.mark.system]
ROOT = Path(__file__).resolve().parents[2]


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "FAULTDRILL_STATE_DIR": str(tmp_path / "state"), "CI": "true",
            "FAULTDRILL_HISTORY": str(tmp_path / "history.sqlite")}  # fmt: skip


def _run(plan: Path, tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path / "runs"
    done = subprocess.run([sys.executable, "-m", "faultdrill", "gameday", "run", str(plan), "--out", str(out),
                           "--plain"], capture_output=True, text=True, env=_env(tmp_path), cwd=ROOT,
                          timeout=600)  # fmt: skip
    dirs = sorted(out.glob("gameday-*"))
    assert dirs, done.stdout[-3000:] + done.stderr[-2000:]
    return done, dirs[-1]


FIX = "```faultdrill\nrestart $REPLICA\n```"


def _mutated_gpu_day(tmp_path: Path, replacement: str, duration: str) -> tuple[dict[str, Any], str]:
    """The smoke plan's GPU scenario with its runbook's fixing step replaced; the verdict and that step's title."""
    if os.geteuid() != 0:
        pytest.skip("needs root: memory cgroups")
    runbook = (ROOT / "gamedays" / "runbooks" / "gpu-memory.md").read_text()
    assert runbook.count(FIX) == 1, "the GPU-memory runbook changed: update this mutation"
    broken = tmp_path / "gpu-memory.md"
    broken.write_text(runbook.replace(FIX, replacement))
    before = runbook[: runbook.index(FIX)]
    title = before[before.rindex("\n### ") + 5:].split("\n", 1)[0].split(". ", 1)[1].strip()
    plan = yaml.safe_load((ROOT / "gamedays" / "plans" / "smoke.yaml").read_text())
    plan["scenarios"] = plan["scenarios"][:1]
    plan["scenarios"][0]["inline"]["faults"][0]["runbook"]["file"] = str(broken)
    plan["scenarios"][0]["inline"]["faults"][0]["duration"] = duration
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    done, day = _run(path, tmp_path)
    assert done.returncode == 1, done.stdout[-5000:]
    scenario = json.loads((day / "gameday.json").read_text())["scenarios"][0]
    journal = json.loads((Path(scenario["run_dir"]) / "journal.json").read_text())
    [verdict] = [v for v in journal["verdicts"] if "restores steady state" in v["name"]]
    assert not verdict["passed"]
    return verdict, title


# ~50 s, like the refusal below: make test-catalog (CI's budget is 15 min); the judge is unit-tested on timelines
# and make demo proves the repairing runbooks end to end.
@pytest.mark.catalog
def test_a_broken_runbook_step_fails_the_game_day_at_that_step(tmp_path: Path) -> None:
    # The fixing step no longer fixes; the fault lasts long enough to fail, short for CI.
    verdict, title = _mutated_gpu_day(tmp_path, "```faultdrill\nwait 1s\n```", "14s")
    # It names the step where recovery did not happen: the mutated step (its check either failed, or
    # passed only once the fault's own rollback healed the replica — which the verdict tells apart).
    assert f"'{title}'" in verdict["observed"], verdict["observed"]
    assert "failed" in verdict["observed"] or "recovery did not happen" in verdict["observed"], verdict["observed"]


# ~60 s: a negative control like the catalog's (make test-catalog); the refusal itself is unit-tested on timelines.
@pytest.mark.catalog
def test_a_runbook_whose_fix_is_the_faults_own_undo_gets_no_credit(tmp_path: Path) -> None:
    """The admin release is the GPU-memory fault's rollback: the service comes back, the judge refuses it."""
    verdict, title = _mutated_gpu_day(tmp_path, "```faultdrill\nrelease-device-memory $REPLICA\n```", "25s")
    assert f"'{title}' runs release-device-memory, the undo of hog itself" in verdict["observed"], verdict["observed"]
