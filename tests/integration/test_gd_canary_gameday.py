"""The canary game day end to end: passes against the default platform, and fails — exit 1, naming
the broken expectation — with the ``no_canary_analysis`` misconfiguration (weights step up, nothing is
judged, so the less confident canary is promoted instead of rolled back and users keep getting its HTTP 200
answers: the damage named is the wrong answers the load counted against the known answers, not only the
missing rollback). The all-NaN canary fails the target's own known-answer check, so it is never ready and
takes no request with or without the analysis; without it, nothing rolls it back (a mechanism failure).
Exit 3 (halted by the plan's abort) is accepted too: either way it is not a pass, and the broken
expectations are judged and named all the same.

About 3–5 minutes per game day on a 2-core machine: marked ``catalog`` like ``test_catalog.py``
(``make test-catalog`` style, not CI). ``make test`` covers the same path on a real platform in
``tests/unit/experiments/test_exp_canary_platform.py``.
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
PLAN = ROOT / "gamedays" / "plans" / "canary.yaml"


@pytest.mark.parametrize(("misconfig", "broken"), [
    (None, None),
    ("no_canary_analysis", "at most 0.5% wrong requests between unsure.start+15s and unsure.end"),
])  # fmt: skip
def test_canary_gameday(tmp_path: Path, misconfig: str | None, broken: str | None) -> None:
    cmd = [sys.executable, "-m", "faultdrill", "gameday", "run", str(PLAN), "--out", str(tmp_path / "runs"), "--plain"]
    if misconfig:
        cmd += ["--misconfig", misconfig]
    env = {**os.environ, "FAULTDRILL_STATE_DIR": str(tmp_path / "state"), "CI": "true",
           "FAULTDRILL_HISTORY": str(tmp_path / "history.db")}  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    summary = json.loads(next((tmp_path / "runs").glob("gameday-*/gameday.json")).read_text())
    failed = []
    for scenario in summary["scenarios"]:
        journal = json.loads((Path(scenario["run_dir"]) / "journal.json").read_text())
        failed += [v["name"] for v in journal["verdicts"] if not v["passed"]]
        assert any(e["kind"] == "canary" for e in journal["events"]), scenario["scenario"]
    if misconfig is None:
        assert result.returncode == 0, (failed, result.stdout[-3000:])
    else:
        assert result.returncode in (1, 3), result.stdout[-3000:]
        assert all(s["outcome"] != "passed" for s in summary["scenarios"][1:]), summary["scenarios"]
        assert broken in failed, failed
        assert "the canary is rolled back within 30 s after bad.start" in failed, failed
        assert broken in result.stdout.replace("\n", " ") or broken in failed
    assert not list((tmp_path / "state" / "ledger").glob("*.json"))
