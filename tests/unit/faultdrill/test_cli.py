"""The CLI's face: fast start, located errors with exit 2, the fault commands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from faultdrill.cli import app

ROOT = Path(__file__).resolve().parents[3]
runner = CliRunner()


def test_cli_start_imports_no_heavy_module():
    heavy = "('torch', 'uvicorn', 'starlette', 'sklearn')"
    code = f"import sys, faultdrill.cli; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_help_lists_command_groups():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for group in ("target", "faults", "alerts", "gameday", "history", "rollback", "run", "validate", "schema",
                  "report"):
        assert group in result.output


def test_unknown_fault_is_a_readable_error_with_suggestion():
    result = subprocess.run([sys.executable, "-m", "faultdrill", "faults", "describe", "network_partiton"],
                            capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert result.returncode == 2
    assert "did you mean 'network_partition'" in result.stderr
    assert "Traceback" not in result.stderr


def test_faults_list_and_describe():
    result = runner.invoke(app, ["faults", "list"])
    assert result.exit_code == 0 and "network_partition" in result.output
    result = runner.invoke(app, ["faults", "describe", "network_partition"])
    assert result.exit_code == 0 and "namespace" in result.output


def test_rollback_pending_with_empty_ledger_is_safe(tmp_path, monkeypatch):
    monkeypatch.setenv("FAULTDRILL_STATE_DIR", str(tmp_path))
    for _ in range(2):
        result = runner.invoke(app, ["rollback", "--pending"])
        assert result.exit_code == 0, result.output
        assert "nothing pending" in result.output
    assert runner.invoke(app, ["rollback"]).exit_code == 2


def test_bad_environment_is_a_located_error():
    import os

    env = {**os.environ, "FAULTDRILL_PORT": "eighty"}
    result = subprocess.run([sys.executable, "-m", "faultdrill", "target", "serve"], capture_output=True,
                            text=True, cwd=ROOT, env=env)  # fmt: skip
    assert result.returncode == 2
    assert "environment variable FAULTDRILL_PORT" in result.stderr and "eighty" in result.stderr
    assert "Traceback" not in result.stderr


def test_docs_target_table_matches_the_settings():
    result = runner.invoke(app, ["target", "config"])
    assert result.exit_code == 0
    doc = (ROOT / "docs" / "target.md").read_text()
    for line in result.output.splitlines():
        if line.startswith("| `FAULTDRILL_"):
            assert line in doc, f"docs/target.md is stale; regenerate with `faultdrill target config`: {line}"


def test_every_builtin_fault_is_registered_by_entry_point():
    from faultdrill.faults.registry import FaultRegistry

    registry = FaultRegistry()
    registry.load_entry_points()
    assert set(registry.names()) >= {
        "gpu_memory_exhaustion", "oom_kill", "network_partition", "network_degradation", "cert_expiry",
        "dependency_outage", "model_load_failure", "process_kill", "process_freeze",
    }  # fmt: skip
    for name in registry.names():
        cls = registry.get(name)
        assert cls.needs and cls.verifies and cls.example, name
        cls().parse_config(cls.example)  # every shipped example is a valid config


def test_validate_catalog_ok_and_broken_corpus_exit_2():
    catalog = sorted(str(p) for p in (ROOT / "experiments" / "catalog").glob("*.yaml"))
    ok = subprocess.run([sys.executable, "-m", "faultdrill", "validate", *catalog], capture_output=True, text=True,
                        cwd=ROOT)  # fmt: skip
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.count("ok ") == len(catalog) >= 7
    broken = sorted((ROOT / "tests" / "fixtures" / "broken_specs").glob("*.yaml"))
    assert len(broken) >= 30
    # One process for the whole corpus (a start-up each would cost ~1 s per file): every file is reported.
    result = subprocess.run([sys.executable, "-m", "faultdrill", "validate", *map(str, broken)], capture_output=True,
                            text=True, cwd=ROOT)  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    for path in broken:
        assert f"{path}:" in result.stderr, (path, result.stderr[-2000:])
    for path in broken[:2]:  # and a single bad file alone exits 2 too
        alone = subprocess.run([sys.executable, "-m", "faultdrill", "validate", str(path)], capture_output=True,
                               text=True, cwd=ROOT)  # fmt: skip
        assert alone.returncode == 2 and f"{path}:" in alone.stderr


def test_schema_is_json():
    import json

    out = subprocess.run([sys.executable, "-m", "faultdrill", "schema"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and "faults" in json.loads(out.stdout)["properties"]


def test_unknown_misconfiguration_is_refused_before_anything_starts(tmp_path):
    smoke = str(ROOT / "experiments" / "catalog" / "smoke.yaml")
    argv = ["run", smoke, "--dry-run", "--misconfig", "no_cache_bypas", "--out", str(tmp_path)]
    result = subprocess.run([sys.executable, "-m", "faultdrill", *argv], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2
    assert "unknown misconfiguration 'no_cache_bypas'" in result.stderr
    assert "did you mean 'no_cache_bypass'" in result.stderr
    assert "Traceback" not in result.stderr and not list(tmp_path.iterdir())
