"""Reports: renderers over the run journal only (HTML with plots, Markdown, JUnit XML, JSON).

A report can be rendered from any past run; ``faultdrill run`` writes them all at the end::

    from faultdrill.reports import write_all
    paths = write_all(run_dir / "journal.json", run_dir)
    # {'html': …/report.html, 'md': …/report.md, 'junit': …/junit.xml, 'json': …/journal.json}

One format at a time, or several runs::

    view = RunView.of(load_journal(run_dir))
    render(view, "md"); render_gameday([view, other]); compare_runs(view, other)

Matplotlib and Jinja2 are imported only when an HTML report is rendered.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from faultdrill.experiments.journal import Journal
from faultdrill.reports.compare import Comparison, compare_runs, render_comparison_json, render_comparison_markdown
from faultdrill.reports.gameday import render_gameday, render_gameday_markdown
from faultdrill.reports.html import render_html
from faultdrill.reports.jsonout import journal_schema, render_json
from faultdrill.reports.junit import render_junit
from faultdrill.reports.markdown import render_markdown
from faultdrill.reports.model import RunView
from faultdrill.reports.score import Score, resilience_score
from faultdrill.reports.source import load_journal

__all__ = [
    "FILES",
    "FORMATS",
    "Comparison",
    "Format",
    "RunView",
    "Score",
    "compare_runs",
    "journal_schema",
    "load_journal",
    "render",
    "render_comparison_json",
    "render_comparison_markdown",
    "render_gameday",
    "render_gameday_markdown",
    "render_html",
    "render_json",
    "render_junit",
    "render_markdown",
    "resilience_score",
    "write_all",
]

Format = Literal["html", "md", "junit", "json"]
FORMATS: tuple[str, ...] = ("html", "md", "junit", "json")
FILES: dict[str, str] = {"html": "report.html", "md": "report.md", "junit": "junit.xml", "json": "journal.json"}


def render(view: RunView, fmt: str, *, html_href: str | None = FILES["html"]) -> str:
    """One run in one format (``html``, ``md``, ``junit`` or ``json``)."""
    if fmt == "html":
        return render_html(view)
    if fmt == "md":
        return render_markdown(view, html_href=html_href)
    if fmt == "junit":
        return render_junit([view])
    if fmt == "json":
        return render_json(view.journal)
    raise ValueError(f"unknown report format {fmt!r} (expected one of {', '.join(FORMATS)})")


def _write(path: Path, text: str) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_all(journal: Path | Journal, run_dir: Path) -> dict[str, Path]:
    """Write ``report.html``, ``report.md`` and ``junit.xml`` into ``run_dir`` (atomically, each).

    ``journal`` is a journal file (or run directory) or a :class:`Journal`; ``journal.json`` is
    written too when ``run_dir`` has none yet. Returns the paths by format. A journal that
    cannot be read raises :class:`~faults.errors.ConfigError`.
    """
    view = RunView.of(load_journal(journal))
    run_dir.mkdir(parents=True, exist_ok=True)
    paths = {fmt: _write(run_dir / FILES[fmt], render(view, fmt)) for fmt in ("html", "md", "junit")}
    json_path = run_dir / FILES["json"]
    paths["json"] = json_path if json_path.exists() else _write(json_path, render_json(view.journal))
    return paths
