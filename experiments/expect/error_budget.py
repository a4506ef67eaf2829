"""``{error_budget: availability, at_most: 0.5, during: hog}``: the fraction of the window's error
budget (1 - the steady-state availability SLO) its failed requests consumed."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from faultdrill.experiments.expect.kind import Kind
from faultdrill.experiments.expect.stats import Finding, SteadyCriteria, judge_budget
from faultdrill.experiments.expect.windows import label, requests_in, window_refs
from faultdrill.experiments.journal.timeline import Timeline
from faultdrill.experiments.timespec import Windowed

__all__ = ["KIND", "ErrorBudget", "judge"]


class ErrorBudget(Windowed):
    """``{error_budget: availability, at_most: 0.5, during: hog}`` — fraction of the window's
    error budget (1 - steady_state availability SLO) consumed."""

    error_budget: Literal["availability"]
    at_most: float = Field(gt=0)


def _describe(x: ErrorBudget) -> str:
    return f"at most {x.at_most:.0%} of the {x.error_budget} error budget consumed {label(x)}"


def judge(x: ErrorBudget, tl: Timeline, steady: SteadyCriteria) -> Finding:
    return judge_budget(*requests_in(x, tl), at_most=x.at_most, slo_availability=steady.availability)


KIND = Kind("error_budget", ErrorBudget, "error_budget", _describe, judge, references=window_refs,
            judged_on_steady_state=True, catches="damage")
