"""``faultdrill run`` end to end: a misconfigured target fails naming the broken expectation, and
an interrupted run leaves nothing behind. (The smoke experiment's end-to-end run is the pytest
plugin's: tests/integration/test_plug_smoke.py — CI runs it once.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.root]
ROOT = Path(__file__).resolve().parents[2]
CATALOG = ROOT / "experiments" / "catalog"


def _env(state: Path) -> dict[str, str]:
    return {**os.environ, "FAULTDRILL_STATE_DIR": str(state), "CI": "true"}


def _leftovers(run_root: Path, state: Path) -> list[str]:
    """What a finished run must not leave: processes, ledger records, namespaces, cgroups."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if str(run_root) in cmd and "pytest" not in cmd:
            found.append(f"process {proc.pid}: {cmd[:120]}")
    found += [f"ledger {p.name}" for p in (state / "ledger").glob("*.json")] if (state / "ledger").exists() else []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    found += [f"netns {line.split()[0]}" for line in netns.splitlines() if line.startswith("fd-")]
    return found


def _journal(run_root: Path) -> dict:
    journals = sorted(run_root.glob("*/journal.json"))
    assert journals, f"no journal under {run_root}"
    return json.loads(journals[-1].read_text())


def test_misconfigured_target_fails_naming_the_expectation(tmp_path):
    out, state = tmp_path / "runs", tmp_path / "state"
    result = subprocess.run(
        [sys.executable, "-m", "faultdrill", "run", str(CATALOG / "gpu_memory_exhaustion.yaml"), "--out", str(out),
         "--misconfig", "readiness_ignores_model"],
        capture_output=True, text=True, env=_env(state), cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout[-4000:]
    failed = [v["name"] for v in _journal(out)["verdicts"] if not v["passed"]]
    assert "readiness of replica-0 becomes false within 5 s after hog.start" in failed
    assert "readiness of replica-0 becomes false" in result.stdout
    assert _leftovers(out, state) == []


@pytest.mark.parametrize("sig", [signal.SIGTERM])  # SIGINT shares the handler (_signals); CI budget
def test_interrupt_mid_fault_rolls_back_and_leaves_nothing(tmp_path, sig):
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
    assert _leftovers(out, state) == []
