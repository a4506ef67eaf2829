"""``faultdrill alerts list/check`` on the shipped rules and on a broken copy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from faultdrill.cli import app
from faultdrill.experiments.spec.rules import alert_rules, rules_path

runner = CliRunner()


def test_alerts_list_shows_every_shipped_alert_with_its_receiver() -> None:
    result = runner.invoke(app, ["alerts", "list"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    for name in alert_rules(rules_path("default", spec_file=None)):
        assert name in result.output
    assert "critical → pager" in result.output and "ticket → ticket" in result.output


def test_alerts_check_passes_on_the_shipped_rules_and_fails_on_a_broken_copy(tmp_path: Path) -> None:
    result = runner.invoke(app, ["alerts", "check"])
    assert result.exit_code == 0, result.output
    assert [line.split()[0] for line in result.output.splitlines()] == ["ok"] * 4
    broken = tmp_path / "rules.yml"
    text = rules_path("default", spec_file=None).read_text()
    broken.write_text(text.replace("expr: up{job=\"target\"} == 0", "expr: up{job=\"target\" == 0", 1))
    assert broken.read_text() != text
    result = runner.invoke(app, ["alerts", "check", "--rules", str(broken)])
    assert result.exit_code == 1 and "FAIL promtool check rules" in result.output


def test_alerts_list_on_a_missing_file_is_a_located_error_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yml"
    done = subprocess.run([sys.executable, "-m", "faultdrill", "alerts", "list", "--rules", str(missing)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"{missing}: alerting.rules: cannot read the alert rules" in done.stderr
    assert "Traceback" not in done.stderr
