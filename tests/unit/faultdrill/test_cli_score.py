"""``faultdrill score`` on the command line: the dry-run plan, and bad input as one located line, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from faultdrill.cli import app

ROOT = Path(__file__).resolve().parents[3]
EXPERIMENT = "experiments/catalog/model_load_failure.yaml"
runner = CliRunner()


def score(*argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "faultdrill", "score", *argv], capture_output=True, text=True,
                          cwd=cwd, timeout=120)  # fmt: skip


def test_help_lists_score():
    assert "score" in runner.invoke(app, ["--help"]).output


def test_dry_run_prints_the_runs_in_order_and_starts_nothing(tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["score", str(ROOT / EXPERIMENT), "--variant", "readiness_ignores_model",
                                 "--variant", "no_circuit_breaker", "--out", str(out), "--dry-run"])  # fmt: skip
    assert result.exit_code == 0, result.output
    text = result.output
    assert "up to 3 runs" in text and "dry run: nothing was started" in text
    assert text.index("1. baseline × model-load-failure") < text.index("2. readiness_ignores_model × model-load")
    assert "3. no_circuit_breaker × model-load-failure" in text
    assert not out.exists()


def test_dry_run_of_a_score_file_with_the_default_out(tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"kind: Score\nexperiments: [{ROOT / EXPERIMENT}]\nthreshold: 50\nfirst_catch: true\n"
                     "variants:\n  - {name: ready-too-soon, misconfig: [readiness_ignores_model],"
                     " env: {FAULTDRILL_OOM_UNREADY_THRESHOLD: '9'}}\n")  # fmt: skip
    result = score(str(suite), "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "ready-too-soon × model-load-failure  (misconfig readiness_ignores_model; env " in result.stdout
    assert "threshold 50%" in result.stdout and "--first-catch stops a variant" in result.stdout
    assert "output: runs/score/" in result.stdout


def test_bad_input_is_one_located_line_exit_2(tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"kind: Score\nexperiments: [{ROOT / EXPERIMENT}]\nvariants:\n"
                     "  - {name: x, misconfig: [no_rate_limt]}\n")
    for argv, where in (
        ([str(suite)], f"{suite}:4:"),
        ([EXPERIMENT, "--variant", "no_circuit_breakr"], "did you mean 'no_circuit_breaker'"),
        (["experiments/catalog/nope.yaml"], "nope.yaml"),
        ([str(suite), "--variant", "no_rate_limit"], "a score file declares its variants"),
    ):
        result = score(*argv)
        assert result.returncode == 2, (argv, result.stderr)
        assert where in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert "did you mean 'no_rate_limit'" in score(str(suite)).stderr
