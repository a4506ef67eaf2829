"""Output for people and for pipes, shared by every command that prints a table or a list.

- **In a terminal** a table is as wide as the terminal. Columns that hold a name, an id or a
  path (``keys``) stay on one line while the other columns wrap, and no cell is ever cut with
  ``…``: every column folds (in a terminal too narrow even for the names, a name continues on
  the next line, whole).
- **In a pipe or a file** (stdout is not a terminal: ``| grep``, ``> file``, CI logs) there is
  no width to fit: a table is as wide as its content, one line per row, whatever ``COLUMNS``
  says, and text lines are never wrapped. ``faultdrill faults list | grep gpu`` prints the
  whole row of ``gpu_memory_exhaustion``.
- **``--json``** (:data:`JsonOpt`, one convention for every command) prints one JSON document
  on stdout, built from the same typed records as the table (``dataclasses.asdict``): stable
  keys, no markup, no ANSI. Bad input still goes to stderr with exit 2.

rich is imported inside the functions, so ``faultdrill --help`` stays instant.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import IO, TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.table import Table

    from faultdrill.faults.errors import ConfigError

__all__ = ["JsonOpt", "emit_json", "error_json", "is_pipe", "make_console", "make_table", "print_table", "row"]

JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print one JSON document on stdout (stable keys, no markup) instead of text.")
]

_MEASURE = 1 << 16
"""Width offered to a table when measuring how wide its content is (no table is wider)."""


def is_pipe(stream: IO[str] | None) -> bool:
    """True unless ``stream`` is a terminal (a pipe, a file, a test runner's buffer, a closed stream)."""
    isatty = getattr(stream, "isatty", None)
    try:
        return not (isatty is not None and isatty())
    except ValueError:  # closed
        return True


def make_console(*, stderr: bool = False, highlight: bool = True) -> Console:
    """A console for a command's output: the terminal's width in a terminal; in a pipe, text is
    never wrapped (``soft_wrap``) and :func:`print_table` prints tables at their content's width."""
    from rich.console import Console

    console = Console(stderr=stderr, highlight=highlight)
    if is_pipe(console.file):
        console.soft_wrap = True
    return console


def make_table(*headers: str, keys: Collection[str] = (), title: str | None = None, **kwargs: Any) -> Table:
    """A table whose ``keys`` columns (names, ids, paths) never wrap and whose cells are never cut.

    Other columns wrap first when the terminal is narrow; every column folds rather than
    printing ``…``. The title is plain text (no markup) and never wrapped: the table is at
    least as wide as it.
    """
    from rich.cells import cell_len
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(title) if title is not None else None,
                  min_width=cell_len(title) if title else None, **kwargs)  # fmt: skip
    for header in headers:
        table.add_column(header, no_wrap=header in keys, overflow="fold")
    return table


def row(table: Table, *cells: RenderableType | None) -> None:
    """Add a row; strings are plain text (a ``[`` in a name is not rich markup), ``None`` is ``-``."""
    from rich.text import Text

    def cell(value: RenderableType | None) -> RenderableType:
        if value is None:
            return Text("-")
        return Text(value) if isinstance(value, str) else value

    table.add_row(*map(cell, cells))


def print_table(console: Console, table: Table) -> None:
    """Print ``table``: fitted to a terminal, or, in a pipe, as wide as its content (nothing wrapped or cut)."""
    if not is_pipe(console.file):
        console.print(table)
        return
    from rich.measure import Measurement

    width = console.width
    need = Measurement.get(console, console.options.update_width(_MEASURE), table).maximum
    console.width = max(width, need)
    try:
        console.print(table)
    finally:
        console.width = width


def emit_json(doc: Any) -> None:
    """One JSON document on stdout (``indent=2``, keys in the records' order, ASCII-safe in any locale)."""
    typer.echo(json.dumps(doc, indent=2))


def error_json(err: ConfigError) -> dict[str, Any]:
    """A located error as JSON: every key always present (``null`` where unknown); ``text`` is the full line."""
    return {"file": err.file, "line": err.line, "column": err.column, "field": err.field, "message": err.message,
            "expected": err.expected, "suggestion": err.suggestion, "text": str(err)}  # fmt: skip
