"""``faultdrill faults …`` and ``faultdrill rollback``: the fault library from the terminal.

Every command here prints a table, or with ``--json`` one JSON document built from the same
records (see :mod:`faultdrill.output_cli`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Annotated, Any

import typer

from faultdrill.output_cli import JsonOpt, emit_json, make_console, make_table, print_table, row

__all__ = ["FaultField", "FaultSummary", "faults_app", "rollback_command"]

faults_app = typer.Typer(help="The fault library: list, describe.", no_args_is_help=True)


def _registry() -> Any:
    from faultdrill.faults.registry import FaultRegistry

    return FaultRegistry.installed()  # a bad plugin is a PluginError: main() prints it, exit 2


@dataclass(frozen=True)
class FaultSummary:
    """One registered fault, as ``faults list`` shows it (and ``faults describe`` heads it)."""

    name: str
    modes: list[str]
    needs: list[str]
    verifies: str
    summary: str
    """The first line of its docstring."""

    @classmethod
    def of(cls, fault: Any) -> FaultSummary:
        doc = (fault.__doc__ or "").strip()
        return cls(name=fault.name, modes=list(fault.modes), needs=list(fault.needs), verifies=fault.verifies or "",
                   summary=doc.splitlines()[0] if doc else "")  # fmt: skip


@faults_app.command("list")
def faults_list(as_json: JsonOpt = False) -> None:
    """Every registered fault: name, modes, what it needs, what it verifies."""
    registry = _registry()
    faults = [FaultSummary.of(registry.get(name)) for name in registry.names()]
    if as_json:
        emit_json({"faults": [asdict(f) for f in faults]})
        return
    table = make_table("fault", "modes", "needs", "verifies", keys={"fault"},
                       title="faults (entry-point group faultdrill.faults)")  # fmt: skip
    for f in faults:
        row(table, f.name, ", ".join(f.modes), ", ".join(f.needs) or "-", f.verifies or "-")
    print_table(make_console(), table)


def _type_of(prop: dict[str, Any]) -> str:
    if "enum" in prop:
        return " | ".join(repr(v) for v in prop["enum"])
    if "anyOf" in prop:
        return " | ".join(_type_of(p) for p in prop["anyOf"])
    if "const" in prop:
        return repr(prop["const"])
    return str(prop.get("type", prop.get("$ref", "object")).split("/")[-1])


@dataclass(frozen=True)
class FaultField:
    """One field of a fault's configuration (its ``params`` in an experiment)."""

    name: str
    type: str
    required: bool
    default: Any
    """The default value (``null`` when required or when the default is null)."""
    description: str


def _fields(schema: dict[str, Any]) -> list[FaultField]:
    required = set(schema.get("required", []))
    return [FaultField(name=field, type=_type_of(prop), required=field in required,
                       default=None if field in required else prop.get("default"),
                       description=prop.get("description", ""))
            for field, prop in schema.get("properties", {}).items()]  # fmt: skip


@faults_app.command("describe")
def faults_describe(
    name: Annotated[str, typer.Argument(help="Fault name, e.g. oom_kill.")],
    json_schema: Annotated[bool, typer.Option("--json-schema", help="Print the JSON Schema only.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """A fault's configuration: fields, types, defaults, and an example."""
    from faultdrill.faults.errors import FaultdrillError

    if as_json and json_schema:
        typer.echo("faultdrill: error: choose one of --json and --json-schema", err=True)
        raise typer.Exit(2)
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
    fault = FaultSummary.of(cls)
    fields = _fields(schema)
    example = {"id": f"my-{cls.name}", "type": cls.name, "at": "5s", "duration": "15s", "params": cls.example} \
        if cls.example else None  # fmt: skip
    if as_json:
        emit_json({**asdict(fault), "fields": [asdict(f) for f in fields], "example": example})
        return
    from rich.markup import escape

    console = make_console()
    console.print(f"[bold]{escape(fault.name)}[/] — modes: {escape(', '.join(fault.modes))}")
    if fault.summary:
        console.print(fault.summary, markup=False)
    if fault.needs:
        console.print(f"needs: {', '.join(fault.needs)}", markup=False)
    if fault.verifies:
        console.print(f"verify measures: {fault.verifies}", markup=False)
    table = make_table("field", "type", "default", "description", keys={"field"})
    for f in fields:
        row(table, f.name, f.type, "(required)" if f.required else json.dumps(f.default), f.description)
    print_table(console, table)
    if example is not None:
        import yaml

        console.print("example (experiment spec):")
        console.print(yaml.safe_dump([example], sort_keys=False).rstrip(), markup=False, highlight=False)


def rollback_command(
    pending: Annotated[bool, typer.Option("--pending", help="Undo what killed runs left behind.")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Also undo records whose owner is still alive (and, for a fault, "
                                           "within its deadline): a live run's faults, processes and namespaces.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Undo what the ledger records: injected faults, and the processes and network namespaces of runs
    that were killed (newest first; safe to run twice)."""
    if not pending:
        typer.echo("faultdrill: error: say what to roll back: --pending", err=True)
        raise typer.Exit(2)
    from faultdrill.faults.base import FaultContext
    from faultdrill.faults.ledger import RollbackOutcome, rollback_pending
    from faultdrill.faults.records import default_state_dir

    state_dir = default_state_dir()
    registry = _registry()
    results = rollback_pending(registry, FaultContext.create(state_dir), include_live=force)
    failed = any(r.outcome in (RollbackOutcome.FAILED, RollbackOutcome.UNREADABLE) for r in results)
    if as_json:
        emit_json({"state_dir": str(state_dir), "results": [asdict(r) for r in results]})
        raise typer.Exit(1 if failed else 0)
    if not results:
        typer.echo(f"nothing pending in {state_dir}")
        return
    # kind: "fault" (an injection), or a run's own "process" / "netns"; what: the fault, or the service's name.
    table = make_table("record", "kind", "what", "outcome", "message", keys={"record", "what"},
                       title=f"ledger {state_dir}")  # fmt: skip
    for r in results:
        row(table, r.injection_id, r.kind, r.fault if r.kind == "fault" else r.target, r.outcome.value, r.message)
    print_table(make_console(), table)
    raise typer.Exit(1 if failed else 0)
