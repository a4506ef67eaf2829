"""``faultdrill gameday …``: validate a plan, run it (automated or guided), show its schedule."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from faultdrill.schedule_cli import gameday_schedule_command

__all__ = ["gameday_app"]

gameday_app = typer.Typer(help="Game days: validate a plan, run it, schedule it.", no_args_is_help=True)
gameday_app.command("schedule")(gameday_schedule_command)

PlanArg = Annotated[Path, typer.Argument(help="A game-day plan (see gamedays/plans/).")]


@gameday_app.command("validate")
def gameday_validate(plans: Annotated[list[Path], typer.Argument(help="Plan files.")]) -> None:
    """Check plans and every scenario in them: located errors, exit 2; nothing is started."""
    from gamedays.plan import check_plan

    failed = False
    for path in plans:
        loaded, errors = check_plan(path)
        for e in errors:
            typer.echo(f"faultdrill: error: {e}", err=True)
        if loaded is not None:
            p = loaded.plan
            faults = sum(len(spec.faults) for _, spec, _ in loaded.scenarios)
            typer.echo(f"ok {path} ({p.metadata.title}: {len(loaded.scenarios)} scenarios, {faults} faults, "
                       f"commander {p.roles.commander.name})")  # fmt: skip
            for note in loaded.notes:
                typer.echo(f"  note: {note}")
        failed = failed or bool(errors)
    raise typer.Exit(2 if failed else 0)


@gameday_app.command("run")
def gameday_run(
    plan: PlanArg,
    out: Annotated[Path, typer.Option("--out", help="Where the game-day directory goes.")] = Path("runs"),
    guided: Annotated[bool, typer.Option("--guided", help="People run the runbooks, step by step.")] = False,
    plain: Annotated[bool, typer.Option("--plain", help="Plain line output instead of the live view.")] = False,
    no_alerts: Annotated[bool, typer.Option("--no-alerts", help="No Prometheus/Alertmanager.")] = False,
    misconfig: Annotated[
        list[str] | None,
        typer.Option("--misconfig", help="Run every scenario against a misconfiguration profile (repeatable)."),
    ] = None,
) -> None:
    """Every scenario on one shared system; exit 0 all passed, 1 one failed, 3 halted."""
    from gamedays.gameday_run import run_gameday

    result = run_gameday(plan, out=out, guided=guided, plain=True if plain else None, no_alerts=no_alerts,
                         misconfigurations=tuple(misconfig or ()))  # fmt: skip
    raise typer.Exit(result.exit_code)
