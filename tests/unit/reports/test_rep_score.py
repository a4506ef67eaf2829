"""The resilience score: its formula, the parts that drop out, and the outcome factor."""

from __future__ import annotations

from pathlib import Path

import pytest

from faultdrill.reports.model import RunView
from faultdrill.reports.score import DEFINITION, resilience_score

DOCS = Path(__file__).resolve().parents[3] / "docs" / "reports.md"


def score(**kw):
    base = dict(outcome="passed", passed=4, expectations=4, availability_faults=0.99, slo_availability=0.99,
                mttd_s=[0.0], mttr_s=[0.0])
    return resilience_score(**{**base, **kw})


def test_perfect_and_formula_text():
    s = score()
    assert s.value == 100 and s.label == "100/100"
    assert s.formula == "100 × (40×1.00 + 30×1.00 + 15×1.00 + 15×1.00) / 100 × 1 = 100"


def test_each_part():
    assert score(passed=2).value == 80                        # E = 0.5 → -20
    assert score(availability_faults=0.745).value == 85       # A = 0.5 → -15
    assert score(availability_faults=0.3).value == 70         # below the 0.5 floor: A = 0
    assert score(mttd_s=[12.0]).value == 94                   # D = 0.6 → -6
    assert score(mttd_s=[None]).value == 85                   # never detected: D = 0
    assert score(mttr_s=[120.0, 30.0]).value == 89            # R = mean(0, 0.5) → 88.75
    assert score(mttr_s=[None]).value == 85


def test_parts_that_do_not_apply_are_left_out_and_reweighted():
    s = score(mttd_s=[], mttr_s=[], availability_faults=None, passed=1, expectations=2)
    assert s.value == 50 and s.formula == "100 × (40×0.50) / 40 × 1 = 50"
    assert [p.value is None for p in s.parts] == [False, True, True, True]


def test_outcome_factor_and_unscored_runs():
    assert score(outcome="halted").value == 50
    assert score(outcome="failed", passed=3).value == 90
    err = score(outcome="error")
    assert err.value is None and err.label == "n/a" and "error" in err.formula
    nothing = score(expectations=0, passed=0, availability_faults=None, mttd_s=[], mttr_s=[])
    assert nothing.value is None and "nothing to score" in nothing.why_unscored


def test_a_run_aborted_before_any_fault_is_not_scored():
    aborted = score(outcome="halted", passed=0, evaluated=0, availability_faults=None, mttd_s=[None], mttr_s=[None])
    assert aborted.value is None and aborted.label == "n/a"
    assert "aborted before any fault was injected" in aborted.why_unscored
    assert score(outcome="halted", passed=0, evaluated=4).value is not None  # judged, then halted: scored


def test_slo_of_one_has_no_span():
    assert score(slo_availability=1.0, availability_faults=1.0).value == 100
    assert score(slo_availability=1.0, availability_faults=0.75).value == 85


@pytest.mark.parametrize("outcome", ["passed", "failed", "halted", "error"])
def test_every_outcome_scores_or_says_why(journal_factory, outcome):
    view = RunView.of(journal_factory(outcome, reason="" if outcome in ("passed", "failed") else "stopped"))
    assert (view.score.value is None) == (outcome == "error")
    assert view.score.formula


def test_documented_formula_is_the_implemented_one():
    doc = DOCS.read_text()
    assert DEFINITION in doc, "docs/reports.md must quote reports.score.DEFINITION verbatim"
    for key, weight in (("E", 40), ("A", 30), ("D", 15), ("R", 15)):
        assert f"| {key} " in doc and f"| {weight} " in doc
