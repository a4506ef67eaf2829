"""Platforms run the system they are given: a ``SystemDescription`` of other names (two replicas ``web-0`` and
``web-1``, a store ``db``, no fault proxy; or no feature store at all) yields a topology of exactly those
services — on the fake, the kubernetes (fed recorded pod events) and the local platform — and ``build_platform``
hands a run's ``plan.system`` through. Nothing in a platform spells a bundled service name."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from faultdrill.experiments.engine.plan import build_plan
from faultdrill.experiments.engine.runtime import RunParts
from faultdrill.experiments.journal.timeline import Timeline
from faultdrill.experiments.platforms import build_platform
from faultdrill.experiments.platforms.fake import FakePlatform
from faultdrill.experiments.platforms.kubernetes.events import PodTracker
from faultdrill.experiments.platforms.kubernetes.platform import KubernetesPlatform
from faultdrill.experiments.platforms.local.platform import LocalPlatform
from faultdrill.experiments.platforms.local.stack import LocalStack
from faultdrill.experiments.spec.experiment import TargetSpec
from faultdrill.experiments.spec.kubernetes import KubernetesSettings
from faultdrill.experiments.spec.loader import load_experiment_text
from faultdrill.experiments.spec.system import Service, SystemDescription, bundled_system
from faultdrill.faults.errors import ConfigError
from faultdrill.faults.registry import FaultRegistry

ROOT = Path(__file__).resolve().parents[3]

WEB = SystemDescription(name="web", services=(
    Service(name="web-0", role="replica", capabilities=frozenset({"admin_api", "metrics"})),
    Service(name="web-1", role="replica", capabilities=frozenset({"admin_api", "metrics"})),
    Service(name="db", role="feature_store", capabilities=frozenset({"admin_api", "tls"})),
))  # fmt: skip
"""Two replicas and a feature store of other names, no fault proxy."""

STORELESS = SystemDescription(name="storeless", services=(Service(name="solo", role="replica"),))

SPEC = """apiVersion: faultdrill/v1
kind: Experiment
metadata: {name: described}
target: {replicas: 3}
"""


def _names(topology: Any) -> list[str]:
    return sorted(topology.services)


# -- the fake ------------------------------------------------------------------------------------
def test_the_fake_platform_runs_exactly_the_described_services() -> None:
    fake = FakePlatform(system=WEB)
    topo = fake.topology()
    assert _names(topo) == ["db", "service", "web-0", "web-1"]
    assert [h.name for h in topo.by_role("replica")] == ["web-0", "web-1"]
    assert topo.get("db").role == "feature_store" and topo.by_role("proxy") == []
    fake.stop("db")
    fake.kill("web-1", 9)
    assert fake.calls == [("stop", "db", True), ("kill", "web-1", 9)] and fake.held == {"db"}
    with pytest.raises(ConfigError, match="unknown target"):
        fake.stop("replica-0")  # a bundled name means nothing here
    assert _names(FakePlatform(system=STORELESS).topology()) == ["service", "solo"]


def test_the_fake_platform_defaults_to_the_bundled_system() -> None:
    topo = FakePlatform(replicas=2).topology()
    bundled = bundled_system(replicas=2)
    assert _names(topo) == sorted([*bundled.names(), "service"])
    proxy = topo.get(bundled.one("proxy"))
    assert proxy.upstream_of == bundled.one("feature_store")


# -- build_platform hands the description through ---------------------------------------------------
def test_build_platform_hands_the_description_to_the_platform(tmp_path: Path) -> None:
    timeline = Timeline()
    local = build_platform(TargetSpec(), system=WEB, timeline=timeline, workdir=tmp_path / "local")
    assert isinstance(local, LocalPlatform) and local.system is WEB and local.stack.described is WEB
    kube = build_platform(TargetSpec(platform="kubernetes", kubernetes=KubernetesSettings()), system=WEB,
                          timeline=timeline, workdir=tmp_path / "kube")  # fmt: skip
    assert isinstance(kube, KubernetesPlatform) and kube.system is WEB and kube.replicas == 2
    bare = build_platform(timeline=timeline, workdir=tmp_path / "bare", system=STORELESS)
    assert isinstance(bare, LocalPlatform) and bare.system is STORELESS
    # no description: the bundled system the target (or the keywords) describe
    default = build_platform(TargetSpec(replicas=3), timeline=timeline, workdir=tmp_path / "default")
    assert isinstance(default, LocalPlatform) and default.system == bundled_system(replicas=3)
    keywords = build_platform(timeline=timeline, workdir=tmp_path / "kw", replicas=2, with_proxy=False)
    assert isinstance(keywords, LocalPlatform)
    assert keywords.system == bundled_system(replicas=2, store_proxy=False)


def test_a_run_builds_its_platform_from_the_plan_system(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = load_experiment_text(SPEC, file="described.yaml")
    plan = build_plan(spec, FaultRegistry.installed(), source="described.yaml")
    seen: dict[str, Any] = {}

    def fake_build(target: TargetSpec | None = None, **kwargs: Any) -> FakePlatform:
        seen.update(kwargs)
        return FakePlatform(system=kwargs["system"])

    monkeypatch.setattr("faultdrill.experiments.engine.runtime.build_platform", fake_build)
    parts = RunParts(plan, Timeline(), tmp_path, run_dir=tmp_path / "run")
    parts.platform_up()
    assert seen["system"] is plan.system
    assert parts.platform is not None
    assert [h.name for h in parts.platform.topology().by_role("replica")] == plan.system.replicas()
    parts.close()


# -- kubernetes: slots and Deployments from the description ------------------------------------------
def _pod(name: str, app: str, *, ready: bool = True, uid: str | None = None) -> dict[str, Any]:
    return {"metadata": {"name": name, "uid": uid or f"uid-{name}", "labels": {"app.kubernetes.io/name": app}},
            "status": {"containerStatuses": [{"name": "target", "restartCount": 0, "state": {"running": {}}}],
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}  # fmt: skip


def test_replica_slots_follow_the_description() -> None:
    assert [WEB.replica_slot(i) for i in range(4)] == ["web-0", "web-1", "web-2", "web-3"]
    named = SystemDescription(name="n", services=(Service(name="blue", role="replica"),))
    assert [named.replica_slot(i) for i in range(3)] == ["blue", "blue-1", "blue-2"]
    assert [bundled_system(replicas=1).replica_slot(i) for i in range(2)] == ["replica-0", "replica-1"]
    assert SystemDescription(name="none", services=()).replica_slot(0) == "replica-0"


def test_the_pod_tracker_names_pods_after_the_description() -> None:
    tracker = PodTracker(slot=WEB.replica_slot, apps={"feature-store": "db"})
    for pod, app in (("target-a", "target"), ("target-b", "target"), ("target-c", "target"),
                     ("feature-store-x", "feature-store")):  # fmt: skip
        tracker.feed({"type": "ADDED", "object": _pod(pod, app)})
    assert tracker.replicas() == {"web-0": "target-a", "web-1": "target-b", "web-2": "target-c"}  # a surge pod
    assert tracker.service_of("feature-store-x") == "db"


def test_the_kubernetes_platform_topology_has_exactly_the_described_services() -> None:
    settings = KubernetesSettings(service_url="http://127.0.0.1:1")
    kube = KubernetesPlatform(settings, system=WEB, timeline=Timeline())
    for pod, app in (("target-a", "target"), ("target-b", "target"), ("feature-store-x", "feature-store")):
        kube.feed({"type": "ADDED", "object": _pod(pod, app)})
    topo = kube.topology()
    assert _names(topo) == ["db", "service", "web-0", "web-1"]
    assert topo.get("db").kube is not None and topo.get("db").kube.deployment == "feature-store"  # type: ignore[union-attr]
    assert kube.ready_replicas() == ["web-0", "web-1"] and kube.replicas == 2
    assert kube._apps() == ["target", "feature-store"]
    # no feature store described: its Deployment is neither watched nor in the topology
    solo = KubernetesPlatform(settings, system=STORELESS, timeline=Timeline())
    solo.feed({"type": "ADDED", "object": _pod("target-a", "target")})
    assert _names(solo.topology()) == ["service", "solo"] and solo._apps() == ["target"]


# -- local: what the stack would start, and a real start ---------------------------------------------
def test_the_local_stack_refuses_a_service_it_cannot_start(tmp_path: Path) -> None:
    odd = SystemDescription(name="odd", services=(Service(name="hog-1", role="hog"),))
    with pytest.raises(ConfigError, match="starts no service of role 'hog'"):
        LocalStack(tmp_path, system=odd)
    stray = SystemDescription(name="stray", services=(
        Service(name="web-0", role="replica"), Service(name="edge", role="proxy", upstream_of="web-0")))  # fmt: skip
    with pytest.raises(ConfigError, match="fault proxy 'edge' must stand in front of"):
        LocalStack(tmp_path, system=stray)
    assert LocalStack(tmp_path, replicas=2, with_proxy=False).described == bundled_system(replicas=2,
                                                                                          store_proxy=False)


@pytest.mark.slow
def test_a_local_platform_of_another_description_starts_exactly_those_services(tmp_path: Path) -> None:
    with LocalPlatform(tmp_path / "plat", system=WEB, timeline=Timeline()) as platform:
        topo = platform.topology()
        assert _names(topo) == ["db", "service", "web-0", "web-1"]
        assert platform.ready_replicas() == ["web-0", "web-1"]
        assert topo.get("db").role == "feature_store" and topo.by_role("proxy") == []
        assert (tmp_path / "plat" / "db.log").exists() and (tmp_path / "plat" / "web-1.log").exists()
        platform.restart("db")  # supervised under its described name
        assert [e.source for e in platform.timeline.select("process") if e.get("event") == "restart"] == ["db"]
        assert platform.environment("gpu").device == "cpu"  # asked web-0 (no replica-0 to ask)


def test_no_platform_spells_a_bundled_service_name() -> None:
    spelled = re.compile(r'"replica-|"feature-store"')
    found = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
             for folder in ("experiments/platforms", "experiments/chaostoolkit", "experiments/engine")
             for path in sorted((ROOT / folder).rglob("*.py"))
             for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if spelled.search(line)]  # fmt: skip
    assert found == [], "\n".join(found)
