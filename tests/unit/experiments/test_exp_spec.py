"""The experiment spec models: defaults, units, shapes, references (no YAML, no files)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from faultdrill.experiments.spec.experiment import MISCONFIGURATIONS, Experiment, FaultSpec, parse_memory, service_role
from faultdrill.spec_cli import experiment_json_schema


def _exp(**over: Any) -> Experiment:
    doc: dict[str, Any] = {"apiVersion": "faultdrill/v1", "kind": "Experiment", "metadata": {"name": "t"}}
    doc.update(over)
    return Experiment.model_validate(doc)


def test_minimal_spec_gets_ci_friendly_defaults() -> None:
    exp = _exp()
    assert exp.target.replicas == 1 and exp.target.platform == "local" and exp.target.device == "auto"
    assert exp.target.probes.period == 0.1 and exp.target.probes.failure_threshold == 3  # 10 Hz probe sampler
    assert exp.target.restart.policy == "Always" and exp.target.restart.backoff_max == 30.0
    assert exp.load.shape.type == "steady" and exp.load.workers == 0
    assert exp.steady_state.slo.availability == 0.99
    assert exp.faults == [] and exp.expect == [] and exp.halt_if == []


@pytest.mark.parametrize(("text", "expected"), [
    ("700Mi", 700 * 2**20), ("1Gi", 2**30), ("500M", 500 * 10**6), ("1.5Gi", int(1.5 * 2**30)), (2**27, 2**27),
])  # fmt: skip
def test_memory_quantities(text: object, expected: int) -> None:
    assert parse_memory(text) == expected


@pytest.mark.parametrize("bad", ["700 MB", "lots", True, 1024, "-5Mi"])
def test_bad_memory_quantities(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_memory(bad)


def test_durations_everywhere() -> None:
    exp = _exp(steady_state={"window": "1500ms"}, load={"think_time": "2m", "duration": 30},
               target={"probes": {"period": "250ms"}})  # fmt: skip
    assert exp.steady_state.window == 1.5 and exp.load.think_time == 120.0 and exp.load.duration == 30.0
    assert exp.target.probes.period == 0.25


def test_shape_shorthand_and_params() -> None:
    assert _exp(load={"shape": "steady"}).load.shape.type == "steady"
    step = _exp(load={"shape": {"type": "step", "step_users": 2, "step_every": "5s"}}).load.shape
    assert step.type == "step" and step.step_every == 5.0
    with pytest.raises(ValidationError):
        _exp(load={"shape": {"type": "spike", "at": "5s"}})


def test_misconfigurations_match_the_target() -> None:
    from faultdrill.target_service.config import Misconfiguration

    assert set(MISCONFIGURATIONS) == {m.value for m in Misconfiguration}
    with pytest.raises(ValidationError, match="listed twice"):
        _exp(target={"misconfigurations": ["unbounded_queue", "unbounded_queue"]})


def test_env_must_be_faultdrill_settings() -> None:
    assert _exp(target={"env": {"FAULTDRILL_MAX_BATCH_SIZE": "4"}}).target.env == {"FAULTDRILL_MAX_BATCH_SIZE": "4"}
    with pytest.raises(ValidationError):
        _exp(target={"env": {"LD_PRELOAD": "x"}})


def test_fault_after_a_bare_id_means_its_end_and_config_input() -> None:
    fault = FaultSpec.model_validate({"id": "b", "type": "oom_kill", "target": "replica-0", "after": "a",
                                      "duration": "5s", "params": {"mode": "limit"}})  # fmt: skip
    assert fault.after is not None and (fault.after.ref, fault.after.edge) == ("a", "end")
    assert fault.config_input() == {"mode": "limit", "duration_s": 5.0, "target": "replica-0"}
    shifted = FaultSpec.model_validate({"id": "c", "type": "x", "after": "a.start+2s"})
    assert shifted.after is not None and shifted.after.offset_s == 2.0


def test_service_names_and_roles() -> None:
    exp = _exp(target={"replicas": 2})
    assert exp.service_names() == ["replica-0", "replica-1", "feature-store", "feature-store-proxy"]
    assert [service_role(n) for n in exp.service_names()] == ["replica", "replica", "feature_store", "proxy"]
    assert service_role("database") is None


def test_reference_problems() -> None:
    exp = _exp(
        target={"replicas": 2},
        faults=[{"id": "hog", "type": "gpu_memory_exhaustion", "target": "feature-store", "at": "1s"},
                {"id": "hog", "type": "oom_kill", "target": "replica-9", "after": "hgo"},
                {"id": "run", "type": "process_kill", "target": "replica-1", "at": 1, "after": "hog.end"}],
        expect=[{"probe": "liveness", "replica": "replica-2", "holds": True, "during": "hgo"},
                {"breaker": "feature-store", "sequence": ["closed", "open"], "within": "5s", "after": "steady.start"},
                {"restarts": "feature-store-proxy", "at_least": 1, "between": ["hog.start", "nope.end"]}],
    )  # fmt: skip
    problems = exp.reference_problems({"gpu_memory_exhaustion": ("replica",), "oom_kill": ("replica",)})
    got = {(".".join(map(str, p.path)), p.message) for p in problems}
    assert ("faults.0.target", "'feature-store' is not a target of 'gpu_memory_exhaustion' (is a feature_store)") in got
    assert ("faults.1.id", "fault id 'hog' is used twice") in got
    assert ("faults.1.after", "no fault with id 'hgo'") in got
    assert ("faults.1.target", "'replica-9' is not a target of 'oom_kill' (target.replicas is 2)") in got
    assert ("faults.2.id", "'run' is reserved") in got
    assert ("faults.2.after", "give 'at' or 'after', not both") in got
    assert ("expect.0.replica", "'replica-2' is not a replica (target.replicas is 2)") in got
    assert ("expect.0.during", "no fault with id 'hgo'") in got
    assert ("expect.1.breaker", "'feature-store' is not a replica (is a feature_store)") in got
    assert ("expect.2.restarts", "'feature-store-proxy' is not a supervised service (is a proxy)") in got

    assert ("expect.2.between.1", "no fault with id 'nope'") in got
    assert len(problems) == 11
    suggestion = next(p.suggestion for p in problems if p.path == ("faults", 1, "after"))
    assert suggestion == "hog"


def test_a_flood_may_name_the_service_endpoint() -> None:
    """``client_flood``'s ``target: service`` (the run's endpoint, its default) is a target, spelled out too."""
    exp = _exp(target={"replicas": 2}, faults=[{"id": "f", "type": "client_flood", "target": "service", "at": "1s"}])
    assert exp.reference_problems({"client_flood": ("replica", "service")}) == []
    assert exp.reference_problems({"client_flood": ("replica",)})  # without the pseudo-role: refused


def test_a_clean_spec_has_no_reference_problems() -> None:
    exp = _exp(target={"replicas": 2, "feature_store_netns": True},
               faults=[{"id": "a", "type": "network_partition", "target": "feature-store", "at": "1s"},
                       {"id": "b", "type": "process_kill", "target": "replica-1", "after": "a.end+1s"}],
               expect=[{"slo": "availability", "at_least": 0.9, "before": "a"},
                       {"recovers": "steady_state", "within": "10s", "after": "b.end"}])  # fmt: skip
    assert exp.reference_problems() == []


def test_partition_of_the_store_needs_its_namespace() -> None:
    exp = _exp(faults=[{"id": "a", "type": "network_partition", "target": "feature-store"}])
    assert [p.expected for p in exp.reference_problems()] == ["target.feature_store_netns: true"]


def test_json_schema_is_valid_json_and_accepts_moment_strings() -> None:
    schema = json.loads(json.dumps(experiment_json_schema()))
    assert "faults" in schema["properties"] and schema["additionalProperties"] is False
    assert schema["properties"]["apiVersion"]["const"] == "faultdrill/v1"
    moment = schema["$defs"]["Moment"]
    assert {"type": "number"} in moment["anyOf"]
    import re

    pattern = next(a["pattern"] for a in moment["anyOf"] if a.get("type") == "string")
    for ok in ("hog", "hog.start", "hog.end+5s", "30s", "run.start"):
        assert re.match(pattern, ok), ok
    assert "for" in schema["$defs"]["HaltCondition"]["properties"]


def test_http_fault_needs_the_envoy_endpoint() -> None:
    """Envoy's fault filter is what ``http_fault`` drives: with the python endpoint (asked for, or kept by ``auto``
    for a canary) it is refused, located; ``auto`` and ``envoy`` take it (``auto`` without Envoy installed is refused
    at preflight: no admin socket)."""
    fault = {"id": "f", "type": "http_fault", "at": "1s", "params": {"mode": "abort"}}
    for target in ({"endpoint": "python"}, {"canary": {"version": "2"}}):
        problems = _exp(target=target, faults=[fault]).reference_problems({"http_fault": ("service",)})
        assert [(".".join(map(str, p.path)), p.expected) for p in problems] == [("faults.0.type",
                                                                                  "target.endpoint: envoy")], target
    for target in ({}, {"endpoint": "envoy"}):
        assert _exp(target=target, faults=[fault]).reference_problems({"http_fault": ("service",)}) == []
