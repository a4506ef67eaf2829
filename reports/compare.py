"""Compare two runs (A = before, B = after): what got better or worse.

Rows: the score, availability during faults and overall, p95 latency, and MTTD and MTTR per
fault (faults are matched by id); then every verdict whose result changed, appeared or
disappeared (matched by its name). A difference within the noise tolerance is ``same``:
0.05 s for times, 0.0005 for availability, 1 ms for latency, 1 point for the score.

Example::

    cmp = compare_runs(RunView.of(a), RunView.of(b))
    print(render_comparison_markdown(cmp)); cmp.worse  # rows that regressed
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Literal

from faultdrill.reports.fmt import ms, percent, seconds

if TYPE_CHECKING:
    from faultdrill.reports.model import RunView

__all__ = ["Comparison", "Row", "VerdictChange", "compare_runs", "render_comparison_json",
           "render_comparison_markdown"]  # fmt: skip

Change = Literal["better", "worse", "same", "n/a"]


@dataclass(frozen=True)
class Row:
    metric: str
    a: float | None
    b: float | None
    change: Change
    unit: Literal["s", "ratio", "latency", "points"]

    def shown(self, value: float | None) -> str:
        if self.unit == "s":
            return seconds(value)
        if self.unit == "ratio":
            return percent(value)
        if self.unit == "latency":
            return ms(value)
        return "n/a" if value is None else f"{value:g}"


@dataclass(frozen=True)
class VerdictChange:
    name: str
    a: bool | None
    b: bool | None
    change: Literal["fixed", "regressed", "added", "removed"]
    observed_b: str


@dataclass(frozen=True)
class Comparison:
    a_run: str
    b_run: str
    a_name: str
    b_name: str
    rows: tuple[Row, ...]
    verdicts: tuple[VerdictChange, ...]

    @property
    def better(self) -> list[str]:
        return [r.metric for r in self.rows if r.change == "better"] + [
            v.name for v in self.verdicts if v.change == "fixed"]  # fmt: skip

    @property
    def worse(self) -> list[str]:
        return [r.metric for r in self.rows if r.change == "worse"] + [
            v.name for v in self.verdicts if v.change == "regressed"]  # fmt: skip


TOLERANCE = {"s": 0.05, "ratio": 0.0005, "latency": 0.001, "points": 1.0}


def _row(metric: str, a: float | None, b: float | None, unit: Literal["s", "ratio", "latency", "points"],
         lower_is_better: bool) -> Row:  # fmt: skip
    """A time of None means "never happened": worse than any time (never detected, never recovered)."""
    if a is None and b is None:
        return Row(metric, a, b, "n/a", unit)
    if unit == "s" and (a is None or b is None):
        return Row(metric, a, b, "better" if a is None else "worse", unit)
    if a is None or b is None:
        return Row(metric, a, b, "n/a", unit)
    delta = b - a
    if abs(delta) < TOLERANCE[unit]:
        return Row(metric, a, b, "same", unit)
    return Row(metric, a, b, "better" if (delta < 0) == lower_is_better else "worse", unit)


def compare_runs(a: RunView, b: RunView) -> Comparison:
    score = [float(v.score.value) if v.score.value is not None else None for v in (a, b)]
    rows = [
        _row("resilience score", score[0], score[1], "points", lower_is_better=False),
        _row("availability during faults", a.slo.fault_availability, b.slo.fault_availability, "ratio", False),
        _row("availability (from steady state)", a.slo.availability, b.slo.availability, "ratio", False),
        _row("p95 latency (from steady state)", a.slo.p95_s, b.slo.p95_s, "latency", True),
    ]
    b_faults = {f.id: f for f in b.faults}
    for f in a.faults:
        other = b_faults.get(f.id)
        rows.append(_row(f"MTTD {f.id}", f.mttd_s, None if other is None else other.mttd_s, "s", True))
        rows.append(_row(f"MTTR {f.id}", f.mttr_s, None if other is None else other.mttr_s, "s", True))
        if other is None:
            rows[-2:] = [Row(r.metric + " (not in B)", r.a, None, "n/a", "s") for r in rows[-2:]]
    for f in b.faults:
        if f.id not in {x.id for x in a.faults}:
            rows.append(Row(f"MTTD {f.id} (not in A)", None, f.mttd_s, "n/a", "s"))
            rows.append(Row(f"MTTR {f.id} (not in A)", None, f.mttr_s, "n/a", "s"))
    before = {v.name: v for v in a.verdicts}
    after = {v.name: v for v in b.verdicts}
    changes = []
    for name in [*before, *(n for n in after if n not in before)]:
        va, vb = before.get(name), after.get(name)
        if va is not None and vb is not None and va.passed == vb.passed:
            continue
        change = "added" if va is None else "removed" if vb is None else "fixed" if vb.passed else "regressed"
        changes.append(VerdictChange(name, None if va is None else va.passed, None if vb is None else vb.passed,
                                     change, "" if vb is None else vb.observed))  # type: ignore[arg-type]
    return Comparison(a.journal.run_id, b.journal.run_id, a.journal.name, b.journal.name, tuple(rows),
                      tuple(changes))  # fmt: skip


ARROW = {"better": "▲ better", "worse": "▼ worse", "same": "= same", "n/a": "–"}


def render_comparison_markdown(cmp: Comparison) -> str:
    from faultdrill.reports.markdown import cell

    out = [f"### Comparison: `{cmp.a_run}` (A) → `{cmp.b_run}` (B)", ""]
    if cmp.a_name != cmp.b_name:
        out += [f"> A ran **{cell(cmp.a_name)}**, B ran **{cell(cmp.b_name)}**: different experiments.", ""]
    out += [f"**{len(cmp.better)} better, {len(cmp.worse)} worse.**", "", "| metric | A | B | change |",
            "|---|--:|--:|---|"]  # fmt: skip
    out += [f"| {cell(r.metric)} | {r.shown(r.a)} | {r.shown(r.b)} | {ARROW[r.change]} |" for r in cmp.rows]
    out += ["", "**Verdict changes**", ""]
    if not cmp.verdicts:
        out.append("None: every expectation has the same result in both runs.")
    else:
        out += ["| expectation | A | B | change | observed in B |", "|---|---|---|---|---|"]
        mark = {True: "✅", False: "❌", None: "–"}
        out += [f"| {cell(v.name)} | {mark[v.a]} | {mark[v.b]} | {v.change} | {cell(v.observed_b) or '–'} |"
                for v in cmp.verdicts]  # fmt: skip
    return "\n".join(out) + "\n"


def render_comparison_json(cmp: Comparison) -> str:
    doc = {**asdict(cmp), "better": cmp.better, "worse": cmp.worse}
    return json.dumps(doc, indent=2) + "\n"
