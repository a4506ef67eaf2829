"""A readiness-aware local endpoint for a Kubernetes Deployment, through the API's port-forward.

What ``kubectl port-forward svc/target`` does, but per connection: every accepted TCP
connection on ``127.0.0.1:<port>`` goes to the next *ready* pod (round robin, like a Service's
endpoints) over the API server's ``pods/portforward`` subresource, so this machine reaches the
target without a NodePort or Ingress. Hand-written because the client's ``portforward`` gives
one socket per call and nothing accepts local connections; ``kubectl`` is not a dependency.

Example::

    fwd = PortForwarder(api, "faultdrill", lambda: ["target-6d9-x", "target-6d9-y"], 8000)
    fwd.start(); httpx.get(fwd.url + "/v2/health/ready"); fwd.stop()
"""

from __future__ import annotations

import contextlib
import itertools
import select
import socket
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["PortForwarder"]


class PortForwarder:
    """Local listener → a ready pod's ``port``; see the module docstring."""

    def __init__(self, api: Any, namespace: str, ready_pods: Callable[[], list[str]], port: int) -> None:
        self.api, self.namespace, self.ready_pods, self.port = api, namespace, ready_pods, port
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        self._stop = threading.Event()
        self._turn = itertools.count()
        self._thread = threading.Thread(target=self._accept, name="kube-forward", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._server.close()
        self._thread.join(timeout=2)

    def _accept(self) -> None:
        self._server.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        from kubernetes import client
        from kubernetes.stream import portforward

        pods = self.ready_pods()
        if not pods:
            conn.close()  # no ready endpoint: refused, as a Service with no endpoints
            return
        pod = pods[next(self._turn) % len(pods)]
        try:
            pf = portforward(client.CoreV1Api(self.api).connect_get_namespaced_pod_portforward, pod,
                             self.namespace, ports=str(self.port))  # fmt: skip
            remote = pf.socket(self.port)
        except Exception:
            conn.close()
            return
        try:
            _pump(conn, remote, self._stop)
        finally:
            for s in (conn, remote):
                with contextlib.suppress(OSError):
                    s.close()
            with contextlib.suppress(Exception):
                pf.close()


def _pump(a: Any, b: Any, stop: threading.Event) -> None:
    while not stop.is_set():
        readable, _, _ = select.select([a, b], [], [], 0.5)
        for src in readable:
            data = src.recv(65536)
            if not data:
                return
            (b if src is a else a).sendall(data)
