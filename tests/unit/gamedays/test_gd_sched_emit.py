"""What a team installs for a game-day schedule: crontab line, systemd units, Kubernetes CronJob;
and ``faultdrill gameday schedule PLAN`` printing them."""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from faultdrill.faults.errors import ConfigError
from faultdrill.gamedays.cron import next_runs
from faultdrill.gamedays.installers import crontab_line, kubernetes_cronjob, oncalendar, systemd_units
from faultdrill.gamedays.schedule import load_plan_schedule, schedule_command
from faultdrill.schedule_cli import gameday_schedule_command

ROOT = Path(__file__).resolve().parents[3]
PLAN = ROOT / "gamedays" / "plans" / "monthly.yaml"
BASE = datetime(2027, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("cron", "tz", "lines"), [
    ("0 10 * * 1", "UTC", ["Mon *-*-* 10:00:00 UTC"]),
    ("*/15 9-17 * * MON-FRI", "UTC", ["Mon..Fri *-*-* 09..17:00,15,30,45:00 UTC"]),
    ("0 10 * * SAT,SUN", "UTC", ["Sat..Sun *-*-* 10:00:00 UTC"]),
    ("0 10 * * SUN,MON,WED", "UTC", ["Mon,Wed,Sun *-*-* 10:00:00 UTC"]),
    ("0 0 1 JAN,JUL *", "UTC", ["*-01,07-01 00:00:00 UTC"]),
    ("0 10 * * MON#1", "Europe/Berlin", ["Mon *-*-01..07 10:00:00 Europe/Berlin"]),
    ("0 16 * * 5L", "UTC", ["Fri *-*~07/1 16:00:00 UTC"]),
    ("0 8 L * *", "UTC", ["*-*~01 08:00:00 UTC"]),
    ("0 9 13 * FRI", "UTC", ["*-*-13 09:00:00 UTC", "Fri *-*-* 09:00:00 UTC"]),  # cron ORs the day fields
    ("0 9 */2 * MON", "UTC", ["Mon *-*-01,03,05,07,09,11,13,15,17,19,21,23,25,27,29,31 09:00:00 UTC"]),  # ANDed
    ("@weekly", "America/New_York", ["Sun *-*-* 00:00:00 America/New_York"]),
])  # fmt: skip
def test_gd_sched_systemd_oncalendar_converts(cron: str, tz: str, lines: list[str]) -> None:
    cal = oncalendar(cron, tz)
    assert cal.exact and list(cal.lines) == lines
    if shutil.which("systemd-analyze"):
        assert _systemd_elapses(cal.lines, 6) == [d.astimezone(UTC) for d in next_runs(cron, tz, 6, BASE)]


def _systemd_elapses(lines: tuple[str, ...], n: int) -> list[datetime]:
    """What systemd itself computes for these OnCalendar= lines (a timer fires on any of them)."""
    found: set[datetime] = set()
    for line in lines:
        out = subprocess.run(["systemd-analyze", "calendar", f"--iterations={n}", "--base-time=2027-01-01 12:00:00 UTC",
                              line], capture_output=True, text=True, env={"TZ": "UTC", "PATH": "/usr/bin:/bin"},
                             timeout=30, check=True).stdout  # fmt: skip
        for stamp in re.findall(r"(?:Next elapse|Iter\. #\d+): \w+ (\S+ \S+) UTC", out):
            found.add(datetime.fromisoformat(stamp).replace(tzinfo=UTC))
    return sorted(found)[:n]


def test_gd_sched_systemd_says_when_it_cannot_convert_and_falls_back(tmp_path: Path) -> None:
    cal = oncalendar("0 8 LW * *", "UTC")  # the last weekday of the month: OnCalendar has no such thing
    assert not cal.exact and cal.lines == ("*-*-26..31 08:00:00 UTC",)
    assert "has no OnCalendar= equivalent ('LW' (last weekday of the month))" in cal.note
    service, timer = systemd_units(PLAN, "0 8 LW * *", ROOT)
    assert "# cron '0 8 LW * *' has no OnCalendar= equivalent" in timer
    assert "OnCalendar=*-*-26..31 08:00:00 UTC" in timer
    assert f"ExecCondition={ROOT}/.venv/bin/faultdrill gameday schedule gamedays/plans/monthly.yaml --due --grace 60" \
        in service  # fmt: skip
    # Weekday-last ANDed with a day list has no single line either.
    assert not oncalendar("0 9 */2 * 5L", "UTC").exact
    # The fallback fires on a superset: every real occurrence is among the timer's.
    if shutil.which("systemd-analyze"):
        assert set(next_runs("0 8 LW * *", "UTC", 3, BASE)) <= set(_systemd_elapses(cal.lines, 20))


def test_gd_sched_systemd_units_are_complete_and_verify(tmp_path: Path) -> None:
    service, timer = systemd_units(PLAN, "0 14 * * TUE#1", ROOT, tz="UTC")
    assert "Type=oneshot" in service and f"WorkingDirectory={ROOT}" in service
    assert "Environment=CI=true" in service and "Environment=NO_COLOR=1" in service
    assert (f"ExecStart=/usr/bin/flock -n {ROOT}/.faultdrill/gameday-monthly.lock {ROOT}/.venv/bin/faultdrill "
            "gameday run gamedays/plans/monthly.yaml --plain") in service  # fmt: skip
    assert "ExecCondition" not in service  # converted exactly: no guard
    assert "OnCalendar=Tue *-*-01..07 14:00:00 UTC" in timer and "Unit=faultdrill-gameday-monthly.service" in timer
    assert "WantedBy=timers.target" in timer and "Persistent=false" in timer
    if shutil.which("systemd-analyze") and (ROOT / ".venv" / "bin" / "faultdrill").exists():
        (tmp_path / "faultdrill-gameday-monthly.service").write_text(service)
        (tmp_path / "faultdrill-gameday-monthly.timer").write_text(timer)
        done = subprocess.run(["systemd-analyze", "verify", "faultdrill-gameday-monthly.timer",
                               "faultdrill-gameday-monthly.service"], cwd=tmp_path, capture_output=True, text=True,
                              timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr


def test_gd_sched_crontab_line_runs_the_plan_once_at_a_time(tmp_path: Path) -> None:
    text = crontab_line(PLAN, "0 14 * * 2", ROOT)
    *comments, line = text.strip().splitlines()
    assert all(c.startswith("#") for c in comments)
    assert line.startswith(f"0 14 * * 2 cd {ROOT} && mkdir -p .faultdrill && ")
    assert "CI=true NO_COLOR=1" in line and "flock -n .faultdrill/gameday-monthly.lock" in line
    assert line.endswith(".venv/bin/faultdrill gameday run gamedays/plans/monthly.yaml --plain "
                         ">> .faultdrill/gameday-monthly.log 2>&1")  # fmt: skip
    assert "--due" not in line
    # crontab reads none of the extensions: a superset, guarded by --due.
    ext = crontab_line(PLAN, "0 14 * * TUE#1", ROOT, tz="Europe/Berlin").strip().splitlines()
    assert ext[-1].startswith("0 14 * * 2 cd ") and "gameday schedule gamedays/plans/monthly.yaml --due" in ext[-1]
    assert any("crontab cannot read '0 14 * * TUE#1'" in c for c in ext[:-1])
    assert any("CRON_TZ=Europe/Berlin" in c for c in ext[:-1])
    # cron turns % into newlines: a path with one is escaped.
    odd = tmp_path / "100%"
    assert r"cd " + str(odd).replace("%", r"\%") in crontab_line(PLAN, "0 1 * * *", odd)


def _cronjob(text: str) -> dict[str, Any]:
    doc = yaml.safe_load(text)
    assert isinstance(doc, dict)
    return doc


def test_gd_sched_kubernetes_cronjob_is_a_valid_batch_v1_cronjob() -> None:
    text = kubernetes_cronjob(PLAN, "0 14 * * 2", "Europe/Berlin", image="registry.local/faultdrill:0.1",
                              namespace="chaos")  # fmt: skip
    doc = _cronjob(text)
    assert (doc["apiVersion"], doc["kind"]) == ("batch/v1", "CronJob")
    assert doc["metadata"]["name"] == "faultdrill-gameday-monthly" and doc["metadata"]["namespace"] == "chaos"
    spec = doc["spec"]
    assert spec["schedule"] == "0 14 * * 2" and spec["timeZone"] == "Europe/Berlin"
    assert spec["concurrencyPolicy"] == "Forbid"
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["serviceAccountName"] == "faultdrill-gameday"
    [c] = pod["containers"]
    assert c["image"] == "registry.local/faultdrill:0.1"
    assert c["command"] == ["faultdrill", "gameday", "run", "gamedays/plans/monthly.yaml", "--plain"]
    assert {"name": "CI", "value": "true"} in c["env"]
    assert "&id" not in text  # no YAML anchors: kubectl diff and humans read it plainly
    kv = importlib.import_module("kubernetes_validate")  # a dev dependency: required
    kv.validate(doc, "1.30.0", strict=True)


def test_gd_sched_kubernetes_cronjob_guards_an_extension_and_rejects_bad_input() -> None:
    doc = _cronjob(kubernetes_cronjob(PLAN, "0 14 * * TUE#1", "UTC"))
    assert doc["spec"]["schedule"] == "0 14 * * 2"  # Kubernetes reads no '#'
    [c] = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert c["command"][:2] == ["/bin/sh", "-c"]
    assert c["command"][2].startswith("faultdrill gameday schedule gamedays/plans/monthly.yaml --due --grace 900 "
                                      "|| exit 0; exec faultdrill gameday run")  # fmt: skip
    assert _cronjob(kubernetes_cronjob(PLAN, "0 10 * * 7", "UTC"))["spec"]["schedule"] == "0 10 * * 0"
    with pytest.raises(ConfigError, match="unknown time zone"):
        kubernetes_cronjob(PLAN, "0 10 * * 1", "Mars/Olympus")
    kv = importlib.import_module("kubernetes_validate")  # a dev dependency: required
    kv.validate(doc, "1.30.0", strict=True)


def _plan(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "plan.yaml"
    path.write_text(body)
    return path


def test_gd_sched_plan_schedule_is_read_and_checked(tmp_path: Path) -> None:
    ok = load_plan_schedule(_plan(tmp_path, 'title: Monthly\nschedule: {cron: "0 10 * * MON#1", timezone: UTC}\n'))
    assert (ok.title, ok.cron, ok.timezone) == ("Monthly", "0 10 * * MON#1", "UTC")
    assert load_plan_schedule(_plan(tmp_path, "schedule: '@daily'\n")).timezone == "UTC"
    with pytest.raises(ConfigError, match=r"plan.yaml: schedule: the plan has no schedule"):
        load_plan_schedule(_plan(tmp_path, "title: x\n"))
    with pytest.raises(ConfigError, match=r"plan.yaml:3: schedule.cron: hour field '25'") as info:
        load_plan_schedule(_plan(tmp_path, 'title: x\n\nschedule: {cron: "0 25 * * 1"}\n'))
    assert info.value.line == 3
    with pytest.raises(ConfigError, match=r"schedule.timezon: unknown key 'timezon'") as info:
        load_plan_schedule(_plan(tmp_path, 'schedule: {cron: "0 1 * * 1", timezon: UTC}\n'))
    assert info.value.suggestion == "timezone"
    with pytest.raises(ConfigError, match=r"plan.yaml:2:1: not valid YAML"):
        load_plan_schedule(_plan(tmp_path, "schedule: {cron: [\n"))


def test_gd_sched_command_text_has_every_section() -> None:
    text = schedule_command("0 14 1-7 * 2", "Monthly inference game day", PLAN, 3, tz="Europe/Berlin",
                            workdir=ROOT, now=BASE)  # fmt: skip
    assert text.startswith(f"# Monthly inference game day — {PLAN}")
    assert "## Next 3 occurrence(s) of '0 14 1-7 * 2' (Europe/Berlin)" in text
    assert "Sat 2027-01-02 13:00 UTC   Sat 2027-01-02 14:00 Europe/Berlin" in text
    assert "for the first TUE of the month write '0 14 * * TUE#1'" in text
    for head in ("## crontab", "## systemd: /etc/systemd/system/faultdrill-gameday-monthly.service",
                 "## systemd: /etc/systemd/system/faultdrill-gameday-monthly.timer", "## Kubernetes CronJob"):
        assert head in text
    manifest = text.split("## Kubernetes CronJob (kubectl apply -f -)\n", 1)[1]
    assert _cronjob(manifest)["spec"]["timeZone"] == "Europe/Berlin"


def test_gd_sched_cli_prints_sections_and_answers_due(tmp_path: Path) -> None:
    app = typer.Typer()
    app.command("schedule")(gameday_schedule_command)
    app.command("noop")(lambda: None)  # a group, as under `faultdrill gameday`
    runner = CliRunner()
    plan = _plan(tmp_path, 'title: Weekly\nschedule: {cron: "0 10 * * MON", timezone: UTC}\n')
    out = runner.invoke(app, ["schedule", str(plan), "--count", "2", "--workdir", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert "# Weekly — " in out.output and "## Next 2 occurrence(s)" in out.output
    assert len(re.findall(r"^  Mon \d{4}-\d\d-\d\d 10:00 UTC", out.output, flags=re.M)) == 2
    assert f"cd {tmp_path} && " in out.output and "OnCalendar=Mon *-*-* 10:00:00 UTC" in out.output
    every_minute = _plan(tmp_path, 'schedule: "* * * * *"\n')
    due = runner.invoke(app, ["schedule", str(every_minute), "--due"])
    assert due.exit_code == 0 and "due" in due.output
    never_now = _plan(tmp_path, 'schedule: "0 0 29 2 *"\n')  # midnight on 29 February
    if not (datetime.now(UTC).month == 2 and datetime.now(UTC).day == 29):
        assert runner.invoke(app, ["schedule", str(never_now), "--due"]).exit_code == 1
    bad = runner.invoke(app, ["schedule", str(_plan(tmp_path, 'schedule: "0 10 * * MONDAY"\n'))])
    assert isinstance(bad.exception, ConfigError) and "did you mean 'MON'?" in str(bad.exception)
