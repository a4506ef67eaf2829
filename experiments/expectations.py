"""The expectation vocabulary of an experiment spec (typed; evaluated by ``assertions``).

Each expectation is one small model; the key that names it decides which (``probe``,
``breaker``, ``slo``, ``recovers``, ``restarts``, ``requests``, ``error_budget``, ``alert``,
``no_alerts`` — the alert ones live in ``experiments.alert_expectations``).
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
      - {alert: InferenceGPUMemoryPressure, fires: {within: 30s, after: hog.start}, notifies: chat}
      - {no_alerts: firing}
      - {runbook: hog, restores: steady_state, within: 30s}
      - {canary: rolled_back, within: 30s, after: bad.start}
      - {slo: latency_p95, at_most: 300ms, during: flood, clients: [tenant-a, tenant-b]}
      - {counter: inference_failures_total, labels: {reason: rate_limited}, at_least: 100, during: flood}
    halt_if: [{slo: availability, below: 0.5, for: 10s}]
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from experiments.alert_expectations import AlertExpectation, NoAlerts
from experiments.canary_expectations import CanaryExpectation
from experiments.metric_expectations import CounterIncrease
from experiments.timespec import Duration, Moment, Window, Windowed, parse_duration

__all__ = [
    "EXPECTATION_KEYS",
    "AlertExpectation",
    "BreakerSequence",
    "CanaryExpectation",
    "CounterIncrease",
    "Duration",
    "ErrorBudget",
    "Expectation",
    "HaltCondition",
    "Moment",
    "NoAlerts",
    "ProbeBecomes",
    "ProbeHolds",
    "Recovers",
    "RequestsCount",
    "Restarts",
    "RunbookRestores",
    "SloOver",
    "Window",
    "parse_duration",
]

class ProbeBecomes(BaseModel):
    """``{probe: readiness, replica: replica-0, becomes: false, within: 3s, after: hog.start}``"""

    model_config = ConfigDict(frozen=True, extra="forbid")

    probe: Literal["readiness", "liveness", "startup"]
    replica: str
    becomes: bool
    within: Duration
    after: Moment


class ProbeHolds(Windowed):
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


class SloOver(Windowed):
    """``{slo: availability, at_least: 0.95, during: hog}`` — availability, error_ratio,
    latency_p50/p95/p99 (``at_most: 500ms``) over the requests in the window."""

    slo: Literal["availability", "error_ratio", "latency_p50", "latency_p95", "latency_p99"]
    at_least: float | None = None
    at_most: float | Duration | None = None
    clients: list[str] | None = Field(default=None, min_length=1)
    """Only the requests of these load clients (``load.clients`` ids)."""
    except_clients: list[str] | None = Field(default=None, min_length=1)
    """All requests but those of these load clients."""

    @model_validator(mode="after")
    def _bound(self) -> SloOver:
        if (self.at_least is None) == (self.at_most is None):
            raise ValueError("give exactly one of at_least or at_most")
        if self.clients is not None and self.except_clients is not None:
            raise ValueError("give clients or except_clients, not both")
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


class RunbookRestores(BaseModel):
    """``{runbook: hog, restores: steady_state, within: 30s}`` — the runbook attached to fault ``hog``
    brings steady state back within 30 s of its start, while the fault is still in effect (a recovery
    that only came with the fault's own rollback does not count)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    runbook: str
    """The id of the fault the runbook is attached to."""
    restores: Literal["steady_state"]
    within: Duration


class Restarts(Windowed):
    """``{restarts: replica-0, at_least: 1, reason: OOMKilled, during: oom}``"""

    restarts: str
    at_least: int | None = Field(default=None, ge=0)
    at_most: int | None = Field(default=None, ge=0)
    reason: Literal["OOMKilled", "Error", "Completed", "Signal"] | None = None


class RequestsCount(Windowed):
    """``{requests: failed, at_most: 10, during: part}`` — failed or lost (never answered)."""

    requests: Literal["failed", "lost"]
    at_most: int = Field(ge=0)


class ErrorBudget(Windowed):
    """``{error_budget: availability, at_most: 0.5, during: hog}`` — fraction of the window's
    error budget (1 - steady_state availability SLO) consumed."""

    error_budget: Literal["availability"]
    at_most: float = Field(gt=0)


EXPECTATION_KEYS = ("probe", "breaker", "slo", "recovers", "restarts", "requests", "error_budget", "alert",
                    "no_alerts", "runbook", "canary", "counter")
"""The key an expectation starts with (the loader's did-you-mean draws from it too)."""


def _kind(value: Any) -> str | None:
    if isinstance(value, dict):
        if "probe" in value:
            return "probe_becomes" if "becomes" in value else "probe_holds"
        for key in EXPECTATION_KEYS[1:]:
            if key in value:
                return key
        return None
    # Serialisation hands over the model itself.
    tags: dict[type, str] = {
        ProbeBecomes: "probe_becomes", ProbeHolds: "probe_holds", BreakerSequence: "breaker", SloOver: "slo",
        Recovers: "recovers", Restarts: "restarts", RequestsCount: "requests", ErrorBudget: "error_budget",
        AlertExpectation: "alert", NoAlerts: "no_alerts", RunbookRestores: "runbook",
        CanaryExpectation: "canary", CounterIncrease: "counter",
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
    | Annotated[ErrorBudget, Tag("error_budget")]
    | Annotated[AlertExpectation, Tag("alert")]
    | Annotated[NoAlerts, Tag("no_alerts")]
    | Annotated[RunbookRestores, Tag("runbook")]
    | Annotated[CanaryExpectation, Tag("canary")]
    | Annotated[CounterIncrease, Tag("counter")],
    Discriminator(
        _kind,
        custom_error_type="unknown_expectation",
        custom_error_message="an expectation starts with one of: " + ", ".join(EXPECTATION_KEYS),
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
