"""``faultdrill validate FILE…`` and ``faultdrill schema``: experiment specs from the terminal.

The lead registers them on the main app (heavy imports stay inside the commands)::

    app.command("validate")(validate_command)
    app.command("schema")(schema_command)

``validate`` prints ``ok FILE (N faults, M expectations)`` per valid file and every located
error of an invalid one (``exp.yaml:12:11: faults[0].type: unknown fault …``) on stderr; it
exits 2 if any file is invalid, never with a traceback. ``--json`` prints the per-file results
as one document on stdout (the errors still go to stderr too).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from faultdrill.output_cli import JsonOpt, emit_json, error_json

if TYPE_CHECKING:
    from faultdrill.faults.errors import ConfigError

__all__ = ["FileResult", "experiment_json_schema", "schema_command", "validate_command"]

# ``hog`` (= hog.end, in a fault's ``after``), ``hog.start``, ``hog.end+5s``, ``30s``
_MOMENT_PATTERN = r"^(?:[A-Za-z0-9_-]+(?:\.(?:start|end))?)?\s*(?:[+-]?\s*\d+(?:\.\d+)?\s*(?:ms|s|m|h))?$"


@dataclass(frozen=True)
class FileResult:
    """One file ``validate`` checked: valid with its counts, or every located error."""

    file: str
    valid: bool
    name: str | None
    """The experiment's ``metadata.name`` (valid files)."""
    faults: int | None
    expectations: int | None
    errors: tuple[ConfigError, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "valid": self.valid, "name": self.name, "faults": self.faults,
                "expectations": self.expectations, "errors": [error_json(e) for e in self.errors]}  # fmt: skip


def validate_command(
    files: Annotated[list[Path], typer.Argument(help="Experiment YAML files.", show_default=False)],
    as_json: JsonOpt = False,
) -> None:
    """Check experiment files: YAML, fields, fault types and params, references. Exit 2 if any is invalid."""
    from faultdrill.experiments.spec.loader import check_experiment, load_experiment
    from faultdrill.faults.errors import ConfigError
    from faultdrill.faults.registry import FaultRegistry

    registry = FaultRegistry.installed()  # a bad plugin is a PluginError: main() prints it, exit 2
    results: list[FileResult] = []
    for path in files:
        try:
            exp = load_experiment(path, registry)
        except ConfigError:
            errors = tuple(check_experiment(path, registry))  # all of them, not just the first
            results.append(FileResult(str(path), False, None, None, None, errors))
            for err in errors:
                typer.echo(str(err), err=True)
            continue
        result = FileResult(str(path), True, exp.metadata.name, len(exp.faults), len(exp.expect))
        results.append(result)
        if not as_json:
            typer.echo(f"ok {result.file} ({_count(len(exp.faults), 'fault')}, "
                       f"{_count(len(exp.expect), 'expectation')})")  # fmt: skip
    invalid = sum(not r.valid for r in results)
    if as_json:
        emit_json({"ok": not invalid, "files": [r.to_json() for r in results]})
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
    from faultdrill.experiments.spec.experiment import Experiment

    schema = Experiment.model_json_schema(by_alias=True)
    defs = schema.get("$defs", {})
    if "Moment" in defs:  # the model's object form is internal: a spec writes a string or a number
        defs["Moment"] = {"title": "Moment", "description": "hog.start, hog.end+5s, run.start, or 30s from the start",
                          "anyOf": [{"type": "string", "pattern": _MOMENT_PATTERN}, {"type": "number"}]}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
