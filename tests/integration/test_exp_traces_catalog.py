"""A whole catalog run (the feature store hung) leaves span files and example traces that show the outage:
requests whose feature-store call timed out, fell back, and met the breaker — inside the fault window.

About a minute: marked ``catalog`` (``make test-catalog``), not part of ``make test``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.catalog, pytest.mark.slow, pytest.mark.root, pytest.mark.system]
ROOT = Path(__file__).resolve().parents[2]


def test_dependency_outage_run_keeps_example_traces_of_the_outage(tmp_path: Path):
    if os.geteuid() != 0:
        pytest.skip("needs root: cgroups and network namespaces")
    cmd = [sys.executable, "-m", "faultdrill", "run", str(ROOT / "experiments" / "catalog" / "dependency_outage.yaml"),
           "--out", str(tmp_path / "runs")]  # fmt: skip
    env = {**os.environ, "FAULTDRILL_STATE_DIR": str(tmp_path / "state"), "CI": "true"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    run_dir = next((tmp_path / "runs").glob("*/journal.json")).parent
    journal = json.loads((run_dir / "journal.json").read_text())
    traces = journal["traces"]
    assert traces is not None and not traces["note"], result.stdout[-2000:]
    assert sorted(traces["files"]) == ["platform/traces/feature-store.jsonl", "platform/traces/replica-0.jsonl"]
    assert all((run_dir / f).stat().st_size > 0 for f in traces["files"])
    windows = {w["id"]: w for w in traces["windows"]}
    assert set(windows) == {"steady", "outage"}
    steady, outage = windows["steady"], windows["outage"]
    assert steady["requests"] > 0 and steady["slowest"]
    assert outage["p95_ms"] > steady["p50_ms"]
    slow = outage["slowest"][0]
    assert outage["start"] <= slow["t"] < outage["end"]
    client = [s for s in slow["spans"] if s["kind"] == "CLIENT"]
    assert client and client[0]["status"] == "ERROR" and client[0]["attributes"]["error.type"] == "timeout"
    root_events = [e["name"] for e in slow["spans"][0]["events"]]
    assert "feature.fallback" in root_events
    events = {e["name"] for x in outage["slowest"] for e in x["spans"][0]["events"]}
    assert "breaker.transition" in events
    html = (run_dir / "report.html").read_text()
    assert 'id="traces"' in html and slow["trace_id"] in html
    assert "Example traces" in (run_dir / "report.md").read_text()
