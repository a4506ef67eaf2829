"""The noisy neighbour's load: one client flooding an inference endpoint, bounded in rate,
concurrency and time, with its outcome counted in a stats file.

Runs detached (``faults.flood`` starts it): ``--concurrency`` keep-alive connections send
``POST /v2/models/{model}/infer`` with ``X-Client-Id`` at no more than ``--rps`` in total, until
SIGTERM/SIGINT or ``--deadline`` (wall-clock epoch seconds: the dead-man, so an orphaned flood
stops by itself). Only loopback URLs are accepted. Every 0.5 s (and at exit) it replaces
``--stats`` with one JSON document::

    {"pid": 4242, "start_ticks": 1234, "tag": "ab12", "client": "batch-importer", "started": 1.7e9,
     "updated": 1.7e9, "sent": 900, "answered": 898, "errors": 2, "statuses": {"200": 100, "429": 798},
     "retry_after": 798, "done": false}

Why a hand-written HTTP/1.1 client: the flood shares a 2-core host with the target it floods,
so its own CPU must stay small; pre-serialised requests over raw asyncio streams cost a fraction
of httpx's per-request work (the target always answers with ``Content-Length``).

Example::

    python -m faultdrill.faults.flood_worker --url http://127.0.0.1:8000 --client-id batch-importer \\
        --rps 400 --concurrency 16 --deadline 1735000000 --stats /tmp/state/flood-ab12.json --tag ab12
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import signal
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["LOOPBACK", "main", "request_bytes"]

LOOPBACK = ("127.0.0.1", "localhost", "::1")
_TIMEOUT_S = 10.0
_WIDTH = 64


def request_bytes(host: str, port: int, model: str, client_id: str, rows: int) -> bytes:
    """One pre-serialised OIP v2 inference request (digit-like rows, values 0..16)."""
    data = [float((r * 7 + i * 3) % 17) for r in range(rows) for i in range(_WIDTH)]
    body = json.dumps({"inputs": [{"name": "input", "shape": [rows, _WIDTH], "datatype": "FP32", "data": data}]},
                      separators=(",", ":")).encode()  # fmt: skip
    head = (f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"X-Client-Id: {client_id}\r\nContent-Length: {len(body)}\r\n\r\n")  # fmt: skip
    return head.encode() + body


class _Flood:
    def __init__(self, args: argparse.Namespace) -> None:
        url = urlsplit(args.url)
        if url.scheme != "http" or url.hostname not in LOOPBACK:
            raise SystemExit(f"refusing to flood {args.url!r}: only http:// on loopback")
        self.host, self.port = url.hostname, url.port or 80
        self.args, self.stop = args, asyncio.Event()
        self.payload = request_bytes(self.host, self.port, args.model, args.client_id, args.rows)
        self.statuses: Counter[str] = Counter()
        self.sent = self.answered = self.errors = self.retry_after = 0
        self.started = time.time()
        self.counter = itertools.count()

    def stats(self, done: bool = False) -> dict[str, object]:
        from faultdrill.faults.procid import process_start_ticks

        return {"pid": os.getpid(), "start_ticks": process_start_ticks(os.getpid()), "tag": self.args.tag,
                "client": self.args.client_id, "rps": self.args.rps, "started": self.started, "updated": time.time(),
                "sent": self.sent, "answered": self.answered, "errors": self.errors,
                "statuses": dict(self.statuses), "retry_after": self.retry_after, "done": done}  # fmt: skip

    def write(self, done: bool = False) -> None:
        path = Path(self.args.stats)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.stats(done)))
        os.replace(tmp, path)

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(self.payload)
        await writer.drain()
        status_line = await reader.readline()
        parts = status_line.split()
        if len(parts) < 2:
            raise ConnectionError("connection closed")
        length, retry_after, close = 0, False, False
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value.strip())
            elif name == b"retry-after":
                retry_after = True
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        await reader.readexactly(length)
        status = parts[1].decode()
        self.answered += 1
        self.statuses[status] += 1
        self.retry_after += status == "429" and retry_after
        if close:
            raise ConnectionResetError("server closed the connection")

    async def _worker(self, t0: float) -> None:
        loop = asyncio.get_running_loop()
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        while not self.stop.is_set():
            delay = t0 + next(self.counter) / self.args.rps - loop.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), delay)
                if self.stop.is_set():
                    break
            try:
                if conn is None:
                    conn = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), _TIMEOUT_S)
                self.sent += 1
                await asyncio.wait_for(self._one(*conn), _TIMEOUT_S)
            except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError):
                self.errors += 1
                if conn is not None:
                    conn[1].close()
                conn = None
                await asyncio.sleep(0.05)  # a refused connection must not become a busy loop
        if conn is not None:
            conn[1].close()

    async def _reporter(self) -> None:
        while not self.stop.is_set():
            self.write()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), 0.5)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        loop.call_later(max(0.0, self.args.deadline - time.time()), self.stop.set)
        t0 = loop.time()
        tasks = [asyncio.create_task(self._worker(t0)) for _ in range(self.args.concurrency)]
        await self._reporter()
        await asyncio.wait(tasks, timeout=_TIMEOUT_S + 1)
        self.write(done=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m faultdrill.faults.flood_worker")
    parser.add_argument("--url", required=True)
    parser.add_argument("--model", default="digits")
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--rps", type=float, required=True)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rows", type=int, default=1)
    parser.add_argument("--deadline", type=float, required=True, help="epoch seconds: exit then")
    parser.add_argument("--stats", required=True)
    parser.add_argument("--tag", default="", help="injection id (shows in ps)")
    args = parser.parse_args(argv)
    if not (0 < args.rps <= 5000 and 1 <= args.concurrency <= 256 and 1 <= args.rows <= 256):
        parser.error("bounds: 0 < rps <= 5000, 1 <= concurrency <= 256, 1 <= rows <= 256")
    asyncio.run(_Flood(args).run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
