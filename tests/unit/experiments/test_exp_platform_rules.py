"""The Kubernetes-level platform rules (``experiments/alerting/platform/``) a run loads beside a described server's.

promtool checks and runs their unit tests (each alert seen firing on its damage and seen silent), their runbooks
pass ``faultdrill runbook check``, a run's scaled rules file holds both the server's groups and these, and a
described spec may expect their alerts (the loader knows their names) while the bundled target's may not.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from faultdrill.experiments.alerting.stack import ObservabilityStack
from faultdrill.experiments.spec.loader import load_experiment_text
from faultdrill.experiments.spec.profile import load_profile
from faultdrill.experiments.spec.rules import PLATFORM_RULES, alert_rules
from faultdrill.faults.errors import ConfigError
from faultdrill.faults.registry import FaultRegistry
from faultdrill.gamedays.runbook_check import check_runbooks

HERE = PLATFORM_RULES.parent


def test_every_alert_is_tested_both_ways() -> None:
    doc = yaml.safe_load((HERE / "rules_test.yml").read_text())
    firing = {c["alertname"] for t in doc["tests"] for c in t.get("alert_rule_test", []) if c.get("exp_alerts")}
    silent = {c["alertname"] for t in doc["tests"] for c in t.get("alert_rule_test", []) if not c.get("exp_alerts")}
    assert set(alert_rules(PLATFORM_RULES)) == firing == silent == {"PodOOMKilled", "PodCrashLooping", "PodNotReady"}


@pytest.mark.tools("promtool")
def test_promtool_checks_and_tests_them() -> None:
    check = subprocess.run(["promtool", "check", "rules", str(PLATFORM_RULES)], capture_output=True, text=True,
                           timeout=60, check=False)  # fmt: skip
    assert check.returncode == 0 and "SUCCESS: 3 rules found" in check.stdout, check.stdout + check.stderr
    test = subprocess.run(["promtool", "test", "rules", "rules_test.yml"], cwd=HERE, capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    assert test.returncode == 0 and "SUCCESS" in test.stdout, test.stdout + test.stderr


@pytest.mark.tools("promtool")
def test_their_runbooks_pass_the_check() -> None:
    errors = check_runbooks(sorted((HERE / "runbooks").glob("*.md")), rules_file=PLATFORM_RULES)
    assert errors == [], "\n".join(str(e) for e in errors)


def test_a_run_loads_them_beside_the_servers_rules(tmp_path: Path) -> None:
    am = Path(__file__).resolve().parents[3] / "target_service" / "alerts" / "alertmanager.yml"
    server = load_profile("mlserver").rules_file
    obs = ObservabilityStack(tmp_path / "obs", rules_file=server, alertmanager_config=am, speedup=60,
                             webhook_url="http://127.0.0.1:4242/", extra_rules=[PLATFORM_RULES])  # fmt: skip
    obs.write_configs()
    groups = [g["name"] for g in yaml.safe_load(obs.rules_yml.read_text())["groups"]]
    assert groups == [g["name"] for g in yaml.safe_load(server.read_text())["groups"]] + ["kubernetes-platform"]
    scaled = yaml.safe_load(obs.rules_yml.read_text())["groups"][-1]["rules"]
    assert next(r for r in scaled if r["alert"] == "PodCrashLooping")["for"] == "5s"  # scaled as the server's


SPEC = """apiVersion: faultdrill/v1
kind: Experiment
metadata: {name: x}
target:
  replicas: 2
  memory_limit: 1Gi
  service: {kind: process, profile: mlserver, command: [mlserver, start, .], model: {name: digits}}
faults:
  - {id: oom, type: oom_kill, target: mlserver-0, at: 2s, duration: 10s, params: {mode: pressure}}
expect:
  - {alert: PodOOMKilled, fires: {within: 10s, after: oom.start}, labels: {pod: mlserver-0}}
"""


def test_a_described_spec_may_expect_them_and_the_bundled_one_may_not() -> None:
    registry = FaultRegistry.installed()
    exp = load_experiment_text(SPEC, file="x.yaml", registry=registry)
    assert exp.platform_rules() == PLATFORM_RULES
    bundled = SPEC.replace("  service: {kind: process, profile: mlserver, command: [mlserver, start, .], "
                           "model: {name: digits}}\n", "").replace("mlserver-0", "replica-0")
    with pytest.raises(ConfigError, match="no alert named 'PodOOMKilled'"):
        load_experiment_text(bundled, file="x.yaml", registry=registry)
