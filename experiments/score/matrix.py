"""The detection matrix: variant × experiment → caught / switch only / missed, and the detection rate.

A run *catches* its variant when at least one **damage** expectation fails (``Kind.catches``: what users and
SREs feel — SLOs, failed requests, restarts, recovery, pages, error budget, runbooks), or when the run was
stopped by a ``halt_if`` condition (the suite's own SLO floor). When only **mechanism** expectations fail
(probes, breakers, counters, the canary controller) the variant was caught by the switch, not the damage:
*switch only*, shown but not counted. An experiment whose baseline (the unmodified system) did not pass judges
nothing: its cells are *baseline failed* and never count. The detection rate is the share of variants caught
on damage by at least one experiment; a variant none catches is a gap.

Everything here is a pure function of journals (or their verdicts): ``judge_journal`` reads one run,
``summarize`` makes the score.

Example::

    cell_outcome = judge(expect=[{"slo": "availability", "at_least": 0.99}],
                         verdicts=[{"name": "availability at least 0.99", "passed": False}], outcome="failed")
    cell_outcome.outcome, cell_outcome.failures[0].catches       # ('caught', 'damage')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from faultdrill.experiments.expect import KINDS
from faultdrill.experiments.expect.kind import Catches
from faultdrill.experiments.journal import Journal, VerdictRecord

__all__ = ["SCORE_VERSION", "Baseline", "Cell", "CellOutcome", "Failure", "Judged", "ScoreResult", "VariantRow",
           "catches_of", "judge", "judge_journal", "summarize"]

SCORE_VERSION = 1
_NO_BASELINE = "no experiment passed its baseline: none can judge a variant, so nothing was caught"

CellOutcome = Literal["caught", "switch_only", "missed", "halted", "baseline_failed", "skipped", "not_applicable",
                      "interrupted"]
"""``caught`` a damage expectation failed (or ``halt_if`` stopped the run); ``switch_only`` only mechanism ones;
``missed`` everything held; ``halted`` the run judged nothing (it aborted before any fault: ``reason``);
``baseline_failed`` the experiment failed on the unmodified system, so it was not run; ``skipped`` not run
(``--first-catch`` after a catch); ``not_applicable`` not run: the variant changes nothing on that
experiment's system (a platform profile for a part it does not have, e.g. ``no_canary_analysis`` without a
canary), so its run would be the baseline's; ``interrupted`` Ctrl-C or SIGTERM stopped the score there."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Failure(_Model):
    """One failed expectation of a run: which, its kind, damage or mechanism, and why (the verdict's text)."""

    expectation: str
    kind: str
    catches: Catches
    expected: str = ""
    observed: str = ""


class Judged(_Model):
    """One run, judged: its outcome in the matrix and the failures that decided it."""

    outcome: CellOutcome
    failures: list[Failure] = Field(default_factory=list)
    reason: str = ""

    def damage(self) -> list[Failure]:
        return [f for f in self.failures if f.catches == "damage"]


class Cell(Judged):
    """``variant`` × ``experiment``: how that run went, with its run directory and duration."""

    variant: str
    experiment: str
    run_dir: str | None = None
    seconds: float | None = None
    exit_code: int | None = None


class Baseline(Judged):
    """An experiment on the unmodified system; it judges variants only when it passed (``outcome: missed``)."""

    experiment: str
    file: str
    run_dir: str | None = None
    seconds: float | None = None
    exit_code: int | None = None

    @property
    def usable(self) -> bool:
        return self.outcome == "missed"


class VariantRow(_Model):
    """A variant's line of the summary: what it changes and whether (and by what) it was caught."""

    name: str
    changes: list[str] = Field(default_factory=list)
    description: str = ""
    caught: bool = False
    caught_by: list[str] = Field(default_factory=list)
    """Experiments whose run caught it on damage."""
    switch_only_by: list[str] = Field(default_factory=list)
    """Experiments whose run failed only mechanism expectations."""


class ScoreResult(_Model):
    """Everything ``score.json`` holds."""

    version: int = SCORE_VERSION
    name: str
    started_at: float
    ended_at: float | None = None
    threshold: float
    first_catch: bool = False
    experiments: list[str]
    """Experiment names, in run order (``baselines`` has their files)."""
    baselines: list[Baseline] = Field(default_factory=list)
    variants: list[VariantRow] = Field(default_factory=list)
    cells: list[Cell] = Field(default_factory=list)
    caught: int = 0
    detection_rate: float | None = None
    """Percent of variants caught on damage; None before any variant was judged."""
    gaps: list[str] = Field(default_factory=list)
    """Variants no experiment caught on damage (those in ``switch_only`` too)."""
    switch_only: list[str] = Field(default_factory=list)
    """Variants only a mechanism expectation noticed."""
    complete: bool = False
    """False when the score was interrupted: the matrix is partial and the rate counts what ran."""
    notes: list[str] = Field(default_factory=list)

    def cell(self, variant: str, experiment: str) -> Cell | None:
        return next((c for c in self.cells if c.variant == variant and c.experiment == experiment), None)

    def exit_code(self) -> int:
        """0 at or above the threshold, 1 below it, 3 interrupted (partial)."""
        if not self.complete:
            return 3
        return 0 if self.detection_rate is not None and self.detection_rate >= self.threshold else 1


def catches_of(expectation: Mapping[str, Any], measured: Mapping[str, float | int | None] | None = None,
               ) -> tuple[str, Catches]:  # fmt: skip
    """The kind's tag and classification of an expectation as a journal keeps it (its spec's mapping); with the
    failed verdict's ``measured`` values, refined by the kind where its failures differ (``Kind.catches_when``)."""
    present = {k: v for k, v in expectation.items() if v is not None}
    kind = next((k for k in KINDS if k.claimed(present)), None)
    if kind is None:
        return "unknown", "mechanism"
    if measured is not None and kind.catches_when is not None:
        return kind.tag, kind.catches_when(measured)
    return kind.tag, kind.catches


def judge(*, expect: Sequence[Mapping[str, Any]], verdicts: Sequence[Mapping[str, Any] | VerdictRecord],
          outcome: str | None, reason: str = "") -> Judged:  # fmt: skip
    """A run's place in the matrix from its spec's ``expect``, its verdicts (in the same order; any beyond —
    the spec's embedded Chaos Toolkit steps — count as mechanism) and its outcome."""
    records = [v if isinstance(v, VerdictRecord) else VerdictRecord.model_validate(dict(v)) for v in verdicts]
    failures = []
    for i, v in enumerate(records):
        if v.passed or not v.evaluated:
            continue
        tag, catches = catches_of(expect[i], v.measured) if i < len(expect) else ("chaostoolkit", "mechanism")
        failures.append(Failure(expectation=v.name, kind=tag, catches=catches, expected=v.expected,
                                observed=v.observed))  # fmt: skip
    if outcome == "halted" and reason.startswith("halt_if"):
        failures.append(Failure(expectation=reason.split(":", 1)[0], kind="halt_if", catches="damage",
                                observed=reason))  # fmt: skip
    if outcome in ("halted", "error") and not any(v.evaluated for v in records) and not failures:
        return Judged(outcome="halted", reason=reason or "the run judged nothing")
    if any(f.catches == "damage" for f in failures):
        return Judged(outcome="caught", failures=failures, reason=reason)
    return Judged(outcome="switch_only" if failures else "missed", failures=failures, reason=reason)


def judge_journal(journal: Journal) -> Judged:
    """:func:`judge` of one run's journal."""
    expect = journal.spec.get("expect") or []
    return judge(expect=[e for e in expect if isinstance(e, dict)], verdicts=journal.verdict_records(),
                 outcome=journal.outcome, reason=journal.reason)  # fmt: skip


def summarize(result: ScoreResult) -> ScoreResult:
    """``result`` with each variant's row, the rate and the gaps computed from its cells (baseline-failed
    experiments never count)."""
    usable = {b.experiment for b in result.baselines if b.usable}
    rows = []
    for row in result.variants:
        cells = [c for c in result.cells if c.variant == row.name and c.experiment in usable]
        by = [c.experiment for c in cells if c.outcome == "caught"]
        switch = [c.experiment for c in cells if c.outcome == "switch_only"]
        rows.append(row.model_copy(update={"caught": bool(by), "caught_by": by, "switch_only_by": switch}))
    caught = sum(r.caught for r in rows)
    rate = 100.0 * caught / len(rows) if rows else None
    notes = list(result.notes)
    if result.baselines and not usable and _NO_BASELINE not in notes:
        notes.append(_NO_BASELINE)
    return result.model_copy(update={
        "variants": rows, "caught": caught, "detection_rate": rate,
        "gaps": [r.name for r in rows if not r.caught],
        "switch_only": [r.name for r in rows if not r.caught and r.switch_only_by], "notes": notes,
    })  # fmt: skip
