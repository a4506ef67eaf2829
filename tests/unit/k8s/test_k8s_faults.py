"""Fault → Kubernetes API requests, and rollback → the restoring requests.

The real ``kubernetes`` client talks to a recording API server on loopback (``conftest.py``):
each test asserts the method, path and body the client really sent, that the ledger record
existed before the change, and what rollback sends (a second rollback is harmless).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from faultdrill.faults.base import FaultContext, Scope
from faultdrill.faults.errors import BlastRadiusError, PreflightError
from faultdrill.faults.kube.pods import MAIN_PID, main_sh
from faultdrill.faults.registry import FaultRegistry
from faultdrill.faults.topology import KubeRef, ServiceHandle, Topology

NS = "faultdrill"
POD = "target-7c9d5b8f4-x2kqp"
PODS = f"/api/v1/namespaces/{NS}/pods"
APPS = f"/apis/apps/v1/namespaces/{NS}/deployments"
ROOT = Path(__file__).resolve().parents[3]


def topology(kubeconfig: Path) -> Topology:
    common: dict[str, Any] = {"namespace": NS, "context": "fake", "kubeconfig": str(kubeconfig)}
    replica = KubeRef(**common, deployment="target", pod=POD, pod_uid="uid-a", container="target",
                      admin_url="http://127.0.0.1:9000", admin_token_env="FAULTDRILL_ADMIN_TOKEN")  # fmt: skip
    store = KubeRef(**common, deployment="feature-store", container="feature-store", tls_secret="feature-store-tls",
                    admin_url="https://127.0.0.1:8443", admin_token_env="FAULTDRILL_FS_ADMIN_TOKEN")  # fmt: skip
    return Topology(services={
        "replica-0": ServiceHandle(name="replica-0", role="replica", port=8000, kube=replica),
        "feature-store": ServiceHandle(name="feature-store", role="feature_store", port=8443, kube=store,
                                       url="https://feature-store.faultdrill.svc:8443"),
    })  # fmt: skip


def context(kube_api: Any, tmp_path: Path, namespaces: frozenset[str] = frozenset({NS})) -> FaultContext:
    return FaultContext.create(tmp_path / "state", scope=Scope(namespaces=namespaces),
                               topology=topology(kube_api.kubeconfig))  # fmt: skip


@pytest.fixture
def registry() -> FaultRegistry:
    reg = FaultRegistry()
    reg.load_entry_points()
    return reg


def run(registry: FaultRegistry, ctx: FaultContext, name: str, params: dict[str, Any]) -> tuple[Any, Any]:
    fault = registry.get(name)()
    config = fault.parse_config(params)
    assert fault.preflight(config, ctx) == []
    return fault, fault.inject(config, ctx)


def test_k8s_process_kill_deletes_the_recorded_pod_only(kube_api: Any, tmp_path: Path, registry: FaultRegistry) -> None:
    ctx = context(kube_api, tmp_path)
    fault, inj = run(registry, ctx, "process_kill", {"target": "replica-0", "mode": "sigkill"})
    [delete] = kube_api.writes()
    assert (delete.method, delete.path) == ("DELETE", f"{PODS}/{POD}")
    assert delete.body["gracePeriodSeconds"] == 0 and delete.body["preconditions"] == {"uid": "uid-a"}
    record = ctx.ledger.get(inj.id)
    assert record is not None and record.undo["platform"] == "kubernetes"
    assert record.undo["cluster"] == {"namespace": NS, "context": "fake", "kubeconfig": str(kube_api.kubeconfig)}
    assert fault.verify(inj, ctx).effective  # the pod is gone (404 from the API now)
    fault.undo(inj, ctx)
    assert len(kube_api.writes()) == 1 and ctx.ledger.get(inj.id) is None  # the ReplicaSet replaces it


def test_k8s_process_freeze_stops_and_continues_pid_1(kube_api: Any, tmp_path: Path, registry: FaultRegistry) -> None:
    ctx = context(kube_api, tmp_path)
    fault, inj = run(registry, ctx, "process_freeze", {"target": "replica-0", "mode": "sigstop"})
    assert kube_api.execs() == [main_sh('kill -STOP "$p"')]
    exec_req = next(r for r in kube_api.requests if r.path.endswith("/exec"))
    assert exec_req.path == f"{PODS}/{POD}/exec" and "container=target" in exec_req.query
    kube_api.exec_output.append("T\n")
    check = fault.verify(inj, ctx)
    assert check.effective and check.details["server_state"] == "T"
    fault.undo(inj, ctx)
    assert kube_api.execs()[-1] == main_sh('kill -CONT "$p"')
    assert ("GET", f"{PODS}/{POD}") in kube_api.calls("GET")  # uid checked before touching it


def test_k8s_dependency_killed_scales_to_zero_and_back(kube_api: Any, tmp_path: Path, registry: FaultRegistry) -> None:
    ctx = context(kube_api, tmp_path)
    fault, inj = run(registry, ctx, "dependency_outage", {"target": "feature-store", "mode": "killed"})
    [scale] = kube_api.writes()
    assert (scale.method, scale.path, scale.body) == ("PATCH", f"{APPS}/feature-store/scale", {"spec": {"replicas": 0}})
    assert inj.undo["replicas"] == 3  # the prior state, read before the change
    fault.undo(inj, ctx)
    assert kube_api.writes()[-1].body == {"spec": {"replicas": 3}}


def test_k8s_dependency_errors_use_the_admin_api_inside_each_pod(kube_api: Any, tmp_path: Path,
                                                                  registry: FaultRegistry) -> None:  # fmt: skip
    ctx = context(kube_api, tmp_path)
    fault, inj = run(registry, ctx, "dependency_outage", {"target": "feature-store", "mode": "errors",
                                                          "error_rate": 0.5, "error_status": 502})  # fmt: skip
    [argv] = kube_api.execs()
    assert argv[:2] == ["python", "-c"] and argv[3:] == [
        "POST", "https://127.0.0.1:8443/admin/faults", "FAULTDRILL_FS_ADMIN_TOKEN",
        json.dumps({"error_rate": 0.5, "error_status": 502})]  # fmt: skip
    assert "not-a-secret" not in json.dumps(inj.undo)  # no credential in the record
    fault.undo(inj, ctx)
    assert kube_api.execs()[-1][3:6] == ["DELETE", "https://127.0.0.1:8443/admin/faults", "FAULTDRILL_FS_ADMIN_TOKEN"]


def test_k8s_model_load_failure_patches_the_version_and_restores_it(kube_api: Any, tmp_path: Path,
                                                                     registry: FaultRegistry) -> None:  # fmt: skip
    ctx = context(kube_api, tmp_path)
    fault, inj = run(registry, ctx, "model_load_failure", {"target": "replica-0", "mode": "bad_version",
                                                           "bad_version": "404"})  # fmt: skip
    env = {"name": "FAULTDRILL_MODEL_VERSION", "value": "404"}
    [patch] = kube_api.writes()
    assert (patch.method, patch.path) == ("PATCH", f"{APPS}/target")
    assert patch.body == {"spec": {"template": {"spec": {"containers": [{"name": "target", "env": [env]}]}}}}
    assert inj.undo["previous_version"] == "1"
    fault.undo(inj, ctx)
    restored = kube_api.writes()[-1].body["spec"]["template"]["spec"]["containers"][0]["env"]
    assert restored == [{"name": "FAULTDRILL_MODEL_VERSION", "value": "1"}]


def test_k8s_network_partition_is_a_network_policy_deleted_on_rollback(kube_api: Any, tmp_path: Path,
                                                                        registry: FaultRegistry) -> None:  # fmt: skip
    ctx = context(kube_api, tmp_path)
    fault, inj = run(registry, ctx, "network_partition", {"target": "feature-store", "direction": "ingress",
                                                          "port": 8443})  # fmt: skip
    [create] = kube_api.writes()
    name = f"faultdrill-partition-{inj.id}"
    assert (create.method, create.path) == ("POST", f"/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies")
    assert create.body["metadata"]["name"] == name
    spec = create.body["spec"]
    assert spec["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "feature-store"}}
    assert spec["policyTypes"] == ["Ingress"]
    tcp = [p for p in spec["ingress"][0]["ports"] if p["protocol"] == "TCP"]
    assert tcp == [{"protocol": "TCP", "port": 1, "endPort": 8442}, {"protocol": "TCP", "port": 8444, "endPort": 65535}]
    fault.undo(inj, ctx)
    assert (kube_api.writes()[-1].method, kube_api.writes()[-1].path) == (
        "DELETE", f"/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies/{name}")
    fault.rollback(inj, ctx)  # already gone: a 404 is "undone", not an error


def test_k8s_cert_expiry_swaps_the_secret_and_restores_it_byte_for_byte(kube_api: Any, tmp_path: Path,
                                                                          registry: FaultRegistry) -> None:  # fmt: skip
    from faultdrill.target_service.pki import ensure_dev_pki

    pki = ensure_dev_pki(tmp_path / "pki")
    ctx = context(kube_api, tmp_path)
    fault, inj = run(registry, ctx, "cert_expiry", {"target": "feature-store", "mode": "expired",
                                                    "ca_key_file": str(pki.ca.key)})  # fmt: skip
    [patch] = kube_api.writes()
    assert (patch.method, patch.path) == ("PATCH", f"/api/v1/namespaces/{NS}/secrets/feature-store-tls")
    cert = x509.load_pem_x509_certificate(base64.b64decode(patch.body["data"]["tls.crt"]))
    assert cert.not_valid_after_utc < datetime.now(UTC)
    backup = Path(inj.undo["backup"])
    assert backup.stat().st_mode & 0o777 == 0o600
    assert "T1JJR0lOQUwtS0VZ" not in json.dumps(inj.model_dump())  # the old key is in the 0600 backup only
    fault.undo(inj, ctx)
    assert kube_api.writes()[-1].body == {"data": {"tls.crt": "T1JJR0lOQUwtQ1JU", "tls.key": "T1JJR0lOQUwtS0VZ"}}
    assert not backup.exists()


def test_k8s_oom_leak_and_gpu_hold_go_through_the_admin_api_in_the_pod(kube_api: Any, tmp_path: Path,
                                                                        registry: FaultRegistry) -> None:  # fmt: skip
    ctx = context(kube_api, tmp_path)
    oom, inj = run(registry, ctx, "oom_kill", {"target": "replica-0", "mode": "leak", "rate_mib_s": 100})
    assert kube_api.execs()[0][3:5] == ["POST", "http://127.0.0.1:9000/admin/host-memory/leak"]
    assert json.loads(kube_api.execs()[0][6])["rate_mib_s"] == 100
    assert inj.undo["restarts_before"] == 0 and inj.undo["memory_limit"] == "1Gi"
    oom.undo(inj, ctx)
    assert kube_api.execs()[-1][3:5] == ["DELETE", "http://127.0.0.1:9000/admin/host-memory/leak"]
    gpu, inj = run(registry, ctx, "gpu_memory_exhaustion", {"target": "replica-0", "hold_mib": 64})
    assert kube_api.execs()[-1][3:5] == ["POST", "http://127.0.0.1:9000/admin/device-memory/hold"]
    assert json.loads(kube_api.execs()[-1][6]) == {"bytes": 64 * 2**20}
    gpu.undo(inj, ctx)
    assert kube_api.execs()[-1][3:5] == ["POST", "http://127.0.0.1:9000/admin/device-memory/release"]


def test_k8s_gpu_faults_beyond_memory_go_through_the_admin_api_in_the_pod(kube_api: Any, tmp_path: Path,
                                                                          registry: FaultRegistry) -> None:  # fmt: skip
    ctx = context(kube_api, tmp_path)
    slow, inj = run(registry, ctx, "gpu_slowdown", {"target": "replica-0", "factor": 3, "duration_s": 20})
    assert kube_api.execs()[-1][3:5] == ["POST", "http://127.0.0.1:9000/admin/device/slowdown"]
    assert json.loads(kube_api.execs()[-1][6]) == {"factor": 3.0, "seconds": 20.0}  # the pod's own dead-man
    slow.undo(inj, ctx)
    assert kube_api.execs()[-1][3:5] == ["DELETE", "http://127.0.0.1:9000/admin/device/slowdown"]
    wrong, inj = run(registry, ctx, "gpu_wrong_output", {"target": "replica-0", "mode": "scale", "factor": -1})
    assert json.loads(kube_api.execs()[-1][6]) == {"mode": "scale", "factor": -1.0}
    wrong.undo(inj, ctx)
    assert kube_api.execs()[-1][3:5] == ["POST", "http://127.0.0.1:9000/admin/device/restore"]
    # An Xid: the pod is replaced only when the event left it poisoned (its admin state says so).
    xid, inj = run(registry, ctx, "gpu_xid", {"target": "replica-0", "field": "DCGM_FI_DEV_GPU_TEMP", "value": 90})
    assert json.loads(kube_api.execs()[-1][6]) == {"field": "DCGM_FI_DEV_GPU_TEMP", "value": 90.0}
    kube_api.exec_output.append('200 {"sticky_error": null, "gpu": {"reset_required": null}}')
    xid.undo(inj, ctx)
    assert not [w for w in kube_api.writes() if w.method == "DELETE"]  # nothing to replace
    xid, inj = run(registry, ctx, "gpu_xid", {"target": "replica-0", "xid": 79})
    assert json.loads(kube_api.execs()[-1][6]) == {"field": "DCGM_FI_DEV_XID_ERRORS", "value": 79}
    kube_api.exec_output.append('200 {"sticky_error": "Xid 79", "gpu": {"reset_required": "Xid 79"}}')
    xid.undo(inj, ctx)
    (delete,) = [w for w in kube_api.writes() if w.method == "DELETE"]
    assert delete.path == f"{PODS}/{POD}" and delete.body["preconditions"] == {"uid": "uid-a"}


def test_k8s_gpu_sticky_error_rollback_replaces_the_poisoned_pod(kube_api: Any, tmp_path: Path,
                                                                 registry: FaultRegistry) -> None:  # fmt: skip
    ctx = context(kube_api, tmp_path)
    sticky, inj = run(registry, ctx, "gpu_sticky_error", {"target": "replica-0"})
    assert kube_api.execs()[-1][3:5] == ["POST", "http://127.0.0.1:9000/admin/device/sticky-error"]
    assert inj.undo["restarts_before"] == 0
    sticky.undo(inj, ctx)  # a poisoned context has no other repair than a new process
    (delete,) = [w for w in kube_api.writes() if w.method == "DELETE"]
    assert delete.path == f"{PODS}/{POD}" and delete.body["preconditions"] == {"uid": "uid-a"}
    sticky.rollback(inj, ctx)  # idempotent: the pod is gone
    assert len([w for w in kube_api.writes() if w.method == "DELETE"]) == 1


def test_k8s_namespace_outside_the_allow_list_is_refused_untouched(kube_api: Any, tmp_path: Path,
                                                                    registry: FaultRegistry) -> None:  # fmt: skip
    ctx = context(kube_api, tmp_path, namespaces=frozenset({"staging"}))
    fault = registry.get("dependency_outage")()
    config = fault.parse_config({"target": "feature-store", "mode": "killed"})
    assert [p.code for p in fault.preflight(config, ctx)] == ["blast_radius"]
    with pytest.raises(BlastRadiusError, match="faultdrill"):
        fault.inject(config, ctx)
    assert kube_api.requests == [] and ctx.ledger.pending() == []


def test_k8s_modes_without_a_kubernetes_mechanism_fail_preflight(kube_api: Any, tmp_path: Path,
                                                                  registry: FaultRegistry) -> None:  # fmt: skip
    ctx = context(kube_api, tmp_path)
    fault = registry.get("model_load_failure")()
    config = fault.parse_config({"target": "replica-0", "mode": "corrupt"})
    assert [p.code for p in fault.preflight(config, ctx)] == ["mode_not_on_kubernetes"]
    with pytest.raises(PreflightError):
        fault.inject(config, ctx)
    assert fault.plan(fault.parse_config({"target": "replica-0", "mode": "bad_version"}), ctx)[0].startswith(
        "PATCH deployments/target")
    assert kube_api.writes() == []


@pytest.mark.slow
def test_k8s_rollback_pending_from_a_fresh_process_restores_the_cluster(kube_api: Any, tmp_path: Path,
                                                                         registry: FaultRegistry) -> None:  # fmt: skip
    """A run injects and is killed; `faultdrill rollback --pending` (another process) undoes it from the record."""
    ctx = context(kube_api, tmp_path)
    _, inj = run(registry, ctx, "dependency_outage", {"target": "feature-store", "mode": "killed"})
    assert kube_api.writes()[-1].body == {"spec": {"replicas": 0}}
    gone = subprocess.Popen(["true"])  # a pid that has exited: the killed run
    gone.wait()
    ctx.ledger.write(inj.model_copy(update={"owner_pid": gone.pid, "owner_start": None}))
    env = {**os.environ, "FAULTDRILL_STATE_DIR": str(tmp_path / "state")}
    cli = [sys.executable, "-m", "faultdrill", "rollback", "--pending"]
    done = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "rolled_back" in done.stdout
    last = kube_api.writes()[-1]
    assert (last.method, last.path, last.body) == ("PATCH", f"{APPS}/feature-store/scale", {"spec": {"replicas": 3}})
    assert ctx.ledger.pending() == []  # a second rollback finds nothing


@pytest.mark.root
def test_k8s_main_pid_snippet_finds_and_stops_the_server_where_pid_1_would_ignore_it(tmp_path: Path) -> None:
    """In a fresh PID namespace (as in a pod): ``kill -STOP 1`` is ignored by init, the snippet's pid is not."""
    if os.geteuid() != 0 or not Path("/usr/bin/unshare").exists():
        pytest.skip("needs root and unshare(1) for a PID namespace")
    (tmp_path / "faultdrill").symlink_to("/bin/sleep")  # comm "faultdrill", like the console script
    state = "$(cut -d')' -f2 /proc/{}/stat | cut -d' ' -f2)"
    inner = (f"{tmp_path}/faultdrill 30 & sleep 0.3; kill -STOP 1; sleep 0.2; echo init={state.format(1)}; "
             + MAIN_PID + f'kill -STOP "$p"; sleep 0.2; echo pid=$p state={state.format("$p")}; kill -KILL $p')
    done = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", inner], capture_output=True,
                          text=True, timeout=30)  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = dict(part.split("=", 1) for part in done.stdout.split())
    assert lines["init"] != "T"  # the namespace's init ignored SIGSTOP from inside
    assert lines["pid"] != "1" and lines["state"] == "T"
