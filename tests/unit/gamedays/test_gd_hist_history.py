"""Run history: three runs show a trend and flag the regression of the third; idempotent,
versioned, safe for two writers; the CLI table and --json; the real smoke journal."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from faultdrill.experiments.journal import EXIT_CODES, Environment, Journal
from faultdrill.experiments.journal.timeline import Timeline
from faultdrill.faults.errors import ConfigError
from faultdrill.gamedays.history import SCHEMA_VERSION, History, default_history_path, regressions_between
from faultdrill.reports import RunView, load_journal

SMOKE = Path(__file__).resolve().parents[2] / "fixtures" / "reports" / "smoke_journal.json.gz"
DAY = 86_400.0
T0 = 1_800_000_000.0  # 2027-01-15 08:00 UTC

SPEC: dict[str, Any] = {
    "apiVersion": "faultdrill/v1", "kind": "Experiment", "metadata": {"name": "gpu-memory"},
    "steady_state": {"window": 2.0, "slo": {"availability": 0.99}},
    "faults": [{"id": "hog", "type": "gpu_memory_exhaustion", "target": "replica-0", "at": 5.0, "duration": 10.0}],
}  # fmt: skip

VERDICTS = ("readiness of replica-0 becomes false within 3 s after hog.start",
            "alert InferenceGPUMemoryPressure fires within 30 s after hog.start")  # fmt: skip


def environment(device: str = "cpu", emulated: bool = True) -> Environment:
    return Environment(device=device, emulated=emulated, device_name=device, faultdrill="0.1.0", python="3.11",
                       platform="Linux", host="ci", time_scale=1 / 60)  # fmt: skip


def make_journal(n: int, *, name: str = "gpu-memory", mttd: float | None = 2.0, mttr: float | None = 5.0,
                 failed: tuple[str, ...] = (), step_s: float = 3.0, errors_during_fault: int = 0,
                 outcome: str | None = None) -> Journal:  # fmt: skip
    """Run ``n`` of a scenario, a day after run ``n - 1``: 10 req/s for 20 s, a fault 5–15 s, two runbook steps."""
    tl = Timeline(start=0.0, clock=lambda: 0.0)
    tl.add("phase", "run", t=0.0, phase="steady")
    for i in range(200):
        t = i / 10
        bad = 5.0 <= t < 15.0 and i % 100 < errors_during_fault
        tl.add("request", "load", t=t, ok=not bad, status=503 if bad else 200, latency_s=0.05, name="/infer")
    tl.add("fault", "hog", t=5.0, event="start", fault="gpu_memory_exhaustion", mode="in_process",
           target="replica-0", emulated=True)  # fmt: skip
    tl.add("fault", "hog", t=15.0, event="end", fault="gpu_memory_exhaustion")
    book = "gamedays/runbooks/gpu-memory.md"
    tl.add("runbook", book, t=7.0, step=1, title="find the hog", status="running")
    tl.add("runbook", book, t=8.0, step=1, title="find the hog", status="done", duration_s=1.0)
    tl.add("runbook", book, t=8.0, step=2, title="restart replica-0", status="running")
    tl.add("runbook", book, t=8.0 + step_s, step=2, title="restart replica-0", status="done", duration_s=step_s)
    verdicts = [{"name": v, "passed": v not in failed, "expected": v, "observed": "…", "evidence": [],
                 "measured": {}, "window": [5.0, 8.0]} for v in VERDICTS]  # fmt: skip
    faults = {"hog": {"type": "gpu_memory_exhaustion", "target": "replica-0", "start_s": 5.0, "end_s": 15.0,
                      "mttd_s": mttd, "mttr_s": mttr, "first_signal_s": 0.2, "detected_by": "InferenceCUDAOOM",
                      "receiver": "chat"}}  # fmt: skip
    outcome = outcome or ("failed" if failed else "passed")
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(T0 + n * DAY))
    journal = Journal(run_id=f"{stamp}-{name[:4]}{n:02d}", name=name,
                      spec={**SPEC, "metadata": {"name": name}}, environment=environment(),
                      started_at=T0 + n * DAY)  # fmt: skip
    journal.finish(tl, verdicts=verdicts, outcome=outcome, faults=faults)  # type: ignore[arg-type]
    journal.ended_at = journal.started_at + 20.0
    assert journal.exit_code == EXIT_CODES[outcome]
    return journal


def write_run(journal: Journal, root: Path) -> Path:
    run_dir = root / journal.run_id
    journal.write(run_dir)
    return run_dir


def three_runs() -> list[Journal]:
    """Better, then worse: run 2 detects and recovers faster; run 3 fails a verdict, is slower, scores lower."""
    return [make_journal(1, mttd=2.0, mttr=5.0, step_s=3.0),
            make_journal(2, mttd=1.5, mttr=4.0, step_s=2.5),
            make_journal(3, mttd=4.0, mttr=9.0, step_s=6.0, failed=(VERDICTS[1],), errors_during_fault=60)]  # fmt: skip


@pytest.fixture
def db(tmp_path: Path) -> History:
    return History(tmp_path / "h" / "history.sqlite")


def test_gd_hist_three_runs_show_a_trend_and_flag_the_third(db: History, tmp_path: Path) -> None:
    for j in three_runs():
        db.record_run(j, write_run(j, tmp_path / "runs"))
    [trend] = db.trends()
    assert trend.scenario == "gpu-memory"
    assert [r.run_id[-6:] for r in trend.runs] == ["gpu-01", "gpu-02", "gpu-03"]
    assert [r.outcome for r in trend.runs] == ["passed", "passed", "failed"]
    assert [r.mttd_s for r in trend.runs] == [{"gpu_memory_exhaustion": v} for v in (2.0, 1.5, 4.0)]
    assert [r.mttr_s["gpu_memory_exhaustion"] for r in trend.runs] == [5.0, 4.0, 9.0]
    assert [[(s.step, s.title, s.status, s.duration_s) for s in r.steps] for r in trend.runs][1] == [
        ("1", "find the hog", "done", 1.0), ("2", "restart replica-0", "done", 2.5)]  # fmt: skip
    assert trend.runs[2].slowest_step is not None and trend.runs[2].slowest_step.duration_s == 6.0
    # The score is the reports' own, for every run.
    scores = [r.score for r in trend.runs]
    assert scores == [RunView.of(j).score.value for j in three_runs()]
    assert scores[0] is not None and scores[1] is not None and scores[2] is not None
    assert scores[1] >= scores[0] and scores[2] < scores[1] - 5
    assert trend.regressions[:2] == ((), ())
    regs = trend.latest_regressions
    assert regs == trend.regressions[2] and len(regs) == 6, regs
    assert regs[0] == "outcome failed, was passed"
    assert regs[1] == f"expectation newly failed: {VERDICTS[1]}"
    assert regs[2].startswith("MTTD gpu_memory_exhaustion: 4.0 s, was 1.5 s")
    assert regs[3].startswith("MTTR gpu_memory_exhaustion: 9.0 s, was 4.0 s")
    assert regs[4].startswith(f"score {scores[2]}, was {scores[1]}")
    assert regs[5] == "runbook gpu-memory.md step 2 (restart replica-0): 6.0 s, was 2.5 s (+140 %)"
    assert db.regressions() == {"gpu-memory": list(regs)}
    # limit: the oldest shown run is still compared with the one before it.
    [last_two] = db.trends(limit=2)
    assert [r.run_id for r in last_two.runs] == [r.run_id for r in trend.runs[1:]]
    assert last_two.regressions == trend.regressions[1:]


def test_gd_hist_thresholds_leave_small_changes_alone(tmp_path: Path) -> None:
    db = History(tmp_path / "h.sqlite")
    # +0.4 s MTTD (below 0.5 s), +20 % MTTR exactly (not more), step +40 %: no regression.
    for j in (make_journal(1, mttd=1.0, mttr=10.0, step_s=1.0), make_journal(2, mttd=1.4, mttr=12.0, step_s=1.4)):
        db.record_run(j, tmp_path)
    assert db.regressions() == {"gpu-memory": []}
    # Never detected, where the previous run was: that is a regression however the times compare.
    db.record_run(make_journal(3, mttd=None, mttr=12.0, step_s=1.4), tmp_path)
    regs = db.regressions()["gpu-memory"]
    assert regs[0] == "MTTD gpu_memory_exhaustion: never detected (previous run: 1.4 s)"
    assert regs[1:] == ["score 82, was 96 (-14, limit -5)"]  # detection scores 0 for it


def test_gd_hist_recording_twice_is_a_no_op(db: History, tmp_path: Path) -> None:
    j = make_journal(1)
    first = db.record_run(j, tmp_path)
    assert db.record_run(j, tmp_path) == first
    assert db.record_run(j, tmp_path, gameday="monthly") == first  # the run_id decides, not the grouping
    with sqlite3.connect(db.path) as conn:
        counts = [conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                  for t in ("runs", "faults", "verdicts", "runbook_steps")]  # fmt: skip
    assert counts == [1, 1, 2, 2]


def test_gd_hist_schema_is_versioned_in_wal_mode_and_refuses_a_newer_one(db: History, tmp_path: Path) -> None:
    assert db.schema_version() == SCHEMA_VERSION == 1
    with sqlite3.connect(db.path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"runs", "faults", "verdicts", "runbook_steps"}
    newer = tmp_path / "newer.sqlite"
    with sqlite3.connect(newer) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(ConfigError, match=r"newer.sqlite: history schema version 2 is newer than this faultdrill"):
        History(newer).record_run(make_journal(1), tmp_path)


def test_gd_hist_game_day_scenarios_group_apart_from_plain_runs(db: History, tmp_path: Path) -> None:
    db.record_run(make_journal(1), tmp_path)
    db.record_run(make_journal(2, name="oom"), tmp_path, gameday="monthly", scenario="oom-kill")
    assert db.scenarios() == ["gpu-memory", "monthly/oom-kill"]
    [t] = db.trends("monthly/oom-kill")
    assert t.runs[0].gameday == "monthly" and t.runs[0].experiment == "oom"
    assert History(tmp_path / "none.sqlite").trends() == [] and not (tmp_path / "none.sqlite").exists()


def test_gd_hist_default_path_env_overrides() -> None:
    cwd = Path("/somewhere")
    assert default_history_path({}, cwd) == cwd / ".faultdrill" / "history.sqlite"
    assert default_history_path({"FAULTDRILL_HOME": "/var/fd"}, cwd) == Path("/var/fd/history.sqlite")
    both = {"FAULTDRILL_HOME": "/var/fd", "FAULTDRILL_HISTORY": "/tmp/h.db"}
    assert default_history_path(both, cwd) == Path("/tmp/h.db")


def test_gd_hist_two_processes_record_at_once_without_corruption(tmp_path: Path) -> None:
    dirs = [write_run(make_journal(i % 10, name=f"s{i // 10}"), tmp_path / "runs") for i in range(20)]
    db = tmp_path / "fresh" / "history.sqlite"  # both start on a database that does not exist yet
    procs = [subprocess.Popen([sys.executable, "-m", "faultdrill", "history", "record", *map(str, part), "--db",
                               str(db)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for part in (dirs[::2], dirs[1::2])]  # fmt: skip
    outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sum(o.count("recorded 2027") for o, _ in outs) == 20
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 20
        assert conn.execute("SELECT COUNT(*) FROM runbook_steps").fetchone()[0] == 40
    assert [len(t.runs) for t in History(db).trends()] == [10, 10]


def test_gd_hist_records_the_real_smoke_journal(db: History) -> None:
    journal = load_journal(SMOKE)
    db.record_run(journal, SMOKE.parent)
    [trend] = db.trends()
    [run] = trend.runs
    assert (trend.scenario, run.outcome, run.passed, run.expectations) == ("smoke", "passed", 11, 11)
    assert run.score == RunView.of(journal).score.value is not None
    assert run.device_label == "cpu (emulated)" and run.emulated and run.time_scale == pytest.approx(1 / 60)
    assert set(run.mttd_s) == {"gpu_memory_exhaustion", "network_partition", "cert_expiry", "oom_kill",
                               "dependency_outage", "model_load_failure"}  # fmt: skip
    assert run.mttd_s["network_partition"] == pytest.approx(11.050041)
    with sqlite3.connect(db.path) as conn:
        row = conn.execute("SELECT detected_by, receiver, first_signal_s FROM faults WHERE fault_id = 'hog'").fetchone()
    assert row == ("InferenceCUDAOOM", "chat", pytest.approx(0.006422))


def test_gd_hist_regressions_between_is_pure(tmp_path: Path) -> None:
    db = History(tmp_path / "h.sqlite")
    for j in three_runs():
        db.record_run(j, tmp_path)
    a, _, c = db.trends()[0].runs
    assert regressions_between(a, a) == []
    assert len(regressions_between(a, c)) == 6


# -- the CLI -----------------------------------------------------------------------------------
runner = CliRunner()


def _cli(*args: str) -> Any:
    from faultdrill.cli import app

    return runner.invoke(app, ["history", *args], env={"COLUMNS": "250"})


def test_gd_hist_cli_shows_the_trend_and_the_regression(tmp_path: Path) -> None:
    db = tmp_path / "h.sqlite"
    empty = _cli("--db", str(db))
    assert empty.exit_code == 0 and "No runs recorded" in empty.output and "history record RUN_DIR" in empty.output
    dirs = [write_run(j, tmp_path / "runs") for j in three_runs()]
    rec = _cli("record", *map(str, dirs), "--db", str(db))
    assert rec.exit_code == 0 and rec.output.count("recorded 2027") == 3, rec.output
    assert "already recorded" in _cli("record", str(dirs[0]), "--db", str(db)).output
    out = _cli("--db", str(db))
    assert out.exit_code == 0, out.output
    text = out.output
    assert "gpu-memory — last 3 run(s)" in text
    for col in ("outcome", "score", "MTTD (worst)", "MTTR (worst)", "slowest runbook step", "Δ vs previous"):
        assert col in text
    assert "first run" in text and "2.0 s (gpu_memory_exhaustion)" in text and "restart replica-0 6.0 s" in text
    assert "MTTD +2.5 s" in text and "MTTR +5.0 s" in text
    scores = [RunView.of(j).score.value for j in three_runs()]
    assert all(s is not None for s in scores)
    bars = "".join("▁▂▃▄▅▆▇█"[(s or 0) * 8 // 101] for s in scores)
    assert bars in text  # the trend column of the third run: all three scores as bars
    assert text.count("REGRESSION") == 2  # the flag in the table, and the heading of the reasons
    assert f"expectation newly failed: {VERDICTS[1]}" in text
    assert "runbook gpu-memory.md step 2 (restart replica-0): 6.0 s, was 2.5 s" in text


def test_gd_hist_cli_json_parses_and_filters(tmp_path: Path) -> None:
    db = tmp_path / "h.sqlite"
    h = History(db)
    for j in [*three_runs(), make_journal(1, name="oom")]:
        h.record_run(j, tmp_path)
    out = _cli("--db", str(db), "--json")
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    assert doc["schema_version"] == SCHEMA_VERSION and doc["db"] == str(db)
    assert [s["scenario"] for s in doc["scenarios"]] == ["gpu-memory", "oom"]
    gpu = doc["scenarios"][0]
    assert [r["outcome"] for r in gpu["runs"]] == ["passed", "passed", "failed"]
    assert gpu["runs"][2]["regressions"] == gpu["latest_regressions"] and len(gpu["latest_regressions"]) == 6
    assert gpu["runs"][0]["steps"][1]["title"] == "restart replica-0"
    one = json.loads(_cli("--db", str(db), "--json", "--scenario", "gpu-memory", "--limit", "1").output)
    assert [len(s["runs"]) for s in one["scenarios"]] == [1]
    bad = _cli("--db", str(db), "--scenario", "gpu-memroy")
    assert isinstance(bad.exception, ConfigError)
    assert "did you mean 'gpu-memory'?" in str(bad.exception)


def test_gd_hist_cli_record_of_a_missing_run_is_exit_2(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "faultdrill", "history", "record", str(tmp_path / "nope"), "--db",
                           str(tmp_path / "h.sqlite")], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "faultdrill: error:" in done.stderr and "nope" in done.stderr and "Traceback" not in done.stderr
