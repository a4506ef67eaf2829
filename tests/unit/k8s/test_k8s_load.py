"""In-cluster Locust driven through the API: worker scale, swarm via the service proxy, log lines → requests."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from faultdrill.experiments.journal.timeline import Timeline
from faultdrill.experiments.platforms.kubernetes.load import KubeLoad, request_event
from faultdrill.faults.kube.client import api_client, cluster_ref

NS = "faultdrill"


def test_k8s_load_request_lines_and_locust_logging() -> None:
    line = json.dumps({"t": 1000.5, "ok": False, "status": 503, "latency_s": 0.012,
                       "name": "/v2/models/digits/infer", "error": "503 Service Unavailable"})  # fmt: skip
    event = request_event(line, start_wall=1000.0)
    assert event is not None and event.kind == "request" and event.t == 0.5
    assert (event.attrs["ok"], event.attrs["status"], event.attrs["latency_s"]) == (False, 503, 0.012)
    assert request_event("[2026-11-22 09:00:00,000] worker/INFO/locust.main: Starting Locust 2.x", 0.0) is None
    assert request_event('{"t": "soon"}', 0.0) is None


def test_k8s_load_scales_workers_starts_the_swarm_and_follows_their_logs(kube_api: Any, tmp_path: Path) -> None:
    worker = "feature-store-5f7b9-abcde"  # the fake's one running pod stands in for a worker
    now = time.time()
    kube_api.objects[f"/api/v1/namespaces/{NS}/pods/{worker}/log"] = "".join(
        json.dumps({"t": now + i, "ok": True, "status": 200, "latency_s": 0.003, "name": "/v2/models/digits/infer",
                    "error": None}) + "\n" for i in range(3)) + "Locust worker log line\n"  # fmt: skip
    kube_api.objects[f"/apis/apps/v1/namespaces/{NS}/deployments/locust-worker/scale"] = {
        "apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "locust-worker"}, "spec": {"replicas": 1}}
    timeline = Timeline()
    api = api_client(cluster_ref(NS, "fake", str(kube_api.kubeconfig)))
    load = KubeLoad(api, NS, timeline, users=8, spawn_rate=4, run_time_s=30, workers=1)
    load.start()
    assert load.wait_first_request(10)
    deadline = time.monotonic() + 10
    while load.events < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    summary = load.stop()
    writes = [(r.method, r.path, r.body) for r in kube_api.writes()]
    assert writes[0] == ("PATCH", f"/apis/apps/v1/namespaces/{NS}/deployments/locust-worker/scale",
                         {"spec": {"replicas": 1}})  # fmt: skip
    method, path, form = writes[1]
    assert (method, path) == ("POST", f"/api/v1/namespaces/{NS}/services/locust-master:web/proxy/swarm")
    assert "user_count=8" in form and "spawn_rate=4" in form and "run_time=30s" in form
    assert ("GET", f"/api/v1/namespaces/{NS}/services/locust-master:web/proxy/stop") in kube_api.calls("GET")
    assert summary.events == 3 and summary.failures == 0
    assert [e.attrs["status"] for e in timeline.select("request")] == [200, 200, 200]
