"""A plain Chaos Toolkit experiment embedded in a faultdrill run: real chaostoolkit-lib against a tiny
local HTTP server; its activities land on the timeline, its journal is kept, its outcome is a Verdict."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from faultdrill.experiments.chaostoolkit.embed import JOURNAL_NAME, check_ctk, judge, run_ctk
from faultdrill.experiments.journal.timeline import Timeline
from faultdrill.faults.errors import ConfigError


def _experiment(base: str, action: str) -> dict[str, Any]:
    return {
        "version": "1.0.0", "title": f"health survives {action}", "description": "a tiny CTK experiment",
        "steady-state-hypothesis": {"title": "health answers 200", "probes": [
            {"type": "probe", "name": "health", "tolerance": 200, "provider": {"type": "http", "url": f"{base}/h"}}]},
        "method": [
            {"type": "action", "name": action, "provider": {"type": "http", "url": f"{base}/{action}",
                                                             "method": "POST"}},
            {"type": "probe", "name": "look", "provider": {"type": "python", "module": "os.path", "func": "exists",
                                                           "arguments": {"path": "/"}}},
        ],
        "rollbacks": [{"type": "action", "name": "repair", "provider": {"type": "http", "url": f"{base}/repair",
                                                                        "method": "POST"}}],
    }  # fmt: skip


def test_ctk_embedded_experiment_that_holds_is_a_passed_verdict(tmp_path, service):
    path = tmp_path / "ok.json"
    path.write_text(json.dumps(_experiment(service, "noop")))
    timeline = Timeline()
    verdict = run_ctk(path, timeline, out=tmp_path / "run")
    assert verdict.passed and verdict.name == "chaostoolkit health survives noop"
    assert "holds before and after the method" in verdict.expected
    assert verdict.observed.startswith("completed, steady state held (2 hypothesis probe run(s)")
    assert verdict.window is not None and verdict.window[0] <= verdict.window[1]
    journal = json.loads((tmp_path / "run" / JOURNAL_NAME).read_text())
    assert journal["status"] == "completed" and journal["deviated"] is False
    events = [(e.kind, e.source, e.get("event"), e.get("phase"), e.get("value")) for e in timeline.events()]
    assert events == [
        ("probe", "ctk:health", None, "hypothesis-before", True),
        ("fault", "ctk:noop", "start", "method", None),
        ("fault", "ctk:noop", "end", "method", None),
        ("probe", "ctk:look", None, "method", True),
        ("probe", "ctk:health", None, "hypothesis-after", True),
        ("fault", "ctk:repair", "start", "rollback", None),
        ("fault", "ctk:repair", "end", "rollback", None),
    ]
    assert all(e.get("probe") == "chaostoolkit" for e in timeline.select("probe"))
    assert timeline.first("fault", source="ctk:noop").get("target") == f"POST {service}/noop"


def test_ctk_embedded_experiment_that_deviates_is_a_failed_verdict(tmp_path, service):
    path = tmp_path / "break.yaml"
    import yaml

    path.write_text(yaml.safe_dump(_experiment(service, "break")))
    timeline = Timeline()
    verdict = run_ctk(path, timeline)
    assert not verdict.passed
    assert verdict.observed.startswith("status completed, deviated: probe 'health' after the method returned HTTP 500")
    assert verdict.evidence[0]["phase"] == "hypothesis-after"
    after = timeline.select("probe", source="ctk:health", phase="hypothesis-after")
    assert [e.get("value") for e in after] == [False]


def test_ctk_embedded_run_from_another_thread(tmp_path, service):
    path = tmp_path / "ok.json"
    path.write_text(json.dumps(_experiment(service, "noop")))
    found: list[Any] = []
    worker = threading.Thread(target=lambda: found.append(run_ctk(path, Timeline())))
    worker.start()
    worker.join(30)
    assert found and found[0].passed


def test_ctk_invalid_experiment_is_a_config_error_naming_the_file(tmp_path):
    path = tmp_path / "bad.json"
    method = [{"type": "action", "name": "x", "provider": {"type": "python", "module": "no.such.module", "func": "f"}}]
    path.write_text(json.dumps({"version": "1.0.0", "title": "t", "description": "d", "method": method}))
    with pytest.raises(ConfigError, match=r"bad\.json: invalid Chaos Toolkit experiment"):
        check_ctk(path)
    with pytest.raises(ConfigError, match="no such Chaos Toolkit experiment file"):
        check_ctk(tmp_path / "missing.json")


def test_ctk_judge_names_a_failed_activity():
    journal = {"status": "failed", "deviated": False, "steady_states": {"before": None, "after": None},
               "run": [{"activity": {"type": "action", "name": "inject"}, "status": "failed",
                        "exception": ["Traceback…\n", "ActivityFailed: no faultdrill target is up\n"]}],
               "rollbacks": [], "duration": 1.5}  # fmt: skip
    verdict = judge("t", {"title": "t"}, journal)
    assert not verdict.passed
    assert verdict.observed == "status failed: action 'inject' failed: ActivityFailed: no faultdrill target is up"
    assert verdict.measured["failed_activities"] == 1
