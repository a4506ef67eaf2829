"""``faultdrill runbook …``: check runbooks statically, run one against a system you point at.

``run`` is standalone: it knows the system only through the URLs it is given, so actions that
need a platform (``restart``, ``kill``, ``rollback-model``, ``scale``) are refused before
anything runs; they work when a runbook is attached to a fault or alert in an experiment or
game day. Every run writes ``<out>/runbook-<name>-<stamp>-<id>/runbook.json``.

Exit codes: 0 passed (``check``: no problem), 1 a step failed, 2 bad input, 3 halted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from faultdrill.output_cli import JsonOpt, emit_json, error_json

__all__ = ["runbook_app"]

runbook_app = typer.Typer(help="Executable runbooks: check them, run them (automated or guided).",
                          no_args_is_help=True)  # fmt: skip


def _expand(files: list[Path]) -> list[Path]:
    from faultdrill.gamedays.runbook import expand_runbook_args

    runbooks, skipped = expand_runbook_args(files)
    for index in skipped:
        typer.echo(f"note: skipped {index}: a folder's README.md is its index, not a runbook", err=True)
    return runbooks


@runbook_app.command("check")
def runbook_check(
    files: Annotated[list[Path], typer.Argument(help="Runbook files (or directories of them).")],
    rules: Annotated[str, typer.Option("--rules", help="Alert rules file (default: the shipped rules).")] = "default",
    platform: Annotated[
        str, typer.Option("--platform", help="Platform the runbooks run on: local, or standalone (no platform).")
    ] = "local",
    profile: Annotated[
        str | None,
        typer.Option("--profile", help="The server the runbooks are for (a shipped profile such as vllm, or a "
                     "profile file): its metric names and, unless --rules is given, its rules."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Static validation: steps parse, programs exist, alerts/metrics/actions/variables are known,
    and every alert rule's runbook_url names a runbook that lists it."""
    from faultdrill.experiments.spec.rules import rules_path
    from faultdrill.gamedays.runbook_check import check_runbooks

    paths = _expand(files)
    served: frozenset[str] | None = None
    if profile is not None:
        from faultdrill.experiments.spec.profile import load_profile

        server = load_profile(profile)
        served = server.series_names()
        rules_file = server.rules_file if rules == "default" else rules_path(rules, spec_file=None)
    else:
        rules_file = rules_path(rules, spec_file=None)
    errors = check_runbooks(paths, rules_file=rules_file, platform=platform, served=served)
    for err in errors:
        typer.echo(f"error: {err}", err=True)
    if as_json:
        located = {e.file for e in errors}
        emit_json({"ok": not errors, "rules_file": str(rules_file), "platform": platform, "profile": profile,
                   "runbooks": [{"file": str(p), "ok": str(p) not in located} for p in paths],
                   "problems": [error_json(e) for e in errors]})  # fmt: skip
    if errors:
        typer.echo(f"{len(errors)} problem{'s' if len(errors) != 1 else ''} in {len(paths)} runbook(s)", err=True)
        raise typer.Exit(2)
    if not as_json:
        typer.echo(f"ok: {len(paths)} runbook(s), no problem")


def _pairs(values: list[str], option: str) -> dict[str, str]:
    from faultdrill.faults.errors import ConfigError

    out: dict[str, str] = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"expected NAME=VALUE, got '{value}'", field=option)
        out[key.strip()] = val.strip()
    return out


@runbook_app.command("run")
def runbook_run(
    file: Annotated[Path, typer.Argument(help="The runbook (Markdown).")],
    guided: Annotated[bool, typer.Option("--guided", help="A person runs it step by step in this terminal.")] = False,
    var: Annotated[list[str] | None, typer.Option("--var", help="A variable, NAME=VALUE (repeatable).")] = None,
    prometheus: Annotated[str | None, typer.Option("--prometheus", help="Prometheus base URL ($PROM).")] = None,
    target: Annotated[str | None, typer.Option("--target", help="Inference service base URL ($TARGET).")] = None,
    replica: Annotated[
        list[str] | None, typer.Option("--replica", help="A replica and its base URL, NAME=URL (repeatable).")
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Where run directories go.")] = Path("runs"),
    shell_timeout: Annotated[float, typer.Option("--shell-timeout", min=1.0, help="Seconds per sh command.")] = 60.0,
) -> None:
    """Run a runbook against a running system: automated (stops at the first failed step) or --guided."""
    from rich.markup import escape

    from faultdrill.experiments.journal.timeline import Timeline
    from faultdrill.faults.errors import ConfigError
    from faultdrill.faults.topology import ServiceHandle, Topology
    from faultdrill.gamedays.runbook import parse_runbook
    from faultdrill.gamedays.runbook_run import RunbookEnv, bind_variables, run_runbook, write_result
    from faultdrill.output_cli import is_pipe, make_console

    runbook = parse_runbook(file)
    variables = _pairs(var or [], "--var")
    if target:
        variables["TARGET"] = target
    services = {name: ServiceHandle(name=name, role="replica", url=url.rstrip("/"))
                for name, url in _pairs(replica or [], "--replica").items()}  # fmt: skip
    topology = Topology(services=services)
    for step in runbook.steps:
        action = step.command.action if step.command is not None else None
        if action is not None and action.spec.needs == "platform":
            raise ConfigError(f"'{action.name}' needs a platform: it works when the runbook runs inside a faultdrill "
                              "experiment or game day (runbook: FILE), not standalone", file=str(file),
                              line=step.command.line if step.command else None,
                              field=f"steps[{step.number}].command")  # fmt: skip
    timeline = Timeline()
    env = RunbookEnv(supervisor=None, topology=lambda: topology, variables=variables, timeline=timeline,
                     prometheus_url=prometheus, shell_timeout_s=shell_timeout)  # fmt: skip
    console = make_console(highlight=False)
    result = run_runbook(runbook, env, guided=guided, console=console)
    path = write_result(result, out, timeline=timeline, variables=bind_variables(env))
    color = {"passed": "green", "failed": "red", "halted": "yellow"}[result.outcome]
    last = next((s for s in result.steps if s.status == "halted"), None) if result.halted else result.failed_step
    where = f" at step {last.index} ({last.title})" if last is not None else ""
    console.print(f"[{color}]{result.outcome.upper()}[/{color}]{escape(where)} — result: {escape(str(path))}",
                  soft_wrap=is_pipe(console.file))  # in a pipe the result's path is never wrapped
    raise typer.Exit(result.exit_code)
