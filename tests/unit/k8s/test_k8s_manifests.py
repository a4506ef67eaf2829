"""The deploy manifests: rendered (base, cpu, gpu), validated, and the PrometheusRule = the shipped rules.

Core objects are validated by kubernetes-validate against the Kubernetes 1.30 OpenAPI schemas
(strict: unknown fields fail). ``PrometheusRule`` and ``ServiceMonitor`` are CRDs that
kubernetes-validate does not know: they are checked against the fields of the Prometheus
Operator's ``monitoring.coreos.com/v1`` CRD schemas that we use, written down here as pydantic
models with ``extra="forbid"`` (a hand-written subset, not the vendored CRD).
"""

from __future__ import annotations

import base64
import importlib
import shutil
import subprocess
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field

from faultdrill.experiments.platforms.kubernetes.manifests import (
    DEPLOY_DIR,
    SECRET_FILES,
    prometheus_rule,
    render,
    write_secrets,
)
from faultdrill.faults.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]
RULES = ROOT / "target_service" / "alerts" / "rules.yml"
CRD_KINDS = ("PrometheusRule", "ServiceMonitor")


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Rule(_M):
    record: str | None = None
    alert: str | None = None
    expr: str
    for_: str | None = Field(default=None, alias="for")
    keep_firing_for: str | None = None
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}


class RuleGroup(_M):
    name: str
    interval: str | None = None
    rules: list[Rule]


class Metadata(_M):
    name: str
    namespace: str
    labels: dict[str, str]


class PrometheusRuleSpec(_M):
    groups: list[RuleGroup]


class PrometheusRule(_M):
    apiVersion: Literal["monitoring.coreos.com/v1"]
    kind: Literal["PrometheusRule"]
    metadata: Metadata
    spec: PrometheusRuleSpec


class TlsConfig(_M):
    insecureSkipVerify: bool = False
    serverName: str | None = None


class Endpoint(_M):
    port: str
    path: str = "/metrics"
    scheme: Literal["http", "https"] = "http"
    interval: str | None = None
    tlsConfig: TlsConfig | None = None


class Selector(_M):
    matchLabels: dict[str, str]


class ServiceMonitorSpec(_M):
    selector: Selector
    endpoints: list[Endpoint] = Field(min_length=1)
    targetLabels: list[str] = []


class ServiceMonitor(_M):
    apiVersion: Literal["monitoring.coreos.com/v1"]
    kind: Literal["ServiceMonitor"]
    metadata: Metadata
    spec: ServiceMonitorSpec


@pytest.fixture(scope="module")
def deploy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of target_service/deploy with its secrets written (as `faultdrill deploy secrets` does)."""
    root = tmp_path_factory.mktemp("deploy") / "deploy"
    shutil.copytree(DEPLOY_DIR, root, ignore=shutil.ignore_patterns("secrets"))
    written = write_secrets(root / "base" / "secrets")
    assert sorted(p.name for p in written) == sorted(SECRET_FILES)
    return root


def _by(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


@pytest.mark.parametrize("overlay", ["base", "overlays/cpu", "overlays/gpu"])
def test_k8s_manifests_validate(deploy: Path, overlay: str) -> None:
    kv = importlib.import_module("kubernetes_validate")  # a dev dependency: required
    docs = render(deploy / overlay)
    kinds = sorted({d["kind"] for d in docs})
    assert kinds == ["Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "PrometheusRule", "Secret",
                     "Service", "ServiceMonitor"]  # fmt: skip
    for doc in docs:
        assert doc["metadata"]["namespace"] == "faultdrill"
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "faultdrill"
        if doc["kind"] == "PrometheusRule":
            PrometheusRule.model_validate(doc)
        elif doc["kind"] == "ServiceMonitor":
            ServiceMonitor.model_validate(doc)
        else:
            kv.validate(doc, "1.30.0", strict=True)


def test_k8s_manifests_target_probes_labels_and_gpu_overlay(deploy: Path) -> None:
    cpu, gpu = render(deploy / "overlays" / "cpu"), render(deploy / "overlays" / "gpu")
    target = _by(cpu, "Deployment", "target")["spec"]["template"]
    [c] = target["spec"]["containers"]
    probes = tuple(c[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe", "livenessProbe"))
    assert probes == ("/v2/health/ready", "/v2/health/ready", "/v2/health/live")
    assert c["resources"]["limits"]["memory"] and c["resources"]["requests"]["cpu"]
    for name in ("target", "feature-store"):
        assert _by(cpu, "Deployment", name)["spec"]["template"]["spec"]["shareProcessNamespace"] is True
        labels = _by(cpu, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
        assert labels["faultdrill.io/chaos-target"] == "true" and labels["app.kubernetes.io/name"] == name
    assert "nvidia.com/gpu" not in c["resources"]["limits"] and c["image"] == "faultdrill/target:dev"
    [g] = _by(gpu, "Deployment", "target")["spec"]["template"]["spec"]["containers"]
    pod = _by(gpu, "Deployment", "target")["spec"]["template"]["spec"]
    assert g["resources"]["limits"]["nvidia.com/gpu"] == "1" and g["image"] == "faultdrill/target:dev-cuda"
    assert {"name": "FAULTDRILL_DEVICE", "value": "cuda"} in g["env"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    # A GPU-bound replica scales on its GPU's utilisation, not on CPU (the CPU overlay keeps CPU).
    assert _by(gpu, "HorizontalPodAutoscaler", "target")["spec"]["metrics"][0]["pods"]["metric"]["name"] == (
        "gpu_utilization_ratio")  # fmt: skip
    assert _by(cpu, "HorizontalPodAutoscaler", "target")["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert _by(cpu, "HorizontalPodAutoscaler", "target")["apiVersion"] == "autoscaling/v2"
    assert _by(cpu, "PodDisruptionBudget", "target")["spec"]["minAvailable"] == 1
    tls = _by(cpu, "Secret", "feature-store-tls")
    assert tls["type"] == "kubernetes.io/tls" and base64.b64decode(tls["data"]["tls.key"]).startswith(b"-----BEGIN")


def test_k8s_manifests_prometheusrule_is_the_shipped_rules() -> None:
    committed = DEPLOY_DIR / "base" / "prometheusrule.yaml"
    assert committed.read_text(encoding="utf-8") == prometheus_rule(RULES), (
        "stale: faultdrill alerts export --prometheusrule > target_service/deploy/base/prometheusrule.yaml")
    doc = yaml.safe_load(committed.read_text(encoding="utf-8"))
    assert doc["spec"]["groups"] == yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    from typer.testing import CliRunner

    from faultdrill.alerts_cli import alerts_app

    done = CliRunner().invoke(alerts_app, ["export", "--prometheusrule"])  # the documented command
    assert done.exit_code == 0 and done.stdout == committed.read_text(encoding="utf-8")


def test_k8s_manifests_no_secret_material_in_the_repository() -> None:
    tracked = subprocess.run(["git", "ls-files", "target_service/deploy"], capture_output=True, text=True,
                             cwd=ROOT).stdout.split()  # fmt: skip
    assert not [p for p in tracked if p.endswith((".key", ".crt", "-token"))]
    ignore = (DEPLOY_DIR / "base" / "secrets" / ".gitignore").read_text().split()
    assert "*" in ignore
    assert "target_service/deploy/base/secrets" in (ROOT / ".dockerignore").read_text()


def test_k8s_manifests_renderer_refuses_what_it_cannot_do(tmp_path: Path, deploy: Path) -> None:
    with pytest.raises(ConfigError, match="faultdrill deploy secrets"):
        shutil.copytree(DEPLOY_DIR / "base", tmp_path / "base", ignore=shutil.ignore_patterns("secrets"))
        render(tmp_path / "base")
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "kustomization.yaml").write_text("resources: []\nreplacements: []\n")
    with pytest.raises(ConfigError, match="replacements"):
        render(tmp_path / "odd")
    kv = importlib.import_module("kubernetes_validate")  # a dev dependency: required
    broken = _by(render(deploy / "base"), "Deployment", "target")
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, "1.30.0", strict=True)
