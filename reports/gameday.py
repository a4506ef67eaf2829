"""The game-day report: every scenario (run) of a game day in one document, plus one timeline
of the day — people's runbook steps and notes, set among what the system did (faults,
alerts, notifications) in wall-clock order.

Example::

    html = render_gameday([RunView.of(j) for j in journals], title="Game day 2026-11-22")
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from faultdrill.experiments.journal import AlertAttrs, FaultAttrs, NotificationAttrs, RunbookAttrs

if TYPE_CHECKING:
    from faultdrill.reports.model import RunView

__all__ = ["DayRow", "day_timeline", "render_gameday", "render_gameday_markdown", "repairs"]


@dataclass(frozen=True)
class DayRow:
    wall: float
    scenario: str
    t: float | None
    what: str
    detail: str
    css: str = ""


def repairs(view: RunView) -> dict[tuple[str, str, float], str]:
    """The runbook steps that repaired the service, by (runbook, step, t of the step's end event), in words: what
    the ``runbook … restores steady_state`` verdicts that passed named (``measured.repair_step``, evidence[0])."""
    out: dict[tuple[str, str, float], str] = {}
    for verdict in view.journal.verdict_records():
        m = verdict.measured
        if not verdict.passed or m.get("repair_step") is None or not verdict.evidence:
            continue
        step = verdict.evidence[0]
        regained, end = m.get("regained_t"), m.get("fault_end_t")
        rollback = f"rolled back only at t={end:.1f} s" if end is not None else "never rolled back in this run"
        attrs = step.get("attrs") or {}
        out[(str(step.get("source")), str(attrs.get("step")), round(float(step.get("t") or 0.0), 3))] = (
            f"steady from t={regained or 0.0:.1f} s while the fault was still in effect ({rollback})")  # fmt: skip
    return out


def day_timeline(views: Sequence[RunView]) -> list[DayRow]:
    """Runbook steps and notes, with scenario start/end, faults, alerts and notifications around them; the step
    that repaired the service says so."""
    rows: list[DayRow] = []
    for v in views:
        j = v.journal
        name = j.name
        repaired = repairs(v)
        rows.append(DayRow(j.started_at, name, 0.0, "scenario started", f"run {j.run_id}", "phase"))
        for e in j.events:
            wall = e.wall if e.wall is not None else j.started_at + e.t
            if e.kind == "runbook":
                r = RunbookAttrs.of(e)
                note = f" — {r.note}" if r.note else ""
                action = f" ({r.action})" if r.action and r.status != "started" else ""
                fixed = repaired.get((e.source, str(r.step), round(e.t, 3))) if r.status != "started" else None
                step = f"runbook step ({r.status or 'noted'})" + (" — repaired the service" if fixed else "")
                rows.append(DayRow(wall, name, e.t, step, f"{r.step or ''}{f' {r.title}' if r.title else ''}{action}"
                                   f"{note}{f' — {fixed}' if fixed else ''} [{e.source}]", "step"))  # fmt: skip
            elif e.kind == "fault":
                f = FaultAttrs.of(e)
                if what := {"start": "fault injected", "end": "fault ended", "error": "fault error"}.get(f.event):
                    rows.append(DayRow(wall, name, e.t, what, f"{e.source} ({f.fault or ''})"))
            elif e.kind == "alert":
                if (state := AlertAttrs.of(e).state) in ("firing", "resolved"):
                    rows.append(DayRow(wall, name, e.t, f"alert {state}", e.source))
            elif e.kind == "notification":
                n = NotificationAttrs.of(e)
                rows.append(DayRow(wall, name, e.t, f"notified ({n.status})", f"{n.alert} → {e.source}"))
        end = j.ended_at if j.ended_at is not None else j.started_at + v.duration
        rows.append(DayRow(end, name, v.duration, f"scenario {j.outcome or 'unfinished'}",
                           j.reason or v.summary, "phase"))  # fmt: skip
    return sorted(rows, key=lambda r: r.wall)


def render_gameday(views: Sequence[RunView], *, title: str | None = None) -> str:
    from markupsafe import Markup

    from faultdrill.reports.figure import timeline_svg
    from faultdrill.reports.fmt import clock
    from faultdrill.reports.html import environment

    first = min((v.journal.started_at for v in views), default=None)
    last = max((v.journal.ended_at or v.journal.started_at for v in views), default=None)
    rows = day_timeline(views)
    title = title or f"Game day {clock(first)[:10]}"
    return environment().get_template("gameday.html.j2").render(
        title=title, views=views, svgs=[Markup(timeline_svg(v)) for v in views], timeline=rows,
        has_steps=any(r.css == "step" for r in rows), first=first, last=last,
    )  # fmt: skip


def render_gameday_markdown(views: Sequence[RunView], *, title: str | None = None) -> str:
    from faultdrill.reports.fmt import clock
    from faultdrill.reports.markdown import cell, render_markdown

    first = min((v.journal.started_at for v in views), default=None)
    out = [f"## {cell(title or f'Game day {clock(first)[:10]}')}", "", "| # | scenario | outcome | held | score |",
           "|--:|---|---|--:|--:|"]  # fmt: skip
    for i, v in enumerate(views, 1):
        out.append(f"| {i} | {cell(v.journal.name)} | {v.journal.outcome} | {v.passed}/{len(v.verdicts)} | "
                   f"{v.score.label} |")  # fmt: skip
    steps = [r for r in day_timeline(views) if r.css == "step"]
    out += ["", "**People's steps and notes**", ""]
    out += [f"- {clock(r.wall)[11:19]} · {cell(r.scenario)} · {cell(r.what)}: {cell(r.detail)}" for r in steps] or [
        "- none recorded"]  # fmt: skip
    for v in views:
        out += ["", render_markdown(v, html_href=None, level=3).rstrip()]
    return "\n".join(out) + "\n"
