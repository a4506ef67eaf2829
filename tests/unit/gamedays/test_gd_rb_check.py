"""Static validation: the shipped runbooks are clean against the shipped rules, every alert has a
runbook that lists it, every failure mode has one that fixes something; and the checker's own
parts (metric names, programs, platforms) do what they say."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from faultdrill.experiments.journal.timeline import Timeline
from faultdrill.experiments.observe.observers import ObserverContext
from faultdrill.experiments.platforms.local import exporter
from faultdrill.experiments.spec.rules import alert_rules, rules_path
from faultdrill.faults.errors import ConfigError
from faultdrill.faults.topology import Topology
from faultdrill.gamedays.checks import MetricCheck
from faultdrill.gamedays.runbook import parse_runbook, runbook_files
from faultdrill.gamedays.runbook_check import PLATFORM_METRICS, check_runbooks, known_metrics, metric_names

ROOT = Path(__file__).resolve().parents[3]
RUNBOOKS = ROOT / "gamedays" / "runbooks"
RULES = rules_path("default", spec_file=None)
FAILURE_MODES = {
    "gpu memory exhaustion": "gpu-memory.md", "OOM kills": "host-memory.md",
    "network partition between services": "network-partition.md", "model loading failures": "model-load-failure.md",
    "certificate expiry": "tls-certificate.md", "dependency outage": "dependency-failures.md",
    "crash looping": "crash-looping.md", "latency SLO burn": "inference-latency.md",
}  # fmt: skip


def test_shipped_runbooks_have_no_problem() -> None:
    paths = runbook_files(RUNBOOKS)
    assert len(paths) >= 15
    errors = check_runbooks(paths, rules_file=RULES)
    assert errors == [], "\n".join(map(str, errors))


def test_every_alert_has_a_runbook_that_lists_it() -> None:
    doc = yaml.safe_load(RULES.read_text())
    rules = [r for g in doc["groups"] for r in g["rules"] if "alert" in r]
    assert {r["alert"] for r in rules} == set(alert_rules(RULES))
    for rule in rules:
        url = rule["annotations"]["runbook_url"]
        assert url.startswith("gamedays/runbooks/"), url
        assert rule["alert"] in parse_runbook(ROOT / url).alerts, f"{url} does not list {rule['alert']}"


@pytest.mark.parametrize("mode", sorted(FAILURE_MODES))
def test_every_failure_mode_has_a_runbook_with_a_fix_and_a_check_of_it(mode: str) -> None:
    rb = parse_runbook(RUNBOOKS / FAILURE_MODES[mode])
    fixes = [s for s in rb.steps if s.command is not None and s.command.kind == "faultdrill"]
    checked = [s for s in rb.steps if s.checks]
    assert checked, f"{rb.path.name}: no step checks its outcome"
    if mode != "network partition between services":  # the network is fixed outside the system: checked only
        assert fixes and fixes[0].checks, f"{rb.path.name}: no faultdrill action with an expected outcome"
    assert rb.alerts and len(rb.steps) >= 4
    assert mode.split()[0].lower() in (rb.title + " " + rb.prose).lower()


def test_the_readme_links_every_runbook() -> None:
    readme = (RUNBOOKS / "README.md").read_text()
    for path in runbook_files(RUNBOOKS):
        assert f"]({path.name})" in readme, path.name


def test_standalone_reports_every_platform_action_and_local_only_scale(tmp_path: Path) -> None:
    path = tmp_path / "rb.md"
    path.write_text("# T\n\n## Steps\n\n### 1. Restart\n```faultdrill\nrestart $REPLICA\n```\n\n"
                    "### 2. Wait\n```faultdrill\nwait 1s\n```\n\n### 3. Scale\n```faultdrill\nscale replicas 2\n```\n")
    local = check_runbooks([path], rules_file=RULES, platform="local")
    assert [(e.line, e.message) for e in local] == [
        (17, "action 'scale' is not supported on platform 'local' (it does not implement Scalable)")]
    standalone = check_runbooks([path], rules_file=RULES, platform="standalone")
    assert [e.line for e in standalone] == [7, 17]
    assert all("no platform to act on" in e.message for e in standalone)
    with pytest.raises(ConfigError, match=r"unknown platform 'kubernets' \(known: local, standalone\)"):
        check_runbooks([path], rules_file=RULES, platform="kubernets")


def test_a_missing_runbook_file_and_a_missing_rules_file_are_errors(tmp_path: Path) -> None:
    errors = check_runbooks([tmp_path / "nope.md"], rules_file=RULES)
    assert len(errors) == 1 and "cannot read the runbook" in errors[0].message
    errors = check_runbooks([], rules_file=tmp_path / "rules.yml")
    assert len(errors) == 1 and "cannot read the alert rules" in errors[0].message


def test_shell_programs_are_found_in_every_simple_command(tmp_path: Path) -> None:
    path = tmp_path / "rb.md"
    path.write_text("# T\n\n## Steps\n\n### 1. Many\n```sh\n# a comment naming nosuchtool\n"
                    "X=1 curl -s x | nosuchtool_a --flag && echo 'nosuchtool_c | in quotes'\n"
                    "if true; then nosuchtool_b; fi\n$PROM/bin/ok \\\n  --arg\n```\n")
    errors = check_runbooks([path], rules_file=RULES)
    assert [(e.line, e.message) for e in errors] == [
        (8, "program 'nosuchtool_a' is not on PATH"), (9, "program 'nosuchtool_b' is not on PATH")]


def test_sh_blocks_may_use_shell_variables_but_not_unknown_upper_case_ones(tmp_path: Path) -> None:
    path = tmp_path / "rb.md"
    path.write_text('# T\n\n## Steps\n\n### 1. V\n```sh\nfor pod in a b; do echo "$pod $HOME $REPLICA"; done\n'
                    'echo "$REPLICAS"\n```\n')
    errors = check_runbooks([path], rules_file=RULES)
    assert [(e.line, e.message.split(" (")[0], e.suggestion) for e in errors] == [
        (8, "unknown variable $REPLICAS", "REPLICA")]


def test_metric_names_leave_out_functions_labels_ranges_and_variables() -> None:
    query = ('histogram_quantile(0.95, sum by (le, pod) (rate(inference_request_duration_seconds_bucket'
             '{job="target", pod="$REPLICA"}[5m]))) / on (pod) group_left up offset 5m > bool 1e3')
    assert metric_names(query) == {"inference_request_duration_seconds_bucket", "up"}
    assert metric_names("max(${X}_total)") == {"_total"}  # a variable is never taken for a name


def test_known_metrics_cover_the_target_feature_store_platform_exporter_and_recording_rules() -> None:
    known = known_metrics(RULES)
    assert {"gpu_memory_used_bytes", "inference_requests_total", "inference_request_duration_seconds_bucket",
            "tls_certificate_expiry_timestamp_seconds", "up", "ALERTS",
            "namespace_service:inference_request_errors:ratio_rate5m"} <= known  # fmt: skip
    assert any(name.startswith("feature_store_") for name in known)
    # The platform exporter's own families are exactly the kube-state-metrics/cAdvisor names listed.
    registry = CollectorRegistry(auto_describe=False)
    registry.register(exporter._PlatformCollector(ObserverContext(Timeline(), topology=Topology), "faultdrill"))
    assert {f.name + ("_total" if f.type == "counter" else "") for f in registry.collect()} == set(PLATFORM_METRICS)


def test_every_metric_check_of_the_shipped_runbooks_names_known_series() -> None:
    known = known_metrics(RULES)
    seen = 0
    for path in runbook_files(RUNBOOKS):
        for step in parse_runbook(path).steps:
            for check in step.checks:
                if isinstance(check, MetricCheck):
                    seen += 1
                    assert metric_names(check.query) <= known, (path.name, check.text)
    assert seen >= 10


_VLLM_RUNBOOK = """# vLLM queue

Alerts: `VLLMQueueBuildUp`

## Steps

### 1. The queue drains

```expect
metric max(vllm:num_requests_waiting{job="vllm"}) < 5 within 60s
```
"""


def test_a_profile_names_the_series_a_third_party_servers_runbook_may_check(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from faultdrill.cli import app

    rb = tmp_path / "queue.md"
    rb.write_text(_VLLM_RUNBOOK)
    runner = CliRunner()
    # Against the bundled target's series and rules, vLLM's queue gauge and alert are unknown...
    bundled = runner.invoke(app, ["runbook", "check", str(rb)])
    assert bundled.exit_code == 2, bundled.output
    assert "vllm:num_requests_waiting" in bundled.output and "VLLMQueueBuildUp" in bundled.output
    # ... and with the vLLM profile (its series, its rules) they are known. The rules' runbook links name
    # the shipped vLLM runbooks, so those are checked alongside.
    shipped = ROOT / "experiments" / "systems" / "vllm" / "runbooks"
    ok = runner.invoke(app, ["runbook", "check", str(rb), str(shipped),
                             "--profile", "vllm"])  # fmt: skip
    assert ok.exit_code == 0, ok.output
    # A series vLLM does not serve is still refused with the profile.
    rb.write_text(_VLLM_RUNBOOK.replace("vllm:num_requests_waiting", "vllm:no_such_gauge"))
    bad = runner.invoke(app, ["runbook", "check", str(rb), str(shipped),
                              "--profile", "vllm"])  # fmt: skip
    assert bad.exit_code == 2 and "vllm:no_such_gauge" in bad.output, bad.output
