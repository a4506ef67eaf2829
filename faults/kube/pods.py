"""Pod-level faults on Kubernetes: kill, freeze, OOM kill, GPU memory, model load failure.

Mechanisms (each the one a cluster operator would use):

- ``process_kill``: ``DELETE pods/<pod>`` with a uid precondition (only the recorded pod),
  ``gracePeriodSeconds: 0`` for ``sigkill``, the pod's own grace for ``sigterm``; the
  ReplicaSet replaces it, so there is nothing to restore (rollback is a no-op by design).
- ``process_freeze``: exec ``kill -STOP <server pid>`` in the container (rollback ``-CONT`` in
  the same pod, uid checked; not pid 1, see ``MAIN_PID``), or the target's admin API from inside the pod (``worker``).
- ``oom_kill``: ``leak`` asks the server to leak (admin API from inside the pod) until the
  kernel kills the container at its memory limit; ``limit`` execs a separate memory hog in the
  container (pid file in /tmp, killed on rollback); ``signal`` execs ``kill -KILL <server pid>``. Verified
  by ``lastState.terminated.reason == OOMKilled`` and a higher ``restartCount``.
- ``gpu_memory_exhaustion`` (``in_process``): the admin API's device-memory hold/release.
- ``model_load_failure`` (``bad_version``): a strategic-merge PATCH of the Deployment's
  ``FAULTDRILL_MODEL_VERSION``; rollback PATCHes the recorded previous value back (or
  deletes the variable when there was none).

The admin token stays in the pod: the exec'd script reads it from the container's env.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

from faultdrill.faults.base import FaultContext, Problem, Verification
from faultdrill.faults.errors import FaultdrillError
from faultdrill.faults.kube.actions import KubeAction
from faultdrill.faults.kube.client import apps, core, pod_exec, tolerate_404
from faultdrill.faults.topology import ServiceHandle

__all__ = ["ADMIN_PY", "MAIN_PID", "FreezeAction", "GpuAction", "KillAction", "ModelVersionAction", "OomAction",
           "admin_exec", "main_sh", "same_pod"]  # fmt: skip

MIB = 1024 * 1024
# The server's pid inside the pod. Not pid 1: a PID namespace's init ignores SIGKILL/SIGSTOP sent
# from inside it, so the manifests set shareProcessNamespace (pid 1 is the pause container) and
# the server is the process whose comm is the console script's name, ``faultdrill``.
MAIN_PID = 'p=$(grep -lx faultdrill /proc/[0-9]*/comm 2>/dev/null | head -1 | cut -d/ -f3); [ -n "$p" ] || exit 3; '


def main_sh(command: str) -> list[str]:
    """``sh -c`` argv running ``command`` with ``$p`` = the server's pid (exit 3: no server process)."""
    return ["sh", "-c", MAIN_PID + command]

VERSION_ENV = "FAULTDRILL_MODEL_VERSION"
# Run inside the pod: METHOD URL TOKEN_ENV BODY -> prints "<status> <body>"; exit 1 on HTTP >= 400.
ADMIN_PY = (
    "import os,ssl,sys,urllib.request as u\n"
    "m,url,env,body=sys.argv[1:5]\n"
    "h={'Content-Type':'application/json'}\n"
    "if env: h['Authorization']='Bearer '+os.environ.get(env,'')\n"
    "req=u.Request(url,method=m,data=body.encode() if body else None,headers=h)\n"
    "try:\n"
    "    r=u.urlopen(req,timeout=10,context=ssl._create_unverified_context())\n"
    "    print(r.status,r.read().decode()[:4000])\n"
    "except u.HTTPError as e:\n"
    "    print(e.code,e.read().decode()[:500]);sys.exit(1)\n"
)


def admin_exec(api: Any, undo: dict[str, Any], method: str, path: str, body: dict[str, Any] | None = None,
               pod: str | None = None) -> tuple[int | None, dict[str, Any]]:  # fmt: skip
    """Call the admin API from inside the pod; (status, JSON body or {})."""
    argv = ["python", "-c", ADMIN_PY, method, f"{undo['admin_url']}{path}", undo.get("admin_token_env") or "",
            json.dumps(body) if body is not None else ""]  # fmt: skip
    code, out = pod_exec(api, undo["cluster"]["namespace"], pod or undo["pod"], undo["container"], argv)
    status, _, text = out.strip().partition(" ")
    try:
        doc = json.loads(text) if text else {}
    except ValueError:
        doc = {"text": text[:200]}
    if code not in (0, None):
        raise FaultdrillError(f"{method} {path} in pod {pod or undo['pod']} answered {status}: {text[:200]}")
    return (int(status) if status.isdigit() else None), doc if isinstance(doc, dict) else {"value": doc}


def same_pod(api: Any, undo: dict[str, Any]) -> Any | None:
    """The recorded pod if it still exists with the recorded uid (never a replacement)."""
    pod = tolerate_404(lambda: core(api).read_namespaced_pod(undo["pod"], undo["cluster"]["namespace"]))
    return pod if pod is not None and pod.metadata.uid == undo.get("pod_uid") else None


def delete_same_pod(api: Any, undo: dict[str, Any], grace_s: int | None = None) -> None:
    """Delete the recorded pod with a uid precondition: never a replacement of the same name."""
    from kubernetes import client

    only = client.V1Preconditions(uid=undo["pod_uid"])
    body = client.V1DeleteOptions(grace_period_seconds=grace_s, preconditions=only)
    core(api).delete_namespaced_pod(undo["pod"], undo["cluster"]["namespace"], body=body)


def restart_count(pod: Any, container: str) -> int:
    """The container's restart count (0 when it has no status yet)."""
    cs = _status(pod, container)
    return int(cs.restart_count or 0) if cs is not None else 0


def _status(pod: Any, container: str) -> Any | None:
    for cs in (pod.status.container_statuses or []) if pod is not None else []:
        if cs.name == container:
            return cs
    return None


def _sh(api: Any, undo: dict[str, Any], script: str) -> tuple[int | None, str]:
    return pod_exec(api, undo["cluster"]["namespace"], undo["pod"], undo["container"], main_sh(script))


class KillAction(KubeAction):
    modes: ClassVar[tuple[str, ...]] = ("sigkill", "sigterm")

    def plan(self, config: Any, h: ServiceHandle) -> list[str]:
        assert h.kube is not None
        grace = "gracePeriodSeconds=0" if config.mode == "sigkill" else "the pod's grace period"
        return [f"DELETE /api/v1/namespaces/{h.kube.namespace}/pods/{h.kube.pod} ({grace}, uid precondition)",
                "rollback: none needed (the ReplicaSet starts a replacement)"]  # fmt: skip

    def apply(self, config: Any, undo: dict[str, Any], api: Any) -> None:
        delete_same_pod(api, undo, 0 if config.mode == "sigkill" else None)

    def restore(self, mode: str, undo: dict[str, Any], api: Any) -> None:
        return None  # nothing faultdrill changed remains: the Deployment owns the replacement

    def measure(self, mode: str, undo: dict[str, Any], cfg: dict[str, Any], api: Any) -> Verification:
        pod = same_pod(api, undo)
        deleting = pod is not None and pod.metadata.deletion_timestamp is not None
        state = "gone" if pod is None else "terminating" if deleting else "still running"
        return Verification(pod is None or deleting, {"pod": undo["pod"], "gone": pod is None, "terminating": deleting},
                            message=f"pod {undo['pod']} {state}")


class FreezeAction(KubeAction):
    needs_server: ClassVar[bool] = True
    modes: ClassVar[tuple[str, ...]] = ("sigstop", "worker")

    def problems(self, config: Any, h: ServiceHandle, ctx: FaultContext) -> list[Problem]:
        if config.mode == "worker" and (h.kube is None or h.kube.admin_url is None):
            return [Problem("no_admin_api", f"'{h.name}' has no admin API in its pod")]
        return []

    def plan(self, config: Any, h: ServiceHandle) -> list[str]:
        assert h.kube is not None
        where = f"pods/{h.kube.pod} container {h.kube.container}"
        if config.mode == "sigstop":
            return [f"exec in {where}: kill -STOP <server pid>", f"rollback: exec in {where}: kill -CONT <server pid>"]
        return [f"exec in {where}: POST {h.kube.admin_url}/admin/worker/freeze {{\"seconds\": {config.duration_s}}}",
                f"rollback: exec POST {h.kube.admin_url}/admin/worker/unfreeze"]  # fmt: skip

    def apply(self, config: Any, undo: dict[str, Any], api: Any) -> None:
        if config.mode == "sigstop":
            code, out = _sh(api, undo, 'kill -STOP "$p"')
            if code != 0:
                raise FaultdrillError(f"kill -STOP in {undo['pod']} exited {code}: {out[:200]}")
        else:
            admin_exec(api, undo, "POST", "/admin/worker/freeze", {"seconds": config.duration_s})

    def restore(self, mode: str, undo: dict[str, Any], api: Any) -> None:
        if same_pod(api, undo) is None:
            return  # the pod is gone: its replacement was never frozen
        if mode == "sigstop":
            _sh(api, undo, 'kill -CONT "$p"')
        else:
            admin_exec(api, undo, "POST", "/admin/worker/unfreeze", {})

    def measure(self, mode: str, undo: dict[str, Any], cfg: dict[str, Any], api: Any) -> Verification:
        if mode == "sigstop":
            _, out = _sh(api, undo, "cut -d')' -f2 /proc/$p/stat | cut -d' ' -f2")
            state = out.strip()[:1] or None
            return Verification(state == "T", {"pod": undo["pod"], "server_state": state},
                                message=f"server process state {state}")
        status, _ = _live(api, undo)
        return Verification(status == 503, {"liveness_status": status}, message=f"liveness answered {status}")


def _live(api: Any, undo: dict[str, Any]) -> tuple[int | None, dict[str, Any]]:
    """GET the replica's liveness route from inside its pod (503 is the effect, not an error)."""
    argv = ["python", "-c", ADMIN_PY, "GET", "http://127.0.0.1:8000/v2/health/live", "", ""]
    _, out = pod_exec(api, undo["cluster"]["namespace"], undo["pod"], undo["container"], argv)
    status = out.strip().partition(" ")[0]
    return (int(status) if status.isdigit() else None), {}


class OomAction(KubeAction):
    needs_server: ClassVar[bool] = True
    modes: ClassVar[tuple[str, ...]] = ("leak", "limit", "signal")

    def plan(self, config: Any, h: ServiceHandle) -> list[str]:
        assert h.kube is not None
        where = f"pods/{h.kube.pod} container {h.kube.container}"
        return {"leak": [f"exec in {where}: POST {h.kube.admin_url}/admin/host-memory/leak "
                         f"{{\"rate_mib_s\": {config.rate_mib_s}}} until the container's memory limit",
                         "rollback: DELETE /admin/host-memory/leak if the same container still runs"],
                "limit": [f"exec in {where}: a memory hog process allocating to the container's memory limit",
                          "rollback: kill the hog (pid file /tmp/faultdrill-hog-<id>.pid)"],
                "signal": [f"exec in {where}: kill -KILL <server pid>", "rollback: none (the kubelet restarts it)"],
                }[config.mode]  # fmt: skip

    def prepare(self, config: Any, h: ServiceHandle, api: Any, ctx: FaultContext, backup: Path) -> dict[str, Any]:
        assert h.kube is not None
        pod = core(api).read_namespaced_pod(h.kube.pod, h.kube.namespace)
        cs = _status(pod, h.kube.container)
        limit = None
        for c in pod.spec.containers:
            if c.name == h.kube.container and c.resources and c.resources.limits:
                limit = c.resources.limits.get("memory")
        return {"restarts_before": cs.restart_count if cs else 0, "memory_limit": limit,
                "hog_pidfile": f"/tmp/faultdrill-hog-{backup.name}.pid"}  # fmt: skip

    def apply(self, config: Any, undo: dict[str, Any], api: Any) -> None:
        if config.mode == "signal":
            _sh(api, undo, 'kill -KILL "$p"')  # the exec session dies with the container: no status to check
        elif config.mode == "leak":
            admin_exec(api, undo, "POST", "/admin/host-memory/leak",
                       {"rate_mib_s": config.rate_mib_s, "max_mib": config.max_mib or 1 << 20})  # fmt: skip
        else:
            chunk = max(1, int(config.rate_mib_s / 10))
            hog = (f"import time\\nb=[]\\nwhile True:\\n    b.append(bytearray({chunk} << 20))\\n    time.sleep(0.1)")
            code, out = _sh(api, undo, f"nohup python -c \"$(printf '{hog}')\" >/dev/null 2>&1 & "
                                       f"echo $! > {undo['hog_pidfile']}")  # fmt: skip
            if code != 0:
                raise FaultdrillError(f"memory hog did not start in {undo['pod']}: {out[:200]}")

    def restore(self, mode: str, undo: dict[str, Any], api: Any) -> None:
        pod = same_pod(api, undo)
        cs = _status(pod, undo["container"])
        if mode == "signal" or pod is None or cs is None or cs.restart_count != undo["restarts_before"]:
            return  # killed and restarted already: a fresh container has no leak and no hog
        if mode == "leak":
            admin_exec(api, undo, "DELETE", "/admin/host-memory/leak")
        elif mode == "limit":
            _sh(api, undo, f"test -f {undo['hog_pidfile']} && kill -KILL $(cat {undo['hog_pidfile']}); "
                           f"rm -f {undo['hog_pidfile']}")  # fmt: skip

    def measure(self, mode: str, undo: dict[str, Any], cfg: dict[str, Any], api: Any) -> Verification:
        pod = core(api).read_namespaced_pod(undo["pod"], undo["cluster"]["namespace"])
        cs = _status(pod, undo["container"])
        last = cs.last_state.terminated if cs is not None and cs.last_state else None
        restarted = cs is not None and cs.restart_count > int(undo["restarts_before"])
        reason, code = (last.reason, last.exit_code) if last is not None else (None, None)
        want = "OOMKilled" if mode != "signal" else "Error"
        return Verification(restarted and reason == want, {"restarts": cs.restart_count if cs else None,
                            "reason": reason, "exit_code": code, "memory_limit": undo.get("memory_limit")},
                            message=f"last termination {reason} ({code}), expected {want}")  # fmt: skip


class GpuAction(KubeAction):
    needs_server: ClassVar[bool] = True
    modes: ClassVar[tuple[str, ...]] = ("in_process",)

    def plan(self, config: Any, h: ServiceHandle) -> list[str]:
        assert h.kube is not None
        return [f"exec in pods/{h.kube.pod}: POST {h.kube.admin_url}/admin/device-memory/hold {_amount(config)}",
                "rollback: exec POST /admin/device-memory/release {}"]  # fmt: skip

    def apply(self, config: Any, undo: dict[str, Any], api: Any) -> None:
        admin_exec(api, undo, "POST", "/admin/device-memory/hold", _amount(config))

    def restore(self, mode: str, undo: dict[str, Any], api: Any) -> None:
        if same_pod(api, undo) is not None:
            admin_exec(api, undo, "POST", "/admin/device-memory/release", {})

    def measure(self, mode: str, undo: dict[str, Any], cfg: dict[str, Any], api: Any) -> Verification:
        _, state = admin_exec(api, undo, "GET", "/admin/state")
        held = int(state.get("device_memory_held_bytes", 0))
        return Verification(bool(held), {"state": state}, emulated=bool(state.get("emulated", False)),
                            message=f"held {held} bytes")  # fmt: skip


def _amount(config: Any) -> dict[str, float]:
    if config.hold_mib is not None:
        return {"bytes": int(config.hold_mib * MIB)}
    return {"leave_free_mib": config.leave_free_mib if config.leave_free_mib is not None else 0.0}


class ModelVersionAction(KubeAction):
    needs_server: ClassVar[bool] = True
    modes: ClassVar[tuple[str, ...]] = ("bad_version",)
    needs_pod: ClassVar[bool] = False

    def plan(self, config: Any, h: ServiceHandle) -> list[str]:
        assert h.kube is not None
        return [f"PATCH deployments/{h.kube.deployment}: container {h.kube.container} env "
                f"{VERSION_ENV}={config.bad_version} (a rollout that cannot load its model)",
                f"rollback: PATCH {VERSION_ENV} back to the recorded previous value"]  # fmt: skip

    def prepare(self, config: Any, h: ServiceHandle, api: Any, ctx: FaultContext, backup: Path) -> dict[str, Any]:
        assert h.kube is not None
        dep = apps(api).read_namespaced_deployment(h.kube.deployment, h.kube.namespace)
        previous = None
        for c in dep.spec.template.spec.containers:
            if c.name == h.kube.container:
                previous = next((e.value for e in c.env or [] if e.name == VERSION_ENV), None)
        return {"previous_version": previous, "bad_version": config.bad_version,
                "selector": dict(dep.spec.selector.match_labels or {})}  # fmt: skip

    def apply(self, config: Any, undo: dict[str, Any], api: Any) -> None:
        _patch_env(api, undo, {"name": VERSION_ENV, "value": config.bad_version})

    def restore(self, mode: str, undo: dict[str, Any], api: Any) -> None:
        prev = undo["previous_version"]
        _patch_env(api, undo, {"name": VERSION_ENV, "value": prev} if prev is not None
                   else {"name": VERSION_ENV, "$patch": "delete"})  # fmt: skip

    def measure(self, mode: str, undo: dict[str, Any], cfg: dict[str, Any], api: Any) -> Verification:
        selector = ",".join(f"{k}={v}" for k, v in undo["selector"].items())
        pods = core(api).list_namespaced_pod(undo["cluster"]["namespace"], label_selector=selector).items
        bad = [p for p in pods if any(e.value == undo["bad_version"] for c in p.spec.containers
                                      if c.name == undo["container"] for e in c.env or [])]  # fmt: skip
        failed = []
        for p in bad:
            cs = _status(p, undo["container"])
            term = (cs.last_state.terminated if cs and cs.last_state else None) or (cs.state.terminated if cs else None)
            failed.append(cs is not None and not cs.ready and term is not None and term.exit_code == 1)
        return Verification(bool(bad) and all(failed), {"pods_with_bad_version": [p.metadata.name for p in bad],
                            "exited_1_never_ready": failed},
                            message=f"{sum(failed)}/{len(bad)} bad-version pods exited 1, not ready")  # fmt: skip


def _patch_env(api: Any, undo: dict[str, Any], item: dict[str, Any]) -> None:
    body = {"spec": {"template": {"spec": {"containers": [{"name": undo["container"], "env": [item]}]}}}}
    apps(api).patch_namespaced_deployment(undo["deployment"], undo["cluster"]["namespace"], body)
