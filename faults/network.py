"""``NetworkDegradationFault``: latency, bandwidth, half-open, resets and refusals on a proxy edge.

tc netem does not work on this kernel, so everything a kernel partition cannot express is
done by the TCP fault proxy in front of a dependency (``feature-store-proxy`` in
``LocalStack``). It is a separate fault from the kernel-level ``network_partition`` because
its mechanism, capabilities and blast radius differ: it needs no root, touches one proxy
process, and affects only traffic through that edge. Rollback puts the proxy back to
``passthrough``; it works from the record alone (control URL + token *file* + proxy pid and
start ticks), and a proxy that died took its mode with it.

``verify`` measures: the proxy's own ``/state`` (mode, counters) plus a timed TCP/TLS
exchange through the edge (:func:`timed_exchange`), judged per mode.

Example::

    fault = NetworkDegradationFault()
    cfg = fault.parse_config({"target": "feature-store-proxy", "mode": "latency",
                              "latency_ms": 200, "jitter_ms": 20})
    inj = fault.inject(cfg, ctx)                # ledger first, then PUT /mode
    assert fault.verify(inj, ctx).effective     # a TLS exchange took >= 180 ms
    fault.undo(inj, ctx)                        # passthrough again
"""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

import httpx
from pydantic import Field, ValidationError, model_validator

from faultdrill.faults.base import Fault, FaultConfig, FaultContext, Injection, Problem, Verification
from faultdrill.faults.errors import ConfigError, FaultdrillError, RollbackError
from faultdrill.faults.procid import pid_alive, process_start_ticks
from faultdrill.faults.proxy import ProxyMode
from faultdrill.faults.proxy_control import ProxyControl
from faultdrill.faults.topology import ServiceHandle

__all__ = ["Exchange", "NetworkDegradationFault", "set_proxy_mode", "timed_exchange"]

ProxyFaultMode = Literal["latency", "bandwidth", "blackhole", "reset", "slow_close", "refuse", "drop"]


class NetworkDegradationFault(Fault):
    """Switch a fault proxy (role ``proxy``) into one of its fault modes; undo = passthrough."""

    class Config(FaultConfig):
        target: str
        mode: ProxyFaultMode
        latency_ms: float = Field(default=0.0, ge=0)
        jitter_ms: float = Field(default=0.0, ge=0)
        bandwidth_bps: int | None = Field(default=None, gt=0, description="bytes per second")
        reset_after_bytes: int | None = Field(default=None, ge=0)
        close_delay_ms: float = Field(default=1000.0, ge=0)

        @model_validator(mode="after")
        def _mode_params(self) -> NetworkDegradationFault.Config:
            if self.mode == "latency" and self.latency_ms <= 0:
                raise ValueError("mode 'latency' needs latency_ms > 0")
            try:
                self.proxy_mode()
            except ValidationError as exc:  # the proxy's own rules, said once
                raise ValueError(exc.errors()[0]["msg"].removeprefix("Value error, ")) from None
            return self

        def proxy_mode(self) -> ProxyMode:
            return ProxyMode(mode=self.mode, latency_ms=self.latency_ms, jitter_ms=self.jitter_ms,
                             bandwidth_bps=self.bandwidth_bps or 0,
                             reset_after_bytes=self.reset_after_bytes,
                             close_delay_ms=self.close_delay_ms)  # fmt: skip

    name: ClassVar[str] = "network_degradation"
    target_roles: ClassVar[tuple[str, ...] | None] = ("proxy",)
    modes: ClassVar[tuple[str, ...]] = ("latency", "bandwidth", "blackhole", "reset", "slow_close",
                                        "refuse", "drop")  # fmt: skip
    needs: ClassVar[tuple[str, ...]] = ("fault proxy on the edge",)
    verifies: ClassVar[str] = "proxy state + a timed TLS exchange through the edge"
    example: ClassVar[dict[str, Any]] = {"target": "feature-store-proxy", "mode": "latency", "latency_ms": 200,
                                         "jitter_ms": 20}  # fmt: skip

    @staticmethod
    def _proxy(config: Config, ctx: FaultContext) -> ServiceHandle:
        handle = ctx.topology.get(config.target, role="proxy")
        if not handle.control_url or handle.admin_token_file is None or handle.pid is None:
            raise ConfigError(f"proxy '{config.target}' has no control API, token file or pid",
                              field="target")
        return handle

    def local_preflight(self, config: Config, ctx: FaultContext) -> list[Problem]:
        handle = self._proxy(config, ctx)
        problems = []
        try:
            assert handle.pid is not None and handle.port is not None
            ctx.scope.check_pid(handle.pid)
            ctx.scope.check_port(handle.port)
        except FaultdrillError as exc:
            problems.append(Problem("blast_radius", str(exc)))
        try:
            _control(handle.control_url, handle.admin_token_file).state()
        except (OSError, httpx.HTTPError) as exc:
            problems.append(Problem("proxy_unreachable", f"proxy control API of '{handle.name}' "
                                    f"did not answer: {exc}", "is the stack up?"))
        return problems

    def local_plan(self, config: Config, ctx: FaultContext) -> list[str]:
        handle = self._proxy(config, ctx)
        body = config.proxy_mode().model_dump_json(exclude_defaults=True)
        return [f"PUT {handle.control_url}/mode {body} (proxy '{handle.name}' at {handle.url}, "
                f"in front of '{handle.upstream_of}'); rollback: mode passthrough"]

    def local_inject(self, config: Config, ctx: FaultContext) -> Injection:
        handle = self._proxy(config, ctx)
        assert handle.pid is not None and handle.port is not None
        ctx.scope.check_pid(handle.pid)
        ctx.scope.check_port(handle.port)
        upstream = ctx.topology.services.get(handle.upstream_of or "")
        undo = {
            "control_url": handle.control_url, "token_file": str(handle.admin_token_file),
            "pid": handle.pid, "start_ticks": process_start_ticks(handle.pid),
            "listen": [urlsplit(handle.url or "").hostname or "127.0.0.1", handle.port],
            # How verify talks through the edge: TLS with the upstream's CA, if it has one.
            "ca_file": str(upstream.ca_file) if upstream and upstream.ca_file else None,
        }  # fmt: skip
        injection = self.new_injection(config, ctx, mode=config.mode, target=handle.name, undo=undo,
                                       emulated=True)  # fmt: skip
        mode = config.proxy_mode()
        return self.apply_recorded(injection, ctx, lambda: set_proxy_mode(undo, mode))

    def local_rollback(self, injection: Injection, ctx: FaultContext) -> None:
        undo = injection.undo
        if not pid_alive(int(undo["pid"]), undo.get("start_ticks")):
            return  # the proxy is gone, and its fault mode died with it
        try:
            set_proxy_mode(undo, ProxyMode())
        except (OSError, httpx.HTTPError) as exc:
            raise RollbackError(f"proxy {injection.target} still in mode {injection.mode}: "
                                f"control API failed: {exc}", fault=self.name,
                                injection_id=injection.id) from exc  # fmt: skip

    def local_verify(self, injection: Injection, ctx: FaultContext) -> Verification:
        undo, cfg = injection.undo, injection.config
        ctl = _control(undo["control_url"], Path(undo["token_file"]))
        try:
            before = ctl.state()
            probe = _probe(undo, injection.mode, cfg)
            after = ctl.state()
        finally:
            ctl.close()
        in_mode = after["mode"]["mode"] == injection.mode
        effect, why = _judge(injection.mode, cfg, probe, before, after)
        details: dict[str, Any] = {"proxy_mode": after["mode"]["mode"], **probe.as_dict()}
        return Verification(effective=in_mode and effect, details=details, emulated=True,
                            message=f"proxy in {after['mode']['mode']}; probe {probe.outcome} "
                                    f"in {probe.total_ms} ms: {why}")  # fmt: skip


def _control(url: str | None, token_file: Path | None) -> ProxyControl:
    if url is None or token_file is None:
        raise ConfigError("proxy has no control API", field="target")
    return ProxyControl(url, Path(token_file).read_text().strip(), timeout=3.0)


def set_proxy_mode(undo: dict[str, Any], mode: ProxyMode) -> None:
    """Put the proxy described by ``undo`` (control_url, token_file) into ``mode``."""
    ctl = _control(undo["control_url"], Path(undo["token_file"]))
    try:
        ctl.set_mode(**mode.model_dump())
    finally:
        ctl.close()


def _probe(undo: dict[str, Any], mode: str, cfg: dict[str, Any]) -> Exchange:
    host, port = str(undo["listen"][0]), int(undo["listen"][1])
    tls = ssl.create_default_context(cafile=undo["ca_file"]) if undo.get("ca_file") else None
    # Long enough to see the effect, short enough for black holes (which never answer).
    timeout = {"latency": 1.0 + 8 * (cfg["latency_ms"] + cfg["jitter_ms"]) / 1000,
               "slow_close": 1.0 + 2 * cfg["close_delay_ms"] / 1000,
               "bandwidth": 5.0}.get(mode, 0.6)  # fmt: skip
    return timed_exchange(host, port, ssl_context=tls, timeout=min(timeout, 15.0))


def _judge(
    mode: str, cfg: dict[str, Any], probe: Exchange, before: dict[str, Any], after: dict[str, Any]
) -> tuple[bool, str]:
    """Does the measured exchange show ``mode``'s effect? (verdict, reason)"""
    if mode == "latency":
        floor = cfg["latency_ms"] - cfg["jitter_ms"]
        return probe.outcome == "ok" and probe.total_ms >= floor, f"expected >= {floor} ms"
    if mode == "bandwidth":
        # The transfer cannot have beaten the limit; allow 2x for the proxy's chunking.
        floor = 1000 * probe.bytes_received / cfg["bandwidth_bps"] / 2
        return probe.total_ms >= floor, f"{probe.bytes_received} B, expected >= {floor:.1f} ms"
    if mode in ("blackhole", "drop"):
        return probe.connected and probe.outcome == "timeout", "connected, then no answer expected"
    if mode == "refuse":
        # The proxy closes its listener (a real ECONNREFUSED); a connection that raced in is
        # accepted and reset, and counted.
        counted = after["refused_total"] > before["refused_total"]
        turned_away = probe.outcome == "refused" or (probe.outcome == "reset" and counted)
        return turned_away, "turned away at connect expected"
    if mode == "reset":
        resets = after["resets_total"] > before["resets_total"]
        return resets and probe.outcome in ("reset", "refused"), "reset mid-stream expected"
    if mode == "slow_close":
        floor = cfg["close_delay_ms"] / 2
        return probe.close_wait_ms >= floor, f"close delayed {probe.close_wait_ms} ms, >= {floor} expected"
    return False, f"unknown mode {mode}"


@dataclass
class Exchange:
    """One timed request over TCP (TLS when given a context); times in ms from the start.

    ``outcome``: ``ok`` (an answer and EOF), ``refused``, ``reset``, ``timeout``, ``tls_error``,
    ``error``. ``close_wait_ms`` is how long the TCP FIN came after the last byte.
    """

    outcome: str = "error"
    connected: bool = False
    status: int | None = None
    connect_ms: float | None = None
    handshake_ms: float | None = None
    first_byte_ms: float | None = None
    total_ms: float = 0.0
    close_wait_ms: float = 0.0
    bytes_received: int = 0
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def timed_exchange(
    host: str, port: int, *, ssl_context: ssl.SSLContext | None = None, path: str = "/healthz",
    timeout: float = 2.0, server_hostname: str | None = None,
) -> Exchange:  # fmt: skip
    """``GET path`` with ``Connection: close``, read to EOF, timing each phase (bounded)."""
    started = time.perf_counter()
    deadline = started + timeout
    ex = Exchange()

    def ms() -> float:
        return round((time.perf_counter() - started) * 1000, 2)

    def remaining() -> float:
        return max(0.001, deadline - time.perf_counter())

    opened: list[socket.socket] = []  # closed at the end, whichever layer we got to
    try:
        sock = socket.create_connection((host, port), timeout=remaining())
        opened.append(sock)
        ex.connected, ex.connect_ms = True, ms()
        if ssl_context is not None:
            sock = ssl_context.wrap_socket(sock, server_hostname=server_hostname or host)
            opened.append(sock)
            ex.handshake_ms = ms()
        sock.settimeout(remaining())
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        head, last = b"", 0.0
        for _ in range(10_000):  # bounded: EOF or the deadline ends it sooner
            sock.settimeout(remaining())
            data = sock.recv(65536)
            if not data:
                break
            ex.first_byte_ms = ex.first_byte_ms or ms()
            ex.bytes_received += len(data)
            head, last = (head + data)[:64], ms()
        if isinstance(sock, ssl.SSLSocket):
            # TLS ends at close_notify; the TCP FIN (what slow_close delays) comes after it.
            sock = sock.unwrap()
            opened.append(sock)
            for _ in range(1000):
                sock.settimeout(remaining())
                if not sock.recv(65536):
                    break
        ex.close_wait_ms = round(ms() - last, 2) if last else 0.0
        words = head.split(b" ", 2)
        ex.status = int(words[1]) if len(words) > 1 and words[1].isdigit() else None
        ex.outcome = "ok"
    except TimeoutError as exc:
        ex.outcome, ex.error = "timeout", str(exc)
    except ssl.SSLCertVerificationError as exc:
        ex.outcome, ex.error = "tls_error", str(exc)
    except ConnectionRefusedError as exc:
        ex.outcome, ex.error = "refused", str(exc)
    except (ConnectionError, ssl.SSLEOFError, ssl.SSLZeroReturnError) as exc:
        # Turned away before a single byte came back reads as refused, later as a reset.
        ex.outcome = "refused" if not ex.bytes_received and ex.handshake_ms is None else "reset"
        ex.error = str(exc)
    except (OSError, ssl.SSLError) as exc:
        ex.outcome, ex.error = "error", str(exc)
    finally:
        for opened_sock in reversed(opened):
            opened_sock.close()
    ex.total_ms = ms()
    return ex
