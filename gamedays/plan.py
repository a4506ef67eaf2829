"""A game-day plan (``kind: GameDay``): who, why, when, on what system, which scenarios.

Example (``gamedays/plans/smoke.yaml``)::

    apiVersion: faultdrill/v1
    kind: GameDay
    metadata: {name: smoke, title: Smoke game day, objective: Prove the runbooks restore service}
    roles:
      commander: {name: Ada, contact: "#sre-gameday"}
      scribe: {name: Lin, contact: lin@example.com}
      observers: [{name: Sam}]
    schedule: {cron: "0 10 * * 1", timezone: UTC}
    system: {target: {replicas: 2, memory_limit: 700Mi, feature_store_netns: true}}
    pause: 5s
    abort: [{slo: availability, below: 0.5, for: 10s}]
    scenarios:
      - {experiment: experiments/catalog/cert_expiry.yaml}
      - name: gpu-hog-with-runbook
        inline: {faults: [...], expect: [...]}

Each scenario becomes an ``Experiment`` on the plan's ``system`` (one platform and alerting
stack for the whole day): a scenario file's own ``target``/``alerting`` are replaced by the
system's (say so in ``faultdrill gameday validate``), and the plan's ``abort`` criteria join
every scenario's ``halt_if``. Errors are located in the plan (or in the scenario file).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from faultdrill.experiments.expect.stats import HaltCondition
from faultdrill.experiments.spec.alerting import AlertingSpec
from faultdrill.experiments.spec.experiment import Experiment, TargetSpec
from faultdrill.experiments.spec.loader import check_experiment_text, load_experiment, validate_document
from faultdrill.experiments.timespec import Duration
from faultdrill.faults.errors import ConfigError
from faultdrill.faults.inputlimits import read_text
from faultdrill.faults.registry import FaultRegistry

__all__ = ["GameDayPlan", "LoadedPlan", "Scenario", "load_plan"]


MAX_SCENARIOS = 50
"""Scenarios of one plan: a game day runs a handful; thousands would only make ``validate`` slow."""


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Person(_M):
    name: str = Field(min_length=1)
    contact: str = ""


class Roles(_M):
    commander: Person
    scribe: Person
    observers: list[Person] = Field(default_factory=list)


class Schedule(_M):
    cron: str
    """Five-field cron (``0 14 * * TUE#1``) or a macro (``@weekly``); see ``gamedays.cron``."""
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        from faultdrill.gamedays.cron import parse_cron

        try:
            parse_cron(value)
        except ConfigError as exc:
            hint = f" (did you mean {exc.suggestion!r}?)" if exc.suggestion else ""
            raise ValueError(f"{exc.args[0] if exc.args else exc}{hint}") from None
        return value


class PlanMetadata(_M):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    title: str
    objective: str


class System(_M):
    """The one system every scenario runs on."""

    target: TargetSpec = Field(default_factory=TargetSpec)
    alerting: AlertingSpec = Field(default_factory=AlertingSpec)


class Scenario(_M):
    """A catalog or other experiment file, or an inline experiment body."""

    name: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    experiment: str | None = None
    inline: dict[str, Any] | None = None
    notes: str = ""
    """What people should watch for; shown before the scenario starts."""

    @model_validator(mode="after")
    def _one(self) -> Scenario:
        if (self.experiment is None) == (self.inline is None):
            raise ValueError("give exactly one of experiment (a file) or inline (an experiment body)")
        if self.inline is not None and self.name is None:
            raise ValueError("an inline scenario needs a name")
        return self


class GameDayPlan(_M):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    api_version: Literal["faultdrill/v1"] = Field(alias="apiVersion")
    kind: Literal["GameDay"]
    metadata: PlanMetadata
    roles: Roles
    schedule: Schedule | None = None
    system: System = Field(default_factory=System)
    scenarios: list[Scenario] = Field(min_length=1, max_length=MAX_SCENARIOS)
    pause: Duration = Duration(10.0)
    """Between scenarios: recovery, and time for notes."""
    abort: list[HaltCondition] = Field(default_factory=list)
    communication: str = ""


class LoadedPlan(BaseModel):
    """A validated plan with each scenario as the experiment that will run."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    plan: GameDayPlan
    path: Path
    scenarios: list[tuple[str, Experiment, Path]]
    """(scenario name, experiment on the plan's system, the file its relative paths resolve from)."""
    notes: list[str] = Field(default_factory=list)
    """What was adjusted (a scenario's own target replaced by the system), for ``validate``."""


def _field_path(field: str | None) -> tuple[Any, ...]:
    out: list[Any] = []
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", field or ""):
        out.append(int(part[1:-1]) if part.startswith("[") else part)
    return tuple(out)


def _on_system(exp: Experiment, plan: GameDayPlan, name: str) -> Experiment:
    return exp.model_copy(update={
        "target": plan.system.target, "alerting": plan.system.alerting, "halt_if": [*exp.halt_if, *plan.abort],
        "metadata": exp.metadata.model_copy(update={"name": name}),
    })  # fmt: skip


def load_plan(path: Path, registry: FaultRegistry | None = None) -> LoadedPlan:
    """Read and check a plan and every scenario; raise the first problem as a located ConfigError."""
    loaded, errors = check_plan(path, registry)
    if loaded is None:
        raise errors[0]
    return loaded


def check_plan(path: Path, registry: FaultRegistry | None = None) -> tuple[LoadedPlan | None, list[ConfigError]]:
    """Every problem of a plan (empty when valid) and the loaded plan when there is none."""
    try:
        text = read_text(path, what="game-day plan")  # at most MAX_TEXT_BYTES, UTF-8
    except OSError as exc:
        return None, [ConfigError(f"cannot read: {exc.strerror or exc}", file=str(path))]
    except ConfigError as exc:
        return None, [exc]
    plan, _data, where, errors = validate_document(text, str(path), GameDayPlan)
    if plan is None:
        return None, errors
    registry = registry or FaultRegistry.installed()
    scenarios: list[tuple[str, Experiment, Path]] = []
    notes: list[str] = []
    names: set[str] = set()
    for i, sc in enumerate(plan.scenarios):
        if sc.experiment is not None:
            file = _resolve(sc.experiment, path)
            try:
                exp = load_experiment(file, registry)
            except ConfigError as exc:
                errors.append(exc if exc.file else where.error(("scenarios", i, "experiment"), str(exc)))
                continue
            name = sc.name or exp.metadata.name
            if exp.target != plan.system.target:
                notes.append(f"scenario {name}: its own target is replaced by the game day's system")
                merged = _on_system(exp, plan, name)
                for problem in merged.reference_problems(registry.target_roles()):
                    at = ".".join(str(x) for x in problem.path)
                    msg = f"on the game day's system, {at} of {file.name}: {problem.message}"
                    errors.append(where.error(("scenarios", i, "experiment"), msg, expected=problem.expected))
            base = file
        else:
            name = str(sc.name)
            body = {"apiVersion": "faultdrill/v1", "kind": "Experiment", "metadata": {"name": name},
                    "target": plan.system.target.model_dump(mode="json", exclude_defaults=True),
                    "alerting": plan.system.alerting.model_dump(mode="json", exclude_defaults=True),
                    **(sc.inline or {})}  # fmt: skip
            problems = check_experiment_text(yaml.safe_dump(body, sort_keys=False), file=str(path), registry=registry)
            for e in problems:
                msg = str(e.args[0]) if e.args else str(e)
                errors.append(where.error(("scenarios", i, "inline", *_field_path(e.field)), msg,
                                          expected=e.expected, suggestion=e.suggestion))  # fmt: skip
            if problems:
                continue
            exp = Experiment.model_validate(body)
            base = path
        errors += _runbook_errors(exp, base, where, i, inline=sc.inline is not None)
        if name in names:
            errors.append(where.error(("scenarios", i), f"scenario name '{name}' is used twice",
                                      expected="a unique name (give name: …)"))  # fmt: skip
        names.add(name)
        scenarios.append((name, _on_system(exp, plan, name), base))
    if errors:
        return None, errors
    return LoadedPlan(plan=plan, path=path, scenarios=scenarios, notes=notes), []


def _runbook_errors(exp: Experiment, base: Path, where: Any, i: int, *, inline: bool) -> list[ConfigError]:
    """Every attached runbook must exist and parse (a runbook's own errors keep their file:line)."""
    from faultdrill.experiments.engine.runbook_hook import runbook_path
    from faultdrill.gamedays.runbook import parse_runbook

    out: list[ConfigError] = []
    for j, fault in enumerate(exp.faults):
        if fault.runbook is None:
            continue
        at = ("scenarios", i, "inline", "faults", j, "runbook") if inline else ("scenarios", i, "experiment")
        try:
            path = runbook_path(fault.runbook, base)
            found = path.exists()
        except (OSError, ValueError, RuntimeError):  # a name the OS refuses (too long, NUL), ~unknown-user
            found = False
        if not found:
            out.append(where.error(at, f"runbook {fault.runbook.file} not found (relative to {base.parent} or "
                                   f"the current directory)",
                                   expected="a runbook under gamedays/runbooks/"))  # fmt: skip
            continue
        try:
            parse_runbook(path)
        except ConfigError as exc:
            out.append(exc)
    return out


def _resolve(value: str, plan_file: Path) -> Path:
    try:
        candidate = Path(value).expanduser()
    except RuntimeError:  # ~user that does not exist: the name as written (then "cannot read")
        candidate = Path(value)
    if candidate.is_absolute():
        return candidate
    for base in (plan_file.resolve().parent, Path.cwd()):
        try:
            if (base / candidate).exists():
                return base / candidate
        except (OSError, ValueError):  # a name the OS refuses (too long, a NUL byte): reading it says so
            break
    return Path.cwd() / candidate
