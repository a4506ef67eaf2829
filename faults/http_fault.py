"""``HttpFaultFault``: HTTP faults on the service edge, the way service-mesh users know them — Envoy's fault filter.

With ``target.endpoint: envoy`` the run's service endpoint is Envoy (``experiments/platforms/local/envoy.py``),
whose HTTP connection manager carries Envoy's fault-injection filter, off until its runtime keys say otherwise
(what Istio's ``VirtualService.fault`` sets). This fault sets them through Envoy's admin API (``/runtime_modify``,
on the endpoint's 0600 unix socket):

* ``abort``: ``percent`` % of requests answered ``status`` by Envoy itself, never reaching a replica
  (``fault.http.abort.abort_percent``, ``fault.http.abort.http_status``);
* ``delay``: ``percent`` % of requests held ``delay_ms`` before they are routed
  (``fault.http.delay.fixed_delay_percent``, ``fault.http.delay.fixed_duration_ms``).

Rollback removes the overrides (the filter is at 0 % again); it works from the record alone, and an Envoy that
is gone took its runtime with it. ``verify`` reads the runtime back and Envoy's own counters of injected aborts
and delays (``http.service.fault.*``).

Example::

    fault = HttpFaultFault()
    inj = fault.inject(fault.parse_config({"mode": "abort", "status": 503, "percent": 25}), ctx)
    fault.verify(inj, ctx).details       # {'runtime': {...: '25'}, 'aborts_injected': 41, ...}
    fault.undo(inj, ctx)
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlencode

import httpx
from pydantic import Field

from faultdrill.faults.base import Fault, FaultConfig, FaultContext, Injection, Problem, Verification
from faultdrill.faults.errors import FaultdrillError

__all__ = ["HttpFaultFault"]

_KEYS = {
    "abort": ("fault.http.abort.abort_percent", "fault.http.abort.http_status"),
    "delay": ("fault.http.delay.fixed_delay_percent", "fault.http.delay.fixed_duration_ms"),
}


def _socket(handle_control: str | None) -> Path | None:
    return Path(handle_control.removeprefix("unix:")) if handle_control and handle_control.startswith("unix:") else None


def _admin(socket: Path, method: str, path: str) -> httpx.Response:
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(socket)), timeout=3.0) as client:
        return client.request(method, f"http://envoy{path}")


class HttpFaultFault(Fault):
    """Abort or delay a share of the requests at the service edge (Envoy's fault filter)."""

    class Config(FaultConfig):
        target: str = "service"
        mode: Literal["abort", "delay"] = "abort"
        status: int = Field(default=503, ge=200, le=599)
        """``abort``: the status Envoy answers."""
        percent: float = Field(default=100.0, gt=0, le=100)
        """The share of requests affected."""
        delay_ms: int = Field(default=200, ge=1, le=60_000)
        """``delay``: how long each affected request is held before it is routed."""

    name: ClassVar[str] = "http_fault"
    target_roles: ClassVar[tuple[str, ...] | None] = ("service",)
    modes: ClassVar[tuple[str, ...]] = ("abort", "delay")
    needs: ClassVar[tuple[str, ...]] = ("target.endpoint: envoy",)
    verifies: ClassVar[str] = "Envoy's runtime overrides and its counters of injected aborts/delays"
    example: ClassVar[dict[str, Any]] = {"mode": "abort", "status": 503, "percent": 25}

    def _values(self, config: Config) -> dict[str, str]:
        pct, other = _KEYS[config.mode]
        second = config.status if config.mode == "abort" else config.delay_ms
        return {pct: f"{config.percent:g}", other: str(second)}

    def local_preflight(self, config: Config, ctx: FaultContext) -> list[Problem]:
        handle = ctx.topology.get(config.target)
        socket = _socket(handle.control_url)
        if socket is None:
            return [Problem("no_envoy", f"'{config.target}' is not an Envoy endpoint: the HTTP fault filter is Envoy's",
                            "target.endpoint: envoy")]  # fmt: skip
        if not socket.exists() and not ctx.dry_run:
            return [Problem("no_admin", f"Envoy's admin socket {socket} does not exist")]
        return []

    def local_plan(self, config: Config, ctx: FaultContext) -> list[str]:
        socket = _socket(ctx.topology.get(config.target).control_url)
        return [f"POST /runtime_modify?{urlencode(self._values(config))}  # Envoy admin, unix socket {socket}",
                "rollback: remove those runtime overrides (the fault filter back at 0 %)"]

    def local_inject(self, config: Config, ctx: FaultContext) -> Injection:
        if problems := self.local_preflight(config, ctx):
            raise FaultdrillError("; ".join(p.message for p in problems))
        socket = _socket(ctx.topology.get(config.target).control_url)
        assert socket is not None
        values = self._values(config)
        undo = {"socket": str(socket), "keys": sorted(values)}
        inj = self.new_injection(config, ctx, mode=config.mode, target=config.target, undo=undo)

        def apply() -> None:
            answer = _admin(socket, "POST", f"/runtime_modify?{urlencode(values)}")
            if answer.status_code != 200:
                raise FaultdrillError(f"Envoy refused the runtime change ({answer.status_code}): {answer.text[:200]}")

        return self.apply_recorded(inj, ctx, apply)

    def local_rollback(self, injection: Injection, ctx: FaultContext) -> None:
        socket = Path(injection.undo["socket"])
        if not socket.exists():
            return  # Envoy is gone, and its runtime with it
        try:
            answer = _admin(socket, "POST", f"/runtime_modify?{urlencode(dict.fromkeys(injection.undo['keys'], ''))}")
        except httpx.HTTPError:
            if socket.exists():
                raise
            return
        if answer.status_code != 200:
            raise FaultdrillError(f"Envoy refused to clear the runtime overrides ({answer.status_code})")

    def local_verify(self, injection: Injection, ctx: FaultContext) -> Verification:
        socket = Path(injection.undo["socket"])
        try:
            layers = _admin(socket, "GET", "/runtime").json().get("entries", {})
            time.sleep(0.5)  # a moment of traffic through the filter
            counters = _admin(socket, "GET", "/stats?filter=^http\\.service\\.fault\\.").text
        except (httpx.HTTPError, ValueError) as exc:
            return Verification(False, {"error": str(exc)}, message=f"Envoy's admin API did not answer: {exc}")
        runtime = {k: (layers.get(k) or {}).get("final_value") for k in injection.undo["keys"]}
        stats = {line.partition(": ")[0].rsplit(".", 1)[-1]: int(line.partition(": ")[2])
                 for line in counters.splitlines() if line.partition(": ")[2].strip().isdigit()}  # fmt: skip
        set_ = all(v not in (None, "") for v in runtime.values())
        details = {"runtime": runtime, **stats}
        injected = stats.get("aborts_injected" if injection.mode == "abort" else "delays_injected", 0)
        return Verification(set_, details, message=(
            f"Envoy's fault filter {'set' if set_ else 'NOT set'}: {runtime}; {injected} "
            f"{'aborts' if injection.mode == 'abort' else 'delays'} injected so far"))
