"""``DependencyOutageFault``: the feature store killed, hung, refusing, failing or slow.

Modes and what each does for real:

- ``killed``: SIGKILL, kept down (the supervisor is told to hold it); rollback restarts it
  through the supervisor. Without one (``rollback --pending`` after a crash) nothing here
  knows how to start it, so rollback succeeds only once the store answers again, and
  otherwise raises ``RollbackError`` and keeps the record visible.
- ``hung``: SIGSTOP. The kernel still accepts connections into the backlog; nothing answers.
  Rollback SIGCONTs the same process (pid *and* start ticks, so a recycled pid is never hit).
- ``refusing``: the store is alive but its edge turns every connection away: the fault proxy
  in front of it (``upstream_of`` = the store) in ``refuse`` mode. Stopping the process would
  be ``killed``; a kernel-level refusal is ``network_partition`` with ``action: reject``.
- ``errors`` / ``slow``: the store's own levers (``POST /admin/faults``: ``error_rate`` +
  ``error_status``, or ``delay_ms``); rollback ``DELETE /admin/faults``. The bearer token is
  read from the token *file* at call time and never recorded.

``verify`` makes real requests to the store over TLS with the project CA and measures what
happens; it also reads each replica's ``/v2`` dependency breaker (its observable reaction).

Example::

    fault = DependencyOutageFault()
    cfg = fault.parse_config({"target": "feature-store", "mode": "hung", "duration_s": 10})
    inj = fault.inject(cfg, ctx)
    assert fault.verify(inj, ctx).effective     # connected, then no answer
    fault.undo(inj, ctx)                        # SIGCONT
"""

from __future__ import annotations

import os
import signal
import ssl
import time
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

import httpx
from pydantic import Field

from faultdrill.faults.base import Fault, FaultConfig, FaultContext, Injection, Problem, Verification
from faultdrill.faults.errors import ConfigError, FaultdrillError, RollbackError
from faultdrill.faults.kube.objects import DependencyAction
from faultdrill.faults.network import Exchange, set_proxy_mode, timed_exchange
from faultdrill.faults.owned import supervisor_gone, supervisor_identity
from faultdrill.faults.procid import pid_alive, process_start_ticks, wait_gone
from faultdrill.faults.proxy import ProxyMode
from faultdrill.faults.topology import ServiceHandle

__all__ = ["DependencyOutageFault"]

_PROBE_PATH = "/v1/features/faultdrill-probe"
_GONE_WAIT_S = 2.0  # verify: how long a signalled process may take to be gone (delivery is asynchronous)


class DependencyOutageFault(Fault):
    """Take the feature store (role ``feature_store``) down in one of five ways."""

    class Config(FaultConfig):
        target: str
        mode: Literal["killed", "hung", "refusing", "errors", "slow"]
        error_rate: float = Field(default=1.0, gt=0, le=1)
        error_status: int = Field(default=503, ge=500, le=599)
        delay_ms: float = Field(default=1000.0, gt=0, le=600_000)

    name: ClassVar[str] = "dependency_outage"
    target_roles: ClassVar[tuple[str, ...] | None] = ("feature_store",)
    modes: ClassVar[tuple[str, ...]] = ("killed", "hung", "refusing", "errors", "slow")
    needs: ClassVar[tuple[str, ...]] = ("feature store admin token (errors, slow)", "live platform to restart (killed)")
    verifies: ClassVar[str] = "real TLS requests to the store + the replicas' breaker state"
    example: ClassVar[dict[str, Any]] = {"target": "feature-store", "mode": "hung"}
    kubernetes = DependencyAction  # on a Kubernetes target: faults/kube/objects.py (the API)

    @staticmethod
    def _targets(config: Config, ctx: FaultContext) -> tuple[ServiceHandle, ServiceHandle | None]:
        store = ctx.topology.get(config.target, role="feature_store")
        if store.pid is None or store.url is None or store.port is None:
            raise ConfigError(f"target '{config.target}' has no pid, url or port", field="target")
        if config.mode != "refusing":
            return store, None
        proxies = [p for p in ctx.topology.by_role("proxy") if p.upstream_of == store.name]
        if not proxies:
            raise ConfigError(f"mode 'refusing' needs a fault proxy in front of '{store.name}'",
                              field="mode")  # fmt: skip
        return store, proxies[0]

    @staticmethod
    def _check_scope(store: ServiceHandle, proxy: ServiceHandle | None, ctx: FaultContext) -> None:
        for handle in (store, proxy):
            if handle is not None:
                assert handle.pid is not None and handle.port is not None
                ctx.scope.check_pid(handle.pid)
                ctx.scope.check_port(handle.port)

    def local_preflight(self, config: Config, ctx: FaultContext) -> list[Problem]:
        store, proxy = self._targets(config, ctx)
        problems = []
        try:
            self._check_scope(store, proxy, ctx)
        except FaultdrillError as exc:
            problems.append(Problem("blast_radius", str(exc)))
        if config.mode in ("errors", "slow") and store.admin_token_file is None:
            problems.append(Problem("no_admin", f"'{store.name}' has no admin token file",
                                    "start it with an admin token"))
        if config.mode == "killed" and ctx.supervisor is None:
            problems.append(Problem("no_supervisor", "mode 'killed' needs a supervisor to hold "
                                    "the store down and restart it", "run it on a platform"))
        return problems

    def local_plan(self, config: Config, ctx: FaultContext) -> list[str]:
        store, proxy = self._targets(config, ctx)
        return {
            "killed": [f"SIGKILL pid {store.pid} ('{store.name}'), held down; rollback: restart it"],
            "hung": [f"SIGSTOP pid {store.pid} ('{store.name}'); rollback: SIGCONT"],
            "refusing": [f"PUT {proxy.control_url if proxy else '?'}/mode {{\"mode\": \"refuse\"}} "
                         f"(proxy in front of '{store.name}'); rollback: mode passthrough"],
            "errors": [f"POST {store.admin_url}/admin/faults {{\"error_rate\": {config.error_rate}, "
                       f"\"error_status\": {config.error_status}}}; rollback: DELETE /admin/faults"],
            "slow": [f"POST {store.admin_url}/admin/faults {{\"delay_ms\": {config.delay_ms}}}; "
                     "rollback: DELETE /admin/faults"],
        }[config.mode]  # fmt: skip

    def local_inject(self, config: Config, ctx: FaultContext) -> Injection:
        store, proxy = self._targets(config, ctx)
        self._check_scope(store, proxy, ctx)
        assert store.pid is not None
        undo: dict[str, Any] = {
            "name": store.name, "pid": store.pid, "start_ticks": process_start_ticks(store.pid),
            "url": store.url, "admin_url": store.admin_url or store.url,
            "token_file": str(store.admin_token_file) if store.admin_token_file else None,
            "ca_file": str(store.ca_file) if store.ca_file else None,
            "supervisor": supervisor_identity(ctx.supervisor),
        }  # fmt: skip
        if proxy is not None:
            assert proxy.pid is not None
            undo["proxy"] = {"control_url": proxy.control_url, "token_file": str(proxy.admin_token_file),
                             "pid": proxy.pid, "start_ticks": process_start_ticks(proxy.pid),
                             "listen": [urlsplit(proxy.url or "").hostname or "127.0.0.1", proxy.port]}  # fmt: skip
        injection = self.new_injection(config, ctx, mode=config.mode, target=store.name, undo=undo)
        return self.apply_recorded(injection, ctx, lambda: self._apply(config, undo, ctx))

    @staticmethod
    def _apply(config: Config, undo: dict[str, Any], ctx: FaultContext) -> None:
        pid, ticks = int(undo["pid"]), undo["start_ticks"]
        if config.mode == "killed":
            if ctx.supervisor is not None:
                ctx.supervisor.kill(undo["name"], signal.SIGKILL)
                ctx.supervisor.stop(undo["name"], hold=True)  # reaps it, and keeps it down
            elif pid_alive(pid, ticks):
                os.kill(pid, signal.SIGKILL)
        elif config.mode == "hung":
            if not pid_alive(pid, ticks):
                raise FaultdrillError(f"'{undo['name']}' (pid {pid}) is not running")
            os.kill(pid, signal.SIGSTOP)
        elif config.mode == "refusing":
            set_proxy_mode(undo["proxy"], ProxyMode(mode="refuse"))
        else:
            body = ({"error_rate": config.error_rate, "error_status": config.error_status}
                    if config.mode == "errors" else {"delay_ms": config.delay_ms})  # fmt: skip
            _admin(undo, "POST", body).raise_for_status()

    def local_rollback(self, injection: Injection, ctx: FaultContext) -> None:
        undo, mode = injection.undo, injection.mode
        pid, ticks = int(undo["pid"]), undo["start_ticks"]
        try:
            if mode == "hung" and pid_alive(pid, ticks):
                os.kill(pid, signal.SIGCONT)
            elif mode == "refusing" and pid_alive(int(undo["proxy"]["pid"]), undo["proxy"]["start_ticks"]):
                set_proxy_mode(undo["proxy"], ProxyMode())
            elif mode in ("errors", "slow") and pid_alive(pid, ticks):  # a dead store took its levers
                _admin_until(undo, "DELETE", within_s=ADMIN_RETRY_S)
            elif mode == "killed":
                if ctx.supervisor is not None:
                    ctx.supervisor.start(undo["name"])
                elif supervisor_gone(undo):  # its platform died with its supervisor: nothing to restart it into
                    self.undo_note = f"'{undo['name']}' stays down: the platform that held it died"
                elif _probe(undo, timeout=1.0).outcome != "ok":
                    raise RollbackError(
                        f"'{undo['name']}' was killed and no supervisor is here to restart it: "
                        "start it again, then rerun the rollback", fault=self.name,
                        injection_id=injection.id)  # fmt: skip
        except (OSError, httpx.HTTPError) as exc:
            raise RollbackError(f"could not undo {mode} on '{injection.target}': {exc}",
                                fault=self.name, injection_id=injection.id) from exc  # fmt: skip

    def local_verify(self, injection: Injection, ctx: FaultContext) -> Verification:
        undo, mode, cfg = injection.undo, injection.mode, injection.config
        pid, ticks = int(undo["pid"]), undo["start_ticks"]
        details: dict[str, Any] = {}
        if mode == "errors":
            effective, why = _count_errors(undo, int(cfg["error_status"]), details)
        else:
            timeout = cfg["delay_ms"] / 1000 + 2.0 if mode == "slow" else 0.6
            direct = _probe(undo, timeout=timeout)
            details["direct"] = direct.as_dict()
            if mode == "killed":
                effective = wait_gone(pid, ticks, _GONE_WAIT_S) is not None and direct.outcome == "refused"
                why = "process gone and port refusing expected"
            elif mode == "hung":
                effective = _proc_state(pid) == "T" and direct.connected and direct.outcome == "timeout"
                why = "stopped process, connect accepted, no answer expected"
            elif mode == "slow":
                effective = direct.outcome == "ok" and direct.total_ms >= 0.9 * cfg["delay_ms"]
                why = f"answer after >= {cfg['delay_ms']} ms expected"
            else:
                via = _probe(undo["proxy"] | {"ca_file": undo["ca_file"]}, timeout=0.6)
                details["via_proxy"] = via.as_dict()
                effective = via.outcome in ("refused", "reset") and direct.outcome == "ok"
                why = "store healthy directly, turned away through its edge expected"
        details["replicas"] = _breakers(ctx)
        return Verification(effective=effective, details=details, message=f"{mode}: {why}")


def _tls(ca_file: str | None) -> ssl.SSLContext | None:
    return ssl.create_default_context(cafile=ca_file) if ca_file else None


def _probe(undo: dict[str, Any], *, timeout: float) -> Exchange:
    if "listen" in undo:  # a proxy edge
        host, port = str(undo["listen"][0]), int(undo["listen"][1])
    else:
        parts = urlsplit(undo["url"])
        host, port = parts.hostname or "127.0.0.1", int(parts.port or 443)
    return timed_exchange(host, port, ssl_context=_tls(undo.get("ca_file")), path=_PROBE_PATH,
                          timeout=timeout)  # fmt: skip


def _admin(undo: dict[str, Any], method: str, body: dict[str, Any] | None = None) -> httpx.Response:
    if not undo.get("token_file"):
        raise FaultdrillError(f"'{undo['name']}' has no admin token file")
    token = Path(undo["token_file"]).read_text().strip()
    tls: ssl.SSLContext | bool = _tls(undo.get("ca_file")) or True
    with httpx.Client(verify=tls, timeout=3.0) as client:
        return client.request(method, f"{undo['admin_url']}/admin/faults", json=body,
                              headers={"Authorization": f"Bearer {token}"})  # fmt: skip


ADMIN_RETRY_S = 5.0
"""How long a rollback keeps asking the store's admin API. Rolled back together with another fault
(a certificate swap, a partition), the store may be unreachable for a moment: its certificate is
restored on disk but not yet reloaded, or the partition is being healed. A rollback that gave up
on the first refusal left the store's levers on (seen in the crash matrix)."""


def _admin_until(undo: dict[str, Any], method: str, *, within_s: float) -> None:
    """``_admin`` until it answers 2xx, retrying transport failures for up to ``within_s``."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            _admin(undo, method).raise_for_status()
            return
        except (OSError, httpx.TransportError):
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.1)


def _count_errors(undo: dict[str, Any], status: int, details: dict[str, Any]) -> tuple[bool, str]:
    # Up to 50 real requests, stopping at the first injected error (rate 0.05: 92 % seen).
    codes: list[int | None] = []
    for _ in range(50):
        codes.append(_probe(undo, timeout=1.0).status)
        if codes[-1] == status:
            break
    details.update(requests=len(codes), errors=codes.count(status), statuses=sorted(set(map(str, codes))))
    return status in codes, f"{codes.count(status)}/{len(codes)} requests answered {status}"


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "?"


def _breakers(ctx: FaultContext) -> dict[str, Any]:
    """Each replica's view of its dependency (``/v2``): breaker state, reachable, last error."""
    seen: dict[str, Any] = {}
    for replica in ctx.topology.by_role("replica")[:8]:
        try:
            doc = httpx.get(f"{replica.url}/v2", timeout=1.0).json()
            seen[replica.name] = doc.get("dependency")
        except (httpx.HTTPError, ValueError) as exc:
            seen[replica.name] = {"error": str(exc)}
    return seen
