"""The HTML report: one self-contained file (inline CSS, the figure as inline SVG, no script).

Rendered with Jinja2 from ``reports/templates/`` (autoescaped: everything from the journal is
text). Prints on A4 landscape; opens offline.

Example::

    Path("report.html").write_text(render_html(RunView.of(journal)))
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from faultdrill.reports import fmt

if TYPE_CHECKING:
    from jinja2 import Environment

    from faultdrill.reports.model import RunView

__all__ = ["environment", "render_html"]

TEMPLATES = Path(__file__).parent / "templates"


def _worst(values: Iterable[float | None]) -> float | None:
    """The largest time; infinity when some fault never got there; None when there are none."""
    seen = list(values)
    if not seen:
        return None
    return math.inf if any(v is None for v in seen) else max(v for v in seen if v is not None)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def environment() -> Environment:
    """The Jinja2 environment of every HTML renderer (strict: a missing name is an error, not a blank)."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    from faultdrill.experiments.journal import JOURNAL_VERSION, faultdrill_version

    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True),
                      undefined=StrictUndefined, trim_blocks=False, lstrip_blocks=False)  # fmt: skip
    env.filters.update(
        number=fmt.number, percent=fmt.percent, ms=fmt.ms, seconds=fmt.seconds, clock=fmt.clock,
        spec_yaml=fmt.spec_yaml, worst=_worst, short=_short,
        fixed=lambda v: fmt.DASH if v is None else f"{v:.1f}",
        at=lambda v: fmt.DASH if v is None else f"{v:.1f} s",
    )  # fmt: skip
    env.globals.update(version=faultdrill_version(), journal_version=JOURNAL_VERSION)
    env.filters["canary_figure"] = _canary_figure
    return env


def _canary_figure(events: Any) -> dict[str, Any] | None:
    """``{view, svg}`` of a run's canary rollout (None without one): the template's canary section."""
    from markupsafe import Markup

    from faultdrill.reports.canary import canary_svg, canary_view

    view = canary_view(events)
    return None if view is None else {"view": view, "svg": Markup(canary_svg(view))}


def render_html(view: RunView, *, env: Environment | None = None) -> str:
    """The run's report as one HTML document."""
    from markupsafe import Markup

    from faultdrill.reports.figure import timeline_svg

    env = env or environment()
    return env.get_template("report.html.j2").render(v=view, svg=Markup(timeline_svg(view)))
