"""``faultdrill export chaostoolkit``: a valid Chaos Toolkit experiment, the schedule as method pauses,
and every expectation Chaos Toolkit cannot judge named on stderr."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from faultdrill.cli import app
from faultdrill.experiments.expect.judge import describe
from faultdrill.experiments.spec.loader import load_experiment
from faultdrill.export_cli import to_chaostoolkit
from faultdrill.faults.registry import FaultRegistry

ROOT = Path(__file__).resolve().parents[3]
CATALOG = ROOT / "experiments" / "catalog"


def _valid(doc: dict) -> None:
    from chaoslib.experiment import ensure_experiment_is_valid

    ensure_experiment_is_valid(json.loads(json.dumps(doc)))


@pytest.mark.parametrize("name", sorted(p.stem for p in CATALOG.glob("*.yaml")))
def test_ctk_every_catalog_experiment_exports_to_a_valid_one(name):
    spec = load_experiment(CATALOG / f"{name}.yaml", FaultRegistry.installed())
    doc, notes = to_chaostoolkit(spec)
    _valid(doc)
    for i, x in enumerate(spec.expect):  # every expectation is named: observed, approximated or not expressible
        assert sum(note.startswith(f"expect[{i}] '{describe(x)}':") for note in notes) == 1


def test_ctk_smoke_schedule_becomes_injects_rollbacks_and_pauses():
    spec = load_experiment(CATALOG / "smoke.yaml", FaultRegistry.installed())
    doc, notes = to_chaostoolkit(spec)
    steps = [(a["name"], a.get("pauses", {}).get("before", 0.0)) for a in doc["method"]]
    assert steps[:3] == [("inject-hog", 3.0), ("inject-part", 0.0), ("readiness-of-replica-0-5s-after-hog.start", 5.0)]
    names = [n for n, _ in steps]
    assert names.index("rollback-hog") > names.index("inject-hog")
    assert names.index("inject-bad") < names.index("rollback-bad")
    assert doc["method"][-1]["pauses"]["after"] == 10.0  # recovers within 10 s → the after-hypothesis waits
    assert [r["name"] for r in doc["rollbacks"]] == [f"rollback-{f.id}" for f in spec.faults]
    inject = next(a for a in doc["method"] if a["name"] == "inject-oom")["provider"]
    assert inject == {"type": "python", "module": "faultdrill.faults.chaostoolkit", "func": "inject_oom_kill",
                      "arguments": {"mode": "leak", "rate_mib_s": 400, "target": "replica-1", "duration_s": 8.0}}
    control = doc["controls"][0]["provider"]
    assert control["module"] == "faultdrill.experiments.chaostoolkit.target"
    assert control["arguments"] == {"replicas": 2, "misconfigurations": "${misconfigurations}", "alerting": True,
                                    "feature_store_netns": True, "memory_limit_mib": 700}  # fmt: skip
    probes = doc["steady-state-hypothesis"]["probes"]
    assert [(p["provider"]["func"], p["tolerance"]["range"]) for p in probes] == [
        ("slo_availability", [0.99, 1.0]), ("slo_latency_p95_ms", [0.0, 500.0])]
    assert any(n.startswith("halt_if[0]") for n in notes) and any(n.startswith("load: Locust") for n in notes)


def test_ctk_export_cli_writes_json_and_lists_what_is_lost(tmp_path):
    out = tmp_path / "gpu.json"
    result = CliRunner().invoke(app, ["export", "chaostoolkit", str(CATALOG / "gpu_memory_exhaustion.yaml"),
                                      "-o", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    _valid(json.loads(out.read_text()))
    assert "expect[1] 'liveness of replica-0 holds true during hog': not expressible" in result.stderr
    assert "expect[8] 'alert InferenceGPUMemoryPressure resolves within 10 s after hog.end': not expressible" \
        in result.stderr  # fmt: skip
    assert f"wrote {out}" in result.stderr


def test_ctk_export_cli_to_stdout_and_a_bad_spec_is_exit_2(tmp_path):
    result = CliRunner().invoke(app, ["export", "chaostoolkit", str(CATALOG / "oom_kill.yaml")])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["title"] == "oom-kill"
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: faultdrill/v1\nkind: Experiment\nmetadata: {name: x}\nfaults: [{id: a, type: nope}]\n")
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "faultdrill", "export", "chaostoolkit", str(bad)], cwd=ROOT,
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 2 and "unknown fault 'nope'" in done.stderr
