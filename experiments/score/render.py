"""The detection matrix as a terminal table (rich) and as Markdown (``score.md``), from a ``ScoreResult``.

Rows are variants (the baseline first), columns experiments; a cell says caught / switch only / missed, by
which expectation and why (the failing verdict's observed text). Below: the rate against the threshold, the
gaps and the switch-only variants.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from faultdrill.experiments.score.matrix import Failure, Judged, ScoreResult

__all__ = ["LABELS", "cell_text", "print_score", "score_markdown", "summary_lines"]

LABELS = {
    "caught": "✔ caught", "switch_only": "◐ switch only", "missed": "✘ missed", "halted": "– halted",
    "baseline_failed": "– baseline failed", "skipped": "· skipped", "not_applicable": "· n/a",
    "interrupted": "– interrupted",
}  # fmt: skip
_STYLES = {"caught": "green", "switch_only": "yellow", "missed": "red", "interrupted": "yellow"}


def _deciding(judged: Judged) -> list[Failure]:
    """The failures that decided the cell: the damage ones when there are any, else the mechanism ones."""
    return judged.damage() or judged.failures


def cell_text(judged: Judged, *, baseline: bool = False) -> str:
    """One cell in plain text: its label, the deciding expectation and why (the verdict's observed text)."""
    label = LABELS[judged.outcome]
    if baseline and judged.outcome not in ("halted", "interrupted"):
        label = "✔ passed" if judged.outcome == "missed" else "✘ FAILED"
    deciding = _deciding(judged)
    lines = [label]
    if deciding:
        first = deciding[0]
        lines.append(f"by {first.kind}: {first.expectation}")
        lines.append(f"why: {first.observed}")
        if len(deciding) > 1:
            lines.append(f"(+{len(deciding) - 1} more)")
    elif judged.reason:
        lines.append(judged.reason)
    return "\n".join(lines)


def summary_lines(result: ScoreResult) -> list[str]:
    """The rate against the threshold, the gaps, the switch-only variants and the notes."""
    n = len(result.variants)
    rate = "-" if result.detection_rate is None else f"{result.detection_rate:.0f}%"
    verdict = "partial (interrupted)" if not result.complete else (
        "at or above" if result.exit_code() == 0 else "BELOW")  # fmt: skip
    lines = [f"detection score: {result.caught}/{n} variants caught on damage ({rate}); threshold "
             f"{result.threshold:g}%: {verdict}"]  # fmt: skip
    failed = [b.experiment for b in result.baselines if not b.usable and b.outcome != "interrupted"]
    if failed:
        lines.append("baseline failed (its catches do not count): " + ", ".join(failed))
    if result.gaps:
        lines.append("gaps (no experiment catches them on damage): " + ", ".join(
            f"{g} (switch only)" if g in result.switch_only else g for g in result.gaps))  # fmt: skip
    lines += [f"note: {n}" for n in result.notes]
    return lines


def print_score(console: Console, result: ScoreResult) -> None:
    table = Table(title=f"{result.name}: detection matrix (variant × experiment)", show_lines=True)
    table.add_column("variant", overflow="fold")
    for name in result.experiments:
        table.add_column(name, overflow="fold")  # wrapped, never cut with "…"
    by_name = {b.experiment: b for b in result.baselines}
    table.add_row("baseline (unmodified)", *[cell_text(by_name[e], baseline=True) if e in by_name else "–"
                                             for e in result.experiments])  # fmt: skip
    for row in result.variants:
        cells = []
        for e in result.experiments:
            c = result.cell(row.name, e)
            text = "–" if c is None else cell_text(c)
            style = _STYLES.get(c.outcome) if c is not None else None
            cells.append(f"[{style}]{_escape(text)}[/]" if style else _escape(text))
        mark = "[green]caught[/]" if row.caught else "[red]GAP[/]"
        table.add_row(f"{_escape(row.name)}\n{mark}", *cells)
    console.print(table)
    for line in summary_lines(result):
        console.print(line, highlight=False, markup=False, soft_wrap=True)


def _escape(text: str) -> str:
    return text.replace("[", r"\[")


def _md(text: str) -> str:
    return text.replace("|", r"\|").replace("\n", "<br>")


def score_markdown(result: ScoreResult) -> str:
    """``score.md``: the matrix, the rate, the gaps, and every run's directory."""
    out = [f"# Detection score: {result.name}", ""]
    out += [f"- {line}" for line in summary_lines(result)]
    out += ["", "| variant | " + " | ".join(_md(e) for e in result.experiments) + " |",
            "|---|" + "---|" * len(result.experiments)]  # fmt: skip
    by_name = {b.experiment: b for b in result.baselines}
    out.append("| baseline (unmodified) | " + " | ".join(
        _md(cell_text(by_name[e], baseline=True)) if e in by_name else "–" for e in result.experiments) + " |")
    for row in result.variants:
        cells = [result.cell(row.name, e) for e in result.experiments]
        name = f"**{_md(row.name)}** ({'caught' if row.caught else 'GAP'})"
        out.append(f"| {name} | " + " | ".join("–" if c is None else _md(cell_text(c)) for c in cells) + " |")
    out += ["", "## Variants", ""]
    for row in result.variants:
        out.append(f"- **{_md(row.name)}**: {_md('; '.join(row.changes)) or '-'}"
                   + (f" — {_md(row.description)}" if row.description else ""))  # fmt: skip
    out += ["", "## Runs", ""]
    for b in result.baselines:
        out.append(f"- baseline × {b.experiment}: `{b.run_dir or '-'}`")
    for c in result.cells:
        if c.run_dir:
            out.append(f"- {c.variant} × {c.experiment}: `{c.run_dir}` ({LABELS[c.outcome]})")
    return "\n".join(out) + "\n"
