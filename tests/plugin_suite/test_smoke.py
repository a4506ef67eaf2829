"""The catalog's smoke experiment (every fault family, time-scaled for CI) as one test: each
expectation is a property of the JUnit testcase, and a failure lists every one that failed."""

from __future__ import annotations

import pytest


@pytest.mark.faultdrill(experiment="experiments/catalog/smoke.yaml")
def test_smoke_experiment(faultdrill_result):
    # The body runs once the experiment passed: extra checks on the run go here.
    assert faultdrill_result.journal.load["requests"] > 0
    assert all(v.passed for v in faultdrill_result.verdicts)
