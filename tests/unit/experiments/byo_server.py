"""A small real HTTP server standing for "your own service" in the bring-your-own tests (stdlib only).

``python byo_server.py --port N [--other-url URL]``: ``/healthz`` and ``/ready`` answer 200, ``/metrics`` a
Prometheus counter, ``/dep`` fetches ``$FEATURES_URL/x`` and ``/other`` fetches ``<--other-url>/x`` (its
dependencies, reached through whatever address faultdrill handed it), ``/whoami`` its port and pid. ``--worker``
starts a worker process that leaves the server's session and ignores SIGTERM (what a server's workers or a
launcher's real server can do): only its container — the replica's cgroup — stops it. ``--model FILE`` loads a
JSON model at start (``{"answer": …}``, served at ``/answer``) and exits 1 when it cannot, as servers do.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--other-url")
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--model")
    args = parser.parse_args()
    model = {}
    if args.model:
        try:
            with open(args.model) as fh:
                model = json.load(fh)
        except (OSError, ValueError) as exc:
            print(f"model load failed: {exc}", flush=True)
            raise SystemExit(1) from None
    served = [0]
    worker = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, "
                               "signal.SIG_IGN); time.sleep(600)"], start_new_session=True) if args.worker else None

    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            served[0] += 1
            if self.path in ("/healthz", "/ready"):
                self._send(200, b"ok")
            elif self.path == "/metrics":
                self._send(200, f"# TYPE byo_requests_total counter\nbyo_requests_total {served[0]}\n".encode())
            elif self.path in ("/dep", "/other"):
                base = os.environ["FEATURES_URL"] if self.path == "/dep" else args.other_url
                try:
                    with urllib.request.urlopen(f"{base}/x", timeout=2) as answer:
                        self._send(200, answer.read())
                except OSError as exc:
                    self._send(502, str(exc).encode())
            elif self.path == "/x":  # what it answers as a dependency of another
                self._send(200, b"features")
            elif self.path == "/answer":
                self._send(200, json.dumps(model.get("answer")).encode())
            elif self.path == "/whoami":
                self._send(200, json.dumps({"port": args.port, "pid": os.getpid(), "cwd": os.getcwd(),
                                            "argv_other": args.other_url,
                                            "worker": worker.pid if worker else None}).encode())  # fmt: skip
            else:
                self._send(404, b"")

        def log_message(self, *_: object) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
