"""Output in a pipe: the real CLI, stdout a pipe (not a terminal), nothing cut, ``--json`` everywhere.

Each command runs as a subprocess, as a shell pipeline or a CI job runs it, under three
environments: COLUMNS unset, COLUMNS=80 with CI=true (a CI runner), and a very narrow COLUMNS=40.
Expected names come from the registry and from the rules file itself, never from a list here.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from faultdrill.faults.registry import FaultRegistry

ROOT = Path(__file__).resolve().parents[3]
RULES = ROOT / "target_service" / "alerts" / "rules.yml"
RUNBOOKS = ROOT / "gamedays" / "runbooks"
CATALOG = sorted((ROOT / "experiments" / "catalog").glob("*.yaml"))
ELLIPSIS = "…"

ENVS = {
    "columns-unset": {},
    "ci-80": {"COLUMNS": "80", "CI": "true"},
    "narrow-40": {"COLUMNS": "40"},
}


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "CI", "FORCE_COLOR", "TTY_COMPATIBLE")}
    return {**env, "NO_COLOR": "1", **extra}


def _faultdrill(*args: str, env: dict[str, str] | None = None,
                code: int | None = 0) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """Run the real CLI with stdout and stderr as pipes."""
    done = subprocess.run([sys.executable, "-m", "faultdrill", *args], capture_output=True, text=True, cwd=ROOT,
                          env=_env(env or {}), timeout=120)  # fmt: skip
    if code is not None:
        assert done.returncode == code, (args, done.returncode, done.stdout[-2000:], done.stderr[-2000:])
    assert "Traceback" not in done.stderr, done.stderr
    return done


def _json(*args: str, code: int | None = 0) -> Any:
    done = _faultdrill(*args, "--json", code=code)
    assert "\x1b[" not in done.stdout, "ANSI escapes in --json output"
    return json.loads(done.stdout)  # exactly one document: json.loads refuses trailing text


def _fault_names() -> list[str]:
    return FaultRegistry.installed().names()


def _shipped_alerts() -> dict[str, dict[str, Any]]:
    """Alert name → its rule, read straight from the rules file."""
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return {r["alert"]: r for g in doc["groups"] for r in g.get("rules") or [] if "alert" in r}


def _whole_word(name: str, text: str) -> bool:
    return re.search(rf"(?<![\w.-]){re.escape(name)}(?![\w-])", text) is not None


def _assert_nothing_cut(text: str, names: list[str]) -> None:
    assert ELLIPSIS not in text, [line for line in text.splitlines() if ELLIPSIS in line][:5]
    for name in names:
        assert any(_whole_word(name, line) for line in text.splitlines()), f"{name!r} not whole on any line"


# -- text output in a pipe ------------------------------------------------------------------------
@pytest.mark.parametrize("env", ENVS.values(), ids=ENVS.keys())
def test_faults_list_piped_to_grep_shows_the_whole_name(env: dict[str, str]) -> None:
    command = f"{shlex.quote(sys.executable)} -m faultdrill faults list | grep gpu"
    done = subprocess.run(command, shell=True, capture_output=True, text=True, cwd=ROOT, env=_env(env), timeout=120)
    assert done.returncode == 0, done.stderr
    gpu = [n for n in _fault_names() if "gpu" in n]
    assert "gpu_memory_exhaustion" in gpu
    for name in gpu:
        assert _whole_word(name, done.stdout), done.stdout
    assert ELLIPSIS not in done.stdout and "gpu_memory_exhau\n" not in done.stdout


@pytest.mark.parametrize("env", ENVS.values(), ids=ENVS.keys())
def test_faults_list_in_a_pipe_has_every_registered_fault_whole_one_row_each(env: dict[str, str]) -> None:
    text = _faultdrill("faults", "list", env=env).stdout
    names = _fault_names()
    _assert_nothing_cut(text, names)
    for name in names:  # one line per row: the fault's modes are on its line, not wrapped below it
        modes = ", ".join(FaultRegistry.installed().get(name).modes)
        assert any(_whole_word(name, line) and modes in line for line in text.splitlines()), (name, modes)


@pytest.mark.parametrize("env", ENVS.values(), ids=ENVS.keys())
def test_alerts_list_in_a_pipe_has_every_alert_and_runbook_path_whole(env: dict[str, str]) -> None:
    text = _faultdrill("alerts", "list", env=env).stdout
    alerts = _shipped_alerts()
    assert len(alerts) >= 10
    _assert_nothing_cut(text, list(alerts))
    lines = text.splitlines()
    assert any(str(RULES) in line for line in lines), "the rules file's path is cut or wrapped"
    for name, rule in alerts.items():
        url = rule["annotations"]["runbook_url"]
        assert any(_whole_word(name, line) and url in line for line in lines), (name, url)


@pytest.mark.parametrize("env", [ENVS["ci-80"], ENVS["narrow-40"]], ids=["ci-80", "narrow-40"])
def test_faults_describe_in_a_pipe_keeps_every_field_and_line_whole(env: dict[str, str]) -> None:
    name = max(_fault_names(), key=len)
    cls = FaultRegistry.installed().get(name)
    text = _faultdrill("faults", "describe", name, env=env).stdout
    fields = list(cls.Config.model_json_schema().get("properties", {}))
    _assert_nothing_cut(text, [name, *fields])
    assert f"verify measures: {cls.verifies}" in text.splitlines()  # not wrapped at 80 (or 40) columns


@pytest.mark.parametrize("env", [ENVS["ci-80"], ENVS["narrow-40"]], ids=["ci-80", "narrow-40"])
def test_history_in_a_pipe_keeps_scenario_run_id_and_fault_names_whole(tmp_path: Path, env: dict[str, str]) -> None:
    db = tmp_path / "deeply" / "nested" / "directory" / "for" / "the" / "history.sqlite"
    db.parent.mkdir(parents=True)
    journal = ROOT / "tests" / "fixtures" / "reports" / "smoke_journal.json.gz"
    recorded = _json("history", "record", str(journal), "--db", str(db))
    assert recorded["db"] == str(db) and [r["recorded"] for r in recorded["runs"]] == [True]
    doc = _json("history", "--db", str(db))
    [scenario] = doc["scenarios"]
    faults = sorted({*scenario["runs"][0]["mttd_s"], *scenario["runs"][0]["mttr_s"]})
    assert faults
    text = _faultdrill("history", "--db", str(db), env=env).stdout
    _assert_nothing_cut(text, [scenario["scenario"]])
    assert f"history: {db}" in text.splitlines()
    worst = [f for f in faults if f"({f})" in text]
    assert worst, text  # the MTTD/MTTR columns name a fault type, whole


# -- --json: one document, derived from the same records, compared with the sources ----------------
def test_faults_list_json_has_every_registered_fault() -> None:
    doc = _json("faults", "list")
    registry = FaultRegistry.installed()
    assert [f["name"] for f in doc["faults"]] == registry.names()
    for f in doc["faults"]:
        cls = registry.get(f["name"])
        assert list(f) == ["name", "modes", "needs", "verifies", "summary"]
        assert f["modes"] == list(cls.modes) and f["needs"] == list(cls.needs) and f["verifies"] == cls.verifies


def test_faults_describe_json_for_every_fault_matches_its_config_schema() -> None:
    from typer.testing import CliRunner

    from faultdrill.cli import app

    registry = FaultRegistry.installed()
    runner = CliRunner()  # in-process for the loop (its stdout is not a terminal either); one subprocess below
    for name in registry.names():
        result = runner.invoke(app, ["faults", "describe", name, "--json"])
        assert result.exit_code == 0, result.output
        doc = json.loads(result.stdout)
        schema = registry.get(name).Config.model_json_schema()
        assert doc["name"] == name
        assert [f["name"] for f in doc["fields"]] == list(schema.get("properties", {}))
        assert {f["name"] for f in doc["fields"] if f["required"]} == set(schema.get("required", []))
        assert doc["example"] is None or doc["example"]["type"] == name
    one = _json("faults", "describe", "oom_kill")
    assert one["name"] == "oom_kill" and one["example"]["params"] == registry.get("oom_kill").example


def test_faults_describe_unknown_name_with_json_is_stderr_exit_2() -> None:
    done = _faultdrill("faults", "describe", "network_partiton", "--json", code=2)
    assert done.stdout == "" and "did you mean 'network_partition'" in done.stderr


def test_alerts_list_json_has_every_alert_of_the_rules_file() -> None:
    doc = _json("alerts", "list")
    alerts = _shipped_alerts()
    assert doc["rules_file"] == str(RULES)
    assert [a["alert"] for a in doc["alerts"]] == list(alerts)
    for a in doc["alerts"]:
        rule = alerts[a["alert"]]
        assert a["severity"] == rule["labels"]["severity"] and a["for"] == str(rule.get("for", "0s"))
        assert a["runbook_url"] == rule["annotations"]["runbook_url"]
        assert a["receiver"] in ("pager", "chat", "ticket")


def test_runbook_check_json_lists_every_shipped_runbook() -> None:
    from faultdrill.gamedays.runbook import is_index

    doc = _json("runbook", "check", str(RUNBOOKS))
    shipped = sorted(str(p) for p in RUNBOOKS.glob("*.md") if not is_index(p))
    assert doc["ok"] is True and doc["problems"] == []
    assert sorted(r["file"] for r in doc["runbooks"]) == shipped and all(r["ok"] for r in doc["runbooks"])


def test_runbook_check_json_reports_problems_and_exits_2() -> None:
    broken = ROOT / "tests" / "fixtures" / "broken_runbooks" / "unknown_action.md"
    done = _faultdrill("runbook", "check", str(broken), "--json", code=2)
    doc = json.loads(done.stdout)
    assert doc["ok"] is False and doc["runbooks"] == [{"file": str(broken), "ok": False}]
    assert doc["problems"] and doc["problems"][0]["file"] == str(broken) and doc["problems"][0]["suggestion"]
    assert doc["problems"][0]["text"] in done.stderr  # the human line still goes to stderr


def test_validate_json_per_file() -> None:
    broken = sorted((ROOT / "tests" / "fixtures" / "broken_specs").glob("*.yaml"))[:2]
    done = _faultdrill("validate", *map(str, CATALOG), *map(str, broken), "--json", code=2)
    doc = json.loads(done.stdout)
    assert doc["ok"] is False
    assert [f["file"] for f in doc["files"]] == [str(p) for p in [*CATALOG, *broken]]
    for f in doc["files"][: len(CATALOG)]:
        assert f["valid"] is True and f["errors"] == [] and f["faults"] is not None and f["name"]
    for f in doc["files"][len(CATALOG):]:
        assert f["valid"] is False and f["errors"] and all(e["text"] in done.stderr for e in f["errors"])
    assert _json("validate", *map(str, CATALOG))["ok"] is True


def test_gameday_validate_and_schedule_json() -> None:
    plans = sorted((ROOT / "gamedays" / "plans").glob("*.yaml"))
    doc = _json("gameday", "validate", *map(str, plans))
    assert doc["ok"] is True and [p["file"] for p in doc["plans"]] == [str(p) for p in plans]
    assert all(p["scenarios"] and p["title"] and p["errors"] == [] for p in doc["plans"])
    monthly = ROOT / "gamedays" / "plans" / "monthly.yaml"
    sched = yaml.safe_load(monthly.read_text())["schedule"]
    doc = _json("gameday", "schedule", str(monthly), "--count", "3")
    assert doc["plan"] == str(monthly) and doc["cron"] == sched["cron"] and len(doc["next_runs"]) == 3
    assert doc["systemd"]["timer_file"].endswith(".timer") and "OnCalendar=" in doc["systemd"]["timer"]
    assert "kind: CronJob" in doc["kubernetes_cronjob"] and str(monthly.name) in doc["crontab"]
    due = _json("gameday", "schedule", str(monthly), "--due", code=None)
    assert isinstance(due["due"], bool) and due["cron"] == sched["cron"]


def test_rollback_pending_json_with_an_empty_ledger(tmp_path: Path) -> None:
    done = _faultdrill("rollback", "--pending", "--json", env={"FAULTDRILL_STATE_DIR": str(tmp_path)})
    assert json.loads(done.stdout) == {"state_dir": str(tmp_path), "results": []}


def test_alerts_check_json_has_one_entry_per_check() -> None:
    done = _faultdrill("alerts", "check", "--json", code=None)
    doc = json.loads(done.stdout)
    assert doc["ok"] is (done.returncode == 0) and len(doc["checks"]) >= 3
    assert all(set(c) == {"check", "ok", "output"} for c in doc["checks"])


# -- in a terminal: fitted to its width, names still whole ------------------------------------------
@pytest.mark.parametrize("command", [["faults", "list"], ["alerts", "list"]], ids=" ".join)
def test_in_a_narrow_terminal_names_stay_whole_and_nothing_is_cut(monkeypatch: pytest.MonkeyPatch,
                                                                  command: list[str]) -> None:  # fmt: skip
    from rich.cells import cell_len
    from typer.testing import CliRunner

    import faultdrill.output_cli as output
    from faultdrill.cli import app

    monkeypatch.setattr(output, "is_pipe", lambda stream: False)  # as if stdout were a terminal 72 columns wide
    result = CliRunner().invoke(app, command, env={"COLUMNS": "72", "NO_COLOR": "1", "TTY_COMPATIBLE": "0"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(cell_len(line) for line in lines) <= 72  # fitted: the other columns wrapped
    names = _fault_names() if command[0] == "faults" else list(_shipped_alerts())
    _assert_nothing_cut(result.output, names)
