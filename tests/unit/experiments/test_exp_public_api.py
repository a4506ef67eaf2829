"""The engine's small public API (``faultdrill.experiments``): pinned, and every name resolves."""

from __future__ import annotations

import faultdrill.experiments as api

PINNED = ["Experiment", "FaultRegistry", "Journal", "Plan", "RunResult", "SystemDescription", "Timeline",
          "build_plan", "check_experiment", "load_experiment", "run_experiment", "run_plan"]  # fmt: skip


def test_the_public_api_is_pinned_and_resolves() -> None:
    assert api.__all__ == PINNED
    for name in PINNED:
        assert getattr(api, name).__name__ == name


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        api.nope  # noqa: B018
    except AttributeError as exc:
        assert "has no attribute 'nope'" in str(exc)
    else:
        raise AssertionError("no AttributeError")
