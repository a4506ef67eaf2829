"""``faultdrill validate FILE…`` and ``faultdrill schema``: experiment specs from the terminal.

The lead registers them on the main app (heavy imports stay inside the commands)::

    app.command("validate")(validate_command)
    app.command("schema")(schema_command)

``validate`` prints ``ok FILE (N faults, M expectations)`` per valid file and every located
error of an invalid one (``exp.yaml:12:11: faults[0].type: unknown fault …``) on stderr; it
exits 2 if any file is invalid, never with a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["experiment_json_schema", "schema_command", "validate_command"]

# ``hog`` (= hog.end, in a fault's ``after``), ``hog.start``, ``hog.end+5s``, ``30s``
_MOMENT_PATTERN = r"^(?:[A-Za-z0-9_-]+(?:\.(?:start|end))?)?\s*(?:[+-]?\s*\d+(?:\.\d+)?\s*(?:ms|s|m|h))?$"


def validate_command(
    files: Annotated[list[Path], typer.Argument(help="Experiment YAML files.", show_default=False)],
) -> None:
    """Check experiment files: YAML, fields, fault types and params, references. Exit 2 if any is invalid."""
    from experiments.loader import check_experiment, load_experiment
    from faults.errors import ConfigError
    from faults.registry import FaultRegistry

    registry = FaultRegistry.installed()  # a bad plugin is a PluginError: main() prints it, exit 2
    invalid = 0
    for path in files:
        try:
            exp = load_experiment(path, registry)
        except ConfigError:
            invalid += 1
            for err in check_experiment(path, registry):  # all of them, not just the first
                typer.echo(str(err), err=True)
            continue
        typer.echo(f"ok {path} ({_count(len(exp.faults), 'fault')}, {_count(len(exp.expect), 'expectation')})")
    if invalid:
        typer.echo(f"faultdrill: {invalid} of {len(files)} file(s) invalid", err=True)
        raise typer.Exit(2)


def schema_command(
    indent: Annotated[int, typer.Option(help="JSON indentation (0 = one line).")] = 2,
) -> None:
    """Print the JSON Schema of an experiment, for editor completion and checks.

    Save it (``faultdrill schema > experiment.schema.json``) and put
    ``# yaml-language-server: $schema=./experiment.schema.json`` on the first line of an
    experiment file: editors with the YAML language server then complete keys and flag errors.
    """
    typer.echo(json.dumps(experiment_json_schema(), indent=indent or None))


def experiment_json_schema() -> dict[str, Any]:
    """``Experiment``'s JSON Schema, with moments (``hog.start+2s``) accepted as strings, as the loader does."""
    from experiments.spec import Experiment

    schema = Experiment.model_json_schema(by_alias=True)
    defs = schema.get("$defs", {})
    if "Moment" in defs:  # the model's object form is internal: a spec writes a string or a number
        defs["Moment"] = {"title": "Moment", "description": "hog.start, hog.end+5s, run.start, or 30s from the start",
                          "anyOf": [{"type": "string", "pattern": _MOMENT_PATTERN}, {"type": "number"}]}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
