"""Run history: every run (experiment or game-day scenario) in one embedded SQLite database.

One row per run, with its faults (MTTD, MTTR, first signal, which alert detected it), its
verdicts, its runbook steps (status, seconds) and its resilience score (the one the reports
show: :func:`reports.resilience_score` through :class:`reports.RunView`). ``trends`` reads it
back per scenario, oldest run first, and flags what got worse than the previous run.

The database is ``$FAULTDRILL_HISTORY`` if set, else ``$FAULTDRILL_HOME/history.sqlite``, else
``.faultdrill/history.sqlite`` under the current directory. It runs in WAL mode, writes in
``BEGIN IMMEDIATE`` transactions with a busy timeout, so two processes (a game day and a CI
run) can record at the same time; the schema carries its version in ``PRAGMA user_version``
and is migrated forward only.

Example::

    history = History(default_history_path())
    history.record_run(Journal.read(run_dir / "journal.json"), run_dir)   # again: a no-op
    for trend in history.trends(limit=10):
        print(trend.scenario, [r.score for r in trend.runs], trend.latest_regressions)
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from faultdrill.experiments.journal import Journal
from faultdrill.faults.errors import ConfigError

__all__ = [
    "SCHEMA_VERSION",
    "THRESHOLDS",
    "History",
    "RunPoint",
    "StepTime",
    "Thresholds",
    "Trend",
    "default_history_path",
    "regressions_between",
    "scenario_key",
]

_V1 = """
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL UNIQUE,
    scenario TEXT NOT NULL,
    experiment TEXT NOT NULL,
    gameday TEXT,
    run_dir TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    duration_s REAL,
    outcome TEXT,
    exit_code INTEGER,
    reason TEXT NOT NULL DEFAULT '',
    score INTEGER,
    score_formula TEXT NOT NULL DEFAULT '',
    expectations INTEGER NOT NULL DEFAULT 0,
    passed INTEGER NOT NULL DEFAULT 0,
    device TEXT NOT NULL DEFAULT '',
    device_label TEXT NOT NULL DEFAULT '',
    emulated INTEGER NOT NULL DEFAULT 0,
    time_scale REAL NOT NULL DEFAULT 1.0,
    faultdrill_version TEXT NOT NULL DEFAULT '',
    recorded_at REAL NOT NULL
);
CREATE INDEX runs_by_scenario ON runs (scenario, started_at);
CREATE TABLE faults (
    run INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    fault_id TEXT NOT NULL,
    type TEXT NOT NULL,
    target TEXT NOT NULL DEFAULT '',
    mttd_s REAL,
    mttr_s REAL,
    first_signal_s REAL,
    detected_by TEXT,
    receiver TEXT,
    PRIMARY KEY (run, fault_id)
);
CREATE TABLE verdicts (
    run INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    name TEXT NOT NULL,
    passed INTEGER NOT NULL,
    PRIMARY KEY (run, idx)
);
CREATE TABLE runbook_steps (
    run INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    runbook TEXT NOT NULL,
    step TEXT NOT NULL,
    title TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT '',
    duration_s REAL,
    t REAL NOT NULL,
    PRIMARY KEY (run, idx)
);
"""
# Forward-only: MIGRATIONS[n] takes a database from user_version n to n + 1. Append, never edit.
MIGRATIONS: tuple[str, ...] = (_V1,)
SCHEMA_VERSION = len(MIGRATIONS)
BUSY_TIMEOUT_S = 30.0


def default_history_path(env: Mapping[str, str] | None = None, cwd: Path | None = None) -> Path:
    """``$FAULTDRILL_HISTORY``, else ``$FAULTDRILL_HOME/history.sqlite``, else ``./.faultdrill/history.sqlite``."""
    env = os.environ if env is None else env
    if env.get("FAULTDRILL_HISTORY"):
        return Path(env["FAULTDRILL_HISTORY"])
    if env.get("FAULTDRILL_HOME"):
        return Path(env["FAULTDRILL_HOME"]) / "history.sqlite"
    return (cwd or Path.cwd()) / ".faultdrill" / "history.sqlite"


def scenario_key(name: str, *, gameday: str | None = None, scenario: str | None = None) -> str:
    """What runs are grouped by: the experiment name, or ``gameday/scenario`` for a game day's scenario."""
    base = scenario or name
    return f"{gameday}/{base}" if gameday else base


@dataclass(frozen=True)
class Thresholds:
    """When a run counts as worse than the previous run of its scenario."""

    time_rel: float = 0.20
    """MTTD/MTTR worse by more than this fraction of the previous value …"""
    time_abs_s: float = 0.5
    """… and by more than this many seconds (whichever is larger)."""
    score_points: int = 5
    """Score down by more than this many points."""
    step_rel: float = 0.50
    """A runbook step slower by more than this fraction …"""
    step_abs_s: float = 0.1
    """… and by more than this many seconds (so millisecond steps do not flap)."""


THRESHOLDS = Thresholds()


@dataclass(frozen=True)
class StepTime:
    """One runbook step as it ran: the last status it reached and how long it took."""

    runbook: str
    step: str
    title: str
    status: str
    duration_s: float | None

    @property
    def label(self) -> str:
        return f"{Path(self.runbook).name} step {self.step}" + (f" ({self.title})" if self.title else "")


@dataclass(frozen=True)
class RunPoint:
    """One recorded run, as the trend shows it."""

    run_id: str
    scenario: str
    experiment: str
    gameday: str | None
    run_dir: str
    started_at: float
    duration_s: float | None
    outcome: str | None
    score: int | None
    passed: int
    expectations: int
    device_label: str
    emulated: bool
    time_scale: float
    mttd_s: dict[str, float | None] = field(default_factory=dict)
    """Per fault type, the worst fault of that type (None: one was never detected)."""
    mttr_s: dict[str, float | None] = field(default_factory=dict)
    verdicts: dict[str, bool] = field(default_factory=dict)
    steps: tuple[StepTime, ...] = ()

    @property
    def slowest_step(self) -> StepTime | None:
        timed = [s for s in self.steps if s.duration_s is not None]
        return max(timed, key=lambda s: s.duration_s or 0.0) if timed else None

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["steps"] = [asdict(s) for s in self.steps]
        return doc


@dataclass(frozen=True)
class Trend:
    """A scenario's runs, oldest first, each with what got worse than the run before it."""

    scenario: str
    runs: tuple[RunPoint, ...]
    regressions: tuple[tuple[str, ...], ...]
    """``regressions[i]`` compares ``runs[i]`` with the run before it (empty: nothing got worse)."""

    @property
    def latest_regressions(self) -> tuple[str, ...]:
        return self.regressions[-1] if self.regressions else ()

    def to_json(self) -> dict[str, Any]:
        return {"scenario": self.scenario,
                "runs": [{**r.to_json(), "regressions": list(g)} for r, g in zip(self.runs, self.regressions,
                                                                                   strict=True)],
                "latest_regressions": list(self.latest_regressions)}  # fmt: skip


def _worse_time(prev: float, cur: float, t: Thresholds) -> bool:
    return cur - prev > max(t.time_rel * prev, t.time_abs_s)


def _times(kind: str, prev: Mapping[str, float | None], cur: Mapping[str, float | None], t: Thresholds) -> list[str]:
    out = []
    verb = "detected" if kind == "MTTD" else "recovered"
    for ftype in sorted(prev.keys() & cur.keys()):
        p, c = prev[ftype], cur[ftype]
        if p is not None and c is None:
            out.append(f"{kind} {ftype}: never {verb} (previous run: {p:.1f} s)")
        elif p is not None and c is not None and _worse_time(p, c, t):
            out.append(f"{kind} {ftype}: {c:.1f} s, was {p:.1f} s (+{c - p:.1f} s, limit "
                       f"+{max(t.time_rel * p, t.time_abs_s):.1f} s)")  # fmt: skip
    return out


def regressions_between(prev: RunPoint, cur: RunPoint, thresholds: Thresholds = THRESHOLDS) -> list[str]:
    """What got worse from ``prev`` to ``cur`` (same scenario), one readable line each."""
    t, out = thresholds, []
    if prev.outcome == "passed" and cur.outcome != "passed":
        out.append(f"outcome {cur.outcome or 'unfinished'}, was passed")
    out += [f"expectation newly failed: {name}" for name, ok in cur.verdicts.items()
            if not ok and prev.verdicts.get(name) is True]  # fmt: skip
    out += _times("MTTD", prev.mttd_s, cur.mttd_s, t)
    out += _times("MTTR", prev.mttr_s, cur.mttr_s, t)
    if prev.score is not None and cur.score is not None and prev.score - cur.score > t.score_points:
        out.append(f"score {cur.score}, was {prev.score} ({cur.score - prev.score:+d}, limit -{t.score_points})")
    before = {(s.runbook, s.step): s for s in prev.steps}
    for s in cur.steps:
        p = before.get((s.runbook, s.step))
        if p is None or p.duration_s is None or s.duration_s is None:
            continue
        if s.duration_s > p.duration_s * (1 + t.step_rel) and s.duration_s - p.duration_s > t.step_abs_s:
            pct = (s.duration_s / p.duration_s - 1) * 100 if p.duration_s else float("inf")
            out.append(f"runbook {s.label}: {s.duration_s:.1f} s, was {p.duration_s:.1f} s (+{pct:.0f} %)")
    return out


def _step_times(journal: Journal) -> list[tuple[StepTime, float]]:
    """Runbook events grouped per (runbook, step): last status, last duration_s (or first→last event)."""
    groups: dict[tuple[str, str], list[Any]] = {}
    for e in journal.events:
        if e.kind == "runbook" and e.attrs.get("step") is not None:
            groups.setdefault((e.source, str(e.attrs["step"])), []).append(e)
    out = []
    for (book, step), evs in groups.items():
        durations = [e.attrs["duration_s"] for e in evs if isinstance(e.attrs.get("duration_s"), int | float)]
        duration = float(durations[-1]) if durations else (evs[-1].t - evs[0].t if len(evs) > 1 else None)
        title = next((str(e.attrs["title"]) for e in reversed(evs) if e.attrs.get("title")), "")
        status = next((str(e.attrs["status"]) for e in reversed(evs) if e.attrs.get("status")), "")
        out.append((StepTime(book, step, title, status, duration), evs[0].t))
    return sorted(out, key=lambda x: x[1])


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class History:
    """The run history database at ``path`` (created on first write, migrated forward on open).

    >>> h = History(Path(tmp) / "history.sqlite")                      # doctest: +SKIP
    >>> h.record_run(journal, run_dir), h.record_run(journal, run_dir)  # doctest: +SKIP
    (1, 1)
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    # -- connection and schema -------------------------------------------------------------
    @contextmanager
    def _connect(self, *, write: bool) -> Iterator[sqlite3.Connection]:
        if write:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"cannot create the history directory: {exc.strerror}",
                                  file=str(self.path.parent)) from None  # fmt: skip
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE takes the write lock up front,
        # so two writers queue on the busy timeout instead of failing on a lock upgrade).
        try:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open the history database: {exc}", file=str(self.path)) from None
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA foreign_keys = ON")
            self._migrate(conn)
            yield conn
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"history database error: {exc}", file=str(self.path)) from None
        finally:
            conn.close()

    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ConfigError(
                f"history schema version {version} is newer than this faultdrill knows ({SCHEMA_VERSION}): "
                "upgrade faultdrill or use another --db",
                file=str(self.path),
            )
        if version == SCHEMA_VERSION:
            return
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]  # another process may have migrated
            for step in range(version, SCHEMA_VERSION):
                for stmt in MIGRATIONS[step].split(";"):
                    if stmt.strip():
                        conn.execute(stmt)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def schema_version(self) -> int:
        with self._connect(write=True) as conn:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])

    # -- writing ---------------------------------------------------------------------------
    def record_run(self, journal: Journal, run_dir: Path, *, gameday: str | None = None,
                   scenario: str | None = None) -> int:  # fmt: skip
        """Record one run; returns its row id. Recording the same ``run_id`` again changes nothing."""
        from faultdrill.reports import RunView

        view = RunView.of(journal)
        env = journal.environment
        duration = journal.ended_at - journal.started_at if journal.ended_at else view.duration
        row = dict(
            run_id=journal.run_id, scenario=scenario_key(journal.name, gameday=gameday, scenario=scenario),
            experiment=journal.name, gameday=gameday, run_dir=str(Path(run_dir).resolve()),
            started_at=journal.started_at, ended_at=journal.ended_at, duration_s=duration, outcome=journal.outcome,
            exit_code=journal.exit_code, reason=journal.reason, score=view.score.value,
            score_formula=view.score.formula, expectations=len(view.verdicts), passed=view.passed,
            device=env.device, device_label=env.device_label, emulated=int(env.emulated), time_scale=env.time_scale,
            faultdrill_version=env.faultdrill, recorded_at=time.time(),
        )  # fmt: skip
        with self._connect(write=True) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                found = conn.execute("SELECT id FROM runs WHERE run_id = ?", (journal.run_id,)).fetchone()
                if found is not None:
                    conn.execute("ROLLBACK")
                    return int(found[0])
                cols = ", ".join(row)
                cur = conn.execute(f"INSERT INTO runs ({cols}) VALUES ({', '.join('?' * len(row))})",
                                   tuple(row.values()))  # fmt: skip
                run = int(cur.lastrowid or 0)
                for f in view.faults:
                    s = journal.faults.get(f.id, {})
                    conn.execute("INSERT INTO faults VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                  (run, f.id, f.type, f.target, f.mttd_s, f.mttr_s, _num(s.get("first_signal_s")),
                                   s.get("detected_by") or None, s.get("receiver") or None))  # fmt: skip
                conn.executemany("INSERT INTO verdicts VALUES (?, ?, ?, ?)",
                                 [(run, i, v.name, int(v.passed)) for i, v in enumerate(view.verdicts)])  # fmt: skip
                conn.executemany("INSERT INTO runbook_steps VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                 [(run, i, s.runbook, s.step, s.title, s.status, s.duration_s, t)
                                  for i, (s, t) in enumerate(_step_times(journal))])  # fmt: skip
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return run

    # -- reading ---------------------------------------------------------------------------
    def has_run(self, run_id: str) -> bool:
        if not self.path.exists():
            return False
        with self._connect(write=False) as conn:
            return conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone() is not None

    def scenarios(self) -> list[str]:
        if not self.path.exists():
            return []
        with self._connect(write=False) as conn:
            return [r[0] for r in conn.execute("SELECT DISTINCT scenario FROM runs ORDER BY scenario")]

    def trends(self, scenario: str | None = None, limit: int = 20,
               thresholds: Thresholds = THRESHOLDS) -> list[Trend]:  # fmt: skip
        """Per scenario (all, or one), its last ``limit`` runs oldest first, each compared with the one before."""
        if not self.path.exists():
            return []
        with self._connect(write=False) as conn:
            # limit + 1: the oldest shown run is compared with the one before it too.
            rows = conn.execute(
                "SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY scenario ORDER BY started_at DESC, id DESC)"
                " AS nth FROM runs WHERE ?1 IS NULL OR scenario = ?1) WHERE nth <= ?2"
                " ORDER BY scenario, started_at, id", (scenario, max(1, limit) + 1)).fetchall()  # fmt: skip
            points = self._points(conn, rows)
        by: dict[str, list[tuple[RunPoint, int]]] = {}
        for row, point in zip(rows, points, strict=True):
            by.setdefault(point.scenario, []).append((point, int(row["nth"])))
        out = []
        for name, runs in by.items():
            pts = [p for p, _ in runs]
            regs = [()] + [tuple(regressions_between(a, b, thresholds)) for a, b in itertools.pairwise(pts)]
            keep = [i for i, (_, nth) in enumerate(runs) if nth <= max(1, limit)]
            out.append(Trend(name, tuple(pts[i] for i in keep), tuple(regs[i] for i in keep)))
        return out

    def regressions(self, scenario: str | None = None, thresholds: Thresholds = THRESHOLDS) -> dict[str, list[str]]:
        """Per scenario: what got worse in its latest run compared with the run before it."""
        return {t.scenario: list(t.latest_regressions) for t in self.trends(scenario, limit=1, thresholds=thresholds)}

    def _points(self, conn: sqlite3.Connection, rows: Sequence[sqlite3.Row]) -> list[RunPoint]:
        ids = [int(r["id"]) for r in rows]
        faults: dict[int, list[sqlite3.Row]] = {}
        verdicts: dict[int, dict[str, bool]] = {}
        steps: dict[int, list[StepTime]] = {}
        for chunk in (ids[i : i + 500] for i in range(0, len(ids), 500)):
            marks = ",".join("?" * len(chunk))
            for f in conn.execute(f"SELECT * FROM faults WHERE run IN ({marks})", chunk):
                faults.setdefault(f["run"], []).append(f)
            for v in conn.execute(f"SELECT * FROM verdicts WHERE run IN ({marks}) ORDER BY run, idx", chunk):
                held = verdicts.setdefault(v["run"], {})
                held[v["name"]] = held.get(v["name"], True) and bool(v["passed"])
            for s in conn.execute(f"SELECT * FROM runbook_steps WHERE run IN ({marks}) ORDER BY run, idx", chunk):
                steps.setdefault(s["run"], []).append(
                    StepTime(s["runbook"], s["step"], s["title"], s["status"], s["duration_s"])
                )
        out = []
        for r in rows:
            mttd: dict[str, float | None] = {}
            mttr: dict[str, float | None] = {}
            for f in faults.get(r["id"], []):
                for into, value in ((mttd, f["mttd_s"]), (mttr, f["mttr_s"])):
                    # Worst of the type: a fault never detected/recovered (None) beats any time.
                    seen = f["type"] in into
                    old = into.get(f["type"])
                    into[f["type"]] = None if value is None or (seen and old is None) else max(old or 0.0, value)
            out.append(RunPoint(
                run_id=r["run_id"], scenario=r["scenario"], experiment=r["experiment"], gameday=r["gameday"],
                run_dir=r["run_dir"], started_at=r["started_at"], duration_s=r["duration_s"], outcome=r["outcome"],
                score=r["score"], passed=r["passed"], expectations=r["expectations"], device_label=r["device_label"],
                emulated=bool(r["emulated"]), time_scale=r["time_scale"], mttd_s=mttd, mttr_s=mttr,
                verdicts=verdicts.get(r["id"], {}), steps=tuple(steps.get(r["id"], [])),
            ))  # fmt: skip
        return out
