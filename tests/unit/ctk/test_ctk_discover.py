"""``chaos discover faultdrill``: Chaos Toolkit finds our ``discover`` where it looks, and it lists
every fault's actions, the target's actions and the probes, with their arguments."""

from __future__ import annotations

import json

from faultdrill.faults.chaostoolkit import describe_activity, discover, fault_activities
from faultdrill.faults.fake import FakeFault
from faultdrill.faults.registry import FaultRegistry


def test_ctk_chaos_toolkit_resolves_our_distribution_to_a_discover_function():
    from chaoslib.discovery.package import get_discover_function, get_importname_from_package, load_package

    # chaoslib imports the distribution's top-level package: one installed name, faultdrill.
    module = get_importname_from_package("faultdrill")
    assert module == "faultdrill"
    assert get_discover_function(load_package("faultdrill")).__module__ == "faultdrill"


def test_ctk_discover_lists_every_fault_action_the_target_actions_and_the_probes():
    found = discover(discover_system=True)
    assert found["extension"]["name"] == "faultdrill" and found["target"] == "faultdrill"
    by_name = {a["name"]: a for a in found["activities"]}
    for name in FaultRegistry.installed().names():
        inject = by_name[f"inject_{name}"]
        assert inject["type"] == "action" and inject["mod"] == "faultdrill.faults.chaostoolkit"
        assert by_name[f"rollback_{name}"]["type"] == "action"
    for action in ("inject_fault", "rollback_fault", "faultdrill_up", "faultdrill_down"):
        assert by_name[action]["type"] == "action"
    for probe in ("replica_ready", "replica_live", "breaker_state", "alert_firing", "slo_availability",
                  "slo_latency_p95_ms"):
        assert by_name[probe]["type"] == "probe"
        assert by_name[probe]["mod"] == "faultdrill.experiments.chaostoolkit.probes"
    args = {a["name"]: a for a in by_name["inject_gpu_memory_exhaustion"]["arguments"]}
    assert args["target"] == {"name": "target", "type": "string"}
    assert args["device"] == {"name": "device", "default": 0, "type": "integer"}
    assert by_name["slo_availability"]["return_type"] == "number"
    assert by_name["replica_ready"]["return_type"] == "boolean"
    assert {f["name"] for f in found["system"]["faults"]} == set(FaultRegistry.installed().names())
    json.dumps(found)  # what `chaos discover` writes to discovery.json


def test_ctk_discover_without_system():
    assert discover(discover_system=False)["system"] is None


def test_ctk_plugin_faults_get_actions_too():
    registry = FaultRegistry()
    registry.register(FakeFault, source="tests")
    acts = fault_activities(registry)
    assert sorted(acts) == ["inject_fake", "rollback_fake"]
    described = describe_activity(acts["inject_fake"], "action")
    assert [a["name"] for a in described["arguments"]] == ["path", "duration_s", "content", "verify", "state",
                                                           "configuration"]  # fmt: skip
    assert described["doc"].startswith("Inject fake: Overwrite an allow-listed file")
