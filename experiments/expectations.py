"""The expectation vocabulary of an experiment spec (typed; judged by ``assertions``), and ``halt_if``.

The kinds live in ``experiments.expect`` (one module each, and the table that lists them); this module
keeps their old import path, and :class:`HaltCondition` (the spec's ``halt_if`` entries, at home in ``slo``)::

    halt_if: [{slo: availability, below: 0.5, for: 10s}]
"""

from __future__ import annotations

from faultdrill.experiments.expect import EXPECTATION_KEYS, Expectation
from faultdrill.experiments.expect.alert import AlertExpectation
from faultdrill.experiments.expect.breaker import BreakerSequence
from faultdrill.experiments.expect.canary import CanaryExpectation
from faultdrill.experiments.expect.counter import CounterIncrease
from faultdrill.experiments.expect.error_budget import ErrorBudget
from faultdrill.experiments.expect.no_alerts import NoAlerts
from faultdrill.experiments.expect.probe import ProbeBecomes, ProbeHolds
from faultdrill.experiments.expect.recovers import Recovers
from faultdrill.experiments.expect.requests import RequestsCount
from faultdrill.experiments.expect.restarts import Restarts
from faultdrill.experiments.expect.runbook import RunbookRestores
from faultdrill.experiments.expect.slo import SloOver
from faultdrill.experiments.slo import HaltCondition
from faultdrill.experiments.timespec import Duration, Moment, Window, parse_duration

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


