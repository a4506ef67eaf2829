"""A workload of your own on a cluster (``target.service: {kind: kubernetes, …}``), against the recording API.

The real ``kubernetes`` client talks to the loopback recording API server (``conftest.py``): the spec loads and is
refused where it must be (located), the platform finds the workload's pods by ``app.kubernetes.io/name`` plus the
opt-in label, names them ``triton-0``…, observes them through the watch events, and the faults go through the API —
a kill deletes the pod; a family that needs the bundled server inside the pod refuses it at preflight, before any
write.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from faultdrill.experiments.engine.plan import build_plan
from faultdrill.experiments.journal.timeline import Timeline
from faultdrill.experiments.platforms import build_platform
from faultdrill.experiments.platforms.kubernetes.platform import KubernetesPlatform
from faultdrill.experiments.spec.loader import load_experiment
from faultdrill.faults.base import FaultContext
from faultdrill.faults.errors import ConfigError
from faultdrill.faults.registry import FaultRegistry

NS = "faultdrill"
PODS = f"/api/v1/namespaces/{NS}/pods"
POD = "triton-6d4f9-q7xkz"

SPEC = """\
apiVersion: faultdrill/v1
kind: Experiment
metadata: {name: triton-on-k8s}
target:
  platform: kubernetes
  replicas: 1
  kubernetes: {namespace: faultdrill, kubeconfig: KUBECONFIG, context: fake, service_url: "http://triton.test:8000"}
  service:
    kind: kubernetes
    profile: triton
    app: triton
    container: server
    model: {name: digits}
faults:
  - {id: kill, type: process_kill, target: triton-0, at: 2s, duration: 5s}
"""


FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "k8s"


def _triton_pod() -> dict[str, Any]:
    """The recorded target pod (ready, running), relabelled as a pod of the workload."""
    pod: dict[str, Any] = json.loads((FIXTURES / "pod_watch_events.json").read_text())[2]["object"]
    pod["metadata"].update(name=POD, uid="uid-t")
    pod["status"]["containerStatuses"][0].update(restartCount=0, lastState={})
    pod["metadata"]["labels"] = {"app.kubernetes.io/name": "triton", "faultdrill.io/chaos-target": "true"}
    pod["status"]["containerStatuses"][0]["name"] = "server"
    return pod


@pytest.fixture
def spec_file(kube_api: Any, tmp_path: Path) -> Path:
    path = tmp_path / "triton.yaml"
    path.write_text(SPEC.replace("KUBECONFIG", str(kube_api.kubeconfig)))
    pod = _triton_pod()
    kube_api.objects.update({f"{PODS}/{POD}": pod, "pods": [pod]})
    return path


def test_the_workload_spec_loads_with_its_profile_and_is_refused_where_it_must_be(spec_file: Path) -> None:
    registry = FaultRegistry.installed()
    exp = load_experiment(spec_file, registry)
    service = exp.target.service
    assert not isinstance(service, str) and service.kind == "kubernetes"
    assert (service.port, service.replica_prefix, service.protocol) == (8000, "triton", "oip_v2")  # the profile's
    assert exp.system().replicas() == ["triton-0"] and exp.load_protocol() is not None
    plan = build_plan(exp, registry, source=spec_file)
    [lines] = [f.fault.plan(f.config, plan_context(plan)) for f in plan.faults]
    assert lines[0].startswith(f"DELETE /api/v1/namespaces/{NS}/pods/<triton-0 pod> (gracePeriodSeconds=0")
    text = spec_file.read_text()
    for bad, where in ((text.replace("platform: kubernetes", "platform: local").replace(
                           "  kubernetes: {namespace", "  #"), "target.platform"),
                       (text.replace("  replicas: 1\n", "  replicas: 1\n  memory_limit: 1Gi\n"), "target.memory_limit"),
                       (text.replace("container: server", "container: Server_1"), "target.service.container")):
        spec_file.write_text(bad)
        with pytest.raises(ConfigError) as err:
            load_experiment(spec_file, registry)
        assert where in str(err.value), str(err.value)


def plan_context(plan: Any) -> FaultContext:
    from faultdrill.experiments.engine.plan import planned_topology

    return FaultContext.create("/nonexistent", topology=planned_topology(plan.system, plan.spec), dry_run=True)


def test_the_platform_finds_observes_and_faults_the_workload(spec_file: Path, kube_api: Any, tmp_path: Path) -> None:
    registry = FaultRegistry.installed()
    plan = build_plan(load_experiment(spec_file, registry), registry, source=spec_file)
    timeline = Timeline()
    platform = build_platform(plan.spec.target, system=plan.system, timeline=timeline, workdir=tmp_path / "p")
    assert isinstance(platform, KubernetesPlatform)
    platform.up(wait_ready=False)
    try:
        listed = [r.query for r in kube_api.requests if r.path == PODS and "watch" not in r.query]
        assert listed == ["labelSelector=app.kubernetes.io/name%3Dtriton"]  # its pods, found by the workload's label
        platform.feed({"type": "ADDED", "object": _triton_pod()})
        assert platform.ready_replicas() == ["triton-0"]
        handle = platform.topology().get("triton-0")
        assert handle.kube is not None and (handle.kube.pod, handle.kube.container) == (POD, "server")
        assert handle.kube.admin_url is None and handle.port == 8000 and handle.model_name == "digits"
        assert "a workload of your own" in platform.environment("auto").notes[0]

        ctx = FaultContext.create(tmp_path / "state", topology=platform.topology(), scope=platform.scope())
        freeze = registry.get("process_freeze")()
        problems = freeze.preflight(freeze.parse_config({"target": "triton-0", "mode": "sigstop"}), ctx)
        assert [p.code for p in problems] == ["not_the_bundled_server"]
        assert kube_api.writes() == []  # refused before anything changed
        kill = registry.get("process_kill")()
        config = kill.parse_config({"target": "triton-0", "mode": "sigkill"})
        assert kill.preflight(config, ctx) == []
        inj = kill.inject(config, ctx)
        [delete] = kube_api.writes()
        assert (delete.method, delete.path, delete.body["gracePeriodSeconds"]) == ("DELETE", f"{PODS}/{POD}", 0)
        assert kill.verify(inj, ctx).effective
        kill.undo(inj, ctx)
        gone = copy.deepcopy(_triton_pod())
        platform.feed({"type": "DELETED", "object": gone})
        exits = timeline.select("process", source="triton-0", event="exit")
        assert exits and exits[-1].attrs["cause"] == "deleted"
    finally:
        platform.close()
    assert json.dumps(kube_api.writes()[0].body).count("uid-t") == 1  # the uid precondition: never a replacement
