"""Deploy on a live cluster: everything renders, applies and becomes available, pods opt in."""

from __future__ import annotations

from typing import Any

NAMESPACE = "faultdrill"


def test_k8scluster_deploy_is_available_and_opted_in(cluster_api: Any, deployed: dict[str, Any]) -> None:
    from kubernetes import client

    pods = client.CoreV1Api(cluster_api).list_namespaced_pod(
        NAMESPACE, label_selector="app.kubernetes.io/name in (target,feature-store)").items
    assert len(pods) >= 3
    assert all(p.metadata.labels.get("faultdrill.io/chaos-target") == "true" for p in pods)
    assert all(any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or []) for p in pods)
    print("not applied:", deployed["skipped"] or "none")


def test_k8scluster_platform_sees_replicas_and_serves(cluster_api: Any, deployed: dict[str, Any]) -> None:
    import httpx

    from faultdrill.experiments.platforms.kubernetes.platform import KubernetesPlatform
    from faultdrill.experiments.spec.kubernetes import KubernetesSettings

    with KubernetesPlatform(KubernetesSettings(), replicas=2, ready_timeout_s=120) as platform:
        assert platform.ready_replicas() == ["replica-0", "replica-1"]
        assert httpx.get(platform.service_url + "/v2/health/ready", timeout=10).status_code == 200
        events = [e.attrs["event"] for e in platform.timeline.select("process")]
        assert events.count("ready") >= 2
