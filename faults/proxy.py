"""A TCP fault proxy for what the kernel here cannot do (tc netem is unavailable).

It sits between clients and an upstream and, switched at runtime, adds latency with
jitter, limits bandwidth, holds connections half-open, resets them (RST, at once or after
N bytes), delays closes, refuses new connections or stops forwarding. A mode change applies
to existing connections too, as a real network fault would. Built on ``asyncio.Protocol``
(uvloop when available) so pass-through costs one ``write`` per chunk.

Run it as a process, controlled over HTTP (``faults.proxy_control`` is the process and its API; this
module is only the data path, so it imports nothing of ours)::

    python -m faultdrill.faults.proxy_control --listen 127.0.0.1:9000 --upstream 127.0.0.1:8000 \\
        --control 127.0.0.1:9001 --token-file /run/fd/token
    # stdout: {"event": "ready", "listen": ["127.0.0.1", 9000], "control": [...]}
"""

from __future__ import annotations

import asyncio
import collections
import random
import socket
import struct
from dataclasses import dataclass
from typing import Literal, cast

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["MODES", "FaultProxy", "ProxyCounters", "ProxyMode"]

MODES = (
    "passthrough", "latency", "bandwidth", "blackhole", "reset", "slow_close", "refuse", "drop",
)
_HIGH_WATER = 1 << 20  # queued bytes per direction before the source stops being read
_LOW_WATER = 1 << 18
_LINGER_RST = struct.pack("ii", 1, 0)  # SO_LINGER on, timeout 0: close() sends RST


class ProxyMode(BaseModel):
    """What the proxy does now. ``blackhole``: accept and never answer (new connections
    never reach upstream); ``drop``: stop forwarding on every connection (data waits in
    kernel buffers, and flows again on heal, like a healed partition).

    >>> ProxyMode(mode="latency", latency_ms=50, jitter_ms=5).mode
    'latency'
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal[
        "passthrough", "latency", "bandwidth", "blackhole", "reset", "slow_close", "refuse", "drop"
    ] = "passthrough"
    latency_ms: float = Field(default=0.0, ge=0)
    jitter_ms: float = Field(default=0.0, ge=0)
    bandwidth_bps: int = Field(default=0, ge=0, description="bytes per second")
    reset_after_bytes: int | None = Field(default=None, ge=0)
    close_delay_ms: float = Field(default=1000.0, ge=0)

    @model_validator(mode="after")
    def _needs_params(self) -> ProxyMode:
        if self.mode == "bandwidth" and self.bandwidth_bps <= 0:
            raise ValueError("bandwidth mode needs bandwidth_bps > 0")
        if self.jitter_ms > self.latency_ms and self.mode == "latency":
            raise ValueError("jitter_ms must not exceed latency_ms")
        return self


@dataclass
class ProxyCounters:
    connections_total: int = 0
    connections_active: int = 0
    bytes_to_upstream: int = 0
    bytes_to_client: int = 0
    resets_total: int = 0
    refused_total: int = 0


class _Side(asyncio.Protocol):
    # One socket of a proxied pair; all decisions are made by the owning _Conn.
    def __init__(self, conn: _Conn, is_client: bool) -> None:
        self.conn = conn
        self.is_client = is_client
        self.transport: asyncio.Transport | None = None
        self.pauses: set[str] = set()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they implement it.
        self.transport = transport = cast(asyncio.Transport, transport)
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.is_client:
            self.conn.client_made()

    def data_received(self, data: bytes) -> None:
        self.conn.forward(self, data)

    def eof_received(self) -> bool:
        self.conn.enqueue(self, None)
        return True  # keep our write half open until the peer's data is through

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.conn.lost(self, exc)

    def pause_writing(self) -> None:
        self.conn.other(self).pause("backpressure")

    def resume_writing(self) -> None:
        self.conn.other(self).resume("backpressure")

    def pause(self, reason: str) -> None:
        if not self.pauses and self.transport and not self.closed:
            self.transport.pause_reading()
        self.pauses.add(reason)

    def resume(self, reason: str) -> None:
        self.pauses.discard(reason)
        if not self.pauses and self.transport and not self.closed:
            self.transport.resume_reading()

    def reset(self) -> None:
        if self.transport and not self.closed:
            sock = self.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
            self.transport.abort()


class _Conn:
    """A client connection and its upstream; owns two ordered delivery queues."""

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self.loop = proxy.loop
        self.client = _Side(self, True)
        self.upstream = _Side(self, False)
        self.connecting = False
        # Per direction (keyed by the *source* side): (due time, chunk or None for EOF).
        self.queues: dict[bool, collections.deque[tuple[float, bytes | None]]] = {
            True: collections.deque(), False: collections.deque()
        }
        self.queued = {True: 0, False: 0}
        self.timers: dict[bool, asyncio.TimerHandle | None] = {True: None, False: None}
        self.last_due = {True: 0.0, False: 0.0}
        self.budget: int | None = None  # bytes left before a mid-stream reset

    def other(self, side: _Side) -> _Side:
        return self.upstream if side is self.client else self.client

    def client_made(self) -> None:
        p = self.proxy
        p.counters.connections_total += 1
        p.counters.connections_active += 1
        p.conns.add(self)
        mode = p.mode.mode
        if mode == "refuse":
            p.counters.refused_total += 1
            self.client.reset()
            return
        self.client.pause("connecting")
        self.apply_mode(p.mode)

    def connect(self) -> None:
        self.connecting = True
        host, port = self.proxy.upstream
        task = self.loop.create_task(
            self.loop.create_connection(lambda: self.upstream, host, port)
        )
        task.add_done_callback(self._connected)

    def _connected(self, task: asyncio.Task[tuple[asyncio.Transport, _Side]]) -> None:
        if task.cancelled() or task.exception() is not None:
            self.client.reset()  # upstream refused (or the proxy is stopping): the client sees it too
            return
        if self.client.closed:
            self.upstream.reset()
            return
        self.client.resume("connecting")
        self.apply_mode(self.proxy.mode)

    def apply_mode(self, mode: ProxyMode) -> None:
        """Bring this (possibly long-lived) connection in line with ``mode``."""
        if mode.mode == "reset" and mode.reset_after_bytes is None:
            self.reset()
            return
        self.budget = mode.reset_after_bytes if mode.mode == "reset" else None
        held = mode.mode in ("drop", "blackhole")
        for side in (self.client, self.upstream):
            (side.pause if held else side.resume)("mode")
        if not held:
            if self.upstream.transport is None and not self.connecting:
                self.connect()  # a healed blackhole finally reaches upstream
            for source in (True, False):
                self._drain(source)

    def reset(self) -> None:
        self.proxy.counters.resets_total += 1
        self.client.reset()
        self.upstream.reset()

    def forward(self, source: _Side, data: bytes) -> None:
        if self.budget is not None:
            if len(data) >= self.budget:
                data, self.budget = data[: self.budget], 0
                self.enqueue(source, data)
                self.loop.call_soon(self.reset)  # after this chunk is written
                return
            self.budget -= len(data)
        self.enqueue(source, data)

    def enqueue(self, source: _Side, data: bytes | None) -> None:
        key = source.is_client
        p = self.proxy
        if data is not None:
            if key:
                p.counters.bytes_to_upstream += len(data)
            else:
                p.counters.bytes_to_client += len(data)
        queue = self.queues[key]
        dest = self.other(source)
        mode = p.mode
        if mode.mode == "passthrough" and not queue and dest.transport and data is not None:
            dest.transport.write(data)  # fast path: nothing delayed ahead of this chunk
            return
        if mode.mode == "bandwidth" and data:
            # Pace in ~10 ms slices: a 64 KiB chunk sent whole would stall each hop
            # (store-and-forward) and halve the end-to-end rate.
            step = max(1024, mode.bandwidth_bps // 100)
            for i in range(0, len(data), step):
                self._schedule(source, data[i : i + step], mode)
        else:
            self._schedule(source, data, mode)
        self._drain(key)

    def _schedule(self, source: _Side, data: bytes | None, mode: ProxyMode) -> None:
        key = source.is_client
        queue = self.queues[key]
        now = self.loop.time()
        due = now
        if mode.mode == "latency":
            jitter = random.uniform(-mode.jitter_ms, mode.jitter_ms)
            due = now + max(0.0, mode.latency_ms + jitter) / 1000
        elif mode.mode == "bandwidth" and data:
            due = max(now, self.last_due[key]) + len(data) / mode.bandwidth_bps
        elif mode.mode == "slow_close" and data is None:
            due = now + mode.close_delay_ms / 1000
        due = max(due, self.last_due[key])  # never reorder a stream
        self.last_due[key] = due
        queue.append((due, data))
        self.queued[key] += len(data or b"")
        if self.queued[key] > _HIGH_WATER:
            source.pause("queue")

    def _drain(self, key: bool) -> None:
        source = self.client if key else self.upstream
        dest = self.other(source)
        queue = self.queues[key]
        timer = self.timers[key]
        if timer is not None:
            timer.cancel()  # one pending timer per direction, re-armed below
            self.timers[key] = None
        if dest.transport is None or self.proxy.mode.mode in ("drop", "blackhole"):
            return  # re-run by apply_mode/_connected
        now = self.loop.time()
        while queue and queue[0][0] <= now:
            _, data = queue.popleft()
            if dest.closed:
                continue
            if data is None:
                if dest.transport.can_write_eof():
                    dest.transport.write_eof()
                if source.closed:
                    dest.transport.close()
            else:
                self.queued[key] -= len(data)
                dest.transport.write(data)
        if self.queued[key] < _LOW_WATER:
            source.resume("queue")
        if queue and self.timers[key] is None:
            self.timers[key] = self.loop.call_at(queue[0][0], self._drain, key)

    def lost(self, side: _Side, exc: Exception | None) -> None:
        peer = self.other(side)
        if exc is not None and isinstance(exc, ConnectionResetError):
            peer.reset()  # propagate a reset as a reset
        elif peer.transport is not None and not peer.closed:
            self.enqueue(side, None)
        if (side.closed and peer.closed) or peer.transport is None:
            if self in self.proxy.conns:
                self.proxy.conns.discard(self)
                self.proxy.counters.connections_active -= 1
            for timer in self.timers.values():
                if timer is not None:
                    timer.cancel()


class FaultProxy:
    """The proxy itself; ``await set_mode(...)`` switches every connection at once.

    >>> async def demo():
    ...     proxy = FaultProxy(("127.0.0.1", 0), ("127.0.0.1", 8000))
    ...     await proxy.start()
    ...     await proxy.set_mode(ProxyMode(mode="latency", latency_ms=100))
    ...     await proxy.stop()
    """

    def __init__(self, listen: tuple[str, int], upstream: tuple[str, int]) -> None:
        self.listen = listen
        self.upstream = upstream
        self.mode = ProxyMode()
        self.counters = ProxyCounters()
        self.conns: set[_Conn] = set()
        self.server: asyncio.Server | None = None
        self.loop = asyncio.get_event_loop()

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.server = await self.loop.create_server(
            lambda: _Conn(self).client, self.listen[0], self.listen[1], reuse_address=True
        )
        # Port 0 means "any": remember the real port so refuse/heal re-binds the same one.
        self.listen = self.server.sockets[0].getsockname()[:2]

    async def set_mode(self, mode: ProxyMode) -> None:
        self.mode = mode
        if mode.mode == "refuse" and self.server is not None:
            self.server.close()  # nothing listens: connects get ECONNREFUSED
            await self.server.wait_closed()
            self.server = None
        elif mode.mode != "refuse" and self.server is None:
            await self.start()
        for conn in list(self.conns):
            conn.apply_mode(mode)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for conn in list(self.conns):
            for side in (conn.client, conn.upstream):
                if side.transport is not None:
                    side.transport.abort()

    def state(self) -> dict[str, object]:
        c = self.counters
        return {
            "mode": self.mode.model_dump(),
            "listen": list(self.listen),
            "upstream": list(self.upstream),
            "listening": self.server is not None,
            "connections_active": c.connections_active,
            "connections_total": c.connections_total,
            "bytes_to_upstream": c.bytes_to_upstream,
            "bytes_to_client": c.bytes_to_client,
            "resets_total": c.resets_total,
            "refused_total": c.refused_total,
        }

    def metrics(self) -> str:
        """Prometheus text exposition of the counters (base units, ``_total`` counters)."""
        c = self.counters
        lines = [
            "# TYPE faultdrill_proxy_connections_total counter",
            f"faultdrill_proxy_connections_total {c.connections_total}",
            "# TYPE faultdrill_proxy_connections_active gauge",
            f"faultdrill_proxy_connections_active {c.connections_active}",
            "# TYPE faultdrill_proxy_bytes_total counter",
            f'faultdrill_proxy_bytes_total{{direction="to_upstream"}} {c.bytes_to_upstream}',
            f'faultdrill_proxy_bytes_total{{direction="to_client"}} {c.bytes_to_client}',
            "# TYPE faultdrill_proxy_resets_total counter",
            f"faultdrill_proxy_resets_total {c.resets_total}",
            "# TYPE faultdrill_proxy_mode gauge",
        ]
        lines += [
            f'faultdrill_proxy_mode{{mode="{m}"}} {int(m == self.mode.mode)}' for m in MODES
        ]
        return "\n".join(lines) + "\n"
