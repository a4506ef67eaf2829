"""The live-cluster suite (marker ``k8s``): runs only when ``KUBECONFIG`` points at a reachable
cluster with the image loaded (docs/kubernetes.md); otherwise every test is skipped, with the reason.

The fixtures deploy ``target_service/deploy/overlays/cpu`` (server-side apply through the
official client's dynamic client; CRDs of the Prometheus Operator only where installed) into the
allow-listed namespace ``faultdrill`` and tear nothing down between tests: each test leaves the
system as it found it (faults are rolled back), and the namespace is deleted at the end unless
``FAULTDRILL_K8S_KEEP=1``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

NAMESPACE = "faultdrill"
ROOT = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/k8s/" in str(item.fspath):
            item.add_marker(pytest.mark.k8s)


@pytest.fixture(scope="session")
def cluster_api() -> Any:
    if not os.environ.get("KUBECONFIG"):
        pytest.skip("KUBECONFIG is not set: the k8s suite needs a cluster (docs/kubernetes.md)")
    from faultdrill.experiments.platforms.kubernetes.platform import check_cluster
    from faultdrill.experiments.spec.kubernetes import KubernetesSettings
    from faultdrill.faults.errors import ConfigError

    try:
        return check_cluster(KubernetesSettings(kubeconfig=os.environ["KUBECONFIG"]))
    except ConfigError as exc:
        pytest.skip(f"KUBECONFIG={os.environ['KUBECONFIG']}: {exc}")


def _apply(api: Any, docs: list[dict[str, Any]]) -> list[str]:
    from kubernetes.dynamic import DynamicClient
    from kubernetes.dynamic.exceptions import ResourceNotFoundError

    dyn, skipped = DynamicClient(api), []
    for doc in docs:
        try:
            res = dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        except ResourceNotFoundError:
            skipped.append(f"{doc['kind']}/{doc['metadata']['name']} (CRD not installed)")
            continue
        res.server_side_apply(body=doc, name=doc["metadata"]["name"], namespace=NAMESPACE,
                              field_manager="faultdrill", force_conflicts=True)  # fmt: skip
    return skipped


@pytest.fixture(scope="session")
def deployed(cluster_api: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The cpu overlay applied and available (image faultdrill/target:dev must be in the cluster)."""
    import shutil

    from kubernetes import client

    from faultdrill.experiments.platforms.kubernetes.manifests import DEPLOY_DIR, render, write_secrets

    core = client.CoreV1Api(cluster_api)
    if not any(n.metadata.name == NAMESPACE for n in core.list_namespace().items):
        core.create_namespace({"metadata": {"name": NAMESPACE}})
    work = tmp_path_factory.mktemp("deploy") / "deploy"
    shutil.copytree(DEPLOY_DIR, work)
    write_secrets(work / "base" / "secrets", pki_dir=DEPLOY_DIR / "base" / "secrets" / ".pki")
    skipped = _apply(cluster_api, render(work / "overlays" / "cpu"))
    apps = client.AppsV1Api(cluster_api)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        deps = {d.metadata.name: d for d in apps.list_namespaced_deployment(NAMESPACE).items}
        if all((deps[n].status.available_replicas or 0) >= (deps[n].spec.replicas or 1)
               for n in ("target", "feature-store") if n in deps) and len(deps) >= 2:  # fmt: skip
            break
        time.sleep(2)
    else:
        pytest.fail("target/feature-store not available after 300 s (is the image loaded? docs/kubernetes.md)")
    yield {"skipped": skipped, "deploy_dir": work}
    if os.environ.get("FAULTDRILL_K8S_KEEP") != "1":
        core.delete_namespace(NAMESPACE)
