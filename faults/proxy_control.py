"""Control plane of the fault proxy: a tiny bearer-token HTTP API, its client, a launcher, the process.

``python -m faultdrill.faults.proxy_control --listen … --upstream … --control … --token-file …``
runs a proxy (``faults.proxy.FaultProxy``) with this API beside it; ``spawn_proxy`` starts that.

Endpoints (all need ``Authorization: Bearer <token>``; compared in constant time):
``GET /state`` (JSON counters and mode), ``GET /metrics`` (Prometheus text),
``PUT /mode`` (a ``ProxyMode`` JSON body; 422 on a bad one).

Example::

    proxy = spawn_proxy(("127.0.0.1", 8000), token_file=tmp / "token")
    ctl = proxy.control()
    ctl.set_mode("latency", latency_ms=50, jitter_ms=5)
    print(ctl.state()["bytes_to_client"])
    proxy.stop()
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import os
import secrets
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pydantic import ValidationError

from faultdrill.faults.owned import die_with_parent
from faultdrill.faults.proxy import FaultProxy, ProxyMode

__all__ = ["ControlServer", "ProxyControl", "RunningProxy", "parse_hostport", "run", "spawn_proxy"]

_REASONS = {200: "OK", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
            413: "Payload Too Large", 422: "Unprocessable Entity", 400: "Bad Request"}
_MAX_BODY = 64 * 1024


def parse_hostport(text: str) -> tuple[str, int]:
    """``"127.0.0.1:8000"`` → ``("127.0.0.1", 8000)``; ``[::1]:80`` works too."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


class ControlServer:
    """HTTP/1.1 control API for one ``FaultProxy`` (one request per connection)."""

    def __init__(self, proxy: FaultProxy, token: str) -> None:
        if not token:
            raise ValueError("the control token must not be empty")
        self.proxy = proxy
        self._token = token.encode()
        self.server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self.server = await asyncio.start_server(self._handle, host, port)
        sockname = self.server.sockets[0].getsockname()
        return sockname[0], sockname[1]

    def _authorized(self, headers: dict[str, str]) -> bool:
        scheme, _, given = headers.get("authorization", "").partition(" ")
        # compare_digest: the time taken must not reveal how much of the token matched.
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                                  self._token)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, ctype, body = await asyncio.wait_for(self._respond(reader), timeout=10)
        except (TimeoutError, asyncio.IncompleteReadError, ValueError, ConnectionError):
            status, ctype, body = 400, "text/plain", b"bad request\n"
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n"
        )
        if status == 401:
            head += 'WWW-Authenticate: Bearer realm="faultdrill-proxy"\r\n'
        try:
            writer.write(head.encode() + b"\r\n" + body)
            await writer.drain()
        finally:
            writer.close()

    async def _respond(self, reader: asyncio.StreamReader) -> tuple[int, str, bytes]:
        request_line = (await reader.readline()).decode("latin-1").split()
        if len(request_line) != 3:
            return 400, "text/plain", b"bad request line\n"
        method, path = request_line[0], request_line[1].split("?", 1)[0]
        headers: dict[str, str] = {}
        for _ in range(100):  # bounded: a client cannot make us read headers forever
            line = (await reader.readline()).decode("latin-1")
            if line in ("\r\n", "\n", ""):
                break
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        if length > _MAX_BODY:
            return 413, "text/plain", b"body too large\n"
        body = await reader.readexactly(length) if length else b""
        if not self._authorized(headers):
            return 401, "text/plain", b"missing or wrong bearer token\n"
        if path == "/state" and method == "GET":
            return 200, "application/json", json.dumps(self.proxy.state()).encode()
        if path == "/metrics" and method == "GET":
            return 200, "text/plain; version=0.0.4", self.proxy.metrics().encode()
        if path == "/mode" and method in ("PUT", "POST"):
            try:
                mode = ProxyMode.model_validate_json(body)
            except ValidationError as exc:
                return 422, "application/json", exc.json().encode()
            await self.proxy.set_mode(mode)
            return 200, "application/json", json.dumps(self.proxy.state()).encode()
        if path in ("/state", "/metrics", "/mode"):
            return 405, "text/plain", b"method not allowed\n"
        return 404, "text/plain", b"not found\n"


class ProxyControl:
    """Client of the control API.

    >>> ctl = ProxyControl("http://127.0.0.1:9001", token="s3cret")  # doctest: +SKIP
    >>> ctl.set_mode("bandwidth", bandwidth_bps=64_000)["mode"]["mode"]  # doctest: +SKIP
    'bandwidth'
    """

    def __init__(self, base_url: str, token: str, *, timeout: float = 5.0) -> None:
        self._client = httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout
        )

    def state(self) -> dict[str, Any]:
        data: dict[str, Any] = self._checked(self._client.get("/state")).json()
        return data

    def metrics(self) -> str:
        return self._checked(self._client.get("/metrics")).text

    def set_mode(self, mode: str = "passthrough", **params: Any) -> dict[str, Any]:
        payload = ProxyMode.model_validate({"mode": mode, **params}).model_dump_json()
        response = self._client.put("/mode", content=payload)
        data: dict[str, Any] = self._checked(response).json()
        return data

    @staticmethod
    def _checked(response: httpx.Response) -> httpx.Response:
        response.raise_for_status()
        return response

    def close(self) -> None:
        self._client.close()


@dataclass
class RunningProxy:
    """A proxy process started by ``spawn_proxy``; ``listen``/``control`` are real ports."""

    process: subprocess.Popen[str]
    listen: tuple[str, int]
    control_address: tuple[str, int]
    token: str
    argv: list[str] = field(default_factory=list)
    """The command line (no secret in it: the token travels in a file)."""

    def control(self) -> ProxyControl:
        host, port = self.control_address
        return ProxyControl(f"http://{host}:{port}", self.token)

    def stop(self, timeout: float = 5.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)


def spawn_proxy(
    upstream: tuple[str, int],
    *,
    token_file: str | Path,
    listen: tuple[str, int] = ("127.0.0.1", 0),
    control: tuple[str, int] = ("127.0.0.1", 0),
    env: dict[str, str] | None = None,
    timeout: float = 15.0,
) -> RunningProxy:
    """Start ``python -m faultdrill.faults.proxy_control`` (writing a fresh token if the file is missing)."""
    path = Path(token_file)
    if not path.exists():
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    token = path.read_text().strip()
    cmd = [sys.executable, "-m", "faultdrill.faults.proxy_control", "--listen", f"{listen[0]}:{listen[1]}",
           "--upstream", f"{upstream[0]}:{upstream[1]}", "--control",
           f"{control[0]}:{control[1]}", "--token-file", str(path)]
    # Dies with its parent when started from the main thread (faults.owned.die_with_parent says why only then).
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, preexec_fn=die_with_parent())
    assert proc.stdout is not None
    # One line is expected; readline blocks, so the child's own startup bounds it.
    line = proc.stdout.readline()
    try:
        ready = json.loads(line)
    except json.JSONDecodeError:
        proc.kill()
        raise RuntimeError(f"proxy did not start (rc={proc.wait(timeout)}): {line!r}") from None
    listen_at = (str(ready["listen"][0]), int(ready["listen"][1]))
    control_at = (str(ready["control"][0]), int(ready["control"][1]))
    return RunningProxy(proc, listen_at, control_at, token, cmd)


async def _serve(args: argparse.Namespace) -> None:
    token = Path(args.token_file).read_text().strip()
    proxy = FaultProxy(args.listen, args.upstream)
    await proxy.start()
    control = ControlServer(proxy, token)
    chost, cport = await control.start(*args.control)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(json.dumps({"event": "ready", "listen": list(proxy.listen),
                      "control": [chost, cport], "pid": os.getpid()}), flush=True)
    await stop.wait()
    await proxy.stop()


def run(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m faultdrill.faults.proxy_control``: serve until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m faultdrill.faults.proxy_control", description=__doc__)
    parser.add_argument("--listen", type=parse_hostport, required=True)
    parser.add_argument("--upstream", type=parse_hostport, required=True)
    parser.add_argument("--control", type=parse_hostport, required=True)
    parser.add_argument("--token-file", required=True)
    args = parser.parse_args(argv)
    if args.control[0] not in ("127.0.0.1", "::1", "localhost"):
        parser.error("--control must bind a loopback address")
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve(args))
    else:
        uvloop.run(_serve(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(run())
