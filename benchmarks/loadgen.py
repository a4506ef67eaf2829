"""A small closed-loop HTTP/1.1 load generator (asyncio, keep-alive, one process).

Used by the benchmarks where ``wrk`` is not installed (the GPU machines, which can fetch
nothing). Hand-written because the job is narrow — N keep-alive connections, each sending
the same POST and reading a Content-Length response as fast as it is answered — and the
Python HTTP clients cost several times more CPU per request than the server under test.

Example::

    stats = run_load("127.0.0.1", 8000, "/v2/models/digits/infer", body, concurrency=32, seconds=3)
    print(stats["rps"], stats["p95_ms"])
"""

from __future__ import annotations

import asyncio
import time

__all__ = ["run_load"]


async def _connection(host: str, port: int, request: bytes, stop_at: float, latencies: list[float],
                      errors: list[int]) -> None:  # fmt: skip
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - t0)
            if status >= 300:
                errors.append(status)
    except (ConnectionError, asyncio.IncompleteReadError):
        errors.append(-1)
    finally:
        writer.close()


async def _run(
    host: str, port: int, path: str, body: bytes | None, concurrency: int, seconds: float
) -> dict[str, float]:
    if body is None:
        request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    else:
        request = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
    latencies: list[float] = []
    errors: list[int] = []
    t0 = time.perf_counter()
    stop_at = t0 + seconds
    await asyncio.gather(*(_connection(host, port, request, stop_at, latencies, errors) for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000 if latencies else 0.0

    return {"rps": len(latencies) / elapsed, "p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99),
            "errors": float(len(errors))}  # fmt: skip


def run_load(
    host: str, port: int, path: str, body: bytes | None, *, concurrency: int, seconds: float
) -> dict[str, float]:
    """Closed-loop load for ``seconds`` (POST ``body``, or GET when None); req/s, p50/p95/p99 ms, errors."""
    try:
        import uvloop

        return uvloop.run(_run(host, port, path, body, concurrency, seconds))
    except ImportError:
        return asyncio.run(_run(host, port, path, body, concurrency, seconds))
