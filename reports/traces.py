"""The "Example traces" section of the Markdown report (the HTML one is ``templates/traces.html.j2``).

Per window of the run (steady state, each fault) the figures of its traced requests, then
the slowest and the failed example traces as indented span lists with a text bar each —
a waterfall that reads in a pull-request comment. Everything comes from the journal's
``traces`` (``experiments.journal``'s trace models); nothing reads the span files.

Example::

    lines = traces_markdown(journal.traces, level=3)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from faultdrill.experiments.journal import ExampleTrace, TraceSummary

__all__ = ["bar", "traces_markdown"]

BAR = 20


def bar(start_ms: float, duration_ms: float, total_ms: float, width: int = BAR) -> str:
    """``··████······`` — where a span sits inside its trace, ``width`` characters."""
    total = max(total_ms, 1e-6)
    left = min(width - 1, max(0, round(width * start_ms / total)))
    fill = min(width - left, max(1, round(width * duration_ms / total)))
    return "·" * left + "█" * fill + "·" * (width - left - fill)


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _example(x: ExampleTrace) -> list[str]:
    head = (f"- **{x.duration_ms:.1f} ms** at t = {x.t:.1f} s" + (f" on {x.replica}" if x.replica else "")
            + (f", HTTP {x.http_status}" if x.http_status is not None else ", no response")
            + f" — `{x.trace_id}`")  # fmt: skip
    lines = [head, "", "  | span | service | waterfall | start | duration | notes |", "  |---|---|---|--:|--:|---|"]
    for s in x.spans:
        notes = []
        if s.status == "ERROR":
            notes.append(f"**error**{': ' + s.status_message if s.status_message else ''}")
        notes += [f"{k.replace('faultdrill.', '')}={v}" for k, v in list(s.attributes.items())[:5]]
        notes += [f"⚑ {e.name} +{e.at_ms:.1f} ms" for e in s.events[:3]]
        name = "&nbsp;&nbsp;" * s.depth + ("↳ " if s.depth else "") + s.name
        lines.append(f"  | {_cell(name)} | {_cell(s.service.replace('faultdrill-', ''))} | "
                     f"`{bar(s.start_ms, s.duration_ms, x.duration_ms)}` | +{s.start_ms:.1f} ms | "
                     f"{s.duration_ms:.2f} ms | {_cell(', '.join(notes))} |")  # fmt: skip
    if x.truncated:
        lines.append(f"  | … {x.truncated} more span(s) | | | | | |")
    return [*lines, ""]


def traces_markdown(summary: TraceSummary | None, level: int = 3) -> list[str]:
    """The section's lines (empty when the run recorded no trace summary)."""
    if summary is None:
        return []
    h = "#" * (level + 1)
    lines = ["", f"{h} Example traces", ""]
    if summary.note:
        lines += [f"_{_cell(summary.note)}_", ""]
    for w in summary.windows:
        p50 = "–" if w.p50_ms is None else f"{w.p50_ms:.1f} ms"
        p95 = "–" if w.p95_ms is None else f"{w.p95_ms:.1f} ms"
        lines += [f"<details><summary>{_cell(w.label)}, t = {w.start:.1f}–{w.end:.1f} s: {w.requests} traced, "
                  f"{w.failed} failed, p50 {p50}, p95 {p95}</summary>", ""]  # fmt: skip
        if w.slowest:
            lines += ["**Slowest**", ""] + [line for x in w.slowest for line in _example(x)]
        if w.failures:
            lines += ["**Failed**", ""] + [line for x in w.failures for line in _example(x)]
        if not w.slowest and not w.failures:
            lines += ["No traced request in this window.", ""]
        lines += ["</details>", ""]
    if summary.files:
        lines += [f"Span files (JSON lines, in the run directory): {', '.join(f'`{f}`' for f in summary.files)}"]
    return lines
