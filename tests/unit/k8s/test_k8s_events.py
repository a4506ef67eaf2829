"""Pod watch events (API-shaped V1Pod JSON) → the timeline's process and probe events.

``tests/fixtures/k8s/pod_watch_events.json`` is a watch sequence in the API's own JSON shape:
a replica starting and becoming ready, an OOMKilled restart, a second replica crashing with
exit 1 into CrashLoopBackOff, its deletion and a replacement pod taking its slot. The same
sequence is also streamed through the real client's watch (``?watch=true``, one JSON object
per line) from a loopback server into :class:`KubernetesPlatform.feed`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from faultdrill.experiments.journal.timeline import Timeline
from faultdrill.experiments.platforms.kubernetes.events import PodTracker
from faultdrill.experiments.platforms.kubernetes.platform import KubernetesPlatform
from faultdrill.experiments.spec.kubernetes import KubernetesSettings

EVENTS = json.loads((Path(__file__).resolve().parents[2] / "fixtures" / "k8s" / "pod_watch_events.json").read_text())


def _flat(events: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, str, Any]]:
    return [(svc, a["event"], a.get("reason")) for svc, a in events]


def test_k8s_events_translate_a_watch_sequence() -> None:
    tracker = PodTracker()
    out = [e for ev in EVENTS for e in tracker.feed(ev)]
    assert _flat(out) == [
        ("replica-0", "start", None),
        ("replica-0", "ready", None),
        ("replica-1", "start", None),
        ("replica-1", "ready", None),
        ("replica-0", "exit", "OOMKilled"),
        ("replica-0", "restart", "OOMKilled"),
        ("replica-0", "unready", None),
        ("replica-0", "ready", None),
        ("replica-1", "exit", "Error"),
        ("replica-1", "restart", "Error"),
        ("replica-1", "unready", None),
        ("replica-1", "start", None),  # the replacement pod takes the freed slot
        ("replica-1", "ready", None),
    ]
    oom = next(a for _, a in out if a.get("reason") == "OOMKilled" and a["event"] == "exit")
    assert (oom["code"], oom["signal"], oom["ran_s"], oom["pod"]) == (137, 9, 188.0, "target-7c9d5b8f4-x2kqp")
    crash = next(a for _, a in out if a["event"] == "restart" and a["reason"] == "Error")
    assert crash["waiting"] == "CrashLoopBackOff" and crash["restarts"] == 1
    assert tracker.replicas() == {"replica-0": "target-7c9d5b8f4-x2kqp", "replica-1": "target-7c9d5b8f4-q4tlr"}


def test_k8s_events_deleted_running_pod_exits_and_a_repeat_is_silent() -> None:
    tracker = PodTracker()
    running = EVENTS[3]  # replica B, running and ready
    assert _flat(tracker.feed(running)) == [("replica-0", "start", None), ("replica-0", "ready", None)]
    assert tracker.feed(running) == []  # the same state again: nothing new
    gone = tracker.feed({"type": "DELETED", "object": running["object"]})
    assert [(a["event"], a.get("cause")) for _, a in gone] == [("exit", "deleted"), ("unready", None)]
    assert tracker.replicas() == {}


def test_k8s_events_through_the_real_watch_stream_onto_the_timeline(
    serve_http: Callable[[type[BaseHTTPRequestHandler]], str], tmp_path: Path
) -> None:
    from kubernetes import client, watch

    lines = b"".join(json.dumps(ev).encode() + b"\n" for ev in EVENTS)

    class Watch(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            assert "watch=true" in self.path and "labelSelector=" in self.path
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(lines)))
            self.end_headers()
            self.wfile.write(lines)

    cfg = client.Configuration()
    cfg.host = serve_http(Watch)
    api = client.ApiClient(cfg)
    timeline = Timeline()
    platform = KubernetesPlatform(KubernetesSettings(), replicas=2, timeline=timeline)
    platform.api = api
    for ev in watch.Watch().stream(client.CoreV1Api(api).list_namespaced_pod, "faultdrill",
                                   label_selector="faultdrill.io/chaos-target=true", timeout_seconds=5):  # fmt: skip
        platform.feed({"type": ev["type"], "object": api.sanitize_for_serialization(ev["object"])})
        if ev["object"].metadata.resource_version == "1010":
            break
    process = [(e.source, e.attrs["event"], e.attrs.get("reason")) for e in timeline.select("process")]
    assert process[4:6] == [("replica-0", "exit", "OOMKilled"), ("replica-0", "restart", "OOMKilled")]
    probes = [(e.source, e.attrs["value"]) for e in timeline.select("probe")]
    assert probes[:3] == [("replica-0", True), ("replica-1", True), ("replica-0", False)]
    assert platform.ready_replicas() == ["replica-0", "replica-1"]
    assert platform.restarts("replica-0") == 1
    assert platform.exit_status("replica-1") == 1  # exit code 1 of the crash (137 would read as -9)
    topo = platform.topology()
    ref = topo.get("replica-0").kube
    assert ref is not None and ref.pod == "target-7c9d5b8f4-x2kqp"
    assert ref.pod_uid == "0b4e9c1d-5f6a-4e2b-8c3d-9a1b2c3d4e5f"
    assert platform.scope().namespaces == frozenset({"faultdrill"})
