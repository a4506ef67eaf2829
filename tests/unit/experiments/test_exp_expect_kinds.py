"""The table of expectation kinds (``experiments.expect``): everything derived from it stays in step."""

from __future__ import annotations

import pkgutil
import re

import pytest
import yaml
from pydantic import TypeAdapter, ValidationError

import faultdrill.experiments.expect as expect
from faultdrill.experiments.expect import (
    EXPECTATION_KEYS,
    KINDS,
    Expectation,
    describe,
    kind_of,
    needed_after_end,
    references,
)
from faultdrill.experiments.expect.kind import Kind, Ref

_ADAPTER: TypeAdapter[object] = TypeAdapter(Expectation)
_SHARED = {"kind", "windows", "judge", "mttd", "stats"}  # the package's modules that define no kind (and the judge)


def _examples() -> list[dict[str, object]]:
    """The YAML example of the package docstring."""
    block = re.search(r"Example \(YAML\)::\n\n(.*?)\n\n", expect.__doc__ or "", re.S)
    assert block is not None
    return list(yaml.safe_load(block.group(1))["expect"])


def test_the_table_has_one_tag_per_model_and_the_keys_in_its_order() -> None:
    assert len({k.tag for k in KINDS}) == len({k.model for k in KINDS}) == len(KINDS)
    assert EXPECTATION_KEYS == ("probe", "breaker", "slo", "recovers", "restarts", "requests", "error_budget", "alert",
                                "no_alerts", "runbook", "canary", "counter", "answers", "gauge")  # fmt: skip
    assert all(isinstance(k, Kind) for k in KINDS)


def test_every_module_of_the_package_is_a_kind_in_the_table() -> None:
    modules = {m.name for m in pkgutil.iter_modules(expect.__path__)} - _SHARED
    in_table = {k.model.__module__.rsplit(".", 1)[-1] for k in KINDS}
    assert modules == in_table
    for k in KINDS:  # a kind's functions live with its model
        assert k.describe.__module__ == k.judge.__module__ == k.model.__module__


def test_the_docstring_examples_parse_and_round_trip() -> None:
    parsed = [_ADAPTER.validate_python(x) for x in _examples()]
    assert all(kind_of(x) is not None for x in parsed)
    for x in parsed:
        again = _ADAPTER.validate_python(_ADAPTER.dump_python(x, mode="json"))
        assert again == x and describe(again) == describe(x)


def test_an_unknown_key_names_every_kind() -> None:
    with pytest.raises(ValidationError, match="an expectation starts with one of: " + ", ".join(EXPECTATION_KEYS)):
        _ADAPTER.validate_python({"probes": "readiness"})


def test_each_kind_says_what_it_references_and_how_long_it_needs() -> None:
    alert = _ADAPTER.validate_python({"alert": "X", "fires": {"within": "30s", "after": "hog.start"},
                                      "resolves": {"within": "20s", "after": "hog.end+1s"}})  # fmt: skip
    assert references(alert) == [Ref("moment", ("fires", "after"), "hog"), Ref("moment", ("resolves", "after"), "hog")]
    assert needed_after_end(alert, {"hog": 7.0}) == 23.0
    slo = _ADAPTER.validate_python({"slo": "availability", "at_least": 0.9, "between": ["hog.start", "30s"],
                                    "clients": ["a"]})  # fmt: skip
    assert references(slo) == [Ref("moment", ("between", 0), "hog"), Ref("client", ("clients", 0), "a")]
    assert needed_after_end(slo, {"hog": 7.0}) == 0.0
    runbook = _ADAPTER.validate_python({"runbook": "hog", "restores": "steady_state", "within": "99s"})
    assert references(runbook) == [Ref("runbook", ("runbook",), "hog")] and needed_after_end(runbook, {}) == 0.0
    assert describe(object()) == "object" and references(object()) == []
