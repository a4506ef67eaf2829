"""The runbook expectation's old import path: it lives in ``experiments.expect.runbook``."""

from __future__ import annotations

from faultdrill.experiments.expect.runbook import judge_restores, launched

__all__ = ["judge_restores", "launched"]
