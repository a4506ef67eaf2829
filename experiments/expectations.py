"""The expectation vocabulary of an experiment spec (typed; evaluated by ``assertions``).

Each expectation is one small model; the key that names it decides which (``probe``,
``breaker``, ``slo``, ``recovers``, ``restarts``, ``requests``, ``error_budget``).
Times are durations (``500ms``, ``3s``, ``2m``); moments are event references:
``run.start``, ``steady.start``, ``<fault id>.start``, ``<fault id>.end``, optionally with an
offset (``hog.end+5s``, ``hog.start-2s``), or an absolute offset from the run start (``30s``).

Windows (``during``, ``before``, ``after``, ``between``):

* ``during: hog``                  — from ``hog.start`` to ``hog.end``;
* ``before: hog``                  — from ``steady.start`` (or ``run.start``) to ``hog.start``;
* ``after: hog.end``               — from that moment to the end of the run;
* ``between: [hog.start+2s, 40s]`` — explicit bounds.

Example (YAML)::

    expect:
      - {probe: readiness, replica: replica-0, becomes: false, within: 3s, after: hog.start}
      - {probe: liveness, replica: replica-0, holds: true, during: hog}
      - {breaker: replica-0, sequence: [closed, open, half-open, closed], within: 30s, after: part.start}
      - {slo: availability, at_least: 0.95, during: hog}
      - {recovers: steady_state, within: 20s, after: hog.end}
      - {restarts: replica-0, at_least: 1, reason: OOMKilled, during: oom}
      - {requests: failed, at_most: 10, during: part}
      - {error_budget: availability, at_most: 0.5, during: hog}
    halt_if: [{slo: availability, below: 0.5, for: 10s}]
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

__all__ = [
    "BreakerSequence",
    "Duration",
    "ErrorBudget",
    "Expectation",
    "HaltCondition",
    "Moment",
    "ProbeBecomes",
    "ProbeHolds",
    "Recovers",
    "RequestsCount",
    "Restarts",
    "SloOver",
    "Window",
    "parse_duration",
]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_MOMENT = re.compile(
    r"^(?:(?P<ref>[A-Za-z0-9_-]+)\.(?P<edge>start|end))?\s*"
    r"(?:(?P<sign>[+-])?\s*(?P<off>\d+(?:\.\d+)?\s*(?:ms|s|m|h)))?$"
)


def parse_duration(value: object) -> float:
    """``500ms`` / ``3s`` / ``2m`` / ``1h`` (or a plain number of seconds) → seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 500ms, 30s or 2m")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str) and (m := _DURATION.match(value)):
        return float(m.group(1)) * _UNITS[m.group(2)]
    raise ValueError(f"expected a duration like 500ms, 30s or 2m, got {value!r}")


class Duration(float):
    """Seconds, parsed from ``500ms``/``30s``/``2m``."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        return core_schema.no_info_plain_validator_function(
            lambda v: cls(parse_duration(v)),
            json_schema_input_schema=core_schema.union_schema(
                [core_schema.str_schema(pattern=_DURATION.pattern), core_schema.float_schema(ge=0)]
            ),
            serialization=core_schema.plain_serializer_function_ser_schema(float),
        )


class Moment(BaseModel):
    """A point on the timeline: an event reference plus an offset, or an absolute offset."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ref: str | None = None
    """``run``, ``steady`` or a fault id; None = an absolute offset from the run start."""
    edge: Literal["start", "end"] = "start"
    offset_s: float = 0.0

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return {"offset_s": float(value)}
        if not isinstance(value, str):
            return value
        m = _MOMENT.match(value.strip())
        if not m or not (m.group("ref") or m.group("off")):
            raise ValueError(f"expected an event like 'hog.start', 'hog.end+5s' or an offset like '30s', got {value!r}")
        offset = parse_duration(m.group("off")) if m.group("off") else 0.0
        if m.group("sign") == "-":
            offset = -offset
        return {"ref": m.group("ref"), "edge": m.group("edge") or "start", "offset_s": offset}

    def __str__(self) -> str:
        base = f"{self.ref}.{self.edge}" if self.ref else "run.start"
        return base if not self.offset_s else f"{base}{self.offset_s:+g}s"


class Window(BaseModel):
    """A span of the timeline, from the ``during``/``before``/``after``/``between`` keys."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    start: Moment
    end: Moment | None = None
    """None = the end of the run."""
    label: str = ""


class _Windowed(BaseModel):
    """Mixin: exactly one of ``during`` (fault id), ``before``, ``after``, ``between``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    during: str | None = None
    """A fault id: from its start to its end."""
    before: str | None = None
    """A fault id: from steady state to its start."""
    after: Moment | None = None
    """A moment (``hog.end``): from there to the end of the run."""
    between: tuple[Moment, Moment] | None = None

    def window(self) -> Window | None:
        if self.during:
            return Window(start=Moment(ref=self.during, edge="start"), end=Moment(ref=self.during, edge="end"),
                          label=f"during {self.during}")  # fmt: skip
        if self.before:
            return Window(start=Moment(ref="steady", edge="start"), end=Moment(ref=self.before, edge="start"),
                          label=f"before {self.before}")  # fmt: skip
        if self.after is not None:
            return Window(start=self.after, end=None, label=f"after {self.after}")
        if self.between:
            a, b = self.between
            return Window(start=a, end=b, label=f"between {a} and {b}")
        return None

    @model_validator(mode="after")
    def _one_window(self) -> _Windowed:
        given = [k for k in ("during", "before", "after", "between") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"give one window, not {', '.join(given)}")
        return self


class ProbeBecomes(BaseModel):
    """``{probe: readiness, replica: replica-0, becomes: false, within: 3s, after: hog.start}``"""

    model_config = ConfigDict(frozen=True, extra="forbid")

    probe: Literal["readiness", "liveness", "startup"]
    replica: str
    becomes: bool
    within: Duration
    after: Moment


class ProbeHolds(_Windowed):
    """``{probe: liveness, replica: replica-0, holds: true, during: hog}``"""

    probe: Literal["readiness", "liveness", "startup"]
    replica: str
    holds: bool


class BreakerSequence(BaseModel):
    """``{breaker: replica-0, sequence: [closed, open, half-open, closed], within: 30s, after: part.start}``"""

    model_config = ConfigDict(frozen=True, extra="forbid")

    breaker: str
    sequence: list[Literal["closed", "open", "half-open"]] = Field(min_length=1)
    within: Duration
    after: Moment


class SloOver(_Windowed):
    """``{slo: availability, at_least: 0.95, during: hog}`` — availability, error_ratio,
    latency_p50/p95/p99 (``at_most: 500ms``) over the requests in the window."""

    slo: Literal["availability", "error_ratio", "latency_p50", "latency_p95", "latency_p99"]
    at_least: float | None = None
    at_most: float | Duration | None = None

    @model_validator(mode="after")
    def _bound(self) -> SloOver:
        if (self.at_least is None) == (self.at_most is None):
            raise ValueError("give exactly one of at_least or at_most")
        return self

    @field_validator("at_most", mode="before")
    @classmethod
    def _latency(cls, value: Any) -> Any:
        return parse_duration(value) if isinstance(value, str) else value


class Recovers(BaseModel):
    """``{recovers: steady_state, within: 20s, after: hog.end}`` — the measured time is the MTTR."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    recovers: Literal["steady_state"]
    within: Duration
    after: Moment


class Restarts(_Windowed):
    """``{restarts: replica-0, at_least: 1, reason: OOMKilled, during: oom}``"""

    restarts: str
    at_least: int | None = Field(default=None, ge=0)
    at_most: int | None = Field(default=None, ge=0)
    reason: Literal["OOMKilled", "Error", "Completed", "Signal"] | None = None


class RequestsCount(_Windowed):
    """``{requests: failed, at_most: 10, during: part}`` — failed or lost (never answered)."""

    requests: Literal["failed", "lost"]
    at_most: int = Field(ge=0)


class ErrorBudget(_Windowed):
    """``{error_budget: availability, at_most: 0.5, during: hog}`` — fraction of the window's
    error budget (1 - steady_state availability SLO) consumed."""

    error_budget: Literal["availability"]
    at_most: float = Field(gt=0)


def _kind(value: Any) -> str | None:
    if isinstance(value, dict):
        if "probe" in value:
            return "probe_becomes" if "becomes" in value else "probe_holds"
        for key in ("breaker", "slo", "recovers", "restarts", "requests", "error_budget"):
            if key in value:
                return key
        return None
    # Serialisation hands over the model itself.
    tags: dict[type, str] = {
        ProbeBecomes: "probe_becomes", ProbeHolds: "probe_holds", BreakerSequence: "breaker", SloOver: "slo",
        Recovers: "recovers", Restarts: "restarts", RequestsCount: "requests", ErrorBudget: "error_budget",
    }  # fmt: skip
    return tags.get(type(value))


Expectation = Annotated[
    Annotated[ProbeBecomes, Tag("probe_becomes")]
    | Annotated[ProbeHolds, Tag("probe_holds")]
    | Annotated[BreakerSequence, Tag("breaker")]
    | Annotated[SloOver, Tag("slo")]
    | Annotated[Recovers, Tag("recovers")]
    | Annotated[Restarts, Tag("restarts")]
    | Annotated[RequestsCount, Tag("requests")]
    | Annotated[ErrorBudget, Tag("error_budget")],
    Discriminator(
        _kind,
        custom_error_type="unknown_expectation",
        custom_error_message="an expectation starts with one of: probe, breaker, slo, recovers, restarts, "
        "requests, error_budget",
    ),
]


class HaltCondition(BaseModel):
    """``{slo: availability, below: 0.5, for: 10s}`` — stop early (exit 3) when it holds that long."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    slo: Literal["availability", "error_ratio", "latency_p95"]
    below: float | None = None
    above: float | Duration | None = None
    for_: Duration = Field(alias="for")

    @model_validator(mode="after")
    def _bound(self) -> HaltCondition:
        if (self.below is None) == (self.above is None):
            raise ValueError("give exactly one of below or above")
        return self
