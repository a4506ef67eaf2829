"""The spec's ``chaostoolkit:`` steps: real chaostoolkit-lib experiments started on schedule inside a
run, each ending as one verdict of that run, with their journals kept in the run directory."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from faultdrill.experiments.chaostoolkit.embed import JOURNAL_NAME
from faultdrill.experiments.chaostoolkit.steps import CtkSteps
from faultdrill.experiments.journal.timeline import Timeline
from faultdrill.experiments.spec.experiment import Experiment
from faultdrill.experiments.spec.loader import check_experiment_text
from faultdrill.faults.errors import ConfigError


def _write(path: Path, base: str, action: str) -> Path:
    path.write_text(json.dumps({
        "version": "1.0.0", "title": f"health survives {action}", "description": "embedded",
        "steady-state-hypothesis": {"title": "health answers 200", "probes": [
            {"type": "probe", "name": "health", "tolerance": 200, "provider": {"type": "http", "url": f"{base}/h"}}]},
        "method": [{"type": "action", "name": action,
                    "provider": {"type": "http", "url": f"{base}/{action}", "method": "POST"}}],
    }))  # fmt: skip
    return path


def _spec(steps: list[dict[str, Any]]) -> Experiment:
    return Experiment.model_validate({"apiVersion": "faultdrill/v1", "kind": "Experiment", "metadata": {"name": "t"},
                                      "chaostoolkit": steps})  # fmt: skip


def test_steps_start_on_schedule_and_become_verdicts(tmp_path: Path, service: str) -> None:
    base = service
    _write(tmp_path / "ok.json", base, "noop")
    _write(tmp_path / "bad.json", base, "break")
    spec = _spec([{"file": "ok.json"}, {"file": "bad.json", "at": "1s"}])
    timeline = Timeline()
    steps = CtkSteps(spec, tmp_path / "spec.yaml", timeline, tmp_path / "run")
    steady = timeline.now()
    steps.tick(steady + 0.5, steady_at=steady)  # only the first is due; the second (it breaks) a second later
    assert steps.pending() and len(steps._threads) == 1
    deadline = time.monotonic() + 60
    while steps.pending() and time.monotonic() < deadline:
        steps.tick(timeline.now(), steady_at=steady)
        time.sleep(0.05)
    steps.join()
    verdicts = {v.name: v for v in steps.verdicts}
    assert verdicts["chaostoolkit health survives noop"].passed
    assert not verdicts["chaostoolkit health survives break"].passed
    assert (tmp_path / "run" / "chaostoolkit-0" / JOURNAL_NAME).exists()
    assert any(e.source == "ctk:break" for e in timeline.select("fault"))


def test_a_bad_embedded_file_is_refused_before_anything_starts(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"chaostoolkit\[0\]"):
        CtkSteps(_spec([{"file": "bad.json"}]), tmp_path / "spec.yaml", Timeline(), tmp_path / "run")
    with pytest.raises(ConfigError, match="no such Chaos Toolkit experiment file"):
        CtkSteps(_spec([{"file": "nope.json"}]), tmp_path / "spec.yaml", Timeline(), tmp_path / "run")


def test_a_step_that_never_started_fails() -> None:
    steps = CtkSteps(_spec([]), None, Timeline(), Path("/nonexistent"))
    steps.join()
    assert steps.verdicts == []


def test_spec_errors_in_a_step_are_located() -> None:
    text = """apiVersion: faultdrill/v1
kind: Experiment
metadata: {name: t}
chaostoolkit:
  - {file: a.json, att: 5s}
"""
    [e] = check_experiment_text(text, file="x.yaml")
    assert (e.line, e.field, e.suggestion) == (5, "chaostoolkit[0].att", "at")
