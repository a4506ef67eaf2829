"""Load from the in-cluster Locust master and workers, with every request on the run's timeline.

The manifests run ``locust-master`` (web API :8089, workers on :5557) and ``locust-worker``
(each writes its requests aggregated per 100 ms to stdout: ``FAULTDRILL_LOAD_EVENTS=/dev/stdout``, the
same lines as ``target_service/locustfile.py`` writes locally). :class:`KubeLoad`:

1. scales ``locust-worker`` to ``workers`` and waits for them to run;
2. follows each worker pod's log through the API (``pods/log?follow=true``) and puts every
   line on the timeline as a ``requests`` event (source ``load``) — lines that are not
   request JSON (Locust's own logging) are skipped;
3. starts the swarm through the API server's service proxy:
   ``POST /api/v1/namespaces/<ns>/services/locust-master:web/proxy/swarm`` (users, spawn rate,
   host, run time), and ``GET …/proxy/stop`` when the run ends.

Example::

    load = KubeLoad(api, "faultdrill", timeline, users=8, spawn_rate=8, run_time_s=120, workers=2)
    load.start(); load.wait_first_request(90); ...; summary = load.stop()
"""

from __future__ import annotations

import threading
import time
from typing import Any

from faultdrill.experiments.journal.timeline import Event, Timeline
from faultdrill.experiments.observe.load import LoadSummary, event_of_line, request_counts
from faultdrill.faults.errors import FaultdrillError

__all__ = ["KubeLoad", "request_event"]

_MASTER = "locust-master:web"


def request_event(line: str | bytes, start_wall: float, source: str = "load") -> Event | None:
    """One worker log line → a ``requests`` bucket (or a single ``request``); None for anything that is not one."""
    return event_of_line(line, start_wall, source)


class KubeLoad:
    """The in-cluster Locust, driven through the API; see the module docstring."""

    label = "the in-cluster Locust"  # how log lines name it (experiments.platforms.base.Load)

    def __init__(self, api: Any, namespace: str, timeline: Timeline, *, users: int, spawn_rate: float,
                 run_time_s: float, workers: int = 2, host: str = "http://target:8000") -> None:  # fmt: skip
        self.api, self.namespace, self.timeline = api, namespace, timeline
        self.users, self.spawn_rate, self.run_time_s = users, spawn_rate, run_time_s
        self.workers, self.host = max(1, workers), host
        self.events = self.failed_events = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def _core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.api)

    def _proxy(self, method: str, path: str, form: dict[str, str] | None = None) -> int:
        url = f"/api/v1/namespaces/{self.namespace}/services/{_MASTER}/proxy/{path}"
        m, full, headers, body, post = self.api.param_serialize(
            method, url, header_params={"Content-Type": "application/x-www-form-urlencoded"},
            post_params=list((form or {}).items()), auth_settings=["BearerToken"])
        resp = self.api.call_api(m, full, header_params=headers, body=body, post_params=post, _request_timeout=10)
        resp.read()
        return int(resp.status)

    def start(self) -> None:
        from kubernetes import client

        client.AppsV1Api(self.api).patch_namespaced_deployment_scale(
            "locust-worker", self.namespace, {"spec": {"replicas": self.workers}})
        pods = self._wait_workers(90.0)
        for pod in pods:
            t = threading.Thread(target=self._follow, args=(pod,), name=f"locust-log-{pod}", daemon=True)
            t.start()
            self._threads.append(t)
        form = {"user_count": str(self.users), "spawn_rate": str(self.spawn_rate), "host": self.host,
                "run_time": f"{int(self.run_time_s)}s"}  # fmt: skip
        if (status := self._proxy("POST", "swarm", form)) >= 400:
            raise FaultdrillError(f"Locust master refused the swarm (HTTP {status})")

    def _wait_workers(self, timeout_s: float) -> list[str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            pods = self._core().list_namespaced_pod(self.namespace,
                                                    label_selector="app.kubernetes.io/name=locust-worker")
            running = [p.metadata.name for p in pods.items if p.status.phase == "Running"]
            if len(running) >= self.workers:
                return running[: self.workers]
            time.sleep(1.0)
        raise FaultdrillError(f"{self.workers} Locust workers not running after {timeout_s:.0f}s")

    def _follow(self, pod: str) -> None:
        resp = self._core().read_namespaced_pod_log(pod, self.namespace, container="locust", follow=True,
                                                    since_seconds=5, _preload_content=False)  # fmt: skip
        buf = b""
        for chunk in resp.stream(4096):
            if self._stop.is_set():
                break
            *lines, buf = (buf + chunk).split(b"\n")
            for line in lines:
                if (event := request_event(line, self.timeline.start_wall)) is not None:
                    self.timeline.append(event)
                    with self._lock:
                        count, ok = request_counts(event)
                        self.events += count
                        self.failed_events += count - ok
        resp.release_conn()

    def wait_first_request(self, timeout_s: float = 60.0) -> bool:
        end = time.monotonic() + timeout_s
        while self.events == 0 and time.monotonic() < end:
            time.sleep(0.2)
        return self.events > 0

    def stop(self) -> LoadSummary:
        try:
            self._proxy("GET", "stop")
        finally:
            self._stop.set()
        return LoadSummary(requests=self.events, failures=self.failed_events, events=self.events, exact=False)
