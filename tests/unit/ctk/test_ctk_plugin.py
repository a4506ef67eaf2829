"""faultdrill's pytest plugin, driven as a user's suite would drive it: pytest in a subprocess, with a
conftest that swaps the experiment runner for a fake (the real runs are the integration tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import yaml

from faultdrill.experiments.engine.run import RunResult
from faultdrill.experiments.expect.judge import Verdict
from faultdrill.faults.base import FaultContext, Scope
from faultdrill.faults.fake import FakeFault
from faultdrill.faults.registry import FaultRegistry
from faultdrill.pytest_plugin import FaultdrillSession, failure_report, smoke_spec

CONFTEST = '''
import json, time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from faultdrill.experiments.expect.judge import Verdict
from faultdrill.experiments.engine.run import RunResult


def fake_run(path, *, out, misconfigurations, console, plain, no_alerts, rules):
    spec = yaml.safe_load(Path(path).read_text())
    name = spec["metadata"]["name"]
    out.mkdir(parents=True, exist_ok=True)
    (out / "ran.json").write_text(json.dumps({"path": str(path), "spec": spec, "misconfigurations":
                                              list(misconfigurations), "no_alerts": no_alerts}))
    if name == "sleepy":
        Path("started").write_text("yes")
        time.sleep(60)
    broken = name == "broken" or "readiness_ignores_model" in misconfigurations
    verdicts = [
        Verdict(name="readiness of replica-0 becomes false within 5 s after hog.start", passed=not broken,
                expected="readiness of replica-0 false within 5 s of hog.start",
                observed="readiness of replica-0 never became false after hog.start"),
        Verdict(name="recovers steady state within 20 s after hog.end", passed=True, expected="e", observed="o"),
    ]
    journal = SimpleNamespace(name=name, outcome="failed" if broken else "passed", reason="",
                              load={"requests": 42})
    return RunResult(1 if broken else 0, out / "run-1", journal, verdicts)


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    config.pluginmanager.get_plugin("faultdrill-session").runner = fake_run
'''

SPEC = {"apiVersion": "faultdrill/v1", "kind": "Experiment", "metadata": {"name": "good"},
        "steady_state": {"window": "10s"}, "load": {"users": 32, "spawn_rate": 32, "workers": 2},
        "alerting": {"rules": "rules/mine.yml"},
        "faults": [{"id": "hog", "type": "gpu_memory_exhaustion", "target": "replica-0", "duration": "15s"},
                   {"id": "cut", "type": "process_kill", "target": "replica-1", "duration": "2s"}]}  # fmt: skip

TESTS = '''
import os
import pytest


@pytest.mark.faultdrill(experiment="good.yaml")
def test_good(faultdrill_result):
    assert faultdrill_result.journal.load["requests"] == 42


@pytest.mark.faultdrill(experiment="broken.yaml")
def test_broken():
    raise AssertionError("the body must not run when the experiment failed")


@pytest.mark.faultdrill(experiment="good.yaml", misconfigurations=["readiness_ignores_model"], no_alerts=True)
def test_misconfigured():
    pass


def test_inline(faultdrill_run):
    result = faultdrill_run({"apiVersion": "faultdrill/v1", "kind": "Experiment", "metadata": {"name": "inline"}})
    assert result.exit_code == 0


def test_inline_check(faultdrill_run):
    faultdrill_run({"apiVersion": "faultdrill/v1", "kind": "Experiment", "metadata": {"name": "broken"}}, check=True)
'''


def _suite(tmp_path: Path, tests: str = TESTS) -> Path:
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_chaos.py").write_text(textwrap.dedent(tests))
    (tmp_path / "good.yaml").write_text(yaml.safe_dump(SPEC))
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump({**SPEC, "metadata": {"name": "broken"}}))
    return tmp_path


def _pytest(where: Path, *args: str) -> tuple[list[str], dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["FAULTDRILL_STATE_DIR"] = str(where / "state")
    return [sys.executable, "-m", "pytest", "-p", "faultdrill", "-p", "no:cacheprovider", "--rootdir", str(where),
            "-c", os.devnull, *args], env


def test_plug_marker_runs_experiments_and_junit_names_every_expectation(tmp_path):
    suite = _suite(tmp_path)
    cmd, env = _pytest(suite, "--faultdrill-smoke", "--faultdrill-out", str(suite / "out"),
                       "--junitxml", str(suite / "junit.xml"), "test_chaos.py")
    done = subprocess.run(cmd, cwd=suite, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-2000:]
    cases = {c.get("name"): c for c in ET.parse(suite / "junit.xml").getroot().iter("testcase")}
    assert set(cases) == {"test_good", "test_broken", "test_misconfigured", "test_inline", "test_inline_check"}
    props = {p.get("name"): p.get("value") for p in cases["test_good"].iter("property")}
    assert props["expectation 1: readiness of replica-0 becomes false within 5 s after hog.start"] == "passed"
    assert props["expectation 2: recovers steady state within 20 s after hog.end"] == "passed"
    assert props["faultdrill outcome"] == "passed (exit 0)" and props["faultdrill experiment"] == "good.yaml"
    assert cases["test_good"].find("failure") is None and cases["test_inline"].find("failure") is None
    failure = cases["test_broken"].find("failure")
    assert failure is not None
    message = failure.get("message") or ""
    assert "faultdrill experiment 'broken' failed (exit 1): 1 of 2 expectations failed" in message
    assert "✘ readiness of replica-0 becomes false within 5 s after hog.start" in message
    assert "expected: readiness of replica-0 false within 5 s of hog.start" in message
    assert "observed: readiness of replica-0 never became false after hog.start" in message
    assert "✔ recovers steady state within 20 s after hog.end" in message
    assert "the body must not run" not in (failure.text or "") + message
    broken_props = {p.get("name"): p.get("value") for p in cases["test_broken"].iter("property")}
    assert broken_props["expectation 1: readiness of replica-0 becomes false within 5 s after hog.start"] == \
        "failed: observed readiness of replica-0 never became false after hog.start"  # fmt: skip
    assert cases["test_misconfigured"].find("failure") is not None
    assert cases["test_inline_check"].find("failure") is not None
    assert "faultdrill expectations" in done.stdout  # the terminal summary lists them too
    # --faultdrill-smoke: the runner got the capped copy, with the rules path still pointing at the original.
    ran = yaml.safe_load((suite / "out" / "test_good" / "runs" / "ran.json").read_text())
    assert ran["path"].endswith("good.smoke.yaml")
    assert [f["duration"] for f in ran["spec"]["faults"]] == ["8s", "2s"]
    assert ran["spec"]["steady_state"]["window"] == "3s"
    assert ran["spec"]["load"] == {"users": 8, "spawn_rate": 8.0, "workers": 0}
    assert ran["spec"]["alerting"]["rules"] == str(suite / "rules" / "mine.yml")
    mis = yaml.safe_load((suite / "out" / "test_misconfigured" / "runs" / "ran.json").read_text())
    assert mis["misconfigurations"] == ["readiness_ignores_model"] and mis["no_alerts"] is True
    assert (suite / "out" / "test_inline" / "inline.smoke.yaml").is_file()


def test_plug_without_smoke_the_file_runs_as_is(tmp_path):
    suite = _suite(tmp_path)
    cmd, env = _pytest(suite, "--faultdrill-out", str(suite / "out"), "test_chaos.py::test_good")
    done = subprocess.run(cmd, cwd=suite, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:]
    ran = yaml.safe_load((suite / "out" / "test_good" / "runs" / "ran.json").read_text())
    assert ran["path"] == str(suite / "good.yaml")


def test_plug_sigterm_ends_the_session_and_teardown_runs(tmp_path):
    suite = _suite(tmp_path, '''
        import pytest
        from pathlib import Path


        @pytest.fixture
        def cleanup():
            yield
            Path("torn-down").write_text("yes")


        @pytest.mark.faultdrill(experiment="sleepy.yaml")
        def test_sleepy(cleanup):
            pass
    ''')
    (suite / "sleepy.yaml").write_text(yaml.safe_dump({**SPEC, "metadata": {"name": "sleepy"}}))
    cmd, env = _pytest(suite, "test_chaos.py")
    proc = subprocess.Popen(cmd, cwd=suite, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while not (suite / "started").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert (suite / "started").exists()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, out[-2000:]  # pytest's "interrupted"
    assert "KeyboardInterrupt" in out and (suite / "torn-down").read_text() == "yes"


def test_plug_the_main_run_does_not_collect_the_example_suite():
    import importlib.util

    here = Path(__file__).resolve().parents[2] / "plugin_suite"
    spec = importlib.util.spec_from_file_location("plugin_suite_conftest", here / "conftest.py")
    assert spec is not None and spec.loader is not None
    conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conftest)
    config = SimpleNamespace(invocation_params=SimpleNamespace(dir=here.parents[1]), args=["tests"])
    assert conftest.pytest_ignore_collect(here / "test_smoke.py", config) is True
    config.args = ["tests/plugin_suite"]
    assert conftest.pytest_ignore_collect(here / "test_smoke.py", config) is None
    config.args = ["tests/plugin_suite/test_inline.py::test_frozen_replica_leaves_rotation"]
    assert conftest.pytest_ignore_collect(here / "test_inline.py", config) is None
    assert conftest.pytest_ignore_collect(here / "conftest.py", config) is None


def test_plug_smoke_profile_caps_and_keeps_what_fits():
    doc = {"steady_state": {"window": "2s", "slo": {"availability": 0.99}}, "load": {"users": 4},
           "faults": [{"id": "a", "duration": "5s"}, {"id": "b"}]}  # fmt: skip
    out = smoke_spec(doc)
    assert out["steady_state"] == {"window": "2s", "slo": {"availability": 0.99}}
    assert [f.get("duration") for f in out["faults"]] == ["5s", "8s"]  # no duration: the default 10 s, capped
    assert out["load"] == {"users": 4, "spawn_rate": 4.0, "workers": 0}
    assert doc["load"] == {"users": 4}  # the input is not changed
    assert smoke_spec({})["steady_state"] == {"window": "3s"}


def test_plug_failure_report_lists_every_expectation():
    verdicts = [Verdict(name="a", passed=True, expected="x", observed="y"),
                Verdict(name="b", passed=False, expected="b within 3 s", observed="b after 7.2 s")]  # fmt: skip
    journal = SimpleNamespace(name="exp", outcome="failed", reason="")
    text = failure_report(RunResult(1, Path("/runs/exp-1"), journal, verdicts))  # type: ignore[arg-type]
    assert text.splitlines() == [
        "faultdrill experiment 'exp' failed (exit 1): 1 of 2 expectations failed",
        "  ✔ a", "  ✘ b", "      expected: b within 3 s", "      observed: b after 7.2 s",
        "  run: /runs/exp-1 (report.html, junit.xml, journal.json)",
    ]


def test_plug_session_end_undoes_what_this_process_left_in_the_ledger(tmp_path, monkeypatch):
    monkeypatch.setenv("FAULTDRILL_STATE_DIR", str(tmp_path / "state"))
    registry = FaultRegistry()
    registry.register(FakeFault, source="tests")
    ctx = FaultContext.create(tmp_path / "state", scope=Scope().with_paths(tmp_path))
    fault = FakeFault()
    fault.inject(fault.parse_config({"path": str(tmp_path / "flag"), "content": "x"}), ctx)
    assert (tmp_path / "flag").exists()
    config = SimpleNamespace(getoption=lambda name: None)
    session = FaultdrillSession(config)  # type: ignore[arg-type]
    lines = session.rollback_leftovers(registry)
    assert len(lines) == 1 and lines[0].startswith("rolled back ") and lines[0].endswith("(fake)")
    assert not (tmp_path / "flag").exists() and ctx.ledger.pending() == []
    assert session.rollback_leftovers(registry) == []
