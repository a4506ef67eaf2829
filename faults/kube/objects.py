"""Object-level faults on Kubernetes: network partition, certificate expiry, dependency outage.

- ``network_partition`` (``drop``): a NetworkPolicy ``faultdrill-partition-<id>`` selecting the
  target's pods with no allow rule for the chosen direction(s) (with ``port``: every port but
  that one is allowed, by ``endPort`` ranges); rollback deletes it. Needs a CNI that enforces
  NetworkPolicy (k3s's built-in controller, Calico, Cilium; kind's kindnet from v0.24).
- ``cert_expiry``: the TLS Secret's ``tls.crt``/``tls.key`` swapped for an expired (or not yet
  valid, wrong-host, wrong-CA) pair issued by ``target_service.pki``; the original data goes to
  ``<state>/backups/<id>/secret.json`` (0600, sha256 in the record: keys never enter the
  ledger) and is written back on rollback. The kubelet refreshes Secret volumes within ~1 min
  and the store hot-reloads its certificate.
- ``dependency_outage``: ``killed`` scales the Deployment to 0 (the prior replica count is
  recorded and restored); ``hung`` execs ``kill -STOP <server pid>`` in each store pod (``-CONT`` back);
  ``errors``/``slow`` call the store's admin API from inside each pod (DELETE on rollback).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from faultdrill.faults.base import FaultContext, Problem, Verification
from faultdrill.faults.errors import FaultdrillError, RollbackError
from faultdrill.faults.kube.actions import KubeAction
from faultdrill.faults.kube.client import apps, core, networking, pod_exec, tolerate_404
from faultdrill.faults.kube.pods import ADMIN_PY, admin_exec, main_sh
from faultdrill.faults.topology import ServiceHandle

__all__ = ["DEFAULT_CA_DIR", "CertAction", "DependencyAction", "PartitionAction"]

DEFAULT_CA_DIR = Path(__file__).resolve().parents[2] / "target_service" / "deploy" / "base" / "secrets" / ".pki"
_NAME_LABEL = "app.kubernetes.io/name"


def _ns(undo: dict[str, Any]) -> str:
    return str(undo["cluster"]["namespace"])


class PartitionAction(KubeAction):
    modes: ClassVar[tuple[str, ...]] = ("drop",)
    needs_pod: ClassVar[bool] = False

    def mode(self, config: Any) -> str:
        return "loss" if config.loss is not None else str(config.action)

    def plan(self, config: Any, h: ServiceHandle) -> list[str]:
        assert h.kube is not None
        return [f"POST networkpolicies faultdrill-partition-<id> in {h.kube.namespace}: pods "
                f"{_NAME_LABEL}={h.kube.deployment}, {config.direction} denied"
                f"{f' on port {config.port}' if config.port else ''}", "rollback: DELETE that NetworkPolicy"]

    def prepare(self, config: Any, h: ServiceHandle, api: Any, ctx: FaultContext, backup: Path) -> dict[str, Any]:
        assert h.kube is not None
        probe = [s.kube.pod for s in ctx.topology.by_role("replica") if s.kube and s.kube.pod and s is not h]
        return {"policy": f"faultdrill-partition-{backup.name}", "direction": config.direction, "port": config.port,
                "pod_labels": {_NAME_LABEL: h.kube.deployment}, "probe_pod": probe[0] if probe else None,
                "probe_host": h.url}  # fmt: skip

    def apply(self, config: Any, undo: dict[str, Any], api: Any) -> None:
        networking(api).create_namespaced_network_policy(_ns(undo), policy_body(undo))

    def restore(self, mode: str, undo: dict[str, Any], api: Any) -> None:
        tolerate_404(lambda: networking(api).delete_namespaced_network_policy(undo["policy"], _ns(undo)))

    def measure(self, mode: str, undo: dict[str, Any], cfg: dict[str, Any], api: Any) -> Verification:
        policy = tolerate_404(lambda: networking(api).read_namespaced_network_policy(undo["policy"], _ns(undo)))
        details: dict[str, Any] = {"policy_present": policy is not None}
        effective = policy is not None
        if policy is not None and undo.get("probe_pod") and undo.get("probe_host"):
            argv = ["python", "-c", ADMIN_PY, "GET", f"{undo['probe_host']}/healthz", "", ""]
            code, out = pod_exec(api, _ns(undo), undo["probe_pod"], "target", argv)
            details["probe_from"], details["probe_exit"], details["probe"] = undo["probe_pod"], code, out[-200:]
            effective = code not in (0, None)  # a connection timeout or refusal: the partition holds
        return Verification(effective, details, message=f"NetworkPolicy {undo['policy']}: {details}")


def policy_body(undo: dict[str, Any]) -> dict[str, Any]:
    """The NetworkPolicy of a partition record (deny the direction(s); with a port, only it)."""
    types = {"ingress": ["Ingress"], "egress": ["Egress"], "both": ["Ingress", "Egress"]}[undo["direction"]]
    spec: dict[str, Any] = {"podSelector": {"matchLabels": undo["pod_labels"]}, "policyTypes": types}
    if (port := undo.get("port")) is not None:
        ranges = [r for r in ((1, port - 1), (port + 1, 65535)) if r[0] <= r[1]]
        allow = [{"ports": [{"protocol": "TCP", "port": a, "endPort": b} for a, b in ranges] +
                  [{"protocol": "UDP", "port": 1, "endPort": 65535}]}]  # fmt: skip
        for t in types:
            spec[t.lower()] = allow
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": undo["policy"], "labels": {"app.kubernetes.io/part-of": "faultdrill",
                                                            "faultdrill.io/fault": "network_partition"}},
            "spec": spec}  # fmt: skip


class CertAction(KubeAction):
    modes: ClassVar[tuple[str, ...]] = ("expired", "not_yet_valid", "wrong_ca", "wrong_host")
    needs_pod: ClassVar[bool] = False

    def problems(self, config: Any, h: ServiceHandle, ctx: FaultContext) -> list[Problem]:
        problems = []
        if h.kube is None or h.kube.tls_secret is None:
            problems.append(Problem("no_tls_secret", f"'{h.name}' has no TLS Secret"))
        if config.mode != "wrong_ca" and not _ca_dir(config).joinpath("ca.key").is_file():
            problems.append(Problem("no_ca_key", f"the project CA key {_ca_dir(config) / 'ca.key'} is missing",
                                    "run `faultdrill deploy secrets` (it made the cluster's CA) or set ca_key_file"))
        return problems

    def plan(self, config: Any, h: ServiceHandle) -> list[str]:
        assert h.kube is not None
        return [f"back up Secret {h.kube.tls_secret} data to <state>/backups/<id>/secret.json (0600)",
                f"PATCH secrets/{h.kube.tls_secret}: tls.crt/tls.key := a {config.mode} certificate",
                "rollback: PATCH the backed-up data back (sha256 checked)"]  # fmt: skip

    def prepare(self, config: Any, h: ServiceHandle, api: Any, ctx: FaultContext, backup: Path) -> dict[str, Any]:
        assert h.kube is not None and h.kube.tls_secret is not None
        secret = core(api).read_namespaced_secret(h.kube.tls_secret, h.kube.namespace)
        data = json.dumps(dict(secret.data or {}), sort_keys=True).encode()
        backup.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(backup / "secret.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        return {"secret": h.kube.tls_secret, "backup": str(backup / "secret.json"),
                "sha256": hashlib.sha256(data).hexdigest(), "ca_dir": str(_ca_dir(config)),
                "host": h.kube.deployment}  # fmt: skip

    def apply(self, config: Any, undo: dict[str, Any], api: Any) -> None:
        crt, key = _bad_pair(config.mode, Path(undo["ca_dir"]), undo["host"], config.wrong_host)
        body = {"data": {"tls.crt": base64.b64encode(crt).decode(), "tls.key": base64.b64encode(key).decode()}}
        core(api).patch_namespaced_secret(undo["secret"], _ns(undo), body)

    def restore(self, mode: str, undo: dict[str, Any], api: Any) -> None:
        path = Path(undo["backup"])
        if not path.exists():
            raise RollbackError(f"backup {path} is missing: restore Secret {undo['secret']} by hand "
                                "(`faultdrill deploy secrets` + apply)")  # fmt: skip
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != undo["sha256"]:
            raise RollbackError(f"backup {path} does not match its sha256: not restoring")
        core(api).patch_namespaced_secret(undo["secret"], _ns(undo), {"data": json.loads(data)})
        path.unlink()
        path.parent.rmdir()

    def measure(self, mode: str, undo: dict[str, Any], cfg: dict[str, Any], api: Any) -> Verification:
        from faultdrill.target_service.pki import cert_info

        secret = core(api).read_namespaced_secret(undo["secret"], _ns(undo))
        pem = base64.b64decode((secret.data or {}).get("tls.crt", ""))
        tmp = Path(undo["backup"]).with_name("served.crt")
        tmp.write_bytes(pem)
        info = cert_info(tmp)
        now = datetime.now(UTC)
        effective = {"expired": info.not_after < now, "not_yet_valid": info.not_before > now}.get(mode, True)
        return Verification(effective, {"secret": undo["secret"], "not_before": info.not_before.isoformat(),
                            "not_after": info.not_after.isoformat(),
                            "note": "the Secret holds it; pods see it once the kubelet syncs the volume (<~1 min)"},
                            message=f"Secret {undo['secret']} now holds a {mode} certificate")  # fmt: skip


def _ca_dir(config: Any) -> Path:
    return Path(config.ca_key_file).parent if config.ca_key_file else DEFAULT_CA_DIR


def _bad_pair(mode: str, ca_dir: Path, host: str, wrong_host: str) -> tuple[bytes, bytes]:
    """A certificate + key for ``mode``, issued by the project CA (a fresh CA for wrong_ca)."""
    import tempfile

    from faultdrill.target_service.pki import CertPaths, create_ca, issue_cert

    with tempfile.TemporaryDirectory(prefix="faultdrill-cert-") as tmp:
        ca = create_ca(Path(tmp)) if mode == "wrong_ca" else CertPaths(ca_dir / "ca.crt", ca_dir / "ca.key")
        now = datetime.now(UTC)
        day = timedelta(days=1)
        when = {"expired": (now - 30 * day, now - day), "not_yet_valid": (now + day, now + 30 * day)}.get(
            mode, (None, None))
        hosts = (wrong_host,) if mode == "wrong_host" else (host, "localhost")
        paths = issue_cert(ca, Path(tmp), "swapped", hosts=hosts, not_before=when[0], not_after=when[1])
        return paths.cert.read_bytes(), paths.key.read_bytes()


class DependencyAction(KubeAction):
    modes: ClassVar[tuple[str, ...]] = ("killed", "hung", "errors", "slow")
    needs_pod: ClassVar[bool] = False

    def plan(self, config: Any, h: ServiceHandle) -> list[str]:
        assert h.kube is not None
        d = f"deployments/{h.kube.deployment}"
        return {"killed": [f"PATCH {d}/scale replicas=0", "rollback: PATCH scale back to the recorded replicas"],
                "hung": [f"exec in each pod of {d}: kill -STOP <server pid>", "rollback: kill -CONT in the same pods"],
                "errors": [f"exec in each pod of {d}: POST /admin/faults {{\"error_rate\": {config.error_rate}, "
                           f"\"error_status\": {config.error_status}}}", "rollback: DELETE /admin/faults"],
                "slow": [f"exec in each pod of {d}: POST /admin/faults {{\"delay_ms\": {config.delay_ms}}}",
                         "rollback: DELETE /admin/faults"]}[config.mode]  # fmt: skip

    def prepare(self, config: Any, h: ServiceHandle, api: Any, ctx: FaultContext, backup: Path) -> dict[str, Any]:
        assert h.kube is not None
        dep = apps(api).read_namespaced_deployment(h.kube.deployment, h.kube.namespace)
        selector = ",".join(f"{k}={v}" for k, v in (dep.spec.selector.match_labels or {}).items())
        pods = core(api).list_namespaced_pod(h.kube.namespace, label_selector=selector).items
        return {"replicas": dep.spec.replicas, "selector": selector,
                "pods": [[p.metadata.name, p.metadata.uid] for p in pods if p.status.phase == "Running"]}  # fmt: skip

    def apply(self, config: Any, undo: dict[str, Any], api: Any) -> None:
        if config.mode == "killed":
            apps(api).patch_namespaced_deployment_scale(undo["deployment"], _ns(undo), {"spec": {"replicas": 0}})
            return
        if not undo["pods"]:
            raise FaultdrillError(f"no running pod of deployment {undo['deployment']}")
        for name, _ in undo["pods"]:
            if config.mode == "hung":
                pod_exec(api, _ns(undo), name, undo["container"], main_sh('kill -STOP "$p"'))
            else:
                body = ({"error_rate": config.error_rate, "error_status": config.error_status}
                        if config.mode == "errors" else {"delay_ms": config.delay_ms})  # fmt: skip
                admin_exec(api, undo, "POST", "/admin/faults", body, pod=name)

    def restore(self, mode: str, undo: dict[str, Any], api: Any) -> None:
        if mode == "killed":
            apps(api).patch_namespaced_deployment_scale(undo["deployment"], _ns(undo),
                                                        {"spec": {"replicas": int(undo["replicas"])}})  # fmt: skip
            return
        for name, uid in undo["pods"]:
            pod = tolerate_404(partial(core(api).read_namespaced_pod, name, _ns(undo)))
            if pod is None or pod.metadata.uid != uid:
                continue  # gone or replaced: the replacement never had the fault
            if mode == "hung":
                pod_exec(api, _ns(undo), name, undo["container"], main_sh('kill -CONT "$p"'))
            else:
                admin_exec(api, undo, "DELETE", "/admin/faults", pod=name)

    def measure(self, mode: str, undo: dict[str, Any], cfg: dict[str, Any], api: Any) -> Verification:
        if mode == "killed":
            dep = apps(api).read_namespaced_deployment(undo["deployment"], _ns(undo))
            ready = dep.status.ready_replicas or 0
            return Verification(dep.spec.replicas == 0 and ready == 0, {"replicas": dep.spec.replicas, "ready": ready},
                                message=f"{undo['deployment']}: {ready} ready of {dep.spec.replicas}")  # fmt: skip
        name = undo["pods"][0][0]
        if mode == "hung":
            _, out = pod_exec(api, _ns(undo), name, undo["container"],
                              main_sh("cut -d')' -f2 /proc/$p/stat | cut -d' ' -f2"))  # fmt: skip
            return Verification(out.strip()[:1] == "T", {"pod": name, "server_state": out.strip()[:1]},
                                message=f"server process of {name}: {out.strip()[:1]}")  # fmt: skip
        argv = ["python", "-c", "import time,ssl,urllib.request as u\nt=time.monotonic()\ntry:\n"
                " r=u.urlopen('https://127.0.0.1:8443/v1/features/faultdrill-probe',timeout=30,"
                "context=ssl._create_unverified_context());s=r.status\nexcept u.HTTPError as e:\n s=e.code\n"
                "print(s, round((time.monotonic()-t)*1000))"]  # fmt: skip
        _, out = pod_exec(api, _ns(undo), name, undo["container"], argv, timeout_s=40)
        status, _, ms = out.strip().partition(" ")
        ok = (status == str(cfg.get("error_status")) if mode == "errors"
              else ms.isdigit() and int(ms) >= 0.9 * float(cfg["delay_ms"]))  # fmt: skip
        return Verification(ok, {"pod": name, "status": status, "latency_ms": ms}, message=f"{status} after {ms} ms")
