"""The "Canary rollout" section of a report: traffic split over time and per-version SLIs.

Built only from the journal's ``canary`` events (``experiments.platforms.local.canary``): each
analysis interval's check carries both pools' SLIs (success rate, p95 latency, mean
confidence) and the canary's weight; revisions, weight steps, promotions and rollbacks are
marks. :func:`canary_view` gathers them, :func:`canary_svg` draws four stacked panels
(canary weight %, success rate, p95 latency, confidence — stable vs canary, rollback and
promotion moments as vertical lines), :func:`canary_markdown` writes the Markdown section.

Example::

    view = canary_view(journal.events)       # None when the run had no canary rollout
    svg = canary_svg(view); lines = canary_markdown(view, level=3)
"""

from __future__ import annotations

import html
import io
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

from faultdrill.experiments.journal import CanaryAttrs, CanarySlis, Event

__all__ = ["CanaryDecision", "CanaryPoint", "CanaryView", "canary_markdown", "canary_svg", "canary_view"]


@dataclass(frozen=True)
class CanaryPoint:
    """One analysis interval: the weight and each pool's SLIs (None: nothing measured)."""

    t: float
    weight: int
    result: str
    version: str
    canary: dict[str, float | None]
    stable: dict[str, float | None]


@dataclass(frozen=True)
class CanaryDecision:
    t: float
    event: str
    """revision, weight, promote or rollback."""
    version: str
    weight: int
    reason: str = ""
    seconds: float | None = None


@dataclass(frozen=True)
class CanaryView:
    points: tuple[CanaryPoint, ...]
    decisions: tuple[CanaryDecision, ...]
    weights: tuple[tuple[float, int], ...]
    """(t, canary weight %) at every change, as a step series."""
    end: float


def _slis(slis: CanarySlis | None) -> dict[str, float | None]:
    slis = slis or CanarySlis()
    return {"requests": None if slis.requests is None else float(slis.requests), "success_rate": slis.success_rate,
            "latency_p95_s": slis.latency_p95_s, "confidence": slis.confidence}  # fmt: skip


def canary_view(events: Iterable[Event]) -> CanaryView | None:
    points: list[CanaryPoint] = []
    decisions: list[CanaryDecision] = []
    weights: list[tuple[float, int]] = []
    end = 0.0
    for e in events:
        end = max(end, e.t)
        if e.kind != "canary":
            continue
        a = CanaryAttrs.of(e)
        weight = a.weight or 0
        if not weights or weights[-1][1] != weight:
            weights.append((e.t, weight))
        if a.event == "check":
            points.append(CanaryPoint(e.t, weight, a.result or "", a.version or "", _slis(a.canary),
                                      _slis(a.stable)))  # fmt: skip
        elif a.event in ("revision", "weight", "promote", "rollback"):
            decisions.append(CanaryDecision(e.t, a.event, a.version or "", weight, a.reason or "", a.seconds))
    if not points and not decisions:
        return None
    return CanaryView(tuple(points), tuple(decisions), tuple(weights), end)


def canary_svg(view: CanaryView, *, width_in: float = 12.0) -> str:
    """Weight and per-pool SLIs over run time, as an inline ``<svg>``."""
    import matplotlib
    from matplotlib.figure import Figure

    from faultdrill.reports.figure import RC

    with matplotlib.rc_context(RC):  # type: ignore[arg-type]
        fig = Figure(figsize=(width_in, 6.4))
        axes = fig.subplots(4, 1, sharex=True)
        fig.subplots_adjust(left=0.06, right=0.86, top=0.95, bottom=0.08, hspace=0.45)
        ts = [w[0] for w in view.weights] + [view.end]
        axes[0].step(ts, [w[1] for w in view.weights] + [view.weights[-1][1]], where="post", color="#f3a712", lw=1.4,
                     label="canary")  # fmt: skip
        axes[0].set_ylim(-5, 105)
        panels = (("success_rate", 100.0, "success rate (%)"), ("latency_p95_s", 1000.0, "p95 latency (ms)"),
                  ("confidence", 1.0, "mean confidence"))  # fmt: skip
        for ax, (key, scale, _title) in zip(axes[1:], panels, strict=True):
            for pool, color in (("stable", "#1d3557"), ("canary", "#f3a712")):
                # NaN where a pool had no answers: the line breaks instead of bridging the gap.
                xs = [p.t for p in view.points]
                ys = [math.nan if (v := getattr(p, pool)[key]) is None else float(v) * scale for p in view.points]
                ax.plot(xs, ys, color=color, lw=1.2, marker="o", ms=2, label=pool)
        for ax, title in zip(axes, ("canary traffic weight (%)", *(p[2] for p in panels)), strict=True):
            ax.text(0.0, 1.02, title, transform=ax.transAxes, fontsize=9, fontweight="bold", va="bottom")
            for d in view.decisions:
                if d.event in ("promote", "rollback"):
                    ax.axvline(d.t, color="#2b9348" if d.event == "promote" else "#d62828", lw=1.0, ls="--")
        shown = [d for d in view.decisions if d.event in ("promote", "rollback", "revision")]
        for i, d in enumerate(shown):  # alternate heights: neighbouring labels do not overprint
            color = {"promote": "#2b9348", "rollback": "#d62828"}.get(d.event, "#495057")
            axes[0].annotate(f"{d.event} {d.version}"[:28], (d.t, 104 if i % 2 else 82), fontsize=7, ha="left",
                             color=color)  # fmt: skip
        axes[1].legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=7, frameon=False)
        axes[-1].set_xlabel("seconds since the run started")
        axes[-1].set_xlim(0, max(view.end, 1.0))
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": "faultdrill"})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg") :]
    head, rest = svg.split(">", 1)
    head = re.sub(r'\s(width|height)="[^"]*"', "", head)
    title = html.escape("Canary rollout: traffic weight and per-version success rate, p95 latency and confidence")
    return (f'<svg id="canary-figure" role="img" aria-label="{title}" preserveAspectRatio="xMidYMin meet"'
            f"{head[4:]}><title>{title}</title>{rest}")  # fmt: skip


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v * 100:.1f} %"


def _ms(v: float | None) -> str:
    return "–" if v is None else f"{v * 1000:.0f} ms"


def _num(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}"


def canary_markdown(view: CanaryView | None, level: int = 3) -> list[str]:
    """The section's Markdown lines (empty without a canary rollout)."""
    if view is None:
        return []
    lines = ["", f"{'#' * level} Canary rollout", "", "| t (s) | decision | version | weight | why |",
             "|---:|---|---|---:|---|"]  # fmt: skip
    for d in view.decisions:
        why = d.reason.replace("|", "/") + (f" ({d.seconds:g} s)" if d.seconds is not None else "")
        lines.append(f"| {d.t:.1f} | {d.event} | {d.version} | {d.weight} % | {why} |")
    judged = [p for p in view.points if p.result not in ("inconclusive",)]
    if judged:
        lines += ["", "| t (s) | result | weight | canary success | canary p95 | canary confidence "
                      "| stable success | stable p95 | stable confidence |",
                  "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for p in judged[-40:]:
            c, s = p.canary, p.stable
            lines.append(f"| {p.t:.1f} | {p.result} | {p.weight} % | {_pct(c['success_rate'])} | "
                         f"{_ms(c['latency_p95_s'])} | {_num(c['confidence'])} | {_pct(s['success_rate'])} | "
                         f"{_ms(s['latency_p95_s'])} | {_num(s['confidence'])} |")  # fmt: skip
    return lines
