"""``faultdrill history``: trends per scenario from the run history, and regressions flagged.

::

    faultdrill history [--scenario NAME] [--limit N] [--json] [--db PATH]
    faultdrill history record RUN_DIR… [--gameday NAME] [--scenario NAME] [--db PATH] [--json]

The database is ``--db``, else ``$FAULTDRILL_HISTORY``, else ``$FAULTDRILL_HOME/history.sqlite``,
else ``.faultdrill/history.sqlite`` (see :mod:`gamedays.history`). The lead registers it::

    app.add_typer(history_app, name="history")

Bad input (no journal in a run directory, an unknown scenario, a database from a newer
faultdrill) raises :class:`~faults.errors.ConfigError`: one line, exit 2.
"""

from __future__ import annotations

import difflib
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from faultdrill.output_cli import JsonOpt, emit_json, make_console, make_table, print_table, row

if TYPE_CHECKING:
    from faultdrill.gamedays.history import History, RunPoint, Trend

__all__ = ["history_app", "sparkline"]

history_app = typer.Typer(help="Run history: trends per scenario, regressions against the previous run.",
                          invoke_without_command=True, no_args_is_help=False)  # fmt: skip

DbOpt = Annotated[
    Path | None,
    typer.Option(
        "--db",
        help="History database (default: $FAULTDRILL_HISTORY, $FAULTDRILL_HOME/history.sqlite "
        "or .faultdrill/history.sqlite).",
    ),
]
BARS = "▁▂▃▄▅▆▇█"


def sparkline(scores: list[int | None]) -> str:
    """Scores on the absolute 0–100 scale as bars (``·`` for a run that was not scored)."""
    return "".join("·" if s is None else BARS[min(len(BARS) - 1, max(0, s) * len(BARS) // 101)] for s in scores)


def _history(db: Path | None) -> History:
    from faultdrill.gamedays.history import History, default_history_path

    return History(db or default_history_path())


def _secs(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


def _worst(times: dict[str, float | None]) -> tuple[str, float | None, bool]:
    """(display, worst seconds, any never) over the fault types of a run."""
    if not times:
        return "-", None, False
    if any(v is None for v in times.values()):
        never = sorted(k for k, v in times.items() if v is None)
        return f"never ({', '.join(never)})", None, True
    ftype, value = max(times.items(), key=lambda kv: kv[1] or 0.0)
    return f"{value:.1f} s ({ftype})", value, False


def _delta(prev: RunPoint | None, cur: RunPoint) -> str:
    if prev is None:
        return "first run"
    parts = []
    if prev.score is not None and cur.score is not None:
        parts.append(f"score {cur.score - prev.score:+d}")
    for label, a, b in (("MTTD", prev.mttd_s, cur.mttd_s), ("MTTR", prev.mttr_s, cur.mttr_s)):
        _, pa, pn = _worst(a)
        _, cb, cn = _worst(b)
        if pa is not None and cb is not None:
            parts.append(f"{label} {cb - pa:+.1f} s")
        elif cn and not pn and a:
            parts.append(f"{label} never")
    return ", ".join(parts) or "-"


def _print_trends(trends: list[Trend], db: Path) -> None:
    from rich.markup import escape
    from rich.text import Text

    console = make_console()
    for trend in trends:
        table = make_table("time (UTC)", "outcome", "score", "MTTD (worst)", "MTTR (worst)", "slowest runbook step",
                           "Δ vs previous", "trend", "flags", keys={"time (UTC)", "trend"},
                           title=f"{trend.scenario} — last {len(trend.runs)} run(s)", title_justify="left")  # fmt: skip
        scores = [r.score for r in trend.runs]
        for i, (run, regs) in enumerate(zip(trend.runs, trend.regressions, strict=True)):
            step = run.slowest_step
            colour = {"passed": "green", "failed": "red", "halted": "yellow"}.get(run.outcome or "", "magenta")
            row(
                table,
                time.strftime("%Y-%m-%d %H:%M", time.gmtime(run.started_at)),
                Text(run.outcome or "unfinished", style=colour),
                "n/a" if run.score is None else str(run.score),
                _worst(run.mttd_s)[0], _worst(run.mttr_s)[0],
                "-" if step is None else f"{step.title or step.step} {_secs(step.duration_s)}",
                _delta(trend.runs[i - 1] if i else None, run),
                sparkline(scores[max(0, i - 9): i + 1]),
                Text("REGRESSION", style="bold red") if regs else "",
            )  # fmt: skip
        print_table(console, table)
        for run, regs in zip(trend.runs, trend.regressions, strict=True):
            if regs:
                console.print(f"[bold red]REGRESSION[/] in {escape(run.run_id)} ({escape(run.device_label)}) against "
                              "the run before:", highlight=False)  # fmt: skip
                for line in regs:
                    console.print(f"  - {line}", highlight=False, markup=False)
        console.print()
    console.print(f"history: {db}", highlight=False, markup=False)


@history_app.callback()
def history_command(
    ctx: typer.Context,
    scenario: Annotated[
        str | None, typer.Option("--scenario", help="Only this scenario (experiment name, or GAMEDAY/SCENARIO).")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="The last N runs of each scenario.")] = 20,
    as_json: JsonOpt = False,
    db: DbOpt = None,
) -> None:
    """Trends per scenario: outcome, score, MTTD, MTTR, runbook step times; REGRESSION flags."""
    if ctx.invoked_subcommand is not None:
        return
    from faultdrill.faults.errors import ConfigError
    from faultdrill.gamedays.history import SCHEMA_VERSION

    history = _history(db)
    known = history.scenarios()
    if scenario is not None and known and scenario not in known:
        close = difflib.get_close_matches(scenario, known, n=1)
        raise ConfigError(f"no runs of scenario {scenario!r} in {history.path}", field="--scenario",
                          expected="one of " + ", ".join(known), suggestion=close[0] if close else None)  # fmt: skip
    trends = history.trends(scenario, limit=limit)
    if as_json:
        doc = {"db": str(history.path), "schema_version": SCHEMA_VERSION, "scenarios": [t.to_json() for t in trends]}
        emit_json(doc)
        return
    if not trends:
        typer.echo(f"No runs recorded in {history.path} yet.\n"
                   "Every `faultdrill run` and `faultdrill gameday run` records its run there; import an existing\n"
                   "run directory with `faultdrill history record RUN_DIR`.")  # fmt: skip
        return
    _print_trends(trends, history.path)


def _journal_dirs(run_dir: Path) -> list[Path]:
    """A run directory, or (a game day's) directory whose subdirectories are run directories."""
    if (run_dir / "journal.json").is_file() or run_dir.is_file() or not run_dir.is_dir():
        return [run_dir]
    found = sorted(p.parent for p in run_dir.glob("*/journal.json"))
    return found or [run_dir]


@dataclass(frozen=True)
class Recorded:
    """One run ``history record`` imported (``recorded`` false: it was already there, left as it is)."""

    run_id: str
    name: str
    outcome: str | None
    run_dir: str
    recorded: bool


@history_app.command("record")
def history_record(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories (or their journal.json).")],
    gameday: Annotated[str | None, typer.Option("--gameday", help="Record as scenarios of this game day.")] = None,
    scenario: Annotated[
        str | None, typer.Option("--scenario", help="Scenario name (default: the experiment's).")
    ] = None,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Import existing runs into the history (a run already there is left as it is)."""
    from faultdrill.reports import load_journal

    history = _history(db)
    recorded: list[Recorded] = []
    for given in run_dirs:
        for run_dir in _journal_dirs(given):
            journal = load_journal(run_dir)
            folder = run_dir if run_dir.is_dir() else run_dir.parent
            fresh = not history.has_run(journal.run_id)
            history.record_run(journal, folder, gameday=gameday, scenario=scenario)
            done = Recorded(run_id=journal.run_id, name=journal.name, outcome=journal.outcome, run_dir=str(folder),
                            recorded=fresh)  # fmt: skip
            recorded.append(done)
            if not as_json:
                typer.echo(f"{'recorded' if done.recorded else 'already recorded'} {done.run_id} "
                           f"({done.name}, {done.outcome or 'unfinished'}) in {history.path}")  # fmt: skip
    if as_json:
        emit_json({"db": str(history.path), "runs": [asdict(r) for r in recorded]})

