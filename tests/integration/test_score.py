"""``faultdrill score`` end to end, exactly as the README shows it (from the repository root, default ``--out``,
which a fresh clone does not have yet): the model-load-failure experiment passes on the unmodified target and
catches ``readiness_ignores_model`` on damage (failed requests), so the detection rate is 100% and it exits 0.

About two runs of ~45 s: marked like the catalog matrix (``make test-catalog``).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.catalog, pytest.mark.slow, pytest.mark.root, pytest.mark.system, pytest.mark.timeout(900)]
ROOT = Path(__file__).resolve().parents[2]
COMMAND = "faultdrill score experiments/catalog/model_load_failure.yaml --variant readiness_ignores_model"


def test_score_catches_a_profile_on_damage(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root: cgroups and network namespaces")
    before = set((ROOT / "runs" / "score").glob("*")) if (ROOT / "runs" / "score").is_dir() else set()
    env = {**os.environ, "FAULTDRILL_STATE_DIR": str(tmp_path / "state"), "CI": "true"}
    result = subprocess.run(["bash", "-c", f"source .venv/bin/activate && {COMMAND}"], capture_output=True,
                            text=True, env=env, cwd=ROOT, timeout=900)  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    (out,) = set((ROOT / "runs" / "score").glob("*")) - before
    score = json.loads((out / "score.json").read_text())
    assert score["complete"] and score["detection_rate"] == 100.0 and score["gaps"] == []
    assert [b["outcome"] for b in score["baselines"]] == ["missed"]
    (cell,) = score["cells"]
    assert cell["outcome"] == "caught" and cell["variant"] == "readiness_ignores_model"
    damage = [f for f in cell["failures"] if f["catches"] == "damage"]
    assert any("failed requests" in f["expectation"] for f in damage), cell["failures"]
    assert Path(cell["run_dir"], "journal.json").is_file() and (out / "score.md").is_file()
    assert "detection score: 1/1 variants caught on damage (100%)" in result.stdout
    assert not list((tmp_path / "state" / "ledger").glob("*.json"))
