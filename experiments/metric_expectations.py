"""The ``counter`` expectation's old import path: it lives in ``experiments.expect.counter``."""

from __future__ import annotations

from faultdrill.experiments.expect.counter import CounterIncrease, describe_counter, judge_counter

__all__ = ["CounterIncrease", "describe_counter", "judge_counter"]
