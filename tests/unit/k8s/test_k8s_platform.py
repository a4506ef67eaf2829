"""The kubernetes platform's guards: allow-listed namespace (located), opt-in label, no cluster → exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from faultdrill.experiments.platforms.kubernetes.platform import KubernetesPlatform, check_cluster
from faultdrill.experiments.spec.kubernetes import KubernetesSettings
from faultdrill.experiments.spec.loader import load_experiment
from faultdrill.faults.errors import ConfigError
from faultdrill.faults.kube.client import api_client, cluster_ref

ROOT = Path(__file__).resolve().parents[3]
SPEC = """\
apiVersion: faultdrill/v1
kind: Experiment
metadata: {name: k8s-outage}
target:
  platform: kubernetes
  replicas: 2
  kubernetes:
    namespace: NAMESPACE
load: {users: 4}
alerting: {enabled: false}
faults:
  - {id: outage, type: dependency_outage, target: feature-store, at: 2s, duration: 5s, params: {mode: killed}}
expect:
  - {recovers: steady_state, within: 60s, after: outage.end}
"""


def test_k8s_platform_namespace_outside_the_allow_list_is_a_located_error(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC.replace("NAMESPACE", "faultdrill"))
    spec = load_experiment(path)
    assert spec.target.kubernetes is not None and spec.target.kubernetes.namespace == "faultdrill"
    path.write_text(SPEC.replace("NAMESPACE", "kube-system"))
    with pytest.raises(ConfigError) as err:
        load_experiment(path)
    assert "kube-system" in str(err.value) and "not allow-listed" in str(err.value)
    assert "spec.yaml:8" in str(err.value) and "target.kubernetes.namespace" in str(err.value)


def test_k8s_platform_refuses_pods_without_the_opt_in_label(kube_api: Any) -> None:
    settings = KubernetesSettings(kubeconfig=str(kube_api.kubeconfig), context="fake")
    assert check_cluster(settings) is not None  # GET /version answered
    platform = KubernetesPlatform(settings)
    platform.api = api_client(cluster_ref("faultdrill", "fake", str(kube_api.kubeconfig)))
    platform._refuse_unlabelled()  # every pod carries faultdrill.io/chaos-target=true
    unlabelled = json.loads(json.dumps(kube_api.objects["pods"][0]))
    del unlabelled["metadata"]["labels"]["faultdrill.io/chaos-target"]
    kube_api.objects["pods"].append(unlabelled)
    with pytest.raises(ConfigError, match="lacks the chaos opt-in label"):
        platform._refuse_unlabelled()
    assert kube_api.writes() == []


def test_k8s_platform_run_without_a_cluster_is_one_line_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC.replace("NAMESPACE", "faultdrill"))
    env = {**os.environ, "KUBECONFIG": str(tmp_path / "missing"), "FAULTDRILL_STATE_DIR": str(tmp_path / "state")}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    done = subprocess.run([sys.executable, "-m", "faultdrill", "run", str(path), "--out", str(tmp_path / "runs")],
                          env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "no Kubernetes cluster is reachable" in lines[0] and "Traceback" not in done.stderr
    assert not (tmp_path / "state" / "ledger").exists() or not list((tmp_path / "state" / "ledger").glob("*.json"))


def test_k8s_platform_up_and_close_against_the_api(kube_api: Any) -> None:
    settings = KubernetesSettings(kubeconfig=str(kube_api.kubeconfig), context="fake", service_url="http://target.test:8000/")
    platform = KubernetesPlatform(settings, replicas=1)
    platform.up(wait_ready=False)
    try:
        assert platform.service_url == "http://target.test:8000"
        topo = platform.topology()
        store = topo.get("feature-store").kube
        assert store is not None and (store.deployment, store.tls_secret) == ("feature-store", "feature-store-tls")
        assert topo.get("service").url == "http://target.test:8000"
    finally:
        platform.close()
    assert platform._thread is not None and not platform._thread.is_alive()
    assert kube_api.writes() == []  # observing changes nothing
    assert any(r.path.endswith("/pods") and "watch=true" in r.query for r in kube_api.requests)
