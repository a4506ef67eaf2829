"""``faultdrill run``: one experiment, with a live view, a journal and an exit code."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["run_command"]


def run_command(
    file: Annotated[Path, typer.Argument(help="Experiment YAML (see experiments/catalog/).")],
    out: Annotated[Path, typer.Option("--out", help="Where run directories go.")] = Path("runs"),
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the plan and the exact fault changes; touch nothing.")
    ] = False,
    misconfig: Annotated[
        list[str] | None,
        typer.Option("--misconfig", help="Run against a misconfiguration profile of the target (repeatable)."),
    ] = None,
    plain: Annotated[bool, typer.Option("--plain", help="Plain line output instead of the live view.")] = False,
    no_alerts: Annotated[
        bool,
        typer.Option("--no-alerts", help="No Prometheus/Alertmanager (refused when the spec has alert expectations)."),
    ] = False,
    rules: Annotated[
        Path | None,
        typer.Option("--rules", help="Alert rules to load instead of the spec's (e.g. a candidate rule change)."),
    ] = None,
) -> None:
    """Bring up the target, put it under load, inject faults on schedule, judge, roll back.

    Exit codes: 0 every expectation held, 1 one failed, 2 bad input, 3 halted or interrupted.
    """
    from faultdrill.experiments.engine.run import run_experiment
    from faultdrill.gamedays.launch import GamedayLauncher
    from faultdrill.output_cli import make_console
    from faultdrill.reports import write_all

    result = run_experiment(file, out=out, dry_run=dry_run, misconfigurations=tuple(misconfig or ()),
                            console=make_console(),  # in a pipe or CI log: paths never broken across lines
                            plain=True if plain else None, no_alerts=no_alerts, rules=rules,
                            runbooks=GamedayLauncher(), reports=write_all)  # fmt: skip
    if result.journal is not None and result.run_dir is not None:
        _record(result.journal, result.run_dir)
    raise typer.Exit(result.exit_code)


def _record(journal: object, run_dir: Path) -> None:
    """Every run goes into the history database (``faultdrill history``); a failure here is only a warning."""
    try:
        from faultdrill.gamedays.history import History, default_history_path

        History(default_history_path()).record_run(journal, run_dir)  # type: ignore[arg-type]
    except Exception as exc:
        typer.echo(f"faultdrill: warning: run not recorded in the history ({type(exc).__name__}: {exc})", err=True)
