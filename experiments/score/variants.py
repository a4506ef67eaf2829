"""A variant applied to an experiment: the same spec, its ``target`` changed the way the variant says.

The target is dumped, changed as plain data and validated again (``TargetSpec``, with the experiment's folder
as context for profile paths), so an override is checked exactly like a target written by hand: an env name
that is not ``FAULTDRILL_*`` for the bundled target, ``misconfig`` beside a service of your own, a probe
period that is no duration. The experiment's references are checked again on the changed system (a variant
with fewer replicas than a fault aims at is refused). Nothing else of the spec changes.

Example::

    broken = apply_variant(spec, Variant(name="v", misconfig=["no_circuit_breaker"]), spec_dir=Path("."))
    broken.target.misconfigurations        # ['no_circuit_breaker']
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from faultdrill.experiments.score.spec import Variant
from faultdrill.experiments.spec.experiment import Experiment, TargetSpec

__all__ = ["VariantProblem", "apply_variant"]


class VariantProblem(Exception):
    """A variant that does not fit an experiment: ``path`` is where in the variant, ``expected`` what would fit."""

    def __init__(self, path: tuple[str | int, ...], message: str, expected: str | None = None,
                 suggestion: str | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.path, self.message, self.expected, self.suggestion = path, message, expected, suggestion


def apply_variant(spec: Experiment, variant: Variant, *, spec_dir: Path,
                  target_roles: dict[str, tuple[str, ...]] | None = None) -> Experiment:  # fmt: skip
    """``spec`` on the variant's system; a VariantProblem (located in the variant) when it does not fit."""
    data = spec.target.model_dump(mode="json", by_alias=True)
    service: Any = data.get("service")
    kind = "bundled" if service == "bundled" else str(service.get("kind"))
    if variant.misconfig:
        if kind != "bundled":
            raise VariantProblem(("misconfig",), f"misconfiguration profiles are the bundled target's; this "
                                 f"experiment's target is a service of kind {kind}",
                                 expected="env or args for your own service")  # fmt: skip
        data["misconfigurations"] = list(dict.fromkeys([*data.get("misconfigurations", []), *variant.misconfig]))
    if variant.env:
        if kind == "bundled":
            data["env"] = {**data.get("env", {}), **variant.env}
        elif kind == "process":
            service["env"] = {**service.get("env", {}), **variant.env}
        else:
            raise VariantProblem(("env",), f"faultdrill does not start a service of kind {kind}: it cannot set its "
                                 "environment", expected="a bundled or kind: process target")  # fmt: skip
    if variant.args:
        if kind != "process":
            raise VariantProblem(("args",), f"args are appended to a kind: process service's command; this "
                                 f"experiment's target is {'the bundled target' if kind == 'bundled' else kind}",
                                 expected="misconfig or env (FAULTDRILL_*) for the bundled target")  # fmt: skip
        service["command"] = [*service["command"], *variant.args]
    for name, override in variant.dependencies.items():
        _dependency_args(service if kind == "process" else None, name, override.args)
    if variant.target:
        data = _merged(data, variant.target)
    try:
        target = TargetSpec.model_validate(data, context={"spec_dir": str(spec_dir)})
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        loc = ".".join(str(p) for p in err["loc"] if p not in ("bundled", "process", "url", "kubernetes"))
        ctx = err.get("ctx") or {}
        raise VariantProblem(_where(variant, err["loc"]), f"target.{loc}: {err['msg'].removeprefix('Value error, ')}",
                             expected=ctx.get("expected"), suggestion=ctx.get("suggestion")) from None  # fmt: skip
    out = spec.model_copy(update={"target": target})
    for found in out.reference_problems(target_roles or {}):
        at = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in found.path).lstrip(".")
        raise VariantProblem(("target",) if variant.target else (), f"on this variant's system, {at}: {found.message}",
                             expected=found.expected)  # fmt: skip
    return out


def _dependency_args(service: dict[str, Any] | None, name: str, args: list[str]) -> None:
    if service is None:
        raise VariantProblem(("dependencies", name), "dependencies are those of a kind: process service",
                             expected="a target.service of kind process with dependencies")  # fmt: skip
    deps = service.get("dependencies") or []
    names = [str(d.get("name")) for d in deps]
    if name not in names:
        close = difflib.get_close_matches(name, names, n=1)
        raise VariantProblem(("dependencies", name), f"no dependency named '{name}'",
                             expected="one of " + (", ".join(names) or "(none declared)"),
                             suggestion=close[0] if close else None)  # fmt: skip
    dep = deps[names.index(name)]
    if not dep.get("command"):
        raise VariantProblem(("dependencies", name, "args"), f"dependency '{name}' is not started by faultdrill "
                             "(it has no command)", expected="a dependency with a command")  # fmt: skip
    dep["command"] = [*dep["command"], *args]


def _merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Mappings merged key by key; anything else (lists, scalars) replaced."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


def _where(variant: Variant, loc: tuple[Any, ...]) -> tuple[str | int, ...]:
    """The variant field a target validation error came from (the override it is about, else the first one)."""
    first = str(loc[0]) if loc else ""
    if variant.target and first in variant.target:
        return ("target", first)
    for field in ("env", "args", "misconfig", "dependencies"):
        if getattr(variant, field):
            return (field,)
    return ("target",)
