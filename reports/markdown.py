"""The Markdown summary: fit for a pull-request comment (GitHub-flavoured tables).

Verdicts (failures first), per-fault MTTD/MTTR, key figures, the score with its formula, what
was emulated, and a link to the HTML report by relative path.

Example::

    body = render_markdown(RunView.of(journal), html_href="report.html")
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from faultdrill.reports.canary import canary_markdown, canary_view
from faultdrill.reports.fmt import ms, number, percent, seconds
from faultdrill.reports.traces import traces_markdown

if TYPE_CHECKING:
    from faultdrill.reports.model import RunView

__all__ = ["render_markdown"]

ICON = {"passed": "✅", "failed": "❌", "halted": "⚠️", "error": "⛔"}


def cell(text: object) -> str:
    """One table cell: pipes escaped, newlines folded (a cell is one line in GFM)."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", "<br>")


def render_markdown(view: RunView, *, html_href: str | None = "report.html", level: int = 3) -> str:
    j, slo, h = view.journal, view.slo, "#" * level
    code = j.exit_code if j.exit_code is not None else "–"
    lines = [f"{h} {ICON.get(j.outcome or '', '❔')} {cell(j.name)} — {j.outcome or 'unfinished'} (exit {code})"
             f" · resilience score {view.score.label}", ""]  # fmt: skip
    where = f"[full report]({html_href}) · " if html_href else ""
    lines += [f"{where}run `{j.run_id}` · {seconds(view.duration, 1)} · device **{j.environment.device_label}**"
              f" · alert time scale {j.environment.time_scale:g}", ""]  # fmt: skip
    if j.reason:
        lines += [f"> **{(j.outcome or 'stopped').capitalize()}:** {cell(j.reason)}", ""]
    if view.verdicts:
        lines += [f"**{view.summary}**", "", "| | expected | observed |", "|---|---|---|"]
        for v in sorted(view.verdicts, key=lambda v: v.passed):
            mark = "✅" if v.passed else "❌" if v.evaluated else "➖"
            lines.append(f"| {mark} | {cell(v.expected or v.name)} | {cell(v.observed)} |")
        lines.append("")
    else:
        lines += ["No expectation was judged.", ""]
    if view.faults:
        lines += ["| fault | type | target | MTTD | MTTR | availability | p95 |", "|---|---|---|--:|--:|--:|--:|"]
        for f in view.faults:
            kind = f"{f.type}{' (emulated)' if f.emulated else ''}"
            lines.append(f"| `{cell(f.id)}` | {cell(kind)} | {cell(f.target)} | {seconds(f.mttd_s)} | "
                         f"{seconds(f.mttr_s)} | {percent(f.availability)} | {ms(f.p95_s)} |")  # fmt: skip
        lines.append("")
    lines += [
        f"**Key figures** (from steady state on): {number(slo.requests)} requests, {number(slo.failed)} failed"
        f"{f' ({number(slo.wrong)} wrong answers)' if slo.wrong else ''} · "
        f"availability {percent(slo.availability)} (SLO {slo.availability_target:g}) · p95 {ms(slo.p95_s)} · "
        f"error budget consumed {percent(slo.budget_consumed, 0)} · availability during faults "
        f"{percent(slo.fault_availability)}",
        "",
        f"**Score** {view.score.label}: `{view.score.formula}`",
    ]  # fmt: skip
    if view.alerts:
        fired = ", ".join(f"{a.name} ({a.after_fault})" for a in view.alerts if a.firing is not None) or "none"
        lines += ["", f"**Alerts fired:** {cell(fired)}"]
    lines += traces_markdown(j.traces, level)
    lines += canary_markdown(canary_view(j.events), level)
    if j.environment.emulated or j.environment.notes:
        lines += ["", "<details><summary>What was emulated</summary>", ""]
        lines += [f"- {cell(n)}" for n in j.environment.notes] or ["- the device was emulated"]
        lines += ["", "</details>"]
    return "\n".join(lines) + "\n"
