"""The canary's control API: status and a manual rollback, on 127.0.0.1 behind a bearer token.

What ``kubectl argo rollouts abort`` / ``kubectl -n … annotate canary … flagger.app/…`` give an
on-call engineer: ``GET /canary`` (phase, weight, version, failed checks) and
``POST /canary/rollback`` (weight 0, canary replicas stopped; the reason is recorded). The
token is written to a 0600 file next to the run's other tokens and never logged. stdlib
``http.server`` through ``experiments/host/tokenapi.py``: two routes do not justify another server.

Example::

    server = ControlServer(controller, workdir / "canary-control.token"); server.start()
    httpx.post(server.url + "/canary/rollback", headers={"Authorization": f"Bearer {token}"})
"""

from __future__ import annotations

import json
import secrets
import threading
from pathlib import Path
from typing import Any, Protocol

from faultdrill.experiments.host.tokenapi import TokenHandler, TokenServer

__all__ = ["ControlServer"]


class _Controller(Protocol):
    def status(self) -> dict[str, Any]: ...

    def rollback(self, reason: str = "manual rollback") -> bool: ...


class _Server(TokenServer):
    def __init__(self, controller: _Controller, token: str, host: str) -> None:
        super().__init__(_Handler, token, host)
        self.controller = controller


class _Handler(TokenHandler):
    server: _Server

    def do_GET(self) -> None:
        if self.authorized():
            if self.path == "/canary":
                self.reply(200, self.server.controller.status())
            else:
                self.reply(404, {"error": f"no route {self.path}"})

    def do_POST(self) -> None:
        if not self.authorized():
            return
        if self.path != "/canary/rollback":
            self.reply(404, {"error": f"no route {self.path}"})
            return
        length = min(int(self.headers.get("Content-Length") or 0), 4096)
        try:
            reason = str(json.loads(self.rfile.read(length) or b"{}").get("reason", "manual rollback"))
        except (ValueError, AttributeError):
            self.reply(400, {"error": "body must be a JSON object"})
            return
        controller = self.server.controller
        done = controller.rollback(f"manual: {reason}"[:200])
        self.reply(200, {**controller.status(), "rolled_back_now": done})


class ControlServer:
    """``GET /canary``, ``POST /canary/rollback`` (JSON body ``{"reason": …}`` optional)."""

    def __init__(self, controller: _Controller, token_file: Path, host: str = "127.0.0.1") -> None:
        self.controller = controller
        self.token_file = Path(token_file)
        if not self.token_file.exists():
            self.token_file.write_text(secrets.token_urlsafe(24))
            self.token_file.chmod(0o600)
        self._server = _Server(controller, self.token_file.read_text().strip(), host)
        self.url = self._server.url
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
