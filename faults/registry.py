"""``FaultRegistry``: name → fault class, filled explicitly or from entry points.

There is no global registry: every run (and every test) builds its own.

Example::

    registry = FaultRegistry()
    registry.load_entry_points()              # group "faultdrill.faults", built-ins included
    registry.register(FakeFault, source="tests")
    fault = registry.get("fake")()            # unknown names suggest the closest one
    registry.record_kind("process")           # + the ledger's own kinds (faults/owned.py), for undo only
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Iterable
from importlib.metadata import EntryPoint, entry_points
from typing import cast

from pydantic import BaseModel

from faultdrill.faults.base import Fault
from faultdrill.faults.errors import PluginError
from faultdrill.faults.owned import RECORD_KINDS

__all__ = ["ENTRY_POINT_GROUP", "FaultRegistry"]

ENTRY_POINT_GROUP = "faultdrill.faults"


class FaultRegistry:
    """Fault classes by name, each remembered with where it came from.

    >>> reg = FaultRegistry()
    >>> from faults.fake import FakeFault
    >>> reg.register(FakeFault, source="test")
    >>> reg.get("fake") is FakeFault, reg.names()
    (True, ['fake'])
    """

    def __init__(self) -> None:
        self._faults: dict[str, type[Fault]] = {}
        self._sources: dict[str, str] = {}
        # The ledger's own record kinds (a run's processes and namespaces): in every registry, so
        # whatever undoes records undoes them too; never listed, never a spec's fault type.
        self._kinds: dict[str, type[Fault]] = {k.name: k for k in RECORD_KINDS}

    def register(self, fault_cls: object, *, source: str | None = None) -> None:
        """Add ``fault_cls``; a malformed class or a taken name is a ``PluginError``."""
        where = source or _qualname(fault_cls)
        _check_fault_class(fault_cls, where)
        cls = cast(type[Fault], fault_cls)  # narrowed by the check above
        name = cls.name
        if name in self._kinds:
            raise PluginError(f"fault name '{name}' is reserved for the ledger's own records (by {where})",
                              plugin=name)  # fmt: skip
        if name in self._faults:
            if self._faults[name] is cls:
                return  # same class via two routes (e.g. explicit + entry point): harmless
            first = self._sources[name]
            raise PluginError(
                f"fault name '{name}' is registered twice: by {first} and by {where}",
                plugin=name,
                sources=(first, where),
            )
        self._faults[name] = cls
        self._sources[name] = where

    def get(self, name: str) -> type[Fault]:
        """The class registered as ``name``; unknown names get a did-you-mean."""
        try:
            return self._faults[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self._faults), n=1)
            known = ", ".join(self.names()) or "none"
            raise PluginError(
                f"unknown fault '{name}' (known: {known})",
                plugin=name,
                suggestion=close[0] if close else None,
            ) from None

    def record_kind(self, name: str) -> type[Fault]:
        """What undoes a ledger record of kind ``name``: a fault, or a run's ``process``/``netns`` record."""
        return self._kinds.get(name) or self.get(name)

    def source(self, name: str) -> str:
        """Where ``name`` was registered from (entry point or module path)."""
        self.get(name)
        return self._sources[name]

    def names(self) -> list[str]:
        return sorted(self._faults)

    def target_roles(self) -> dict[str, tuple[str, ...]]:
        """Each fault that limits what it aims at → the roles it accepts (``Fault.target_roles``)."""
        return {n: roles for n in self.names() if (roles := getattr(self.get(n), "target_roles", None))}

    def __contains__(self, name: object) -> bool:
        return name in self._faults

    @classmethod
    def installed(cls) -> FaultRegistry:
        """A registry of every installed fault (built-ins and plugins); PluginError on a bad one."""
        registry = cls()
        registry.load_entry_points()
        return registry

    def load_entry_points(
        self, group: str = ENTRY_POINT_GROUP, *, eps: Iterable[EntryPoint] | None = None
    ) -> list[str]:
        """Register every entry point in ``group`` (or the given ``eps``); return names.

        The entry point's name must equal the fault's ``name``, so configs and
        ``pyproject.toml`` can never disagree about what a fault is called.
        """
        loaded = []
        for ep in entry_points(group=group) if eps is None else eps:
            where = _describe(ep)
            try:
                obj = ep.load()
            except Exception as exc:
                raise PluginError(
                    f"{where} failed to load: {type(exc).__name__}: {exc}", plugin=ep.name
                ) from exc
            _check_fault_class(obj, where)
            if obj.name != ep.name:
                raise PluginError(
                    f"{where} names its fault '{obj.name}', not '{ep.name}'", plugin=ep.name
                )
            self.register(obj, source=where)
            loaded.append(ep.name)
        return loaded


def _describe(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    origin = f" (from {dist.name})" if dist is not None else ""
    return f"entry point '{ep.name} = {ep.value}'{origin}"


def _qualname(obj: object) -> str:
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', repr(obj))}"


def _check_fault_class(obj: object, where: str) -> None:
    # Checked at registration so a broken plugin fails at load time, not mid-experiment.
    if not (inspect.isclass(obj) and issubclass(obj, Fault)):
        raise PluginError(f"{where} is not a Fault subclass (got {obj!r})")
    if inspect.isabstract(obj):
        missing = ", ".join(sorted(getattr(obj, "__abstractmethods__", ())))
        raise PluginError(f"{where} does not implement: {missing}")
    name = getattr(obj, "name", None)
    if not isinstance(name, str) or not name:
        raise PluginError(f"{where} has no string 'name'")
    modes = getattr(obj, "modes", None)
    if not isinstance(modes, tuple) or not modes:
        raise PluginError(f"{where} declares no 'modes'")
    config = getattr(obj, "Config", None)
    if not (inspect.isclass(config) and issubclass(config, BaseModel)):
        raise PluginError(f"{where} has no pydantic 'Config'")
    if config.model_config.get("extra") != "forbid":
        raise PluginError(f"{where}: Config must reject unknown keys (extra='forbid')")
