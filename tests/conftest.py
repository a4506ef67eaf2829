"""Fixtures every test directory may use."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

ServeHttp = Callable[[type[BaseHTTPRequestHandler]], str]


@pytest.fixture
def serve_http() -> Iterator[ServeHttp]:
    """Start a loopback HTTP server for a handler class and return its URL; all stopped at teardown.

    Example::

        def test_x(serve_http):
            url = serve_http(MyHandler)   # http://127.0.0.1:<free port>
    """
    servers: list[ThreadingHTTPServer] = []

    def serve(handler: type[BaseHTTPRequestHandler]) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()
