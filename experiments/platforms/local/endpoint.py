"""A stable service endpoint that routes each request to a *ready* replica, round-robin.

What a Kubernetes Service gives clients: one address that outlives replica restarts and
only reaches pods whose readiness probe passes. It is HTTP-aware (a small ASGI proxy on
uvicorn, in a background thread with its own event loop), so routing is decided **per
request**, not per connection: a keep-alive client stops reaching a replica the moment it
turns unready (kube-proxy only decides per connection; per-request is stricter and what
assertions such as "an unready replica gets no traffic" need).

* no ready replica: ``503`` with ``{"error": "no ready replica"}`` and ``Retry-After: 1``
  (the port stays open, so clients see an answer, not a refused connection);
* a replica that refuses the connection (it just died, the probe has not noticed yet): the
  request, which was never sent, goes to the next ready replica;
* upstream timeout: ``504``; other upstream failures: ``502``.

Each answer names its replica in the ``X-Faultdrill-Replica`` header.

With ``routing`` (a canary rollout, ``split.py``), each request goes to the stable or the
canary pool by weight (smooth weighted round robin), every answer is recorded per pool
(status, latency, confidence, version) for the canary analysis, and the served model version
is named in ``X-Faultdrill-Version``.

Example::

    ep = ServiceEndpoint(lambda: [("web-0", "http://127.0.0.1:8001")])   # (replica name, url) of each ready one
    ep.start(); httpx.get(ep.url + "/v2/health/ready"); ep.stop()
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from faultdrill.experiments.platforms.local.split import CanaryRouting

__all__ = ["ServiceEndpoint"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# Hop-by-hop headers (RFC 9110 §7.6.1) belong to one connection, never forwarded.
_HOP = {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding",
        b"upgrade", b"host", b"content-length"}  # fmt: skip
_NO_READY = b'{"error": "no ready replica"}'


class ServiceEndpoint:
    """Loopback HTTP proxy over ``backends()`` = the (name, base URL) of ready replicas."""

    def __init__(
        self, backends: Callable[[], Sequence[tuple[str, str]]], *, host: str = "127.0.0.1",
        timeout_s: float = 30.0, max_connections: int = 512, routing: CanaryRouting | None = None,
    ) -> None:  # fmt: skip
        self._backends = backends
        self.routing = routing
        self.host = host
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self._rr = itertools.count()
        self._client: httpx.AsyncClient | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self.port = 0
        self.served: Counter[str] = Counter()
        """Requests answered per replica (plus ``"<none>"`` for 503s)."""

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- lifecycle ---------------------------------------------------------------------
    def start(self, timeout_s: float = 10.0) -> None:
        import uvicorn  # deferred: the CLI must not pay for it

        # Bind here, not in uvicorn: the port is known before start() returns, with no race. IPPROTO_TCP spelled
        # out: asyncio sets TCP_NODELAY only on accepted sockets whose proto says TCP, and a socket made with
        # proto 0 passes 0 on. Without it every answer (head, then body: two writes) waited for the client's
        # delayed ACK: +44 ms per request, 168 req/s at 8 connections (benchmarks/proxy_bench.py).
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((self.host, 0))
        self.port = int(self._sock.getsockname()[1])
        config = uvicorn.Config(self, lifespan="on", loop="asyncio", log_level="warning", access_log=False,
                                server_header=False, date_header=False, timeout_graceful_shutdown=2)  # fmt: skip
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name="service-endpoint", daemon=True)  # fmt: skip
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started and time.monotonic() < deadline and self._thread.is_alive():
            time.sleep(0.01)
        if not self._server.started:
            self.stop()
            raise RuntimeError(f"service endpoint did not start on {self.url}")

    def stop(self, timeout_s: float = 5.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._server = None

    # -- routing -------------------------------------------------------------------------
    def _ready(self) -> list[tuple[str, str]]:
        backends = list(self._backends())
        if not backends:
            return []
        start = next(self._rr) % len(backends)
        rotated = backends[start:] + backends[:start]
        return self.routing.order(rotated) if self.routing is not None else rotated

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        body = bytearray()
        for _ in range(1_000_000):  # bounded: a body arrives in at most this many chunks
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        path = scope.get("raw_path") or scope["path"].encode()
        if scope.get("query_string"):
            path += b"?" + scope["query_string"]
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in _HOP]
        assert self._client is not None
        t0 = time.monotonic()
        for name, base in self._ready():
            request = self._client.build_request(scope["method"], base + path.decode("latin-1"),
                                                 headers=headers, content=bytes(body))  # fmt: skip
            try:
                response = await self._client.send(request, stream=True)
            except httpx.ConnectError:
                continue  # nothing was sent: another ready replica may take it
            except httpx.TimeoutException:
                if self.routing is not None:
                    self.routing.observe(name, 504, time.monotonic() - t0, b"", infer=False)
                await self._answer(send, 504, b'{"error": "upstream timeout"}', name)
                return
            except httpx.HTTPError as exc:
                await self._answer(send, 502, f'{{"error": "upstream failed: {type(exc).__name__}"}}'.encode(), name)
                return
            try:
                raw = b"".join([chunk async for chunk in response.aiter_raw()])
            except httpx.HTTPError:
                await self._answer(send, 502, b'{"error": "upstream closed mid-response"}', name)
                return
            finally:
                await response.aclose()
            out = [(k, v) for k, v in response.headers.raw if k.lower() not in _HOP]
            if self.routing is not None:
                version = self.routing.observe(name, response.status_code, time.monotonic() - t0, raw,
                                               infer=path.endswith(b"/infer"))  # fmt: skip
                out.append((b"x-faultdrill-version", (version or "unknown").encode()))
            await self._answer(send, response.status_code, raw, name, out)
            return
        await self._answer(send, 503, _NO_READY, "<none>", [(b"retry-after", b"1")])

    async def _answer(self, send: Send, status: int, body: bytes, replica: str,
                      headers: list[tuple[bytes, bytes]] | None = None) -> None:  # fmt: skip
        if headers is None:
            headers = [(b"content-type", b"application/json")]
        headers = [*headers, (b"content-length", str(len(body)).encode()),
                   (b"x-faultdrill-replica", replica.encode())]  # fmt: skip
        self.served[replica] += 1
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        for _ in range(2):  # startup, then shutdown
            message = await receive()
            if message["type"] == "lifespan.startup":
                limits = httpx.Limits(max_connections=self.max_connections,
                                      max_keepalive_connections=self.max_connections)  # fmt: skip
                self._client = httpx.AsyncClient(timeout=self.timeout_s, limits=limits)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._client is not None:
                    await asyncio.shield(self._client.aclose())
                await send({"type": "lifespan.shutdown.complete"})
                return
