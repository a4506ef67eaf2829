"""A real Prometheus + Alertmanager, the platform exporter, the webhook receiver and the alert watcher.

A tiny metrics endpoint (one gauge the test flips) is scraped by a real Prometheus whose rule
(``FlipHigh: flip_gauge > 0 for 2m``, production-shaped) runs time-scaled by 60 (so 2 s);
Alertmanager routes the critical alert to ``pager`` on faultdrill's webhook receiver. The
test flips the gauge and checks the alert's pending → firing → resolved on the timeline and
the firing and resolved notifications, and prints the measured delays.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from faultdrill.experiments.alerting.stack import ObservabilityStack, ScrapeTarget, scrape_targets
from faultdrill.experiments.alerting.watch import AlertWatcher, WebhookReceiver
from faultdrill.experiments.journal.timeline import Event, Timeline
from faultdrill.experiments.observe.observers import ObserverContext, ObserverGroup
from faultdrill.experiments.platforms.local.exporter import PlatformExporter
from faultdrill.faults.topology import ServiceHandle, Topology

pytestmark = pytest.mark.slow

RULES = {"groups": [{"name": "flip", "rules": [{
    "alert": "FlipHigh", "expr": "max by (pod) (flip_gauge) > 0", "for": "2m",
    "labels": {"severity": "critical"}, "annotations": {"summary": "flip_gauge is {{ $value }}"},
}]}]}  # fmt: skip
ALERTMANAGER = {
    "route": {"receiver": "chat", "group_by": ["alertname", "severity"], "group_wait": "30s",
              "group_interval": "1m", "repeat_interval": "4h",
              "routes": [{"receiver": "pager", "matchers": ['severity="critical"'], "group_wait": "10s"}]},
    "receivers": [{"name": n, "webhook_configs": [{"url": f"http://127.0.0.1:9095/{n}", "send_resolved": True}]}
                  for n in ("pager", "chat", "ticket")],
}  # fmt: skip


def wait_for(what: str, found: Callable[[], Event | None], timeout_s: float) -> Event:
    deadline = time.monotonic() + timeout_s
    for _ in range(int(timeout_s / 0.05) + 1):
        event = found()
        if event is not None:
            return event
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    raise AssertionError(f"no {what} within {timeout_s}s")


@pytest.mark.tools("prometheus", "promtool", "prometheus-alertmanager", "amtool")
def test_alert_lifecycle_through_real_prometheus_and_alertmanager(tmp_path: Path) -> None:
    began = time.monotonic()
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(RULES))
    (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(ALERTMANAGER))
    registry = CollectorRegistry()
    gauge = Gauge("flip_gauge", "A gauge the test flips.", registry=registry)
    metrics_server, metrics_thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    tl = Timeline()
    replica = ServiceHandle(name="replica-0", role="replica", url="http://127.0.0.1:1")  # for the exporter only
    ctx = ObserverContext(tl, topology=lambda: Topology(services={"replica-0": replica}))
    receiver, exporter = WebhookReceiver(("pager", "chat", "ticket")), PlatformExporter()
    observers = ObserverGroup([receiver, exporter])
    observers.start(ctx)
    tl.add("process", "replica-0", event="start", pid=1, restarts=0)
    labels = {"namespace": "faultdrill", "pod": "replica-0", "container": "target", "service": "target"}
    targets = [ScrapeTarget("target", f"127.0.0.1:{metrics_server.server_port}", labels),
               *scrape_targets(Topology(), exporter.url)]  # fmt: skip
    obs = ObservabilityStack(tmp_path / "obs", rules_file=tmp_path / "rules.yml",
                             alertmanager_config=tmp_path / "alertmanager.yml", webhook_url=receiver.base_url,
                             targets=targets, speedup=60, scrape_interval_s=0.5, evaluation_interval_s=0.5)  # fmt: skip
    watcher: AlertWatcher | None = None
    pids: dict[str, int] = {}
    try:
        with obs:
            pids = obs.pids
            assert set(pids) == {"prometheus", "alertmanager"}
            assert obs.versions()["prometheus"].startswith("2.") and obs.versions()["alertmanager"].startswith("0.")
            first_sample_s = obs.wait_first_samples(20)
            up = httpx.get(f"{obs.prometheus_url}/api/v1/query", params={"query": "up"}, timeout=5).json()
            assert {r["metric"]["job"]: r["value"][1] for r in up["data"]["result"]} == {
                "target": "1", "kube-state-metrics": "1"}, "both targets scraped, and healthy"  # fmt: skip
            watcher = AlertWatcher(obs.prometheus_url, period_s=0.25)
            watcher.start(ctx)

            flip = tl.now()
            gauge.set(1)
            firing = wait_for("firing alert", lambda: tl.first("alert", source="FlipHigh", state="firing"), 10)
            notified = wait_for("firing notification",
                                lambda: tl.first("notification", source="pager", status="firing"), 5)  # fmt: skip
            pending = tl.first("alert", source="FlipHigh", state="pending")
            assert pending is not None, "pending comes before firing"
            assert flip - 0.05 <= pending.t <= firing.t <= notified.t
            assert firing.t - pending.t >= 2.0 - 0.6, "for: 2m scaled by 60 is 2 s (± one evaluation)"
            assert pending.get("labels") == {"alertname": "FlipHigh", "pod": "replica-0", "severity": "critical"}
            assert (notified.get("alert"), notified.get("severity")) == ("FlipHigh", "critical")
            assert tl.select("notification", source="chat") == [], "critical goes to pager only"

            unflip = tl.now()
            gauge.set(0)
            resolved = wait_for("resolved alert", lambda: tl.first("alert", source="FlipHigh", state="resolved"), 5)
            cleared = wait_for("resolved notification",
                               lambda: tl.first("notification", source="pager", status="resolved"), 5)  # fmt: skip
            # The watcher sees "gone" at its next poll (<= 0.25 s late); the poll before still saw it.
            assert unflip <= resolved.t <= cleared.t + 0.3 and resolved.get("last_seen") < resolved.t
            print(f"\nfirst sample {first_sample_s:.2f}s after Prometheus started; "
                  f"flip->pending {pending.t - flip:.2f}s, flip->firing {firing.t - flip:.2f}s, "
                  f"flip->notification {notified.t - flip:.2f}s; unflip->resolved {resolved.t - unflip:.2f}s, "
                  f"unflip->resolved notification {cleared.t - unflip:.2f}s")  # fmt: skip
    finally:
        if watcher is not None:
            watcher.stop()
        observers.stop()
        metrics_server.shutdown()
        metrics_server.server_close()
        metrics_thread.join(5)
    for name, pid in pids.items():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # gone: stopped and reaped
        assert name in ("prometheus", "alertmanager")
    assert [e.get("state") for e in tl.select("alert")] == ["pending", "firing", "resolved"]
    assert time.monotonic() - began < 30, "keep this test short"
