"""``faultdrill gameday schedule PLAN``: the plan's next occurrences and what a team installs.

::

    faultdrill gameday schedule PLAN [--count 5] [--workdir DIR]   # next runs, crontab, systemd, CronJob
    faultdrill gameday schedule PLAN --due [--grace 60]            # exit 0 if the schedule is due now, else 1
    faultdrill gameday schedule PLAN --json [--due]                # the same as one JSON document

``--due`` is the guard the emitted schedulers use where they cannot express the plan's cron
(``MON#1``, ``5L``, ``LW``): they fire on a superset of the days and run the game day only when
this exits 0. The lead registers it in the ``gameday`` group::

    gameday_app.command("schedule")(gameday_schedule_command)

A plan without a schedule, a bad cron or an unknown time zone raises
:class:`~faults.errors.ConfigError` naming the plan, its line and the field: one line, exit 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from faultdrill.output_cli import JsonOpt, emit_json

__all__ = ["gameday_schedule_command"]


def gameday_schedule_command(
    plan: Annotated[Path, typer.Argument(help="Game-day plan YAML with a schedule: {cron, timezone}.")],
    count: Annotated[int, typer.Option("--count", min=1, max=1000, help="How many next occurrences to show.")] = 5,
    workdir: Annotated[
        Path | None, typer.Option("--workdir", help="Project directory the schedulers run in (default: here).")
    ] = None,
    image: Annotated[str, typer.Option("--image", help="Container image of the CronJob.")] = "faultdrill:latest",
    namespace: Annotated[str, typer.Option("--namespace", help="Namespace of the CronJob.")] = "faultdrill",
    due: Annotated[
        bool, typer.Option("--due", help="Print nothing else: exit 0 if an occurrence was in the last --grace s.")
    ] = False,
    grace: Annotated[int, typer.Option("--grace", min=1, help="Seconds an occurrence stays due (--due).")] = 60,
    as_json: JsonOpt = False,
) -> None:
    """Show the next occurrences of the plan's cron schedule and emit a crontab line, systemd units, a CronJob."""
    from datetime import UTC, datetime

    from faultdrill.gamedays.cron import is_due
    from faultdrill.gamedays.schedule import load_plan_schedule, schedule_text, schedule_view

    sched = load_plan_schedule(plan)
    now = datetime.now(UTC)
    if due:
        ok = is_due(sched.cron, sched.timezone, now, grace_s=grace)
        if as_json:
            emit_json({"plan": str(plan), "due": ok, "cron": sched.cron, "timezone": sched.timezone,
                       "grace_s": grace})  # fmt: skip
        else:
            typer.echo(f"{plan}: {'due' if ok else 'not due'} ({sched.cron!r}, {sched.timezone})")
        raise typer.Exit(0 if ok else 1)
    wd = (workdir or Path.cwd()).resolve()
    view = schedule_view(sched.cron, sched.title, plan, count, tz=sched.timezone, workdir=wd, now=now, image=image,
                         namespace=namespace)  # fmt: skip
    if as_json:
        emit_json(view.to_json())
        return
    typer.echo(schedule_text(view, local=now.astimezone().tzinfo))
