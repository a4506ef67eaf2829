"""Chaos Toolkit end to end: ``chaos discover faultdrill`` lists our activities, ``chaos run`` of the
example passes against the bundled target and deviates against a misconfigured one, and a killed
``chaos run`` leaves nothing behind (the target process rolls back and stops when its owner dies)."""

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

pytestmark = [pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "experiments" / "chaostoolkit" / "examples" / "gpu_memory_exhaustion.json"
CHAOS = Path(sys.executable).parent / "chaos"


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "FAULTDRILL_MISCONFIGURATIONS"}
    return {**env, "FAULTDRILL_STATE_DIR": str(tmp / "state"), "FAULTDRILL_CTK_STATE": str(tmp / "target.json"),
            **extra}  # fmt: skip


def _target_tree(state_file: Path) -> list[int]:
    pid = json.loads(state_file.read_text())["pid"]
    return [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]


def _leftovers(tmp: Path, pids: list[int]) -> list[str]:
    found = [f"process {p}" for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
    ledger = tmp / "state" / "ledger"
    found += [f"ledger {p.name}" for p in ledger.glob("*.json")] if ledger.is_dir() else []
    found += ["state file"] if (tmp / "target.json").exists() else []
    return found


def _wait_gone(pids: list[int], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(
            psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids):  # fmt: skip
        time.sleep(0.1)


def _run(tmp: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    done = subprocess.run([str(CHAOS), "run", str(EXAMPLE), "--journal-path", str(tmp / "journal.json"), *args],
                          cwd=tmp, env=_env(tmp, **env), capture_output=True, text=True, timeout=240)  # fmt: skip
    return done, json.loads((tmp / "journal.json").read_text())


def test_ctk_chaos_discover_lists_faultdrill_activities(tmp_path):
    out = tmp_path / "discovery.json"
    done = subprocess.run([str(CHAOS), "discover", "faultdrill", "--no-install", "--discovery-path", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    names = {a["name"] for a in json.loads(out.read_text())["activities"]}
    assert {"inject_gpu_memory_exhaustion", "rollback_gpu_memory_exhaustion", "inject_network_partition",
            "rollback_oom_kill", "faultdrill_up", "faultdrill_down", "replica_ready", "breaker_state",
            "alert_firing", "slo_availability"} <= names  # fmt: skip


def test_ctk_chaos_run_passes_against_the_bundled_target(tmp_path):
    done, journal = _run(tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    assert journal["status"] == "completed" and journal["deviated"] is False
    inject, _during, ready = journal["run"]
    assert inject["output"]["fault"] == "gpu_memory_exhaustion" and inject["output"]["verified"]["effective"]
    assert ready["output"] is False  # readiness took replica-0 out of rotation
    assert journal["steady_states"]["after"]["probes"][0]["output"] >= 0.9
    assert journal["rollbacks"][0]["output"]["rolled_back"] == [inject["output"]["injection_id"]]
    assert _leftovers(tmp_path, []) == []
    assert "owner pid" in (tmp_path / "target.log").read_text()


def test_ctk_chaos_run_deviates_against_a_misconfigured_target(tmp_path):
    done, journal = _run(tmp_path, FAULTDRILL_MISCONFIGURATIONS="readiness_ignores_model")
    assert done.returncode == 1
    assert journal["deviated"] is True
    after = journal["steady_states"]["after"]["probes"][0]
    assert after["tolerance_met"] is False and after["output"] < 0.9  # replica-0 stayed in rotation
    assert "Steady state probe 'service-availability' is not in the given tolerance" in done.stderr
    assert _leftovers(tmp_path, []) == []


def test_ctk_killed_chaos_run_leaves_nothing_behind(tmp_path):
    proc = subprocess.Popen([str(CHAOS), "run", str(EXAMPLE)], cwd=tmp_path, env=_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:  # chaos logs each activity as it starts: the fault is in effect now
        seen.append(line)
        if "Probe: traffic-while-replica-0-is-out-of-memory" in line:
            break
    records = [p.stem for p in (tmp_path / "state" / "ledger").glob("*.json") if not p.name.startswith(".")]
    assert records, "".join(seen[-20:])
    pids = _target_tree(tmp_path / "target.json")
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    _wait_gone(pids)
    assert _leftovers(tmp_path, pids) == []
    log = (tmp_path / "target.log").read_text()
    assert f"owner pid {proc.pid} exited" in log
    # Two agents watch the owner — the target process and the dead-man watchdog, each polling —
    # and whichever notices first undoes the record; each says so in its own log.
    deadman = tmp_path / "state" / "deadman.log"
    undone = log + (deadman.read_text() if deadman.exists() else "")
    for record in records:
        assert f"rolled back {record}" in undone or f"rolled_back {record}" in undone, (record, undone)
