"""Game days end to end: a broken runbook step makes the game day fail naming that step. Real
platform, alerts, faults, runbooks. (The smoke plan passing with its runbooks restoring service is
`make demo`, run exactly as the README shows: tests/integration/test_readme.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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


def test_a_broken_runbook_step_fails_the_game_day_at_that_step(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: memory cgroups")
    runbook = (ROOT / "gamedays" / "runbooks" / "gpu-memory.md").read_text()
    fix = "```faultdrill\nrelease-device-memory $REPLICA\n```"
    assert runbook.count(fix) == 1, "the GPU-memory runbook changed: update this mutation"
    broken = tmp_path / "gpu-memory.md"
    broken.write_text(runbook.replace(fix, "```faultdrill\nwait 1s\n```"))  # the fixing step no longer fixes
    before = runbook[: runbook.index(fix)]
    title = before[before.rindex("\n### ") + 5:].split("\n", 1)[0].split(". ", 1)[1].strip()
    plan = yaml.safe_load((ROOT / "gamedays" / "plans" / "smoke.yaml").read_text())
    plan["scenarios"] = plan["scenarios"][:1]
    plan["scenarios"][0]["inline"]["faults"][0]["runbook"]["file"] = str(broken)
    plan["scenarios"][0]["inline"]["faults"][0]["duration"] = "14s"  # long enough to fail, short for CI
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    done, day = _run(path, tmp_path)
    assert done.returncode == 1, done.stdout[-5000:]
    scenario = json.loads((day / "gameday.json").read_text())["scenarios"][0]
    journal = json.loads((Path(scenario["run_dir"]) / "journal.json").read_text())
    [verdict] = [v for v in journal["verdicts"] if "restores steady state" in v["name"]]
    assert not verdict["passed"]
    # It names the step where recovery did not happen: the mutated step (its check either failed, or
    # passed only once the fault's own rollback healed the replica — which the verdict tells apart).
    assert f"'{title}'" in verdict["observed"], verdict["observed"]
    assert "failed" in verdict["observed"] or "recovery did not happen" in verdict["observed"], verdict["observed"]
