"""The Kubernetes API seen by faults: a client from a recorded cluster reference, pod exec, 404s.

A fault record holds a *cluster reference* ``{"namespace", "context", "kubeconfig"}`` (never a
token): ``faultdrill rollback --pending`` in another process rebuilds the same client from it.
Without a kubeconfig path or context, the in-cluster service account is used when the process
runs in a pod, else the default kubeconfig. The official ``kubernetes`` client is imported here
only, inside functions, so the local path never pays for it.

Example::

    api = api_client({"namespace": "faultdrill", "context": "kind-faultdrill", "kubeconfig": None})
    code, out = pod_exec(api, "faultdrill", "target-7f9-abc", "target", ["sh", "-c", "kill -STOP 42"])
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

from faultdrill.faults.errors import FaultdrillError

__all__ = ["ClusterRef", "api_client", "apps", "cluster_ref", "core", "networking", "not_found", "pod_exec",
           "tolerate_404"]  # fmt: skip

ClusterRef = dict[str, Any]
T = TypeVar("T")
_IN_CLUSTER = "KUBERNETES_SERVICE_HOST"


def cluster_ref(namespace: str, context: str | None = None, kubeconfig: str | None = None) -> ClusterRef:
    """What a record stores to reach the cluster again (paths and names only)."""
    return {"namespace": namespace, "context": context, "kubeconfig": kubeconfig}


def api_client(ref: ClusterRef) -> Any:
    """A ``kubernetes.client.ApiClient`` for ``ref``; a missing/broken config is one clear error."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    cfg = client.Configuration()
    try:
        if ref.get("kubeconfig") or ref.get("context") or _IN_CLUSTER not in os.environ:
            config.load_kube_config(config_file=ref.get("kubeconfig"), context=ref.get("context"),
                                    client_configuration=cfg, persist_config=False)  # fmt: skip
        else:
            config.load_incluster_config(client_configuration=cfg)
    except (ConfigException, OSError, TypeError, ValueError) as exc:
        where = ref.get("kubeconfig") or os.environ.get("KUBECONFIG") or "~/.kube/config"
        raise FaultdrillError(f"no usable Kubernetes configuration ({where}, context "
                              f"{ref.get('context') or 'current'}): {exc}") from exc  # fmt: skip
    cfg.retries = 1
    return client.ApiClient(cfg)


def core(api: Any) -> Any:
    from kubernetes import client

    return client.CoreV1Api(api)


def apps(api: Any) -> Any:
    from kubernetes import client

    return client.AppsV1Api(api)


def networking(api: Any) -> Any:
    from kubernetes import client

    return client.NetworkingV1Api(api)


def not_found(exc: BaseException) -> bool:
    from kubernetes.client.exceptions import ApiException

    return isinstance(exc, ApiException) and exc.status == 404


def tolerate_404(call: Callable[[], T]) -> T | None:
    """``call()``, or None when the object is already gone (idempotent rollbacks)."""
    try:
        return call()
    except Exception as exc:
        if not_found(exc):
            return None
        raise


def pod_exec(api: Any, namespace: str, pod: str, container: str | None, argv: list[str],
             timeout_s: float = 30.0) -> tuple[int | None, str]:  # fmt: skip
    """Run ``argv`` in the container (the API's exec subresource, a websocket); (exit code, output)."""
    from kubernetes.stream import stream

    kwargs: dict[str, Any] = {"command": argv, "stderr": True, "stdin": False, "stdout": True, "tty": False,
                              "_preload_content": False}  # fmt: skip
    if container:
        kwargs["container"] = container
    try:
        ws = stream(core(api).connect_get_namespaced_pod_exec, pod, namespace, **kwargs)
        ws.run_forever(timeout=timeout_s)
        output = ws.read_stdout() + ws.read_stderr()
        code = ws.returncode
        ws.close()
    except Exception as exc:  # the websocket library raises its own types
        raise FaultdrillError(f"exec in pod {namespace}/{pod} failed: {type(exc).__name__}: {exc}") from exc
    return code, output
