"""The shipped alerting: rules.yml, its promtool unit tests, alertmanager.yml and the runbooks.

promtool and amtool come from the Debian packages `make setup` installs; without them these
tests fail (alerting that was never checked is not shipped).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from faultdrill.experiments.platforms.local.dcgm import DCGM_SERIES
from faultdrill.gamedays.runbook_check import PROMQL_WORDS as RUNBOOK_PROMQL_WORDS
from faultdrill.target_service.config import FeatureStoreSettings
from faultdrill.target_service.feature_store import create_feature_store_app
from faultdrill.target_service.metrics import TargetMetrics

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
REPO = Path(__file__).resolve().parents[3]
ALERTS = REPO / "target_service" / "alerts"
RULES = ALERTS / "rules.yml"
ALERTMANAGER = ALERTS / "alertmanager.yml"
PROMTOOL_TESTS = sorted((ALERTS / "tests").glob("*.yml"))

# The fixed alert names of the shared contract: the catalog and the engine refer to them.
# Adding or renaming an alert means changing this list (and telling their owners).
CONTRACT_ALERTS = frozenset({
    "InferenceLatencyP95High", "InferenceErrorRatioHigh", "InferenceErrorRatioCritical",
    "InferenceSLOBurnRatePage", "InferenceSLOBurnRateTicket", "InferenceGPUMemoryPressure",
    "InferenceGPUUtilizationStuckAtZero", "InferenceGPUSaturated", "InferenceHostMemoryNearLimit",
    "InferenceOOMKilled", "InferenceCrashLooping", "InferenceReplicaNotReady", "InferenceTargetDown",
    "TLSCertificateExpiringSoon", "TLSCertificateExpiringCritical", "TLSCertificateExpired",
    "InferenceCircuitBreakerOpen", "InferenceDependencyFailing", "InferenceFallbackRatioHigh",
    "InferencePredictionConfidenceLow", "InferenceLoadShedding", "InferenceCUDAOOM",
    "PredictionCacheDown",  # the prediction cache (gamedays/runbooks/cache.md)
    "InferenceClientThrottled",  # per-client rate limits (gamedays/runbooks/rate-limiting.md)
    # The deep-health compute check (gamedays/runbooks/gpu-sticky-error.md, gpu-wrong-output.md); the catalog's
    # gpu_sticky_error.yaml and gpu_wrong_output.yaml expect them.
    "InferenceGPUComputeFailing", "InferenceGPUWrongAnswers",
    # GPU health from dcgm-exporter: Xids by NVIDIA's immediate action, double-bit ECC, hardware clock slowdowns
    # (gamedays/runbooks/gpu-xid-restart-app.md, gpu-xid-reset-gpu.md, gpu-utilization.md).
    "InferenceGPUXidRestartApp", "InferenceGPUXidResetRequired", "InferenceGPUDoubleBitECC",
    "InferenceGPUClocksThrottled",
})  # fmt: skip
SEVERITIES = frozenset({"critical", "warning", "ticket"})
RECEIVER_OF = {"critical": "pager", "warning": "chat", "ticket": "ticket"}

# Series of the platform exporter (kube-state-metrics and cAdvisor names), per the contract.
PLATFORM_METRICS = frozenset({
    "kube_pod_container_status_restarts_total", "kube_pod_container_status_last_terminated_reason",
    "kube_pod_container_status_waiting_reason", "kube_pod_container_status_running", "kube_pod_status_ready",
    "container_memory_working_set_bytes", "container_spec_memory_limit_bytes",
})  # fmt: skip
# Series Prometheus itself writes: scrape health, and the state of its alerts.
PROMETHEUS_SERIES = frozenset({"up", "ALERTS", "ALERTS_FOR_STATE"})

# Aggregations, keywords and functions of PromQL: identifiers that are not metric names (one list for
# the runbook checker and these tests).
PROMQL_WORDS = RUNBOOK_PROMQL_WORDS
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_OFFSET = re.compile(r"\boffset\s+-?\w+", re.IGNORECASE)
_NUMBER = re.compile(r"(?<![\w:])(?:\d+\.?\d*(?:e[+-]?\d+)?|\.\d+)")
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects: identifiers left once functions, keywords, label
    matchers, grouping labels, ranges, offsets, strings and numbers are taken out."""
    for pattern in (_STRING, _MATCHERS, _RANGE, _LABEL_LIST, _OFFSET, _NUMBER):
        expr = pattern.sub(" ", expr)
    return {word for word in _IDENT.findall(expr) if word not in PROMQL_WORDS}


def _exposed(registry: CollectorRegistry) -> set[str]:
    """Series names a registry exposes, by family type (children need not exist yet)."""
    suffixes = {
        "counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("_sum", "_count", "_created"), "info": ("_info",), "gauge": ("",), "unknown": ("",),
    }  # fmt: skip
    return {family.name + suffix for family in registry.collect() for suffix in suffixes[family.type]}


@cache
def known_metrics() -> frozenset[str]:
    """Everything an expression may select: the target's and the feature store's exposition, the
    platform exporter's names, Prometheus's own series, and the recording rules."""
    target = CollectorRegistry()
    TargetMetrics(target, model="digits")
    feature_store = CollectorRegistry()
    create_feature_store_app(FeatureStoreSettings(), feature_store)
    records = {rule["record"] for rule in all_rules() if "record" in rule}
    return frozenset(_exposed(target) | _exposed(feature_store) | PLATFORM_METRICS | DCGM_SERIES | PROMETHEUS_SERIES
                     | records)  # fmt: skip


@cache
def rules_doc() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(RULES.read_text())
    return doc


def all_rules() -> list[dict[str, Any]]:
    return [rule for group in rules_doc()["groups"] for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in all_rules() if "alert" in rule]


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run `make setup` (Debian packages prometheus, prometheus-alertmanager)")
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False, cwd=REPO)


# -- the tools' own checks ---------------------------------------------------------------------


def test_promtool_check_rules() -> None:
    done = run(tool("promtool"), "check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(all_rules())} rules found" in done.stdout


def test_promtool_unit_tests_pass() -> None:
    assert len(PROMTOOL_TESTS) >= 5, "one promtool test file per theme is expected"
    promtool = tool("promtool")
    # One process per file, side by side: promtool evaluates every rule at every step, so the
    # files cost CPU time rather than I/O.
    procs = {
        path.name: subprocess.Popen(
            [promtool, "test", "rules", str(path)],
            cwd=REPO,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for path in PROMTOOL_TESTS
    }
    failed: dict[str, str] = {}
    for name, proc in procs.items():
        output, _ = proc.communicate(timeout=60)
        if proc.returncode != 0 or "SUCCESS" not in output:
            failed[name] = output
    assert not failed, "\n".join(f"{name}:\n{output}" for name, output in failed.items())


def test_amtool_check_config() -> None:
    done = run(tool("amtool"), "check-config", str(ALERTMANAGER))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 receivers" in done.stdout


@pytest.mark.parametrize(("labels", "receiver"), [
    *((f"severity={severity}", receiver) for severity, receiver in RECEIVER_OF.items()),
    ("alertname=SomethingUnlabelled", "chat"),
])  # fmt: skip
def test_alertmanager_routes_severity_to_receiver(labels: str, receiver: str) -> None:
    done = run(tool("amtool"), "config", "routes", "test", f"--config.file={ALERTMANAGER}",
               f"--verify.receivers={receiver}", labels)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.split() == [receiver]


# -- alertmanager.yml shape (what the engine relies on) ------------------------------------------


def test_alertmanager_receivers_are_one_webhook_each_named_by_path() -> None:
    doc = yaml.safe_load(ALERTMANAGER.read_text())
    receivers = {r["name"]: r for r in doc["receivers"]}
    assert set(receivers) == set(RECEIVER_OF.values())
    for name, receiver in receivers.items():
        assert set(receiver) == {"name", "webhook_configs"}, name
        (hook,) = receiver["webhook_configs"]
        assert hook == {"url": f"http://127.0.0.1:9095/{name}", "send_resolved": True}
    route = doc["route"]
    assert route["receiver"] == "chat"
    assert route["group_by"] == ["alertname", "severity"]
    assert (route["group_wait"], route["group_interval"], route["repeat_interval"]) == ("30s", "5m", "4h")
    (pager,) = [r for r in route["routes"] if r["receiver"] == "pager"]
    assert (pager["group_wait"], pager["repeat_interval"]) == ("10s", "1h")
    assert any(
        rule["source_matchers"] == ['severity="critical"'] and rule["target_matchers"] == ['severity="warning"']
        for rule in doc["inhibit_rules"]
    )


# -- rules.yml content -----------------------------------------------------------------------------


def test_alert_names_are_the_contract_list() -> None:
    names = [rule["alert"] for rule in alerts()]
    assert len(names) == len(set(names)), "an alert name is defined twice"
    assert set(names) == CONTRACT_ALERTS


@pytest.mark.parametrize("rule", alerts(), ids=lambda r: r["alert"])
def test_alert_has_severity_annotations_and_existing_runbook(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in SEVERITIES
    annotations = rule["annotations"]
    assert set(annotations) >= {"summary", "description", "runbook_url"}
    assert annotations["summary"].strip() and annotations["description"].strip()
    url = annotations["runbook_url"]
    assert re.fullmatch(r"gamedays/runbooks/[a-z0-9-]+\.md", url), url
    runbook = REPO / url
    assert runbook.is_file(), f"{rule['alert']}: runbook {url} does not exist"
    text = runbook.read_text()
    # The runbook lists the alert it answers and has executable steps (gamedays/runbook_check.py checks
    # the steps themselves: tests/unit/gamedays).
    alerts_line = next((line for line in text.splitlines() if line.startswith("Alerts:")), "")
    assert f"`{rule['alert']}`" in alerts_line, f"{url}: its Alerts: line does not list {rule['alert']}"
    assert "\n## Steps\n" in text and "\n### 1. " in text, f"{url} has no executable steps"
    assert "for" in rule, f"{rule['alert']}: state `for:` explicitly, even 0m"


def test_every_severity_is_used_and_the_slo_is_stated() -> None:
    assert {rule["labels"]["severity"] for rule in alerts()} == SEVERITIES
    assert "99.9 %" in RULES.read_text()


def test_recording_rules_cover_every_slo_window() -> None:
    records = {rule["record"] for rule in all_rules() if "record" in rule}
    for window in ("5m", "30m", "1h", "2h", "6h", "1d", "3d"):
        assert f"namespace_service:inference_request_errors:ratio_rate{window}" in records


def test_range_selectors_are_at_least_five_minutes() -> None:
    # A CI run divides ranges by its speedup and clamps them to 4 scrape intervals: short
    # production ranges would collapse into the clamp and behave differently from production.
    seconds = {"m": 60, "h": 3600, "d": 86400}
    for rule in all_rules():
        for amount, unit in re.findall(r"\[(\d+)([mhd])\]", rule["expr"]):
            assert int(amount) * seconds[unit] >= 300, (rule.get("alert") or rule["record"], amount + unit)


def test_metric_name_extraction() -> None:
    expr = ('sum by (le, pod) (rate(a_bucket{job="t", code=~"5.."}[5m])) / on (pod) group_left(x) '
            'b_total offset 1h > 0.5 and time() - c:rec:ratio_rate1h < 14 * 86400 or vector(1e-3)')  # fmt: skip
    assert metric_names(expr) == {"a_bucket", "b_total", "c:rec:ratio_rate1h"}


@pytest.mark.parametrize("rule", all_rules(), ids=lambda r: r.get("alert") or r["record"])
def test_every_metric_in_an_expression_exists(rule: dict[str, Any]) -> None:
    unknown = metric_names(rule["expr"]) - known_metrics()
    assert not unknown, f"{rule.get('alert') or rule['record']}: no such metric {sorted(unknown)}"


# -- the promtool tests cover every alert both ways ------------------------------------------------


@cache
def promtool_test_docs() -> dict[str, Any]:
    return {path.name: yaml.load(path.read_text(), Loader=_LOADER) for path in PROMTOOL_TESTS}


def test_promtool_tests_use_the_shipped_rules() -> None:
    for name, doc in promtool_test_docs().items():
        assert doc["rule_files"] == ["../rules.yml"], f"{name} must test the shipped rules.yml"
        # Alerts read recording rules: without this order they would see the previous step's values.
        assert doc["group_eval_order"][0] == "inference-slo.rules", name


def _alert_cases() -> tuple[set[str], set[str]]:
    firing: set[str] = set()
    silent: set[str] = set()
    for doc in promtool_test_docs().values():
        for group in doc["tests"]:
            for case in group.get("alert_rule_test", []):
                (firing if case.get("exp_alerts") else silent).add(case["alertname"])
    return firing, silent


def test_every_alert_has_a_firing_and_a_silent_promtool_case() -> None:
    firing, silent = _alert_cases()
    assert CONTRACT_ALERTS - firing == set(), "alerts never seen firing in a promtool test"
    assert CONTRACT_ALERTS - silent == set(), "alerts never seen silent in a promtool test"
    assert (firing | silent) <= CONTRACT_ALERTS, "promtool tests name alerts that do not exist"


def test_recording_rules_have_promql_expr_tests() -> None:
    exprs = " ".join(
        case["expr"]
        for doc in promtool_test_docs().values()
        for group in doc["tests"]
        for case in group.get("promql_expr_test", [])
    )
    for rule in all_rules():
        if "record" in rule:
            assert rule["record"] in exprs, f"recording rule {rule['record']} has no promql_expr_test"
