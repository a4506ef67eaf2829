"""The Plan: fault configs parsed once and bound to their plugin, the system described by data, dry-run lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from faultdrill.experiments.engine.plan import build_plan
from faultdrill.experiments.engine.schedule import FaultScheduler
from faultdrill.experiments.journal.timeline import Timeline
from faultdrill.experiments.spec.loader import load_experiment, load_experiment_text
from faultdrill.experiments.spec.system import bundled_role, bundled_system
from faultdrill.faults.base import FaultContext
from faultdrill.faults.errors import ConfigError
from faultdrill.faults.registry import FaultRegistry

ROOT = Path(__file__).resolve().parents[3]
SPEC = """\
apiVersion: faultdrill/v1
kind: Experiment
metadata: {name: plan}
target: {replicas: 2, feature_store_netns: true, memory_limit: 700Mi, cache: {enabled: true}}
faults:
  - {id: cut, type: network_partition, target: feature-store, at: 5s, duration: 10s, params: {action: reject}}
  - {id: kill, type: process_kill, target: replica-1, after: cut.end, duration: 5s}
"""


def test_each_fault_is_parsed_once_and_the_scheduler_injects_through_the_planned_instance(tmp_path: Path) -> None:
    registry = FaultRegistry.installed()
    plan = build_plan(load_experiment_text(SPEC, file="plan.yaml", registry=registry), registry, source="plan.yaml")
    assert [f.id for f in plan.faults] == ["cut", "kill"]
    assert plan.fault("cut").mode == "reject" and plan.fault("kill").mode == "sigkill"
    scheduler = FaultScheduler(plan.faults, Timeline(), lambda: FaultContext.create(tmp_path))
    assert [s.fault for s in scheduler.faults] == [f.fault for f in plan.faults]  # same instances, not new ones
    assert [s.config for s in scheduler.faults] == [f.config for f in plan.faults]


def test_a_bad_param_is_located_in_the_source_file() -> None:
    registry = FaultRegistry.installed()
    spec = load_experiment_text(SPEC, file="plan.yaml", registry=registry)
    bad = spec.faults[0].model_copy(update={"params": {"action": "explode"}})
    with pytest.raises(ConfigError) as err:
        build_plan(spec.model_copy(update={"faults": [bad]}), registry, source="plan.yaml")
    assert err.value.file == "plan.yaml" and err.value.field == "action"


def test_the_system_is_described_once_and_the_dry_run_topology_is_built_from_it() -> None:
    registry = FaultRegistry.installed()
    plan = build_plan(load_experiment_text(SPEC, file="plan.yaml", registry=registry), registry, source="plan.yaml")
    system = plan.system
    assert system.names() == ["replica-0", "replica-1", "feature-store", "feature-store-proxy", "cache", "cache-proxy"]
    assert system.replicas() == ["replica-0", "replica-1"] and system.proxy_of("cache") == "cache-proxy"
    assert "own_netns" in system.get("feature-store").capabilities  # type: ignore[union-attr]
    assert system.supervised() == ["replica-0", "replica-1", "feature-store", "cache"]
    topology = plan.topology()
    assert set(topology.services) == set(system.names())
    assert topology.services["replica-1"].cgroup is not None  # memory_limit: the replicas get a cgroup
    assert topology.services["feature-store"].netns == "fd-<run>"
    assert topology.services["cache-proxy"].upstream_of == "cache"


def test_dry_run_lines_name_each_faults_exact_changes() -> None:
    registry = FaultRegistry.installed()
    path = ROOT / "experiments" / "catalog" / "network_partition.yaml"
    plan = build_plan(load_experiment(path, registry), registry, source=path)
    lines = plan.lines()
    assert lines[0].startswith("platform local: feature store (TLS, own network namespace)")
    fault = next(i for i, line in enumerate(lines) if line.startswith("fault "))
    assert "network_partition on feature-store" in lines[fault]
    assert lines[fault + 1].startswith("    ") and "resolved against the running target" not in lines[fault + 1]
    assert lines[-1].startswith("expect: ")


def test_fault_roles_are_declared_on_the_fault_classes() -> None:
    roles = FaultRegistry.installed().target_roles()
    assert roles["gpu_memory_exhaustion"] == ("replica",) and roles["network_degradation"] == ("proxy",)
    assert roles["cert_expiry"] == ("feature_store", "replica") and "fake" not in roles  # fake: any service


def test_bundled_naming_scheme() -> None:
    assert [bundled_role(n) for n in ("canary-0", "cache-proxy", "database")] == ["replica", "proxy", None]
    system = bundled_system(replicas=1, canary_replicas=2)
    assert system.canaries() == ["canary-0", "canary-1"] and system.replicas() == ["replica-0"]
    with pytest.raises(ValueError, match="2 services of role 'proxy'"):
        bundled_system(replicas=1, cache=True).one("proxy")


def test_a_run_gets_a_private_model_registry_only_when_something_writes_it() -> None:
    """Lean run folders: the catalog's smoke test reads the shared cache; model_load_failure corrupting an artifact
    and a canary rollout (it publishes versions) get a registry of their own."""
    registry = FaultRegistry.installed()

    def private(text: str) -> bool:
        return build_plan(load_experiment_text(text, file="p.yaml", registry=registry), registry,
                          source="p.yaml").system.private_models  # fmt: skip

    assert private(SPEC) is False
    smoke = ROOT / "experiments" / "catalog" / "smoke.yaml"
    assert build_plan(load_experiment(smoke, registry), registry, source=smoke).system.private_models is False
    bad = ROOT / "experiments" / "catalog" / "model_load_failure.yaml"  # bad_version: a restart, no file written
    assert build_plan(load_experiment(bad, registry), registry, source=bad).system.private_models is False
    corrupt = SPEC + "  - {id: bad, type: model_load_failure, target: replica-0, at: 1s, duration: 5s}\n"
    assert private(corrupt) is True  # mode corrupt (the default) flips bytes of an artifact
    canary = SPEC.replace("cache: {enabled: true}}", "cache: {enabled: true}, canary: {replicas: 1}}")
    assert private(canary) is True
    assert bundled_system(replicas=1).private_models is True  # no plan (fault tests, the plugin): private, as before
