"""The platform exporter: kube-state-metrics and cAdvisor series for the local platform.

On Kubernetes, kube-state-metrics serves pod/container state and cAdvisor (in the kubelet)
serves container memory; the alerting rules read both. The local platform has neither, so
:class:`PlatformExporter` serves the same names, computed at scrape time from what the run
already knows — the timeline's ``process`` events (start, exit, restart, ready, unready) and
each replica's memory cgroup files — so one rules file works on both platforms. Series
(labels ``namespace``, ``pod``, ``container``; ``kube_pod_status_ready`` has no container):

- ``kube_pod_container_status_restarts_total``: ``restart`` events of the service;
- ``kube_pod_container_status_last_terminated_reason{reason}`` = 1: reason of the last ``exit``;
- ``kube_pod_container_status_waiting_reason{reason="CrashLoopBackOff"}``: 1 while the last
  exit was scheduled for a restart (``backoff_s`` not None) and nothing started since, else 0;
- ``kube_pod_container_status_running``: 1 after start/restart/ready, 0 after exit;
- ``kube_pod_status_ready{condition="true"|"false"}``: the last ready/unready (an exit makes
  it false, as the kubelet does); false until the first ready;
- ``container_memory_working_set_bytes`` (usage minus inactive file) and
  ``container_spec_memory_limit_bytes`` (0 = unlimited, as cAdvisor), for replicas of the
  *current* topology that run in a cgroup (v1 files, or their v2 equivalents).

On the same endpoint, dcgm-exporter's ``DCGM_FI_*`` series of each replica's GPU (``dcgm.py``).

Example::

    exporter = PlatformExporter()
    exporter.start(ObserverContext(timeline, topology=platform.topology))
    scrape_targets(platform.topology(), exporter.url)   # job kube-state-metrics
    exporter.stop()
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from faultdrill.experiments.journal.timeline import Event
from faultdrill.experiments.observe.observers import ObserverContext
from faultdrill.experiments.platforms.local.dcgm import XID_WINDOW_S, DcgmCollector
from faultdrill.experiments.spec.bundled import BUNDLED_PROCESSES
from faultdrill.faults.topology import ServiceHandle

__all__ = ["PlatformExporter", "cgroup_memory"]

_UNLIMITED = 2**60
_CONTAINER = {role: program.container for role, program in BUNDLED_PROCESSES.items()}
"""Role → the ``container`` label: the bundled program's container in ``target_service/deploy``."""


@dataclass
class _Container:
    restarts: int = 0
    last_reason: str | None = None
    waiting: bool = False
    running: bool = False
    ready: bool = False

    def apply(self, event: Event) -> None:
        kind = event.get("event")
        if kind in ("start", "restart"):
            self.running, self.waiting = True, False
            self.restarts += kind == "restart"
        elif kind == "exit":
            self.running, self.ready = False, False
            self.last_reason = event.get("reason") or self.last_reason
            self.waiting = event.get("backoff_s") is not None
        elif kind in ("ready", "unready"):
            self.ready = kind == "ready"
            self.running = self.running or self.ready


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max":  # cgroup v2's "no limit"
        return _UNLIMITED
    try:
        return int(text)
    except ValueError:
        return None


def cgroup_memory(cgroup: Path) -> tuple[int | None, int | None]:
    """``(working_set_bytes, limit_bytes)`` of a memory cgroup directory, as cAdvisor computes them.

    Working set = usage − inactive file pages (never below 0); limit 0 = unlimited. A value
    whose file is missing or unreadable is None (no sample, rather than a wrong one).
    """
    usage = _read_int(cgroup / "memory.usage_in_bytes")
    if usage is None:
        usage = _read_int(cgroup / "memory.current")
    limit = _read_int(cgroup / "memory.limit_in_bytes")
    if limit is None:
        limit = _read_int(cgroup / "memory.max")
    inactive = 0
    try:
        stat = dict(line.split(" ", 1) for line in (cgroup / "memory.stat").read_text().splitlines() if " " in line)
        inactive = int(stat.get("total_inactive_file", stat.get("inactive_file", "0")))
    except (OSError, ValueError):
        pass
    working_set = None if usage is None else max(0, usage - inactive)
    return working_set, None if limit is None else (0 if limit >= _UNLIMITED else limit)


class _PlatformCollector(Collector):
    def __init__(self, ctx: ObserverContext, namespace: str) -> None:
        self.ctx = ctx
        self.namespace = namespace
        self._roles: dict[str, str] = {}
        """Every service name a topology showed → its role (a pod keeps its container after it left)."""

    def collect(self) -> Iterator[Metric]:
        topology = self.ctx.topology().services.values()
        self._roles.update({h.name: h.role for h in topology})
        handles: dict[str, ServiceHandle] = {h.name: h for h in topology if h.role in _CONTAINER}
        containers: dict[str, _Container] = {name: _Container() for name in handles}
        for event in self.ctx.timeline.select("process"):
            containers.setdefault(event.source, _Container()).apply(event)
        ns = self.namespace
        restarts = CounterMetricFamily("kube_pod_container_status_restarts_total", "Container restarts.",
                                       labels=["namespace", "pod", "container"])  # fmt: skip
        reason = GaugeMetricFamily("kube_pod_container_status_last_terminated_reason",
                                   "Why the container last terminated.",
                                   labels=["namespace", "pod", "container", "reason"])  # fmt: skip
        waiting = GaugeMetricFamily("kube_pod_container_status_waiting_reason", "Why the container is waiting.",
                                    labels=["namespace", "pod", "container", "reason"])  # fmt: skip
        running = GaugeMetricFamily("kube_pod_container_status_running", "Whether the container is running.",
                                    labels=["namespace", "pod", "container"])  # fmt: skip
        ready = GaugeMetricFamily("kube_pod_status_ready", "Whether the pod is ready to serve requests.",
                                  labels=["namespace", "pod", "condition"])  # fmt: skip
        for pod, c in sorted(containers.items()):
            container = _CONTAINER.get(self._roles.get(pod, "other"), pod)
            restarts.add_metric([ns, pod, container], c.restarts)
            if c.last_reason:
                reason.add_metric([ns, pod, container, str(c.last_reason)], 1)
            waiting.add_metric([ns, pod, container, "CrashLoopBackOff"], 1 if c.waiting else 0)
            running.add_metric([ns, pod, container], 1 if c.running else 0)
            ready.add_metric([ns, pod, "true"], 1 if c.ready else 0)
            ready.add_metric([ns, pod, "false"], 0 if c.ready else 1)
        yield from (restarts, reason, waiting, running, ready)
        yield from self._memory()

    def _memory(self) -> Iterator[Metric]:
        labels = ["namespace", "pod", "container"]
        working = GaugeMetricFamily("container_memory_working_set_bytes", "Current working set in bytes.",
                                    labels=labels)  # fmt: skip
        limit = GaugeMetricFamily("container_spec_memory_limit_bytes", "Memory limit in bytes (0: unlimited).",
                                  labels=labels)  # fmt: skip
        for handle in sorted(self.ctx.topology().by_role("replica"), key=lambda h: h.name):
            if handle.cgroup is None:
                continue
            ws, lim = cgroup_memory(Path(handle.cgroup))
            if ws is not None:
                working.add_metric([self.namespace, handle.name, "target"], ws)
            if lim is not None:
                limit.add_metric([self.namespace, handle.name, "target"], lim)
        yield from (working, limit)


class PlatformExporter:
    """Serve the kube-state-metrics/cAdvisor series on 127.0.0.1 (free port); see the module docstring.

    It has its own registry (nothing global), computes every series at scrape time, and
    this emulates kube-state-metrics + cAdvisor for the local platform only: on Kubernetes
    the real ones serve the same names.
    """

    def __init__(self, namespace: str = "faultdrill", *, xid_window_s: float = XID_WINDOW_S) -> None:
        self.name = "platform-exporter"
        self.namespace = namespace
        self.xid_window_s = xid_window_s
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the platform exporter is not started")
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self, ctx: ObserverContext) -> None:
        if self._server is not None:
            raise RuntimeError("the platform exporter is already started")
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_PlatformCollector(ctx, self.namespace))
        registry.register(DcgmCollector(ctx, self.namespace, xid_window_s=self.xid_window_s))
        self._server, self._thread = start_http_server(0, addr="127.0.0.1", registry=registry)

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None
