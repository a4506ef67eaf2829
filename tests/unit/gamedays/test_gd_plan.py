"""Game-day plans: the shipped ones validate; every kind of mistake is located in the plan."""

from __future__ import annotations

from pathlib import Path

import pytest

from faultdrill.gamedays.plan import check_plan, load_plan

ROOT = Path(__file__).resolve().parents[3]
HEAD = """apiVersion: faultdrill/v1
kind: GameDay
metadata: {name: t, title: T, objective: O}
roles: {commander: {name: A}, scribe: {name: B}}
system: {target: {replicas: 1}}
"""


def _plan(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "plan.yaml"
    path.write_text(HEAD + body)
    return path


@pytest.mark.parametrize("name", ["smoke.yaml", "monthly.yaml"])
def test_shipped_plans_validate(name: str) -> None:
    loaded, errors = check_plan(ROOT / "gamedays" / "plans" / name)
    assert errors == [] and loaded is not None
    assert loaded.plan.schedule is not None
    for _, spec, _ in loaded.scenarios:  # every scenario runs on the plan's system, with its abort criteria
        assert spec.target == loaded.plan.system.target
        assert all(h in spec.halt_if for h in loaded.plan.abort)


def test_inline_scenario_errors_are_located_in_the_plan(tmp_path: Path) -> None:
    path = _plan(tmp_path, """scenarios:
  - name: one
    inline:
      faults:
        - {id: hog, type: gpu_memory_exhaustion_x, target: replica-0, at: 1s}
""")
    [e] = check_plan(path)[1]
    assert (e.line, e.field, e.suggestion) == (10, "scenarios[0].inline.faults[0].type", "gpu_memory_exhaustion")
    assert "unknown fault 'gpu_memory_exhaustion_x'" in str(e)


def test_shape_errors(tmp_path: Path) -> None:
    [e] = check_plan(_plan(tmp_path, "scenarios:\n  - {name: x, experiment: a.yaml, inline: {}}\n"))[1]
    assert e.field == "scenarios[0]" and "exactly one of experiment" in str(e)
    [e] = check_plan(_plan(tmp_path, "scenarios: []\n"))[1]
    assert e.field == "scenarios"
    [e] = check_plan(_plan(tmp_path, "scenarios:\n  - {experiment: experiments/catalog/smoke.yaml}\npuase: 3s\n"))[1]
    assert e.field == "puase" and e.suggestion == "pause"


def test_a_scenario_that_does_not_fit_the_system_and_duplicates(tmp_path: Path) -> None:
    # oom_kill.yaml names replica-1 in an expectation; the system has one replica.
    errors = check_plan(_plan(tmp_path, "scenarios:\n  - {experiment: experiments/catalog/model_load_failure.yaml}\n"
                                        "  - {experiment: experiments/catalog/model_load_failure.yaml}\n"))[1]
    assert any("on the game day's system" in str(e) and "replica-1" in str(e) for e in errors), errors
    assert any("used twice" in str(e) for e in errors)


def test_missing_runbook_and_missing_scenario_file(tmp_path: Path) -> None:
    path = _plan(tmp_path, """scenarios:
  - name: one
    inline:
      faults:
        - {id: hog, type: gpu_memory_exhaustion, target: replica-0, at: 1s, params: {leave_free_mib: 0},
           runbook: gamedays/runbooks/nope.md}
  - {experiment: nope.yaml}
""")
    errors = check_plan(path)[1]
    assert any(e.field == "scenarios[0].inline.faults[0].runbook" and "nope.md not found" in str(e) for e in errors)
    assert any("nope.yaml" in str(e) and "cannot read" in str(e) for e in errors), errors
    with pytest.raises(Exception, match="nope"):
        load_plan(path)
