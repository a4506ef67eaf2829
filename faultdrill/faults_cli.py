"""``faultdrill faults …`` and ``faultdrill rollback``: the fault library from the terminal."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

__all__ = ["faults_app", "rollback_command"]

faults_app = typer.Typer(help="The fault library: list, describe.", no_args_is_help=True)


def _registry() -> Any:
    from faults.registry import FaultRegistry

    return FaultRegistry.installed()  # a bad plugin is a PluginError: main() prints it, exit 2


@faults_app.command("list")
def faults_list() -> None:
    """Every registered fault: name, modes, what it needs, what it verifies."""
    registry = _registry()
    table = Table("fault", "modes", "needs", "verifies", title="faults (entry-point group faultdrill.faults)")
    for name in registry.names():
        cls = registry.get(name)
        table.add_row(name, ", ".join(cls.modes), ", ".join(cls.needs) or "-", cls.verifies or "-")
    Console().print(table)


def _type_of(prop: dict[str, Any]) -> str:
    if "enum" in prop:
        return " | ".join(repr(v) for v in prop["enum"])
    if "anyOf" in prop:
        return " | ".join(_type_of(p) for p in prop["anyOf"])
    if "const" in prop:
        return repr(prop["const"])
    return str(prop.get("type", prop.get("$ref", "object")).split("/")[-1])


@faults_app.command("describe")
def faults_describe(
    name: Annotated[str, typer.Argument(help="Fault name, e.g. oom_kill.")],
    json_schema: Annotated[bool, typer.Option("--json-schema", help="Print the JSON Schema only.")] = False,
) -> None:
    """A fault's configuration: fields, types, defaults, and an example."""
    from faults.errors import FaultdrillError

    registry = _registry()
    try:
        cls = registry.get(name)
    except FaultdrillError as exc:
        typer.echo(f"faultdrill: error: {exc}", err=True)
        raise typer.Exit(2) from None
    schema = cls.Config.model_json_schema()
    if json_schema:
        typer.echo(json.dumps(schema, indent=2))
        return
    console = Console()
    console.print(f"[bold]{cls.name}[/] — modes: {', '.join(cls.modes)}")
    if cls.__doc__:
        console.print(cls.__doc__.strip().splitlines()[0])
    if cls.needs:
        console.print(f"needs: {', '.join(cls.needs)}")
    if cls.verifies:
        console.print(f"verify measures: {cls.verifies}")
    table = Table("field", "type", "default", "description")
    required = set(schema.get("required", []))
    for field, prop in schema.get("properties", {}).items():
        default = "(required)" if field in required else json.dumps(prop.get("default"))
        table.add_row(field, _type_of(prop), default, prop.get("description", ""))
    console.print(table)
    if cls.example:
        import yaml

        console.print("example (experiment spec):")
        doc = {"id": f"my-{cls.name}", "type": cls.name, "at": "5s", "duration": "15s", "params": cls.example}
        console.print(yaml.safe_dump([doc], sort_keys=False).rstrip())


def rollback_command(
    pending: Annotated[bool, typer.Option("--pending", help="Undo what killed runs left behind.")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Also undo records whose owner is still alive and within its deadline.")
    ] = False,
) -> None:
    """Undo injected faults recorded in the ledger (safe to run twice)."""
    if not pending:
        typer.echo("faultdrill: error: say what to roll back: --pending", err=True)
        raise typer.Exit(2)
    from faults.base import FaultContext
    from faults.ledger import RollbackOutcome, default_state_dir, rollback_pending

    state_dir = default_state_dir()
    registry = _registry()
    results = rollback_pending(registry, FaultContext.create(state_dir), include_live=force)
    if not results:
        typer.echo(f"nothing pending in {state_dir}")
        return
    table = Table("injection", "fault", "outcome", "message", title=f"ledger {state_dir}")
    failed = False
    for r in results:
        table.add_row(r.injection_id, r.fault, r.outcome.value, r.message)
        failed = failed or r.outcome in (RollbackOutcome.FAILED, RollbackOutcome.UNREADABLE)
    Console().print(table)
    raise typer.Exit(1 if failed else 0)
