"""Alert observers: Prometheus alert states and Alertmanager notifications on the timeline.

- :class:`AlertWatcher` polls Prometheus through prometheus-api-client
  (``custom_query("ALERTS")``) and emits an ``alert`` event (source = alert name; attrs
  ``state`` pending|firing|resolved, ``labels``, ``severity``, ``active_at``) whenever an alert
  instance (alert name + labels, without ``alertstate``) changes state; an instance that
  disappears emits ``resolved``. A pending event carries the time Prometheus saw the
  condition first (``activeAt`` of ``/api/v1/alerts``, not the poll's time); a firing event
  the time of the evaluation that made it fire; a resolved event the poll that saw it gone
  (up to ``period_s`` late; ``last_seen`` = the poll before, which still saw it — the
  resolved notification's ``ends_at`` has Prometheus' exact time). An unreachable
  Prometheus skips the tick.
- :class:`WebhookReceiver` is every Alertmanager receiver of the run: ``POST /<receiver>``
  with the webhook payload (version 4) puts one ``notification`` event per alert on the
  timeline (source = receiver; ``alert``, ``status`` firing|resolved, ``labels``,
  ``severity``, ``group_key``, ``starts_at``, ``ends_at``, ``fingerprint``).

Example::

    receiver = WebhookReceiver(("pager", "chat", "ticket"))
    group = ObserverGroup([receiver, AlertWatcher(stack.prometheus_url, period_s=0.5)])
    group.start(ObserverContext(timeline))   # receiver.base_url is known from here on
    ...
    group.stop()
    timeline.select("notification", source="pager", status="firing")
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BufferedIOBase
from typing import TYPE_CHECKING, Any

from faultdrill.experiments.observe.observers import ObserverContext, Poller

if TYPE_CHECKING:
    import requests
    from prometheus_api_client import PrometheusConnect

__all__ = ["MAX_BODY_BYTES", "AlertWatcher", "WebhookReceiver"]

log = logging.getLogger("faultdrill.alerting")

MAX_BODY_BYTES = 1 << 20
"""Largest webhook body accepted (Alertmanager's payloads for a run are a few KiB)."""

_Key = frozenset[tuple[str, str]]


def _wall(stamp: str) -> float | None:
    """Unix time of an RFC 3339 stamp (Prometheus writes nanoseconds; Python keeps micro)."""
    try:
        return datetime.fromisoformat(stamp).timestamp()
    except (TypeError, ValueError):
        return None


class AlertWatcher:
    """Poll Prometheus' alerts every ``period_s``; see the module docstring.

    The client's retries are off (a refused connection cost ~2 s with them): a tick that
    fails is skipped, and the next one, ``period_s`` later, tries again.

    Example::

        watcher = AlertWatcher("http://127.0.0.1:9090", period_s=0.5)
        watcher.start(ctx); ...; watcher.stop()
    """

    def __init__(self, prometheus_url: str, period_s: float = 0.5, timeout_s: float = 1.0) -> None:
        self.name = "alerts"
        self.prometheus_url = prometheus_url.rstrip("/")
        self.timeout_s = timeout_s
        self._poller = Poller(self.name, period_s, self._tick)
        self._client: PrometheusConnect | None = None
        self._session: requests.Session | None = None
        self._states: dict[_Key, str] = {}
        self._last_poll_t: float | None = None
        self._lock = threading.Lock()  # poll_once may also be called by hand (tests, a final look)
        self.polls = 0
        """Ticks that reached Prometheus."""

    def start(self, ctx: ObserverContext) -> None:
        import requests
        from prometheus_api_client import PrometheusConnect
        from urllib3.util.retry import Retry

        # Our own session: the client mounts its (retry-less) adapter on it, and the alerts
        # GET, which the library has no call for, goes through the same session.
        self._session = requests.Session()
        no_retry = Retry(total=0, read=False, redirect=False, raise_on_status=False)
        self._client = PrometheusConnect(self.prometheus_url, retry=no_retry, session=self._session,
                                         timeout=self.timeout_s)
        self._poller.start(ctx)

    def stop(self) -> None:
        self._poller.stop()
        if self._client is not None:
            self._client.close()  # closes the session too
            self._client = self._session = None

    def poll_once(self, ctx: ObserverContext) -> int:
        """One tick now (what the poller runs each period); returns the events it added."""
        with self._lock:
            return self._poll(ctx)

    def _poll(self, ctx: ObserverContext) -> int:
        import requests
        from prometheus_api_client import PrometheusApiClientException

        client = self._client
        if client is None:
            return 0
        try:
            rows = client.custom_query("ALERTS")
            current: dict[_Key, tuple[str, float]] = {}
            for row in rows:
                labels = {k: str(v) for k, v in row["metric"].items() if k not in ("__name__", "alertstate")}
                state, stamp = str(row["metric"].get("alertstate")), float(row["value"][0])
                key = frozenset(labels.items())
                if current.get(key, ("", 0.0))[0] != "firing":  # both states at once: firing wins
                    current[key] = (state, stamp)
            new_pending = any(s == "pending" and self._states.get(k) != "pending" for k, (s, _) in current.items())
            active_at = self._active_at() if new_pending else {}
        except (requests.RequestException, PrometheusApiClientException, KeyError, TypeError, ValueError) as exc:
            log.debug("alert watcher: Prometheus unreachable or odd (%s); tick skipped", exc)
            return 0
        self.polls += 1
        added = self._emit(ctx, current, active_at)
        self._last_poll_t = ctx.timeline.now()
        return added

    def _active_at(self) -> dict[_Key, float]:
        if self._session is None:
            return {}
        response = self._session.get(f"{self.prometheus_url}/api/v1/alerts", timeout=self.timeout_s)
        out: dict[_Key, float] = {}
        for alert in response.json()["data"]["alerts"]:
            wall = _wall(str(alert.get("activeAt")))
            if wall is not None:
                out[frozenset((k, str(v)) for k, v in alert["labels"].items())] = wall
        return out

    def _emit(self, ctx: ObserverContext, current: dict[_Key, tuple[str, float]], active_at: dict[_Key, float]) -> int:
        tl, added = ctx.timeline, 0
        now = tl.now()
        for key, (state, stamp) in current.items():
            if self._states.get(key) == state:
                continue
            self._states[key] = state
            wall = active_at.get(key, stamp) if state == "pending" else stamp  # the evaluation's time
            t = max(0.0, min(wall - tl.start_wall, now))
            labels = dict(key)
            attrs: dict[str, Any] = {"state": state, "labels": labels, "severity": labels.get("severity")}
            if key in active_at:
                attrs["active_at"] = max(0.0, min(active_at[key] - tl.start_wall, now))
            tl.add("alert", labels.get("alertname", "?"), t=t, **attrs)
            added += 1
        for key in [k for k in self._states if k not in current]:
            del self._states[key]
            labels = dict(key)
            tl.add("alert", labels.get("alertname", "?"), t=now, state="resolved", labels=labels,
                   severity=labels.get("severity"), last_seen=self._last_poll_t)  # fmt: skip
            added += 1
        return added

    def _tick(self, ctx: ObserverContext) -> None:
        self.poll_once(ctx)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: WebhookReceiver
    ctx: ObserverContext


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        length = self.headers.get("Content-Length")
        code, text = self.server.owner.handle(self.server.ctx, self.path, length, self.rfile)
        body = json.dumps({"status": "ok" if code == 200 else "error", "message": text}).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("webhook: " + format, *args)


class WebhookReceiver:
    """Alertmanager's webhook receivers, served on 127.0.0.1 (free port) from ``start`` to ``stop``.

    Why the stdlib server: one local client (Alertmanager) sending a few small POSTs per run
    needs no event loop, no extra thread pool and no dependency; ``ThreadingHTTPServer`` on
    a daemon thread starts in microseconds and shuts down synchronously in ``stop``.

    Example::

        receiver = WebhookReceiver(("pager", "chat"))
        receiver.start(ctx)
        receiver.base_url          # "http://127.0.0.1:PORT"; Alertmanager posts to <base_url>/pager
        receiver.stop()
    """

    def __init__(self, receivers: Iterable[str] = ("pager", "chat", "ticket"), max_body_bytes: int = MAX_BODY_BYTES):
        self.name = "webhook"
        self.receivers = tuple(receivers)
        self.max_body_bytes = max_body_bytes
        self.received: list[tuple[str, dict[str, Any]]] = []
        """Every accepted payload as ``(receiver, payload)``, in arrival order."""
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the webhook receiver is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self, ctx: ObserverContext) -> None:
        if self._server is not None:
            raise RuntimeError("the webhook receiver is already started")
        server = _Server(("127.0.0.1", 0), _Handler)
        server.owner, server.ctx = self, ctx
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="observer-webhook", daemon=True)  # fmt: skip
        self._thread.start()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None

    def handle(self, ctx: ObserverContext, path: str, length: str | None, body: BufferedIOBase) -> tuple[int, str]:
        """Serve one POST: ``(status code, message)``; events land on ``ctx.timeline``."""
        receiver = path.split("?", 1)[0].strip("/")
        if receiver not in self.receivers:
            return 404, f"unknown receiver {receiver!r} (known: {', '.join(self.receivers)})"
        try:
            size = int(length or "")
        except ValueError:
            return 411, "a Content-Length is required"
        if size > self.max_body_bytes:
            return 413, f"body of {size} bytes is over the {self.max_body_bytes}-byte limit"
        try:
            payload = json.loads(body.read(size))
            alerts = payload["alerts"]
            if not isinstance(alerts, list) or not all(isinstance(a, dict) for a in alerts):
                raise TypeError("alerts must be a list of objects")
        except (ValueError, KeyError, TypeError) as exc:
            return 400, f"not an Alertmanager webhook payload: {exc}"
        self.received.append((receiver, payload))
        for alert in alerts:
            labels = {str(k): str(v) for k, v in (alert.get("labels") or {}).items()}
            ctx.timeline.add("notification", receiver, alert=labels.get("alertname"), status=alert.get("status"),
                             labels=labels, severity=labels.get("severity"), group_key=payload.get("groupKey"),
                             starts_at=alert.get("startsAt"), ends_at=alert.get("endsAt"),
                             fingerprint=alert.get("fingerprint"))  # fmt: skip
        return 200, f"{len(alerts)} alert(s) recorded for {receiver}"
