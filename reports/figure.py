"""The timeline figure as inline SVG (matplotlib, object API, no pyplot state, no display).

Four stacked panels over run time: throughput, error ratio, latency p50/p95/p99 (with the
SLO bounds dashed), and the state lanes (probes, breakers, restarts, alerts, runbook).
Fault windows are shaded on every panel and labelled above the first. Text stays text
(``svg.fonttype: none``): the figure is searchable, small, and prints sharply.

Example::

    svg = timeline_svg(RunView.of(journal))    # '<svg id="timeline-figure" …>…</svg>'
"""

from __future__ import annotations

import html
import io
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from faultdrill.reports.model import FaultWindow, RunView

__all__ = ["STATE_COLORS", "timeline_svg"]

FAULT_COLORS = ("#e4572e", "#7b2cbf", "#f3a712", "#0f7173", "#d81159", "#3a86ff", "#8f2d56", "#2b9348")
STATE_COLORS: dict[str, str] = {
    "ready": "#2b9348", "live": "#2b9348", "closed": "#2b9348", "up": "#2b9348",
    "not ready": "#d62828", "not live": "#d62828", "open": "#d62828", "firing": "#d62828", "bad": "#d62828",
    "half-open": "#f3a712", "pending": "#f3a712", "down": "#495057", "resolved": "#2b9348",
    "done": "#2b9348", "ok": "#2b9348", "passed": "#2b9348", "failed": "#d62828", "skipped": "#adb5bd",
}  # fmt: skip
OTHER = "#4361ee"
MAX_LABELS = 12  # per lane; every mark is still drawn, and listed in the report's tables
LEGEND = (("#2b9348", "ready, live, closed, resolved, done"), ("#d62828", "not ready/live, open, firing, restart"),
          ("#f3a712", "half-open, pending"), ("#495057", "process down"), (OTHER, "other (notification, note)"))
RC: dict[str, Any] = {
    "svg.fonttype": "none", "svg.hashsalt": "faultdrill", "font.size": 8.5, "font.family": "sans-serif",
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.25,
}  # fmt: skip


def _tracks(windows: list[tuple[float, float]]) -> list[int]:
    """A label row per window so that labels of overlapping windows do not overlap."""
    ends: list[float] = []
    rows = []
    for start, end in windows:
        row = next((i for i, e in enumerate(ends) if e <= start), len(ends))
        if row == len(ends):
            ends.append(end)
        ends[row] = max(end, start + 1e-9)
        rows.append(row)
    return rows


def _label(f: FaultWindow) -> str:
    return f"{f.id}: {f.type}{' (emulated)' if f.emulated else ''}"


def _windows(view: RunView, width_in: float) -> list[tuple[FaultWindow, float, float, int]]:
    """Each started fault with its shaded span and the label row it gets above the first panel."""
    faults = [f for f in view.faults if f.start is not None]
    spans = [(float(f.start or 0.0), f.end if f.end is not None else view.duration) for f in faults]
    # A label is often wider than its window: reserve its estimated width (8 pt bold ≈ 0.075 in a
    # character) in data units over the panel's width (the figure less the tick labels and legends).
    per_char = 0.075 * max(view.duration, 1.0) / max(width_in - 3.2, 1.0)
    rows = _tracks([(s, max(e, s + per_char * (len(_label(f)) + 2))) for f, (s, e) in zip(faults, spans, strict=True)])
    return [(f, s, e, r) for f, (s, e), r in zip(faults, spans, rows, strict=True)]


def _shade(axes: list[Any], view: RunView, width_in: float) -> None:
    from matplotlib.transforms import blended_transform_factory

    top = axes[0]
    trans = blended_transform_factory(top.transData, top.transAxes)
    for i, (f, s, e, row) in enumerate(_windows(view, width_in)):
        color = FAULT_COLORS[i % len(FAULT_COLORS)]
        for ax in axes:
            ax.axvspan(s, e, color=color, alpha=0.13, lw=0, zorder=0)
        top.text(s, 1.0 + (0.24 + 0.2 * row) / 1.5, _label(f), transform=trans, color=color, fontsize=8,
                 fontweight="bold", va="bottom", clip_on=False)  # fmt: skip
    for name, t in view.phases:
        if name in ("steady", "recover", "teardown"):
            for ax in axes:
                ax.axvline(t, color="#6c757d", lw=0.7, ls=":", zorder=1)
            top.text(t, 0.97, f" {name}", transform=trans, rotation=90, va="top", ha="left", fontsize=7,
                     color="#6c757d")  # fmt: skip


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="#6c757d", fontsize=9)


def _lanes(ax: Any, view: RunView) -> None:
    lanes = list(view.lanes)
    if not lanes:
        ax.set_yticks([])
        _empty(ax, "no probe, breaker, restart, alert or runbook events")
        return
    for row, lane in enumerate(reversed(lanes)):
        bars: dict[str, list[tuple[float, float]]] = {}
        for s in lane.spans:  # at least a hair wide, so a 50 ms blip still shows
            bars.setdefault(STATE_COLORS.get(s.state, OTHER), []).append((s.start, max(s.end - s.start,
                                                                                      view.duration / 800)))
        for color, xranges in bars.items():
            ax.broken_barh(xranges, (row - 0.36, 0.72), color=color, lw=0, zorder=2)
        by_color: dict[str, list[float]] = {}
        for m in lane.marks:
            by_color.setdefault(STATE_COLORS.get(m.state, OTHER), []).append(m.t)
        for color, ts in by_color.items():  # one artist per colour: hundreds of marks stay cheap
            ax.plot(ts, [row] * len(ts), ls="none", marker="v" if lane.group != "runbook" else "D", ms=6,
                    color=color, zorder=4, markeredgecolor="white", markeredgewidth=0.6)  # fmt: skip
        for k, m in enumerate(lane.marks[:MAX_LABELS]):
            ax.annotate(m.text, (m.t, row), xytext=(4, 5 if k % 2 == 0 else -10), textcoords="offset points",
                        fontsize=6.5, color="#212529", zorder=5)  # fmt: skip
        if len(lane.marks) > MAX_LABELS:
            ax.annotate(f"+{len(lane.marks) - MAX_LABELS} more (see the tables)", (1.0, row),
                        xycoords=("axes fraction", "data"), xytext=(-4, 5), textcoords="offset points",
                        ha="right", fontsize=6.5, color="#6c757d")  # fmt: skip
    ax.set_yticks(range(len(lanes)), [lane.label for lane in reversed(lanes)], fontsize=7.5)
    ax.set_ylim(-0.7, len(lanes) - 0.3)
    ax.grid(False, axis="y")
    colors = {STATE_COLORS.get(s.state, OTHER) for lane in lanes for s in lane.spans}
    colors |= {STATE_COLORS.get(m.state, OTHER) for lane in lanes for m in lane.marks}
    keys = [(c, text) for c, text in LEGEND if c in colors]
    if keys:
        from matplotlib.patches import Patch

        ax.legend(handles=[Patch(color=c, label=text) for c, text in keys], loc="upper left",
                  bbox_to_anchor=(1.005, 1.0), fontsize=7, frameon=False)  # fmt: skip


def _layout(view: RunView, width_in: float) -> tuple[float, list[tuple[float, float, float, float]]]:
    """Figure height and the four panels' boxes (figure fractions), laid out in inches.

    Fixed margins instead of a layout engine: the lane labels and legends have known widths,
    and a constrained layout would cost half of the rendering time.
    """
    label_rows = 1 + max((row for *_, row in _windows(view, width_in)), default=-1)
    longest = max((len(lane.label) for lane in view.lanes), default=0)
    left, right = max(0.65, 0.06 * longest + 0.3), 2.15
    heights = [1.5, 1.0, 1.5, 0.3 * max(len(view.lanes), 1) + 0.35]
    top, gap, bottom = 0.3 + 0.2 * label_rows, 0.38, 0.62
    total = top + sum(heights) + gap * 3 + bottom
    boxes, y = [], total - top
    for h in heights:
        y -= h
        boxes.append((left / width_in, y / total, (width_in - left - right) / width_in, h / total))
        y -= gap
    return total, boxes


def _title(ax: Any, text: str) -> None:
    ax.text(0.0, 1.0, text, transform=ax.transAxes, fontsize=9, fontweight="bold", va="bottom", ha="left",
            clip_on=False)  # fmt: skip


def timeline_svg(view: RunView, *, width_in: float = 12.0) -> str:
    """The figure as an ``<svg>`` element, ready to inline into HTML (no XML prolog, scales to its box)."""
    import matplotlib
    from matplotlib.figure import Figure

    s = view.series
    height, boxes = _layout(view, width_in)
    # rc_context: the SVG options (text as text, stable ids) exist only as rc settings; the
    # context restores matplotlib's global settings on exit, so callers' own figures are untouched.
    with matplotlib.rc_context(RC):  # type: ignore[arg-type]
        fig = Figure(figsize=(width_in, height))
        ax_rps = fig.add_axes(boxes[0])
        axes = [ax_rps] + [fig.add_axes(box, sharex=ax_rps) for box in boxes[1:]]
        ax_rps, ax_err, ax_lat, ax_lanes = axes
        if len(s.t):
            mid = s.t + 0.5
            ax_rps.plot(mid, s.throughput, color="#1d3557", lw=1.1)
            ax_err.plot(mid, s.error_ratio * 100, color="#d62828", lw=1.1)
            for series, name, color in ((s.p50_ms, "p50", "#457b9d"), (s.p95_ms, "p95", "#e76f51"),
                                        (s.p99_ms, "p99", "#9d0208")):  # fmt: skip
                ax_lat.plot(mid, series, color=color, lw=1.0, label=name)
        else:
            for ax in (ax_rps, ax_err, ax_lat):
                _empty(ax, "no requests recorded")
        for ax, title in zip(axes, ("throughput (requests/s)", "error ratio (%)", "latency of successful requests (ms)",
                                    "probes, breakers, restarts, alerts, runbook"), strict=True):  # fmt: skip
            _title(ax, title)
        budget = (1.0 - view.slo.availability_target) * 100
        ax_err.axhline(budget, color="#d62828", lw=0.8, ls="--", label=f"SLO error budget {budget:g} %")
        ax_err.set_ylim(bottom=0)
        if view.slo.latency_p95_target_s is not None:
            ax_lat.axhline(view.slo.latency_p95_target_s * 1000, color="#e76f51", lw=0.8, ls="--", label="SLO p95")
        ax_lat.set_ylim(bottom=0)
        ax_rps.set_ylim(bottom=0)
        for ax in (ax_err, ax_lat):
            if ax.get_legend_handles_labels()[0]:
                ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=7, frameon=False)
        _lanes(ax_lanes, view)
        _shade(axes, view, width_in)
        ax_lanes.set_xlim(0, max(view.duration, 1.0))
        ax_lanes.set_xlabel("seconds since the run started")
        for ax in axes[:-1]:
            ax.tick_params(labelbottom=False)
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": "faultdrill"})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg") :]
    head, rest = svg.split(">", 1)
    head = re.sub(r'\s(width|height)="[^"]*"', "", head)
    title = html.escape(f"Timeline of run {view.journal.run_id}: throughput, error ratio, latency and state lanes")
    return (f'<svg id="timeline-figure" role="img" aria-label="{title}" preserveAspectRatio="xMidYMin meet"'
            f"{head[4:]}><title>{title}</title>{rest}")  # fmt: skip
