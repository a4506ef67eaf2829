"""WebhookReceiver (real Alertmanager payloads) and AlertWatcher (against a stand-in Prometheus API).

The AlertWatcher against a real Prometheus runs in tests/integration/test_observability_stack.py.
"""

from __future__ import annotations

import copy
import io
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from faultdrill.experiments.alerting import watch as alerting
from faultdrill.experiments.alerting.watch import AlertWatcher, WebhookReceiver
from faultdrill.experiments.host.process import free_port
from faultdrill.experiments.journal.timeline import Timeline
from faultdrill.experiments.observe.observers import ObserverContext

# Captured from Alertmanager 0.25 (webhook payload version 4), a critical alert routed to pager.
FIRING: dict[str, Any] = {
    "receiver": "pager", "status": "firing",
    "alerts": [{
        "status": "firing",
        "labels": {"alertname": "FlipHigh", "instance": "127.0.0.1:46699", "job": "target", "pod": "p",
                   "severity": "critical"},
        "annotations": {"summary": "flip 1"},
        "startsAt": "2026-11-22T06:38:08.267Z", "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://vm:54913/graph?g0.expr=flip_gauge+%3E+0&g0.tab=1", "fingerprint": "abbf20c7154e643a",
    }],
    "groupLabels": {"alertname": "FlipHigh", "severity": "critical"},
    "commonLabels": {"alertname": "FlipHigh", "instance": "127.0.0.1:46699", "job": "target", "pod": "p",
                     "severity": "critical"},
    "commonAnnotations": {"summary": "flip 1"}, "externalURL": "http://vm:42059", "version": "4",
    "groupKey": "{}/{severity=\"critical\"}:{alertname=\"FlipHigh\", severity=\"critical\"}", "truncatedAlerts": 0,
}  # fmt: skip


def resolved_payload() -> dict[str, Any]:
    doc = copy.deepcopy(FIRING)
    doc["status"] = doc["alerts"][0]["status"] = "resolved"
    doc["alerts"][0]["endsAt"] = "2026-11-22T06:38:12.267Z"
    return doc


def test_public_api_is_pinned() -> None:
    assert sorted(alerting.__all__) == ["AlertWatcher", "MAX_BODY_BYTES", "WebhookReceiver"]


@pytest.fixture
def receiver() -> Iterator[tuple[WebhookReceiver, Timeline]]:
    tl = Timeline()
    rec = WebhookReceiver(("pager", "chat", "ticket"))
    rec.start(ObserverContext(tl))
    yield rec, tl
    rec.stop()


def test_webhook_records_firing_and_resolved(receiver: tuple[WebhookReceiver, Timeline]) -> None:
    rec, tl = receiver
    assert rec.base_url.startswith("http://127.0.0.1:")
    with httpx.Client(timeout=5) as client:
        assert client.post(f"{rec.base_url}/pager", json=FIRING).status_code == 200
        assert client.post(f"{rec.base_url}/pager", json=resolved_payload()).status_code == 200
    events = tl.select("notification")
    assert [(e.source, e.get("alert"), e.get("status")) for e in events] == [
        ("pager", "FlipHigh", "firing"), ("pager", "FlipHigh", "resolved")]  # fmt: skip
    first = events[0]
    assert first.get("severity") == "critical"
    assert first.get("labels")["pod"] == "p"
    assert first.get("group_key") == FIRING["groupKey"]
    assert (first.get("starts_at"), first.get("ends_at")) == ("2026-11-22T06:38:08.267Z", "0001-01-01T00:00:00Z")
    assert events[1].get("ends_at") == "2026-11-22T06:38:12.267Z"
    assert [r for r, _ in rec.received] == ["pager", "pager"]


def test_webhook_one_event_per_alert_of_a_group(receiver: tuple[WebhookReceiver, Timeline]) -> None:
    rec, tl = receiver
    doc = copy.deepcopy(FIRING)
    second = copy.deepcopy(doc["alerts"][0])
    second["labels"]["pod"] = "q"
    doc["alerts"].append(second)
    assert httpx.post(f"{rec.base_url}/chat?x=1", json=doc, timeout=5).status_code == 200
    assert [e.get("labels")["pod"] for e in tl.select("notification", source="chat")] == ["p", "q"]


@pytest.mark.parametrize(("path", "body", "code"), [
    ("/nobody", json.dumps(FIRING).encode(), 404),
    ("/", json.dumps(FIRING).encode(), 404),
    ("/pager", b"{not json", 400),
    ("/pager", b"[1, 2]", 400),
    ("/pager", b'{"alerts": "x"}', 400),
    ("/pager", b'{"version": "4"}', 400),
])  # fmt: skip
def test_webhook_rejects(receiver: tuple[WebhookReceiver, Timeline], path: str, body: bytes, code: int) -> None:
    rec, tl = receiver
    response = httpx.post(f"{rec.base_url}{path}", content=body, timeout=5)
    assert response.status_code == code
    assert response.json()["status"] == "error"
    assert len(tl) == 0 and rec.received == []


def test_webhook_body_limit(receiver: tuple[WebhookReceiver, Timeline]) -> None:
    rec, tl = receiver
    big = b'{"alerts": [], "pad": "' + b"x" * (1 << 20) + b'"}'
    assert httpx.post(f"{rec.base_url}/pager", content=big, timeout=5).status_code == 413
    code, text = rec.handle(ObserverContext(tl), "/pager", None, io.BytesIO(b"{}"))
    assert (code, text) == (411, "a Content-Length is required")
    assert len(tl) == 0


def test_webhook_stop_frees_the_port() -> None:
    rec = WebhookReceiver()
    with pytest.raises(RuntimeError, match="not started"):
        _ = rec.base_url
    rec.start(ObserverContext(Timeline()))
    url = rec.base_url
    rec.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.post(f"{url}/pager", json=FIRING, timeout=1)


class FakePrometheus:
    """Serves /api/v1/query?query=ALERTS and /api/v1/alerts from ``alerts`` (labels, state, activeAt wall)."""

    def __init__(self) -> None:
        self.alerts: list[tuple[dict[str, str], str, float]] = []
        self.queries: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                now = time.time()
                if url.path == "/api/v1/query":
                    owner.queries.append(parse_qs(url.query)["query"][0])
                    result = [{"metric": dict(labels, __name__="ALERTS", alertstate=state),
                               "value": [now - 0.2, "1"]} for labels, state, _ in owner.alerts]  # fmt: skip
                    doc: dict[str, Any] = {"status": "success", "data": {"resultType": "vector", "result": result}}
                elif url.path == "/api/v1/alerts":
                    alerts = [{"labels": labels, "state": state, "value": "1e+00", "annotations": {},
                               "activeAt": datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f123Z")}
                              for labels, state, at in owner.alerts]  # fmt: skip
                    doc = {"status": "success", "data": {"alerts": alerts}}
                else:
                    self.send_error(404)
                    return
                body = json.dumps(doc).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def prom() -> Iterator[FakePrometheus]:
    fake = FakePrometheus()
    yield fake
    fake.close()


def started(url: str, tl: Timeline) -> tuple[AlertWatcher, ObserverContext]:
    watcher = AlertWatcher(url, period_s=3600)  # after the poller's first tick, ticks are driven by hand
    ctx = ObserverContext(tl)
    watcher.start(ctx)
    for _ in range(200):
        if watcher._poller.ticks:
            break
        time.sleep(0.01)
    assert watcher._poller.ticks == 1
    return watcher, ctx


def test_watcher_pending_firing_resolved(prom: FakePrometheus) -> None:
    tl = Timeline()
    watcher, ctx = started(prom.url, tl)
    try:
        labels = {"alertname": "FlipHigh", "severity": "critical", "pod": "p"}
        assert watcher.poll_once(ctx) == 0
        active = time.time() - 0.5
        prom.alerts = [(labels, "pending", active)]
        assert watcher.poll_once(ctx) == 1
        assert watcher.poll_once(ctx) == 0, "no change, no event"
        prom.alerts = [(labels, "firing", active)]
        assert watcher.poll_once(ctx) == 1
        prom.alerts = []
        assert watcher.poll_once(ctx) == 1
        events = tl.select("alert")
        assert [(e.source, e.get("state")) for e in events] == [
            ("FlipHigh", "pending"), ("FlipHigh", "firing"), ("FlipHigh", "resolved")]  # fmt: skip
        pending = events[0]
        assert pending.get("labels") == labels and pending.get("severity") == "critical"
        # The pending event is placed at activeAt (to the millisecond), not at the poll.
        assert pending.t == pytest.approx(max(0.0, active - tl.start_wall), abs=0.002)
        assert pending.t <= events[1].t <= events[2].t
        assert events[1].t <= events[2].get("last_seen") <= events[2].t, "resolved between the last two polls"
        assert "ALERTS" in prom.queries
        assert watcher.polls == 6  # the poller's first tick, then five by hand
    finally:
        watcher.stop()


def test_watcher_keeps_instances_apart(prom: FakePrometheus) -> None:
    tl = Timeline()
    watcher, ctx = started(prom.url, tl)
    try:
        a = {"alertname": "Down", "pod": "replica-0", "severity": "warning"}
        b = {"alertname": "Down", "pod": "replica-1", "severity": "warning"}
        prom.alerts = [(a, "firing", time.time()), (b, "pending", time.time())]
        assert watcher.poll_once(ctx) == 2
        prom.alerts = [(b, "pending", time.time())]
        assert watcher.poll_once(ctx) == 1
        resolved = tl.select("alert", state="resolved")
        assert [e.get("labels")["pod"] for e in resolved] == ["replica-0"]
    finally:
        watcher.stop()


def test_watcher_skips_ticks_while_prometheus_is_unreachable(prom: FakePrometheus) -> None:
    tl = Timeline()
    watcher, ctx = started(f"http://127.0.0.1:{free_port()}", tl)
    try:
        began = time.monotonic()
        assert watcher.poll_once(ctx) == 0
        assert time.monotonic() - began < 0.5, "retries with back-off must be off"
        assert watcher.polls == 0 and len(tl) == 0
    finally:
        watcher.stop()
    # An alert seen before an outage is not "resolved" by the outage.
    watcher, ctx = started(prom.url, tl)
    try:
        prom.alerts = [({"alertname": "X", "severity": "ticket"}, "firing", time.time())]
        assert watcher.poll_once(ctx) == 1
        prom.close()
        assert watcher.poll_once(ctx) == 0
        assert [e.get("state") for e in tl.select("alert")] == ["firing"]
    finally:
        watcher.stop()


def test_watcher_polls_on_its_own(prom: FakePrometheus) -> None:
    tl = Timeline()
    prom.alerts = [({"alertname": "X", "severity": "warning"}, "firing", time.time())]
    watcher = AlertWatcher(prom.url, period_s=0.05)
    watcher.start(ObserverContext(tl))
    try:
        for _ in range(100):
            if tl.select("alert"):
                break
            time.sleep(0.02)
    finally:
        watcher.stop()
    assert [e.get("state") for e in tl.select("alert")] == ["firing"]
