"""``faultdrill run`` end to end: the smoke experiment passes, a misconfigured target fails
naming the broken expectation, and an interrupted run leaves nothing behind."""

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


def test_smoke_experiment_passes_and_leaves_nothing(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root: cgroups and network namespaces")
    out, state = tmp_path / "runs", tmp_path / "state"
    cmd = [sys.executable, "-m", "faultdrill", "run", str(CATALOG / "smoke.yaml"), "--out", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, env=_env(state), cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    journal = _journal(out)
    assert journal["outcome"] == "passed" and journal["exit_code"] == 0
    assert len(journal["verdicts"]) == 11 and all(v["passed"] for v in journal["verdicts"])
    kinds = {e["kind"] for e in journal["events"]}
    assert {"request", "probe", "breaker", "process", "fault", "phase", "alert", "notification"} <= kinds
    # Real Prometheus and Alertmanager: the page reached its receiver, and MTTD is in the journal.
    alerting = journal["alerting"]
    assert alerting["enabled"] and alerting["speedup"] == 60 and alerting["versions"]["prometheus"]
    assert journal["environment"]["time_scale"] == pytest.approx(1 / 60)
    cert = journal["faults"]["cert"]
    assert cert["mttd_s"] is not None and 0 < cert["mttd_s"] < 6, cert
    assert cert["detected_by"] == "TLSCertificateExpired" and cert["receiver"] == "pager"
    # Every run writes its reports next to the journal.
    run_dir = next(out.glob("*/journal.json")).parent
    assert {"report.html", "report.md", "junit.xml"} <= {p.name for p in run_dir.iterdir()}
    assert "11 of 11 expectations held" in (run_dir / "report.html").read_text()
    assert set(journal["faults"]) == {"hog", "part", "cert", "oom", "outage", "bad"}
    assert all(f["state"] == "ended" for f in journal["faults"].values())
    assert journal["environment"]["emulated"] is True  # no GPU here, and the journal says so
    assert journal["load"]["requests"] > 0
    assert _leftovers(out, state) == []


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


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
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
