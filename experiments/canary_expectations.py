"""The canary expectation's old import path: it lives in ``experiments.expect.canary``."""

from __future__ import annotations

from faultdrill.experiments.expect.canary import CanaryExpectation, describe_canary, judge_canary

__all__ = ["CanaryExpectation", "describe_canary", "judge_canary"]
