"""``faultdrill gameday …``: validate a plan, run it (automated or guided), show its schedule."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from faultdrill.output_cli import JsonOpt, emit_json, error_json
from faultdrill.schedule_cli import gameday_schedule_command

if TYPE_CHECKING:
    from faultdrill.faults.errors import ConfigError

__all__ = ["PlanResult", "gameday_app"]

gameday_app = typer.Typer(help="Game days: validate a plan, run it, schedule it.", no_args_is_help=True)
gameday_app.command("schedule")(gameday_schedule_command)

PlanArg = Annotated[Path, typer.Argument(help="A game-day plan (see gamedays/plans/).")]


@dataclass(frozen=True)
class PlanResult:
    """One plan ``gameday validate`` checked: what it holds when it loaded, and every located error."""

    file: str
    valid: bool
    title: str | None = None
    scenarios: tuple[str, ...] = ()
    faults: int | None = None
    commander: str | None = None
    notes: tuple[str, ...] = ()
    errors: tuple[ConfigError, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "valid": self.valid, "title": self.title, "scenarios": list(self.scenarios),
                "faults": self.faults, "commander": self.commander, "notes": list(self.notes),
                "errors": [error_json(e) for e in self.errors]}  # fmt: skip


def _plan_result(path: Path) -> PlanResult:
    from faultdrill.gamedays.plan import check_plan

    loaded, errors = check_plan(path)
    if loaded is None:
        return PlanResult(str(path), False, errors=tuple(errors))
    p = loaded.plan
    return PlanResult(str(path), not errors, title=p.metadata.title, scenarios=tuple(n for n, _, _ in loaded.scenarios),
                      faults=sum(len(spec.faults) for _, spec, _ in loaded.scenarios),
                      commander=p.roles.commander.name, notes=tuple(loaded.notes), errors=tuple(errors))  # fmt: skip


@gameday_app.command("validate")
def gameday_validate(
    plans: Annotated[list[Path], typer.Argument(help="Plan files.")], as_json: JsonOpt = False
) -> None:
    """Check plans and every scenario in them: located errors, exit 2; nothing is started."""
    results = []
    for path in plans:
        r = _plan_result(path)
        results.append(r)
        for e in r.errors:
            typer.echo(f"faultdrill: error: {e}", err=True)
        if r.title is not None and not as_json:
            typer.echo(f"ok {r.file} ({r.title}: {len(r.scenarios)} scenarios, {r.faults} faults, "
                       f"commander {r.commander})")  # fmt: skip
            for note in r.notes:
                typer.echo(f"  note: {note}")
    failed = any(r.errors for r in results)
    if as_json:
        emit_json({"ok": not failed, "plans": [r.to_json() for r in results]})
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
    from faultdrill.gamedays.gameday_run import run_gameday
    from faultdrill.output_cli import make_console

    result = run_gameday(plan, out=out, guided=guided, plain=True if plain else None, no_alerts=no_alerts,
                         console=make_console(),
                         misconfigurations=tuple(misconfig or ()))  # fmt: skip
    raise typer.Exit(result.exit_code)
