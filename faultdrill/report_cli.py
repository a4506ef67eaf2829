"""``faultdrill report``: render, compare and collect run reports from their journals.

::

    faultdrill report RUN_DIR                          # (re)write report.html, report.md, junit.xml there
    faultdrill report RUN_DIR --format md              # one format on stdout (or --out FILE)
    faultdrill report --compare RUN_A RUN_B            # what got better or worse (md or json)
    faultdrill report --gameday RUN_DIR… [--title T]   # every scenario of a game day in one document
    faultdrill report --schema                         # the journal's JSON Schema

The lead registers it on the main app (heavy imports stay inside the command)::

    app.command("report")(report_command)

Bad input (no journal, unreadable or invalid journal, wrong number of runs, unknown format)
raises :class:`~faults.errors.ConfigError` naming the file or option: one line, exit 2.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["report_command"]

_FORMATS = {"single": ("html", "md", "junit", "json"), "compare": ("md", "json"), "gameday": ("html", "md", "junit")}


def _format(given: str | None, mode: str, default: str) -> str:
    from faultdrill.faults.errors import ConfigError

    allowed = _FORMATS[mode]
    fmt = (given or default).lower()
    fmt = {"markdown": "md", "xml": "junit"}.get(fmt, fmt)
    if fmt not in allowed:
        close = difflib.get_close_matches(fmt, allowed, n=1)
        raise ConfigError(f"unknown format {given!r} for {'a single run' if mode == 'single' else '--' + mode}",
                          field="--format", expected=" or ".join(allowed),
                          suggestion=close[0] if close else None)  # fmt: skip
    return fmt


def _emit(text: str, out: Path | None) -> None:
    from faultdrill.faults.errors import ConfigError

    if out is None:
        typer.echo(text, nl=False)
        return
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write the report: {exc.strerror}", file=str(out), field="--out") from None
    typer.echo(f"wrote {out}", err=True)


def report_command(
    runs: Annotated[
        list[Path] | None,
        typer.Argument(help="Run directories (or journal.json / .json.gz files).", show_default=False,
                       metavar="RUN_DIR"),
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option("--format", "-f", help="html, md, junit or json. Without it, all are written into RUN_DIR."),
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write here instead of stdout.")] = None,
    compare: Annotated[bool, typer.Option("--compare", help="Compare two runs: RUN_A (before) RUN_B (after).")] = False,
    gameday: Annotated[bool, typer.Option("--gameday", help="One game-day document over all given runs.")] = False,
    title: Annotated[str | None, typer.Option(help="Title of a game-day report.")] = None,
    schema: Annotated[bool, typer.Option("--schema", help="Print the journal's JSON Schema and exit.")] = False,
) -> None:
    """Render a run's report from its journal: HTML (with the timeline figure), Markdown, JUnit XML, JSON.

    Without --format, report.html, report.md and junit.xml are (re)written into RUN_DIR.

    --compare RUN_A RUN_B: what got better or worse. --gameday RUN_DIR...: a game day in one document.
    """
    from faultdrill.faults.errors import ConfigError

    runs = list(runs or [])
    if sum((compare, gameday, schema)) > 1:
        raise ConfigError("choose one of --compare, --gameday and --schema", field="--compare/--gameday/--schema")
    if schema:
        from faultdrill.reports.jsonout import schema_text

        if runs:
            raise ConfigError("--schema takes no run directory", field="--schema")
        _emit(schema_text(), out)
        return
    if not runs:
        raise ConfigError("give a run directory (faultdrill run writes runs/<name>-<time>/)", field="RUN_DIR")

    try:
        _render_runs(runs, fmt=fmt, out=out, compare=compare, gameday=gameday, title=title)
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
        # A journal that reads (schema-valid JSON) but holds a value of the wrong shape in a field the
        # renderers use (a hand-edited or foreign file): a located error, never a traceback.
        files = ", ".join(str(r) for r in runs)
        raise ConfigError(f"cannot render {files}: a journal field has an unexpected value "
                          f"({type(exc).__name__}: {exc})", file=str(runs[0]) if len(runs) == 1 else None,
                          expected="a journal as faultdrill run writes it (faultdrill report --schema)") from None


def _render_runs(runs: list[Path], *, fmt: str | None, out: Path | None, compare: bool, gameday: bool,
                 title: str | None) -> None:  # fmt: skip
    from faultdrill.faults.errors import ConfigError
    from faultdrill.reports import FILES, RunView, load_journal, render, write_all

    if compare:
        if len(runs) != 2:
            raise ConfigError(f"--compare takes exactly two runs (A then B), got {len(runs)}", field="--compare")
        from faultdrill.reports.compare import compare_runs, render_comparison_json, render_comparison_markdown

        result = compare_runs(*(RunView.of(load_journal(r)) for r in runs))
        kind = _format(fmt, "compare", "md")
        _emit(render_comparison_markdown(result) if kind == "md" else render_comparison_json(result), out)
        return
    if gameday:
        from faultdrill.reports.gameday import render_gameday, render_gameday_markdown
        from faultdrill.reports.junit import render_junit

        views = [RunView.of(load_journal(r)) for r in runs]
        kind = _format(fmt, "gameday", "html")
        text = {"html": lambda: render_gameday(views, title=title), "md": lambda: render_gameday_markdown(
            views, title=title), "junit": lambda: render_junit(views, name=title or "game day")}[kind]()  # fmt: skip
        _emit(text, out)
        return
    if len(runs) != 1:
        raise ConfigError(f"one run directory at a time (got {len(runs)}); use --gameday for several, "
                          "--compare for two", field="RUN_DIR")  # fmt: skip
    if fmt is None:
        if out is not None:
            raise ConfigError("--out needs --format (without it every format is written into RUN_DIR)", field="--out")
        run = runs[0]
        run_dir = run if run.is_dir() else run.parent
        for kind, path in write_all(run, run_dir).items():
            typer.echo(f"{kind:5} {path}")
        return
    kind = _format(fmt, "single", "html")
    view = RunView.of(load_journal(runs[0]))
    href = FILES["html"]
    if out is not None and runs[0].is_dir():  # the Markdown links the HTML next to the journal
        import os

        href = os.path.relpath(runs[0] / FILES["html"], out.parent)
    _emit(render(view, kind, html_href=href), out)
