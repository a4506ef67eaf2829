"""The pytest plugin end to end: the example suite (``tests/plugin_suite``) runs the smoke experiment
and writes JUnit naming every expectation; SIGINT in the middle of a composed test's faults leaves
nothing behind (processes, ledger records, network namespaces)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import psutil
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.system]
ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "tests" / "plugin_suite"


def _cmd(tmp: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "pytest", str(SUITE), "-p", "faultdrill", "-p", "no:cacheprovider",
            "--faultdrill-out", str(tmp / "out"), *args]  # fmt: skip


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    return {**env, "FAULTDRILL_STATE_DIR": str(tmp / "state"), **extra}


def test_plug_smoke_suite_runs_the_smoke_experiment_and_writes_junit(tmp_path, leftovers):
    if os.geteuid() != 0:
        pytest.skip("the smoke experiment needs root: cgroups and network namespaces")
    junit = tmp_path / "chaos.xml"
    # The composed and inline tests are covered by the interrupt test and the unit tests (CI budget).
    done = subprocess.run(_cmd(tmp_path, "--faultdrill-smoke", f"--junitxml={junit}", "-k", "smoke"), cwd=ROOT,
                          env=_env(tmp_path), capture_output=True, text=True, timeout=400)  # fmt: skip
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-2000:]
    cases = list(ET.parse(junit).getroot().iter("testcase"))
    assert [c.get("name") for c in cases] == ["test_smoke_experiment"]
    props = {p.get("name"): p.get("value") for p in cases[0].iter("property")}
    expectations = {k.split(": ", 1)[1]: v for k, v in props.items() if k.startswith("expectation ")}
    assert len(expectations) == 11 and set(expectations.values()) == {"passed"}
    assert "readiness of replica-0 becomes false within 5 s after hog.start" in expectations
    assert props["faultdrill outcome"] == "passed (exit 0)"
    run_dir = Path(props["faultdrill run_dir"])
    assert {"journal.json", "report.html", "junit.xml"} <= {p.name for p in run_dir.iterdir()}
    assert "faultdrill expectations" in done.stdout
    assert not list((tmp_path / "state" / "ledger").glob("*.json"))
    # The smoke experiment's own end-to-end checks (this is CI's one run of it).
    journal = json.loads((run_dir / "journal.json").read_text())
    assert journal["outcome"] == "passed" and journal["exit_code"] == 0 and len(journal["verdicts"]) == 11
    kinds = {e["kind"] for e in journal["events"]}
    assert {"requests", "probe", "breaker", "process", "fault", "phase", "alert", "notification"} <= kinds
    assert set(journal["faults"]) == {"hog", "part", "cert", "oom", "outage", "bad"}
    assert all(f["state"] == "ended" for f in journal["faults"].values())
    assert journal["environment"]["emulated"] is True  # no GPU here, and the journal says so
    assert journal["load"]["requests"] > 0
    # Real Prometheus and Alertmanager: the page reached its receiver, and MTTD is in the journal.
    assert journal["alerting"]["enabled"] and journal["alerting"]["speedup"] == 60
    assert journal["environment"]["time_scale"] == pytest.approx(1 / 60)
    cert = journal["faults"]["cert"]
    assert cert["mttd_s"] is not None and 0 < cert["mttd_s"] < 6, cert
    assert cert["detected_by"] == "TLSCertificateExpired" and cert["receiver"] == "pager"
    assert "11 of 11 expectations held" in (run_dir / "report.html").read_text()
    assert leftovers(tmp_path, tmp_path / "state") == [], "the run left processes or namespaces behind"


def test_plug_sigint_mid_fault_leaves_nothing_behind(tmp_path, leftovers, namespaces_of):
    if os.geteuid() != 0:
        pytest.skip("the composed test partitions a network namespace: needs root")
    env = _env(tmp_path, FAULTDRILL_SUITE_HOLD_S="300")
    proc = subprocess.Popen(_cmd(tmp_path, "-s", "-k", "compose"), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)  # fmt: skip
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "faultdrill-suite: holding the faults" in line:
            break
    assert list((tmp_path / "state" / "ledger").glob("*.json")), "".join(seen[-30:])
    pids = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    during = namespaces_of(set(pids))  # this run's: another test's namespaces may be up at the same time
    assert during, "the composed test runs the feature store in its own namespace"
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2, rest[-3000:]  # pytest: interrupted
    assert "KeyboardInterrupt" in rest
    deadline = time.monotonic() + 15
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
        time.sleep(0.1)
    assert alive == []
    assert not list((tmp_path / "state" / "ledger").glob("*.json"))
    assert leftovers(tmp_path, namespaces=during) == []  # the partition's iptables rules lived in its namespace
