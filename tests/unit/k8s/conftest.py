"""A recording Kubernetes API server on loopback for the real ``kubernetes`` client.

``kube_api`` serves the objects in ``tests/fixtures/k8s`` (and what a test puts into
``objects``), records every request (method, path with query, JSON body) and answers the exec
subresource with a real websocket handshake and the v4 channel protocol (stdout frame, then
the status frame on channel 3), so ``kubernetes.stream`` runs unmodified. A kubeconfig file
points at it. Nothing is mocked on the client side: the official client builds and sends every
request itself.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "k8s"
NS = "faultdrill"
_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


@dataclass
class Recorded:
    method: str
    path: str
    query: str
    body: Any


@dataclass
class FakeApi:
    url: str
    kubeconfig: Path
    requests: list[Recorded]
    objects: dict[str, Any]
    exec_output: list[str] = field(default_factory=list)
    """stdout of the next exec calls, in order (default ``"200 {}"``)."""

    def calls(self, method: str | None = None) -> list[tuple[str, str]]:
        return [(r.method, r.path) for r in self.requests if method is None or r.method == method]

    def writes(self) -> list[Recorded]:
        return [r for r in self.requests if r.method in ("POST", "PATCH", "DELETE", "PUT")]

    def execs(self) -> list[list[str]]:
        out = []
        for r in self.requests:
            if r.path.endswith("/exec"):
                out.append([unquote(v) for k, v in (p.split("=", 1) for p in r.query.split("&")) if k == "command"])
        return out


def _pod_json(name: str, uid: str, restarts: int = 0, last: dict[str, Any] | None = None) -> dict[str, Any]:
    events = json.loads((FIXTURES / "pod_watch_events.json").read_text())
    pod: dict[str, Any] = json.loads(json.dumps(events[2]["object"]))
    pod["metadata"].update(name=name, uid=uid)
    cs = pod["status"]["containerStatuses"][0]
    cs["restartCount"], cs["lastState"] = restarts, last or {}
    return pod


def _handler(api: FakeApi, lock: threading.Lock) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _record(self) -> Recorded:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw and raw[:1] in (b"{", b"[") else (raw.decode() or None)
            rec = Recorded(self.command, parts.path, parts.query, body)
            with lock:
                api.requests.append(rec)
            return rec

        def _send(self, status: int, doc: Any) -> None:
            data = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _answer(self) -> None:
            rec = self._record()
            if self.headers.get("Upgrade", "").lower() == "websocket":
                self._exec()
                return
            path, obj = rec.path, api.objects.get(rec.path)
            if path.rstrip("/") == "/version":
                self._send(200, {"major": "1", "minor": "30", "gitVersion": "v1.30.0",
                                 "gitCommit": "7c48c2bd72b9bf5c44d21d7338cc7bea77d0ad2a", "gitTreeState": "clean",
                                 "buildDate": "2024-04-17T17:27:03Z", "goVersion": "go1.22.2", "compiler": "gc",
                                 "platform": "linux/amd64"})  # fmt: skip
            elif path.endswith("/log") and isinstance(obj, str):  # pods/<pod>/log: plain text, as the API sends it
                data = obj.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            elif rec.method == "GET" and path.endswith("/pods") and "pods" in api.objects:
                self._send(200, {"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "3000"},
                                 "items": api.objects["pods"]})  # fmt: skip
            elif rec.method == "POST":
                self._send(201, rec.body)
            elif obj is None:
                self._send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                                 "message": f"{path} not found", "code": 404})  # fmt: skip
            elif rec.method == "DELETE":
                api.objects.pop(path, None)  # a deleted pod is answered with the pod, anything else with a Status
                status = {"kind": "Status", "apiVersion": "v1", "status": "Success"}
                self._send(200, obj if "/pods/" in path else status)
            else:
                self._send(200, obj)

        do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _answer

        def _exec(self) -> None:
            key = self.headers["Sec-WebSocket-Key"]
            accept = base64.b64encode(hashlib.sha1((key + _WS_GUID).encode()).digest()).decode()
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.send_header("Sec-WebSocket-Accept", accept)
            self.send_header("Sec-WebSocket-Protocol", "v4.channel.k8s.io")
            self.end_headers()
            with lock:
                out = api.exec_output.pop(0) if api.exec_output else "200 {}"
            for payload in (b"\x01" + out.encode(), b"\x03" + json.dumps({"status": "Success"}).encode()):
                self.wfile.write(_frame(0x2, payload))
            self.wfile.write(_frame(0x8, struct.pack("!H", 1000)))
            self.wfile.flush()
            self.close_connection = True

    return Handler


def _frame(opcode: int, payload: bytes) -> bytes:
    head = bytes([0x80 | opcode])
    n = len(payload)
    head += bytes([n]) if n < 126 else bytes([126]) + struct.pack("!H", n)
    return head + payload


@pytest.fixture
def kube_api(serve_http: Callable[[type[BaseHTTPRequestHandler]], str], tmp_path: Path) -> Iterator[FakeApi]:
    """The recording API with a target pod, the two Deployments and the TLS Secret."""
    lock = threading.Lock()
    api = FakeApi(url="", kubeconfig=tmp_path / "kubeconfig", requests=[], objects={})
    base = f"/api/v1/namespaces/{NS}"
    apps = f"/apis/apps/v1/namespaces/{NS}/deployments"
    store = json.loads((FIXTURES / "deployment_feature_store.json").read_text())
    api.objects.update({
        f"{base}/pods/target-7c9d5b8f4-x2kqp": _pod_json("target-7c9d5b8f4-x2kqp", "uid-a"),
        f"{apps}/feature-store": store,
        f"{apps}/target": json.loads((FIXTURES / "deployment_target.json").read_text()),
        f"{apps}/feature-store/scale": {"apiVersion": "autoscaling/v1", "kind": "Scale",
                                        "metadata": {"name": "feature-store", "namespace": NS},
                                        "spec": {"replicas": 3}, "status": {"replicas": 3}},
        f"{base}/secrets/feature-store-tls": {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                                              "metadata": {"name": "feature-store-tls", "namespace": NS},
                                              "data": {"tls.crt": "T1JJR0lOQUwtQ1JU", "tls.key": "T1JJR0lOQUwtS0VZ"}},
        f"{base}/pods/feature-store-5f7b9-abcde": _pod_json("feature-store-5f7b9-abcde", "uid-fs"),
        "pods": [_pod_json("feature-store-5f7b9-abcde", "uid-fs")],
    })  # fmt: skip
    api.url = serve_http(_handler(api, lock))
    api.kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": api.url}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": NS}}],
        "users": [{"name": "fake", "user": {"token": "not-a-secret"}}],
    }))  # fmt: skip
    yield api


def path_of(rec: Recorded) -> str:
    return re.sub(r"\?.*", "", rec.path)
