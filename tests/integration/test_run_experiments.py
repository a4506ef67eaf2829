"""``faultdrill run`` end to end: an interrupted run leaves nothing behind, and a run that aborts
before any fault is injected says so instead of judging. (A misconfigured target failing naming the
broken expectation, and the smoke experiment, run exactly as the README shows them:
tests/integration/test_readme.py; the pytest plugin's smoke run: tests/integration/test_plug_smoke.py.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.root, pytest.mark.system]
ROOT = Path(__file__).resolve().parents[2]
CATALOG = ROOT / "experiments" / "catalog"


def _env(state: Path) -> dict[str, str]:
    return {**os.environ, "FAULTDRILL_STATE_DIR": str(state), "CI": "true"}


def _journal(run_root: Path) -> dict:
    journals = sorted(run_root.glob("*/journal.json"))
    assert journals, f"no journal under {run_root}"
    return json.loads(journals[-1].read_text())


@pytest.mark.parametrize("sig", [signal.SIGTERM])  # SIGINT shares the handler (_signals); CI budget
def test_interrupt_mid_fault_rolls_back_and_leaves_nothing(tmp_path, sig, leftovers):
    out, state = tmp_path / "runs", tmp_path / "state"
    proc = subprocess.Popen(
        [sys.executable, "-m", "faultdrill", "run", str(CATALOG / "gpu_memory_exhaustion.yaml"), "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(state), cwd=ROOT,
    )  # fmt: skip
    assert proc.stdout is not None
    deadline = time.monotonic() + 180
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if "fault hog" in line and ": active" in line:
            break
    assert any(": active" in line for line in seen), "".join(seen[-30:])
    assert list((state / "ledger").glob("*.json")), "the injection is in the ledger while in effect"
    proc.send_signal(sig)
    rest, _ = proc.communicate(timeout=120)
    assert proc.returncode == 3, rest[-3000:]
    assert f"interrupted by {sig.name}" in rest and "rolled back hog" in rest
    journal = _journal(out)
    assert journal["outcome"] == "halted" and journal["exit_code"] == 3
    assert leftovers(out, state) == []


def test_a_run_aborted_before_any_fault_says_not_evaluated_and_why(tmp_path, leftovers):
    """Prometheus refuses the rules (promtool), after the platform is up and before anything is injected:
    exit 3, the reason first, every expectation "not evaluated (run aborted: …)" — not a wall of ✘."""
    out, state = tmp_path / "runs", tmp_path / "state"
    rules = yaml.safe_load((ROOT / "target_service" / "alerts" / "rules.yml").read_text())
    rule = next(r for g in rules["groups"] for r in g["rules"] if r.get("alert") == "InferenceGPUMemoryPressure")
    rule["expr"] = "rate(inference_requests_total[1m]"  # unclosed: promtool rejects the generated config
    broken = tmp_path / "broken-rules.yml"
    broken.write_text(yaml.safe_dump(rules, sort_keys=False))
    done = subprocess.run(
        [sys.executable, "-m", "faultdrill", "run", str(CATALOG / "gpu_memory_exhaustion.yaml"), "--out", str(out),
         "--rules", str(broken), "--plain"],
        capture_output=True, text=True, env=_env(state), cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert done.returncode == 3, done.stdout[-4000:] + done.stderr[-2000:]
    journal = _journal(out)
    assert journal["outcome"] == "halted" and "promtool rejected" in journal["reason"]
    assert journal["verdicts"] and all(v["evaluated"] is False and not v["passed"] for v in journal["verdicts"])
    assert all(v["observed"].startswith("not evaluated (run aborted: ConfigError: ") for v in journal["verdicts"])
    summary = done.stdout[done.stdout.index("reason: "):]  # the summary starts with the reason
    assert "never happened" not in summary
    assert not [line for line in summary.splitlines() if line.startswith("FAILED:")], summary
    assert f"NOT EVALUATED: {len(journal['verdicts'])} expectation(s)" in summary
    junit = (sorted(out.glob("*/junit.xml"))[-1]).read_text()
    assert 'type="NotEvaluated"' in junit and "<failure" not in junit
    html = (sorted(out.glob("*/report.html"))[-1]).read_text()  # nothing was tested: no score blames the system
    assert "not scored: the run aborted before any fault was injected" in html
    assert leftovers(out, state) == []
