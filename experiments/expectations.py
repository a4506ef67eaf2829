"""The expectation vocabulary of an experiment spec (typed; judged by ``assertions``), and ``halt_if``.

The kinds live in ``experiments.expect`` (one module each, and the table that lists them); this module
keeps their old import path and holds :class:`HaltCondition`, the spec's ``halt_if`` entries::

    halt_if: [{slo: availability, below: 0.5, for: 10s}]
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from experiments.expect import EXPECTATION_KEYS, Expectation
from experiments.expect.alert import AlertExpectation
from experiments.expect.breaker import BreakerSequence
from experiments.expect.canary import CanaryExpectation
from experiments.expect.counter import CounterIncrease
from experiments.expect.error_budget import ErrorBudget
from experiments.expect.no_alerts import NoAlerts
from experiments.expect.probe import ProbeBecomes, ProbeHolds
from experiments.expect.recovers import Recovers
from experiments.expect.requests import RequestsCount
from experiments.expect.restarts import Restarts
from experiments.expect.runbook import RunbookRestores
from experiments.expect.slo import SloOver
from experiments.timespec import Duration, Moment, Window, parse_duration

__all__ = [
    "EXPECTATION_KEYS",
    "AlertExpectation",
    "BreakerSequence",
    "CanaryExpectation",
    "CounterIncrease",
    "Duration",
    "ErrorBudget",
    "Expectation",
    "HaltCondition",
    "Moment",
    "NoAlerts",
    "ProbeBecomes",
    "ProbeHolds",
    "Recovers",
    "RequestsCount",
    "Restarts",
    "RunbookRestores",
    "SloOver",
    "Window",
    "parse_duration",
]


class HaltCondition(BaseModel):
    """``{slo: availability, below: 0.5, for: 10s}`` — stop early (exit 3) when it holds that long."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    slo: Literal["availability", "error_ratio", "latency_p95"]
    below: float | None = None
    above: float | Duration | None = None
    for_: Duration = Field(alias="for")

    @model_validator(mode="after")
    def _bound(self) -> HaltCondition:
        if (self.below is None) == (self.above is None):
            raise ValueError("give exactly one of below or above")
        return self
