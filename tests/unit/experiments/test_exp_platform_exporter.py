"""PlatformExporter: kube-state-metrics/cAdvisor series from process events and cgroup files, over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from faultdrill.experiments.journal.timeline import Timeline
from faultdrill.experiments.observe.observers import ObserverContext
from faultdrill.experiments.platforms.local import exporter as exporter_mod
from faultdrill.experiments.platforms.local.exporter import PlatformExporter, cgroup_memory
from faultdrill.faults.topology import ServiceHandle, Topology

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def fake_cgroup(root: Path, usage: str, limit: str, inactive: int, *, v2: bool = False) -> Path:
    root.mkdir(parents=True)
    if v2:
        (root / "memory.current").write_text(usage + "\n")
        (root / "memory.max").write_text(limit + "\n")
        (root / "memory.stat").write_text(f"anon 1\ninactive_file {inactive}\nactive_file 2\n")
    else:
        (root / "memory.usage_in_bytes").write_text(usage + "\n")
        (root / "memory.limit_in_bytes").write_text(limit + "\n")
        (root / "memory.stat").write_text(f"cache 5\ninactive_file 7\ntotal_inactive_file {inactive}\n")
    return root


def synthetic_timeline() -> Timeline:
    tl = Timeline()
    add = tl.add
    # replica-0: ready, OOM-killed, restarted after back-off, ready again.
    add("process", "replica-0", t=0.0, event="start", pid=10, restarts=0)
    add("process", "replica-0", t=1.0, event="ready", pid=10)
    add("process", "replica-0", t=5.0, event="exit", pid=10, code=137, signal=9, reason="OOMKilled", backoff_s=1.0)
    add("process", "replica-0", t=6.0, event="restart", pid=11, restarts=1, reason="OOMKilled", backoff_s=1.0)
    add("process", "replica-0", t=7.0, event="ready", pid=11)
    # replica-1: crashed twice; waiting in back-off now.
    add("process", "replica-1", t=0.0, event="start", pid=20, restarts=0)
    add("process", "replica-1", t=2.0, event="exit", pid=20, code=1, signal=None, reason="Error", backoff_s=1.0)
    add("process", "replica-1", t=3.0, event="restart", pid=21, restarts=1, reason="Error", backoff_s=1.0)
    add("process", "replica-1", t=3.5, event="exit", pid=21, code=1, signal=None, reason="Error", backoff_s=2.0)
    # feature-store: running, never ready yet.  replica-2: held down (no back-off).
    add("process", "feature-store", t=0.0, event="start", pid=30, restarts=0)
    add("process", "replica-2", t=0.0, event="start", pid=40, restarts=0)
    add("process", "replica-2", t=1.0, event="ready", pid=40)
    add("process", "replica-2", t=4.0, event="exit", pid=40, code=143, signal=15, reason="Signal", backoff_s=None)
    add("probe", "replica-0", t=8.0, probe="readiness", value=True)  # other kinds are ignored
    return tl


@pytest.fixture
def scraped(tmp_path: Path) -> Iterator[tuple[Samples, str]]:
    cg0 = fake_cgroup(tmp_path / "cg0", usage="500000000", limit="734003200", inactive=100_000_000)
    cg1 = fake_cgroup(tmp_path / "cg1", usage="200", limit=str(2**63 - 4096), inactive=500)
    cg3 = fake_cgroup(tmp_path / "cg3", usage="4096", limit="max", inactive=96, v2=True)
    topo = Topology(services={
        "replica-0": ServiceHandle(name="replica-0", role="replica", url="http://127.0.0.1:1", cgroup=str(cg0)),
        "replica-1": ServiceHandle(name="replica-1", role="replica", url="http://127.0.0.1:2", cgroup=str(cg1)),
        "replica-2": ServiceHandle(name="replica-2", role="replica", url="http://127.0.0.1:3"),
        "replica-3": ServiceHandle(name="replica-3", role="replica", url="http://127.0.0.1:4", cgroup=str(cg3)),
        "feature-store": ServiceHandle(name="feature-store", role="feature_store", url="https://127.0.0.1:5"),
        "feature-store-proxy": ServiceHandle(name="feature-store-proxy", role="proxy"),
    })  # fmt: skip
    exp = PlatformExporter()
    exp.start(ObserverContext(synthetic_timeline(), topology=lambda: topo))
    try:
        text = httpx.get(f"{exp.url}/metrics", timeout=5).text
    finally:
        exp.stop()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    yield samples, text


def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted({"namespace": "faultdrill", **labels}.items()))


def test_public_api_is_pinned() -> None:
    assert sorted(exporter_mod.__all__) == ["PlatformExporter", "cgroup_memory"]


def test_restarts_and_last_terminated_reason(scraped: tuple[Samples, str]) -> None:
    s, text = scraped
    r0, r1 = {"pod": "replica-0", "container": "target"}, {"pod": "replica-1", "container": "target"}
    assert s[key("kube_pod_container_status_restarts_total", **r0)] == 1
    assert s[key("kube_pod_container_status_restarts_total", **r1)] == 1
    assert s[key("kube_pod_container_status_last_terminated_reason", reason="OOMKilled", **r0)] == 1
    assert s[key("kube_pod_container_status_last_terminated_reason", reason="Error", **r1)] == 1
    reasons = [k for k in s if k[0] == "kube_pod_container_status_last_terminated_reason"]
    assert len(reasons) == 3, "only the last reason per container (feature-store never exited)"
    assert "# TYPE kube_pod_container_status_restarts_total counter" in text


def test_crash_loop_running_and_ready(scraped: tuple[Samples, str]) -> None:
    s, _ = scraped
    loop = "kube_pod_container_status_waiting_reason"
    for pod, waiting, running, ready in [("replica-0", 0, 1, 1), ("replica-1", 1, 0, 0), ("replica-2", 0, 0, 0),
                                         ("replica-3", 0, 0, 0)]:  # fmt: skip
        labels = {"pod": pod, "container": "target"}
        assert s[key(loop, reason="CrashLoopBackOff", **labels)] == waiting, pod
        assert s[key("kube_pod_container_status_running", **labels)] == running, pod
        assert s[key("kube_pod_status_ready", pod=pod, condition="true")] == ready, pod
        assert s[key("kube_pod_status_ready", pod=pod, condition="false")] == 1 - ready, pod
    fs = {"pod": "feature-store", "container": "feature-store"}
    assert s[key("kube_pod_container_status_running", **fs)] == 1
    assert s[key("kube_pod_status_ready", pod="feature-store", condition="true")] == 0
    assert not any(dict(k[1]).get("pod") == "feature-store-proxy" for k in s), "the proxy is no pod here"


def test_memory_series_from_cgroup_files(scraped: tuple[Samples, str]) -> None:
    s, _ = scraped
    ws, lim = "container_memory_working_set_bytes", "container_spec_memory_limit_bytes"
    assert s[key(ws, pod="replica-0", container="target")] == 400_000_000
    assert s[key(lim, pod="replica-0", container="target")] == 734003200
    assert s[key(ws, pod="replica-1", container="target")] == 0, "never below zero"
    assert s[key(lim, pod="replica-1", container="target")] == 0, "v1 'unlimited' is 0, as cAdvisor"
    assert s[key(ws, pod="replica-3", container="target")] == 4000
    assert s[key(lim, pod="replica-3", container="target")] == 0, "v2 'max' is 0"
    assert key(ws, pod="replica-2", container="target") not in s, "no cgroup, no sample"


def test_cgroup_memory_missing_files(tmp_path: Path) -> None:
    assert cgroup_memory(tmp_path / "gone") == (None, None)
    (tmp_path / "memory.usage_in_bytes").write_text("100")
    assert cgroup_memory(tmp_path) == (100, None)


def test_series_follow_the_timeline_at_scrape_time() -> None:
    tl = Timeline()
    topo = Topology(services={"replica-0": ServiceHandle(name="replica-0", role="replica")})
    exp = PlatformExporter()
    exp.start(ObserverContext(tl, topology=lambda: topo))
    try:
        url = f"{exp.url}/metrics"
        assert 'kube_pod_container_status_running{container="target",namespace="faultdrill",pod="replica-0"} 0.0' in (
            httpx.get(url, timeout=5).text)  # fmt: skip
        tl.add("process", "replica-0", event="start", pid=1, restarts=0)
        assert 'kube_pod_container_status_running{container="target",namespace="faultdrill",pod="replica-0"} 1.0' in (
            httpx.get(url, timeout=5).text)  # fmt: skip
    finally:
        exp.stop()
    with pytest.raises(RuntimeError, match="not started"):
        _ = exp.url
