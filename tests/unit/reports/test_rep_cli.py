"""``faultdrill report``: every format, write_all, and bad input as one line with exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from faultdrill.cli import app
from faultdrill.faults.errors import ConfigError
from faultdrill.reports import FILES, render, write_all
from faultdrill.reports.model import RunView

ROOT = Path(__file__).resolve().parents[3]
runner = CliRunner()


@pytest.fixture
def run_dir(tmp_path, journal_factory):
    d = tmp_path / "synthetic-run"
    journal_factory("failed").write(d)
    return d


def test_write_all_writes_every_format(tmp_path, journal_factory):
    journal = journal_factory("halted", reason="stopped")
    path = journal.write(tmp_path / "run")
    paths = write_all(path, tmp_path / "run")  # from the file, as `faultdrill run` calls it
    assert {k: p.name for k, p in paths.items()} == FILES
    assert all(p.stat().st_size > 0 for p in paths.values())
    assert not list((tmp_path / "run").glob(".*.tmp"))
    assert paths["html"].read_text().count('<svg id="timeline-figure"') == 1
    assert "[full report](report.html)" in paths["md"].read_text()
    assert 'type="Halted"' in paths["junit"].read_text()


def test_write_all_from_a_journal_object_writes_the_journal_too(tmp_path, journal_factory, monkeypatch):
    monkeypatch.setattr("faultdrill.reports.render_html", lambda view: "<!DOCTYPE html>")  # figure: tested elsewhere
    paths = write_all(journal_factory(), tmp_path / "fresh")
    assert paths["json"].exists() and paths["html"].read_text() == "<!DOCTYPE html>"


def test_cli_default_writes_all_into_the_run_dir(run_dir):
    result = runner.invoke(app, ["report", str(run_dir)])
    assert result.exit_code == 0, result.output
    for name in ("report.html", "report.md", "junit.xml"):
        assert (run_dir / name).exists() and name in result.output


@pytest.mark.parametrize("fmt", ["md", "junit", "json", "html", "markdown"])
def test_cli_one_format_to_stdout(run_dir, fmt):
    result = runner.invoke(app, ["report", str(run_dir), "--format", fmt])
    assert result.exit_code == 0, result.output
    first = {"md": "### ❌", "markdown": "### ❌", "junit": "<?xml", "json": "{", "html": "<!DOCTYPE html>"}[fmt]
    assert result.output.startswith(first)


def test_cli_out_file_links_the_html_relatively(run_dir, tmp_path):
    out = tmp_path / "comments" / "pr.md"
    result = runner.invoke(app, ["report", str(run_dir), "-f", "md", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "[full report](../synthetic-run/report.html)" in out.read_text()


def test_cli_compare_and_gameday(tmp_path, journal_factory):
    a, b = tmp_path / "a", tmp_path / "b"
    journal_factory("failed", mttd=3.0).write(a)
    journal_factory("passed", mttd=1.0).write(b)
    result = runner.invoke(app, ["report", "--compare", str(a), str(b)])
    assert result.exit_code == 0, result.output
    assert "| MTTD hog | 3.00 s | 1.00 s | ▲ better |" in result.output
    result = runner.invoke(app, ["report", "--compare", str(a), str(b), "-f", "json"])
    assert result.exit_code == 0 and '"worse": []' in result.output
    out = tmp_path / "day.html"
    result = runner.invoke(app, ["report", "--gameday", str(a), str(b), "--title", "Day 1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text().count('<svg id="timeline-figure"') == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [([], "RUN_DIR: give a run directory"),
     (["{missing}"], "no such run directory"),
     (["{empty}"], "this run directory has no journal.json"),
     (["{bad}"], "not a journal: Expecting value"),
     (["{invalid}"], "outcome: not a valid journal"),
     (["{run}", "-f", "pfd"], "--format: unknown format 'pfd' for a single run (expected html or md or junit or json)"),
     (["{run}", "-f", "htm"], "(did you mean 'html'?)"),
     (["--compare", "{run}"], "--compare takes exactly two runs"),
     (["--compare", "--gameday", "{run}"], "choose one of"),
     (["{run}", "{run}"], "one run directory at a time"),
     (["{run}", "--out", "x.md"], "--out needs --format"),
     (["--compare", "{run}", "{run}", "-f", "html"], "expected md or json")],
)  # fmt: skip
def test_bad_input_is_a_located_config_error(tmp_path, run_dir, args, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "journal.json").write_text("")
    (tmp_path / "invalid").mkdir()
    text = (run_dir / "journal.json").read_text().replace('"outcome": "failed"', '"outcome": "exploded"')
    (tmp_path / "invalid" / "journal.json").write_text(text)
    names = {"missing": tmp_path / "nope", "empty": tmp_path / "empty", "bad": tmp_path / "bad",
             "invalid": tmp_path / "invalid", "run": run_dir}  # fmt: skip
    result = runner.invoke(app, ["report", *[a.format(**names) for a in args]])
    assert isinstance(result.exception, ConfigError), result.output
    assert message in str(result.exception)


def test_console_script_exit_2_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "faultdrill", "report", str(tmp_path / "nope")],
                            capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith("faultdrill: error: ") and "no such run directory" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("field, value", [("window", ["replica-0", 1]), ("window", [1, {"a": 2}])])
def test_a_schema_valid_journal_with_a_wrong_value_is_exit_2_not_a_traceback(run_dir, field, value):
    import json

    path = run_dir / "journal.json"
    doc = json.loads(path.read_text())
    doc["verdicts"][0][field] = value
    path.write_text(json.dumps(doc))
    result = subprocess.run([sys.executable, "-m", "faultdrill", "report", str(run_dir), "--format", "md"],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith(f"faultdrill: error: {run_dir}: cannot render") and "Traceback" not in result.stderr


def test_cli_start_stays_light():
    code = ("import sys, faultdrill.cli; print(sorted(m for m in ('matplotlib', 'jinja2', 'numpy', 'reports', "
            "'xmlschema') if m in sys.modules))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_render_rejects_unknown_format(journal_factory):
    with pytest.raises(ValueError, match="unknown report format 'pdf'"):
        render(RunView.of(journal_factory()), "pdf")


def test_public_api_is_pinned():
    from faultdrill import reports

    assert set(reports.__all__) == {
        "FILES", "FORMATS", "Comparison", "Format", "RunView", "Score", "compare_runs", "journal_schema",
        "load_journal", "render", "render_comparison_json", "render_comparison_markdown", "render_gameday",
        "render_gameday_markdown", "render_html", "render_json", "render_junit", "render_markdown",
        "resilience_score", "write_all"}  # fmt: skip
