"""FaultRegistry: explicit registration, entry points, clear plugin errors."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from typing import ClassVar

import pytest
from pydantic import BaseModel

from faultdrill.faults.errors import PluginError
from faultdrill.faults.fake import FakeFault
from faultdrill.faults.registry import ENTRY_POINT_GROUP, FaultRegistry


def _ep(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP)


def test_register_get_names() -> None:
    reg = FaultRegistry()
    reg.register(FakeFault, source="tests")
    assert reg.get("fake") is FakeFault
    assert reg.names() == ["fake"]
    assert "fake" in reg
    assert reg.source("fake") == "tests"
    reg.register(FakeFault)  # same class again is harmless


def test_unknown_name_suggests_closest() -> None:
    reg = FaultRegistry()
    reg.register(FakeFault)
    with pytest.raises(PluginError) as info:
        reg.get("fkae")
    assert str(info.value) == "unknown fault 'fkae' (known: fake) (did you mean 'fake'?)"


def test_duplicate_name_names_both_sources() -> None:
    class Other(FakeFault):
        pass

    reg = FaultRegistry()
    reg.register(FakeFault, source="entry point A")
    with pytest.raises(PluginError) as info:
        reg.register(Other, source="entry point B")
    assert "'fake' is registered twice: by entry point A and by entry point B" in str(info.value)
    assert info.value.sources == ("entry point A", "entry point B")


def test_load_entry_points() -> None:
    reg = FaultRegistry()
    assert reg.load_entry_points(eps=[_ep("fake", "faultdrill.faults.fake:FakeFault")]) == ["fake"]
    assert "faultdrill.faults.fake:FakeFault" in reg.source("fake")


def test_default_group_loads_without_error() -> None:
    FaultRegistry().load_entry_points()


@pytest.mark.parametrize(
    ("ep", "expected"),
    [
        (_ep("broken", "no_such_module_xyz:Fault"), "failed to load: ModuleNotFoundError"),
        (_ep("notfault", "faultdrill.faults.base:Problem"), "is not a Fault subclass"),
        (_ep("abstract", "faultdrill.faults.base:Fault"), "does not implement"),
        (_ep("wrongname", "faultdrill.faults.fake:FakeFault"), "names its fault 'fake', not 'wrongname'"),
    ],
)
def test_bad_plugins_are_named(ep: EntryPoint, expected: str) -> None:
    with pytest.raises(PluginError) as info:
        FaultRegistry().load_entry_points(eps=[ep])
    assert f"entry point '{ep.name} = {ep.value}'" in str(info.value)
    assert expected in str(info.value)


def test_duplicate_entry_points() -> None:
    class Twin(FakeFault):
        pass

    reg = FaultRegistry()
    reg.register(Twin, source="module tests:Twin")
    with pytest.raises(PluginError, match=r"by module tests:Twin and by entry point 'fake"):
        reg.load_entry_points(eps=[_ep("fake", "faultdrill.faults.fake:FakeFault")])


def test_config_must_forbid_extra_keys() -> None:
    class Loose(FakeFault):
        class Config(BaseModel):  # type: ignore[assignment]
            path: str

        name: ClassVar[str] = "loose"

    with pytest.raises(PluginError, match="extra='forbid'"):
        FaultRegistry().register(Loose)
