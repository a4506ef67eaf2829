"""A small loopback JSON API behind a bearer token, for the run's own control endpoints.

The Chaos Toolkit target's supervisor API (``ctk_target.py``) and the canary's control API
(``platforms/control.py``) answer a handful of routes each: stdlib ``http.server`` is enough,
and this module holds what they share — binding to 127.0.0.1, a constant-time token check on
every request, JSON replies, and no request logging (nothing a token could leak into).

Example::

    class Handler(TokenHandler):
        def do_GET(self) -> None:
            if self.authorized():
                self.reply(200, {"ok": True})

    server = TokenServer(Handler, token)
"""

from __future__ import annotations

import hmac
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["TokenHandler", "TokenServer"]


class TokenServer(ThreadingHTTPServer):
    """Serves ``handler`` on ``host`` (127.0.0.1) at a free port; every request needs ``token``."""

    daemon_threads = True

    def __init__(self, handler: type[TokenHandler], token: str, host: str = "127.0.0.1") -> None:
        super().__init__((host, 0), handler)
        self.host, self.token = host, token

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.server_address[1]}"


class TokenHandler(BaseHTTPRequestHandler):
    """JSON replies and the bearer-token check; subclasses add ``do_GET``/``do_POST``."""

    server: TokenServer

    def log_message(self, format: str, *args: Any) -> None:  # no request log at all
        return

    def reply(self, status: int, doc: dict[str, Any]) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def authorized(self) -> bool:
        """Whether the request carries the token (constant-time); else it is answered 401 here."""
        given = self.headers.get("Authorization", "").encode()
        if hmac.compare_digest(given, f"Bearer {self.server.token}".encode()):
            return True
        self.reply(401, {"error": "missing or wrong bearer token"})
        return False
