"""Timeline events as the journal keeps them: :class:`Event` and the typed attributes of each kind.

An event is ``{t, kind, source, attrs, wall}``; ``attrs`` is what its producer recorded. Each kind has
a model of those attributes (``RequestAttrs`` … ``CanaryAttrs``, ``ATTRS`` by kind), written from the
``timeline.add`` calls that record them, so readers (the reports) use typed fields instead of string
keys. The models only *read*: the timeline stores the plain dict, the journal writes it unchanged,
and producers' further attributes stay readable (``extra="allow"``, under ``model_extra``). Every
field has a default: events recorded by older versions and by tests (fewer attributes) still load.

>>> e = Event(t=1.5, kind="probe", source="replica-0", attrs={"probe": "readiness", "value": False})
>>> p = ProbeAttrs.of(e)
>>> p.probe, p.value, p.status
('readiness', False, None)
"""

from __future__ import annotations

from typing import Any, Literal, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, GetJsonSchemaHandler, TypeAdapter, ValidationError
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema
from pydantic_core import core_schema as cs

__all__ = [
    "ATTRS", "KINDS", "AlertAttrs", "BreakerAttrs", "CanaryAttrs", "CanarySlis", "Event", "EventAttrs", "EventKind",
    "FaultAttrs", "JournalValueError", "MetricAttrs", "NotificationAttrs", "PhaseAttrs", "ProbeAttrs", "ProcessAttrs",
    "RequestAttrs", "RequestsAttrs", "RunbookAttrs", "as_definition", "read_as",
]  # fmt: skip

EventKind = Literal[
    "request", "requests", "probe", "breaker", "process", "fault", "metric", "alert", "notification", "runbook",
    "phase", "canary",
]
KINDS: tuple[str, ...] = EventKind.__args__  # type: ignore[attr-defined]


M = TypeVar("M", bound=BaseModel)


class JournalValueError(ValueError):
    """A journal value that does not match its model (a hand-edited or foreign file): one line saying where."""


def read_as(model: type[M], value: Any, where: str) -> M:
    """``value`` as ``model``; a mismatch is a :class:`JournalValueError` naming ``where`` and the field."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        field = ".".join([where, *(str(p) for p in first["loc"])])
        raise JournalValueError(f"{field}: {first['msg']}{more}") from None


def as_definition(tp: Any) -> CoreSchema:
    """``tp``'s core schema such that its JSON Schema is a ``$ref`` into ``$defs`` (a model used once stays named)."""
    core = TypeAdapter(tp).core_schema
    if "ref" not in core:
        return core
    return cs.definitions_schema(cs.definition_reference_schema(core["ref"]), [core])


class _Attrs(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, use_attribute_docstrings=True)

    @classmethod
    def of(cls, event: Event) -> Self:
        """The attributes of ``event`` (its kind must be this model's)."""
        if ATTRS[event.kind] is not cls:
            raise ValueError(f"a {event.kind} event has no {cls.__name__}")
        return read_as(cls, event.attrs, event.where)


class RequestAttrs(_Attrs):
    """``request`` (source: the load generator): one request's outcome."""

    ok: bool = False
    status: int | None = None
    """HTTP status; None or 0 (Locust) when the connection failed."""
    latency_s: float | None = None
    name: str = ""
    """The endpoint."""
    error: str | None = None
    client: str | None = None
    """The client id (``load.clients``)."""
    version: str | None = None
    """The model version that answered (canary rollouts)."""
    ttft_s: float | None = None
    """Streamed answers (``load.protocol`` openai, ``stream: true``): seconds to the first token."""
    itl_s: float | None = None
    """Streamed answers: mean seconds between token arrivals (None with fewer than two)."""


class RequestSample(BaseModel):
    """One request of a bucket kept raw: every failure up to a bound, and a sample of the ok ones."""

    model_config = ConfigDict(extra="allow", frozen=True)

    t: float
    """When it was sent (seconds since the run started)."""
    ok: bool = False
    status: int | None = None
    latency_s: float | None = None
    error: str | None = None
    ttft_s: float | None = None
    itl_s: float | None = None


class RequestsAttrs(_Attrs):
    """``requests`` (source: the load generator): the requests sent in ``[t, t + span_s)`` to one endpoint for
    one client, model version and replica, aggregated where they were sent (``experiments.journal.traffic``).
    Late answers of the same span may come in a further event: readers add them up."""

    span_s: float = 0.1
    name: str = ""
    """The endpoint."""
    client: str | None = None
    version: str | None = None
    replica: str | None = None
    """The replica that answered (the endpoint's ``X-Faultdrill-Replica``)."""
    count: int = 0
    ok: int = 0
    lost: int = 0
    """Requests never answered (connection refused or reset, no status)."""
    wrong: int = 0
    """Requests answered wrongly, whatever their status (``WrongAnswer``: malformed, non-finite or mis-shaped
    outputs, a failed known answer); failures, like ``lost`` ones. Journals before it read 0."""
    statuses: dict[str, int] = Field(default_factory=dict)
    """Requests by HTTP status (``"0"``: no answer)."""
    latency: str | None = None
    """The ok requests' latencies: an HDR histogram (µs, 2 significant digits), its standard encoding."""
    ttft: str | None = None
    """Streamed answers: times to first token, as ``latency``."""
    itl: str | None = None
    """Streamed answers: mean inter-token latencies, as ``latency``."""
    errors: dict[str, int] = Field(default_factory=dict)
    """Failures by error message (the first few distinct messages)."""
    samples: list[RequestSample] = Field(default_factory=list)
    """Requests kept raw: the failures up to a bound, and the first ok one."""


class ProbeAttrs(_Attrs):
    """``probe`` (source: the replica): a readiness, liveness, startup (or Chaos Toolkit) probe's result."""

    probe: str = ""
    """readiness, liveness, startup or chaostoolkit."""
    value: bool = False
    status: int | str | None = None
    """HTTP status (None: no answer); a Chaos Toolkit probe's run status."""
    latency_s: float | None = None
    pid: int | None = None
    samples: int | None = None
    """Samples since the last event (events are throttled while the value holds)."""
    origin: str | None = None
    """Where the value came from when it was not probed (``pod Ready condition``)."""


class BreakerAttrs(_Attrs):
    """``breaker`` (source: the replica): its circuit breaker's state."""

    state: str = ""
    """closed, open or half-open."""
    pid: int | None = None
    from_state: str | None = None


class ProcessAttrs(_Attrs):
    """``process`` (source: the service): a start, exit, restart, ready or unready, or a change of its spec."""

    event: str = ""
    """start, exit, restart, ready, unready or spec (``set_env``: ``env`` as set, ``previous`` values; secrets
    as ``***``)."""
    pid: int | None = None
    pod: str | None = None
    code: int | None = None
    signal: int | None = None
    reason: str | None = None
    """Completed, Error, OOMKilled or Signal."""
    cause: str | None = None
    """Who ended it when it was us (a fault, ``deleted``)."""
    ran_s: float | None = None
    restarts: int | None = None
    backoff_s: float | None = None
    leftovers_killed: int | None = None
    """Processes an exited service left in its cgroup (a server's workers), killed as a container's are."""


class FaultAttrs(_Attrs):
    """``fault`` (source: the fault id): start, verified, end, rolled_back or error."""

    event: str = ""
    """start, verified, end, rolled_back or error."""
    fault: str | None = None
    """The fault type."""
    mode: str | None = None
    target: str | None = None
    emulated: bool | None = None
    injection: str | None = None
    effective: bool | None = None
    """verified: whether the fault's effect was really there."""
    message: str | None = None
    error: str | None = None
    seconds: float | None = None
    """rolled_back: how long the undo took."""


class MetricAttrs(_Attrs):
    """``metric`` (source: the scrape target, or ``run`` for ``steady_state``): one sample."""

    name: str = ""
    value: float | None = None
    labels: dict[str, str] = Field(default_factory=dict)


class AlertAttrs(_Attrs):
    """``alert`` (source: the alert name): a state change."""

    state: str = ""
    """pending, firing or resolved."""
    labels: dict[str, str] = Field(default_factory=dict)
    severity: str | None = None
    active_at: float | None = None
    last_seen: float | None = None


class NotificationAttrs(_Attrs):
    """``notification`` (source: the receiver): an Alertmanager webhook delivery."""

    alert: str | None = None
    status: str | None = "firing"
    """firing or resolved."""
    labels: dict[str, str] = Field(default_factory=dict)
    severity: str | None = None
    group_key: str | None = None
    starts_at: str | None = None
    ends_at: str | None = None
    fingerprint: str | None = None


class RunbookAttrs(_Attrs):
    """``runbook`` (source: the runbook's name): a step, a launch or an engine failure."""

    step: int | str | None = None
    """The step's number (older journals and tests: its text)."""
    title: str | None = None
    status: str | None = None
    """launched, started, done, failed, skipped or halted."""
    note: str | None = None
    check: str | None = None
    duration_s: float | None = None
    fault: str | None = None
    trigger: str | None = None
    file: str | None = None
    command: str | None = None
    """The language of the step's command block (``sh`` or ``faultdrill``); None: a step of checks or a manual one."""
    action: str | None = None
    """The faultdrill action the step runs (``restart``, ``rollback-model``, …), when it runs one."""
    undo_actions: list[str] | None = None
    """``launched``: the runbook actions that are its fault's own undo (a step running one gets no credit)."""


class PhaseAttrs(_Attrs):
    """``phase`` (source: ``run``)."""

    phase: str = ""
    """setup, steady, recover or teardown."""


class CanarySlis(BaseModel):
    """One pool's SLIs over an analysis window (None: nothing measured)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    requests: int | None = None
    success_rate: float | None = None
    latency_p95_s: float | None = None
    confidence: float | None = None
    version: str | None = None


class CanaryAttrs(_Attrs):
    """``canary`` (source: ``canary``, the analysis): revision, check, weight, promote, rollback or error."""

    event: str = ""
    version: str | None = None
    weight: int | None = None
    """The canary's traffic weight (%)."""
    result: str | None = None
    """check: passed, failed, inconclusive or not_judged."""
    reason: str | None = None
    judged: bool | None = None
    canary: CanarySlis | None = None
    stable: CanarySlis | None = None
    checks: list[dict[str, Any]] | None = None
    failures: int | None = None
    by: str | None = None
    seconds: float | None = None
    took_traffic: bool | None = None
    """rollback: whether the revision ever took traffic (a canary never ready did not)."""
    error: str | None = None


EventAttrs = (RequestAttrs | RequestsAttrs | ProbeAttrs | BreakerAttrs | ProcessAttrs | FaultAttrs | MetricAttrs
              | AlertAttrs | NotificationAttrs | RunbookAttrs | PhaseAttrs | CanaryAttrs)  # fmt: skip
ATTRS: dict[str, type[EventAttrs]] = {
    "request": RequestAttrs, "requests": RequestsAttrs, "probe": ProbeAttrs, "breaker": BreakerAttrs,
    "process": ProcessAttrs, "fault": FaultAttrs, "metric": MetricAttrs, "alert": AlertAttrs,
    "notification": NotificationAttrs, "runbook": RunbookAttrs, "phase": PhaseAttrs, "canary": CanaryAttrs,
}  # fmt: skip


class Event(BaseModel):
    """One observation at ``t`` seconds after the run started."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    t: float
    kind: EventKind
    source: str
    attrs: dict[str, Any] = Field(default_factory=dict)
    wall: float | None = None

    def get(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)

    def payload(self) -> EventAttrs:
        """The typed attributes of this event's kind."""
        return read_as(ATTRS[self.kind], self.attrs, self.where)

    @property
    def where(self) -> str:
        """``events[probe from replica-0 at t=1.5].attrs``: this event's attributes, in an error message."""
        return f"events[{self.kind} from {self.source} at t={self.t:g}].attrs"

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        """The published schema says which attributes each kind has (``attrs`` stays an open object)."""
        json_schema = handler(core_schema)
        target = handler.resolve_ref_schema(json_schema)
        target["allOf"] = [{"if": {"properties": {"kind": {"const": kind}}, "required": ["kind"]},
                            "then": {"properties": {"attrs": handler(as_definition(model))}}}
                           for kind, model in ATTRS.items()]  # fmt: skip
        return json_schema
