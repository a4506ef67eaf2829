"""The canary's control API: status and a manual rollback, on 127.0.0.1 behind a bearer token.

What ``kubectl argo rollouts abort`` / ``kubectl -n … annotate canary … flagger.app/…`` give an
on-call engineer: ``GET /canary`` (phase, weight, version, failed checks) and
``POST /canary/rollback`` (weight 0, canary replicas stopped; the reason is recorded). The
token is written to a 0600 file next to the run's other tokens and never logged. stdlib
``http.server``: two routes do not justify another server in the orchestrator.

Example::

    server = ControlServer(controller, workdir / "canary-control.token"); server.start()
    httpx.post(server.url + "/canary/rollback", headers={"Authorization": f"Bearer {token}"})
"""

from __future__ import annotations

import hmac
import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

__all__ = ["ControlServer"]


class _Controller(Protocol):
    def status(self) -> dict[str, Any]: ...

    def rollback(self, reason: str = "manual rollback") -> bool: ...


class ControlServer:
    """``GET /canary``, ``POST /canary/rollback`` (JSON body ``{"reason": …}`` optional)."""

    def __init__(self, controller: _Controller, token_file: Path, host: str = "127.0.0.1") -> None:
        self.controller = controller
        self.token_file = Path(token_file)
        if not self.token_file.exists():
            self.token_file.write_text(secrets.token_urlsafe(24))
            self.token_file.chmod(0o600)
        token = self.token_file.read_text().strip()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:  # the token would not be logged, but nothing is
                return

            def _authorised(self) -> bool:
                given = self.headers.get("Authorization", "")
                if hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                    return True
                self._send(401, {"error": "missing or wrong bearer token"})
                return False

            def _send(self, status: int, doc: dict[str, Any]) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self._authorised():
                    if self.path == "/canary":
                        self._send(200, outer.controller.status())
                    else:
                        self._send(404, {"error": f"no route {self.path}"})

            def do_POST(self) -> None:
                if not self._authorised():
                    return
                if self.path != "/canary/rollback":
                    self._send(404, {"error": f"no route {self.path}"})
                    return
                length = min(int(self.headers.get("Content-Length") or 0), 4096)
                try:
                    reason = str(json.loads(self.rfile.read(length) or b"{}").get("reason", "manual rollback"))
                except (ValueError, AttributeError):
                    self._send(400, {"error": "body must be a JSON object"})
                    return
                done = outer.controller.rollback(f"manual: {reason}"[:200])
                self._send(200, {**outer.controller.status(), "rolled_back_now": done})

        self._server = ThreadingHTTPServer((host, 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://{host}:{self._server.server_address[1]}"
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="canary-control", daemon=True)  # fmt: skip
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5.0)
            self._thread = None
        self._server.server_close()
