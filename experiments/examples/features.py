"""The examples' feature service: the dependency the MLServer and KServe digits models call on every request.

A tiny real HTTP server (standard library only, any Python 3.10+), on loopback::

    python experiments/examples/features.py --port 9471

``GET /features/digits`` answers ``{"scale": 16.0}`` (the pixel scale the model's preprocessing divides by);
``GET /healthz`` answers ``ok``. The dependency examples declare it with a ``command``
(``target.service.dependencies``), so faultdrill starts it before the replicas, puts a fault proxy in front of it,
hands the replicas the proxy's address (``FEATURES_URL``) and stops it after the run.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType

DEFAULT_PORT = 9471
"""Below faultdrill's own port range (15000 up to the ephemeral range), so a replica is never given it."""


class Features(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # http.server's name
        if self.path == "/features/digits":
            self._answer(200, json.dumps({"scale": 16.0}).encode(), "application/json")
        elif self.path == "/healthz":
            self._answer(200, b"ok", "text/plain")
        else:
            self._answer(404, b"not found", "text/plain")

    def _answer(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per request would drown the run's logs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    args = parser.parse_args()
    server = ThreadingHTTPServer((args.host, args.port), Features)
    server.daemon_threads = True

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    print(f"features: serving on http://{args.host}:{args.port}", file=sys.stderr, flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
