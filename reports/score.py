"""The resilience score: 0–100 per run, from four parts, with the formula printed next to it.

::

    score = round(100 × Σ wᵢ·cᵢ / Σ wᵢ × outcome factor)      over the parts that apply

    part                         weight  c (0..1)
    E  expectations held           40    passed / all expectations
    A  availability under faults   30    (availability during faults − 0.5) / (SLO availability − 0.5), clamped
    D  detection                   15    mean over faults of 1 − MTTD / 30 s, clamped (never detected: 0)
    R  recovery                    15    mean over faults of 1 − MTTR / 60 s, clamped (never recovered: 0)

    outcome factor: passed or failed 1, halted 0.5; a run that ended in error, or aborted before
    any fault was injected (nothing was tested), is not scored.

A part that does not apply (no expectations; no faults, so no D and R; no requests during
faults, so no A) is left out and the others are re-weighted; a run where none applies is
not scored. ``docs/reports.md`` explains the choices.

>>> s = resilience_score(outcome="passed", passed=3, expectations=4, availability_faults=0.99,
...                      slo_availability=0.99, mttd_s=[1.5], mttr_s=[6.0])
>>> s.value, s.formula
(88, '100 × (40×0.75 + 30×1.00 + 15×0.95 + 15×0.90) / 100 × 1 = 88')
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["DETECT_REF_S", "RECOVER_REF_S", "WEIGHTS", "Part", "Score", "resilience_score"]

WEIGHTS: dict[str, int] = {"E": 40, "A": 30, "D": 15, "R": 15}
DETECT_REF_S = 30.0
RECOVER_REF_S = 60.0
AVAILABILITY_FLOOR = 0.5
OUTCOME_FACTOR: dict[str, float] = {"passed": 1.0, "failed": 1.0, "halted": 0.5}
DEFINITION = ("score = 100 × (40·E + 30·A + 15·D + 15·R) / Σ weights of the parts that apply × outcome factor; "
              "E = expectations held; A = (availability during faults − 0.5) / (SLO − 0.5); "
              f"D = mean(1 − MTTD / {DETECT_REF_S:g} s); R = mean(1 − MTTR / {RECOVER_REF_S:g} s); "
              "outcome factor 1 (passed, failed), 0.5 (halted)")  # fmt: skip


@dataclass(frozen=True)
class Part:
    key: str
    name: str
    weight: int
    value: float | None
    """0..1, or None when the part does not apply to this run."""
    detail: str


@dataclass(frozen=True)
class Score:
    """A run's score (None = not scored), its parts, and the formula with this run's numbers."""

    value: int | None
    parts: tuple[Part, ...]
    factor: float
    formula: str
    why_unscored: str = ""
    definition: str = DEFINITION

    @property
    def label(self) -> str:
        return "n/a" if self.value is None else f"{self.value}/100"


def _clamp(x: float) -> float:
    return min(1.0, max(0.0, x))


def _mean_time_part(times: Sequence[float | None], ref: float) -> float | None:
    if not times:
        return None
    return sum(0.0 if t is None else _clamp(1.0 - t / ref) for t in times) / len(times)


def resilience_score(*, outcome: str | None, passed: int, expectations: int, availability_faults: float | None,
                     slo_availability: float, mttd_s: Sequence[float | None],
                     mttr_s: Sequence[float | None], evaluated: int | None = None) -> Score:  # fmt: skip
    """Score one run from its figures (see the module docstring for the formula).

    ``evaluated``: how many expectations were judged (None: all); a run that aborted before any fault
    was injected judged none, tested nothing, and is not scored (a 0 would blame the system)."""
    span = slo_availability - AVAILABILITY_FLOOR
    a = None if availability_faults is None else (
        _clamp((availability_faults - AVAILABILITY_FLOOR) / span) if span > 0 else float(availability_faults >= 1.0))
    undetected, unrecovered = sum(t is None for t in mttd_s), sum(t is None for t in mttr_s)
    parts = (
        Part("E", "expectations held", WEIGHTS["E"], passed / expectations if expectations else None,
             f"{passed} of {expectations} held" if expectations else "no expectations"),
        Part("A", "availability under faults", WEIGHTS["A"], a,
             "no requests during faults" if availability_faults is None else
             f"{availability_faults:.4f} during faults (SLO {slo_availability:g}, floor {AVAILABILITY_FLOOR:g})"),
        Part("D", "detection", WEIGHTS["D"], _mean_time_part(mttd_s, DETECT_REF_S),
             "no faults" if not mttd_s else f"{len(mttd_s)} fault(s), reference {DETECT_REF_S:g} s"
             + (f", {undetected} never detected" if undetected else "")),
        Part("R", "recovery", WEIGHTS["R"], _mean_time_part(mttr_s, RECOVER_REF_S),
             "no faults" if not mttr_s else f"{len(mttr_s)} fault(s), reference {RECOVER_REF_S:g} s"
             + (f", {unrecovered} never recovered" if unrecovered else "")),
    )  # fmt: skip
    factor = OUTCOME_FACTOR.get(outcome or "", 0.0)
    applied = [p for p in parts if p.value is not None]
    if expectations and evaluated == 0:
        why = "the run aborted before any fault was injected: nothing was tested"
        return Score(None, parts, factor, f"not scored: {why}", why)
    if outcome not in OUTCOME_FACTOR:
        why = "the run ended in error before anything was injected" if outcome == "error" else "the run did not finish"
        return Score(None, parts, factor, f"not scored: {why}", why)
    if not applied:
        why = "nothing to score: no expectations, no faults and no requests"
        return Score(None, parts, factor, f"not scored: {why}", why)
    total_w = sum(p.weight for p in applied)
    raw = sum(p.weight * (p.value or 0.0) for p in applied) / total_w
    value = round(100 * raw * factor)
    terms = " + ".join(f"{p.weight}×{p.value:.2f}" for p in applied)
    return Score(value, parts, factor, f"100 × ({terms}) / {total_w} × {factor:g} = {value}")
