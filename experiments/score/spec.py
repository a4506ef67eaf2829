"""What ``faultdrill score`` runs: a suite of experiments, and deliberately broken variants of the system.

A score file (``kind: Score``) names the experiments (paths or globs, relative to the file) and the variants.
A variant is a name plus what it breaks: bundled misconfiguration profiles (``misconfig``), environment
(``env``: the bundled target's ``FAULTDRILL_*`` settings, or a ``kind: process`` service's environment),
arguments appended to a process service's command (``args``), arguments appended to a started dependency's
command (``dependencies.<name>.args``), or any field of the experiment's ``target`` (``target``, merged
into it, then checked like the spec itself). Every problem is a located ``ConfigError``.

Example (YAML)::

    apiVersion: faultdrill/v1
    kind: Score
    experiments: [../catalog/model_load_failure.yaml, ../catalog/oom_*.yaml]
    threshold: 80
    variants:
      - {name: ready-too-soon, misconfig: [readiness_ignores_model]}
      - {name: no-oom-unready, env: {FAULTDRILL_OOM_UNREADY_THRESHOLD: "1000"}}
      - {name: lazy-probes, target: {probes: {period: 5s}}}
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from faultdrill.experiments.spec.experiment import Misconfig
from faultdrill.experiments.spec.service_defaults import problem

__all__ = ["DependencyOverride", "ScoreSpec", "Variant", "bundled_profiles", "resolve_experiments", "unknown_profile"]

Name = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.+-]{0,62}$")]
Text = Annotated[str, Field(min_length=1, max_length=4096)]
EnvVarName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]


def bundled_profiles() -> tuple[str, ...]:
    """The bundled target's misconfiguration profiles, read from the spec's ``Misconfig`` (never a copy)."""
    return tuple(get_args(Misconfig))


def unknown_profile(name: str) -> tuple[str, str, str | None] | None:
    """``(message, expected, did-you-mean)`` when ``name`` is no bundled profile, else None."""
    known = bundled_profiles()
    if name in known:
        return None
    close = difflib.get_close_matches(name, known, n=1)
    return f"unknown misconfiguration profile '{name}'", "one of " + ", ".join(known), close[0] if close else None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DependencyOverride(_Model):
    """``{args: [...]}``: arguments appended to the command of a dependency faultdrill starts."""

    args: Annotated[list[Text], Field(min_length=1, max_length=64)]


class Variant(_Model):
    """One deliberately broken version of the system: ``{name: no-breaker, misconfig: [no_circuit_breaker]}``."""

    name: Name
    description: str = ""
    misconfig: list[str] = Field(default_factory=list)
    """Bundled misconfiguration profiles, added to the experiment's own (the bundled target only)."""
    env: dict[EnvVarName, Annotated[str, Field(max_length=4096)]] = Field(default_factory=dict)
    """The bundled target's ``target.env`` (``FAULTDRILL_*``), or a ``kind: process`` service's environment."""
    args: Annotated[list[Text], Field(max_length=64)] = Field(default_factory=list)
    """Appended to a ``kind: process`` service's command."""
    dependencies: dict[str, DependencyOverride] = Field(default_factory=dict)
    """Per dependency of a process service that faultdrill starts: arguments appended to its command."""
    target: dict[str, Any] = Field(default_factory=dict)
    """Any field of the experiment's ``target`` (probes, restart, replicas, memory_limit …), merged into it."""

    @field_validator("misconfig")
    @classmethod
    def _profiles(cls, value: list[str]) -> list[str]:
        for i, name in enumerate(value):
            if (bad := unknown_profile(name)) is not None:
                raise problem(bad[0], expected=bad[1], suggestion=bad[2], where=(i,))
        if dupes := sorted({v for v in value if value.count(v) > 1}):
            raise problem(f"listed twice: {', '.join(dupes)}")
        return value

    @model_validator(mode="after")
    def _changes_something(self) -> Variant:
        if not (self.misconfig or self.env or self.args or self.dependencies or self.target):
            raise problem(f"variant '{self.name}' changes nothing", expected="at least one of misconfig, env, args, "
                          "dependencies, target")  # fmt: skip
        return self

    def changes(self) -> list[str]:
        """What it changes, one short line each (the plan and the reports say it)."""
        out = [f"misconfig {m}" for m in self.misconfig]
        out += [f"env {k}={v}" for k, v in self.env.items()]
        out += [f"args +{' '.join(self.args)}"] if self.args else []
        out += [f"{d} args +{' '.join(o.args)}" for d, o in self.dependencies.items()]
        out += [f"target.{k}: {v}" for k, v in self.target.items()]
        return out


class ScoreSpec(_Model):
    """A score file: ``kind: Score``, the experiments and the variants (module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    api_version: Literal["faultdrill/v1"] = Field("faultdrill/v1", alias="apiVersion")
    kind: Literal["Score"]
    name: Name = "score"
    experiments: Annotated[list[Text], Field(min_length=1, max_length=200)]
    """Experiment files or globs, relative to the score file; run in this order."""
    variants: Annotated[list[Variant], Field(max_length=200)] = Field(default_factory=list)
    """Empty: every bundled profile (bundled targets only)."""
    threshold: float = Field(100.0, ge=0, le=100)
    """The detection rate (percent) below which ``faultdrill score`` exits 1."""
    first_catch: bool = False
    """Stop a variant at its first damage catch (the experiments' order matters)."""

    @model_validator(mode="after")
    def _unique_names(self) -> ScoreSpec:
        names = [v.name for v in self.variants]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise problem(f"variant name '{name}' is used twice", expected="a unique name",
                              where=("variants", i, "name"))  # fmt: skip
        return self


def resolve_experiments(patterns: list[str], base: Path) -> list[tuple[int, list[Path]]]:
    """Each pattern's files (``base``-relative unless absolute), in order; an empty list: nothing matched."""
    out = []
    for i, pattern in enumerate(patterns):
        p = Path(pattern)
        full = p if p.is_absolute() else base / p
        if any(c in pattern for c in "*?["):
            root = Path(full.anchor) if full.is_absolute() else Path()
            out.append((i, sorted(root.glob(str(full.relative_to(root))))))
        else:
            out.append((i, [full] if full.is_file() else []))
    return out
