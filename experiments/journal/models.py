"""Typed models of what a journal records besides its events: verdicts, faults, load, alerting, traces.

The journal stores these sections as its producers wrote them (plain JSON objects: the file and
``journal.load["requests"]`` stay as they are); :class:`~experiments.journal.Journal` reads them
through these models (``journal.verdict_records()``, ``fault_summaries()``, ``fault_records()``,
``load_record()``, ``alerting_record()``, ``steady_criteria()``), and the published JSON Schema
(``reports/schema/journal.schema.json``) is generated from them. Producers' further keys stay
readable (``extra="allow"``). Also here, because readers of a journal need them without the engine:
the nearest-rank :func:`percentile` and :class:`SteadyCriteria` (re-exported by ``experiments.expect.stats``)
and the example-trace models (re-exported by ``experiments.observe.traces``).

>>> VerdictRecord.model_validate({"name": "x", "passed": False, "evaluated": False}).observed
''
>>> SteadyCriteria.of({"window": 2.0, "slo": {"availability": 0.95, "error_ratio": 0.01}}).availability
0.99
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from faultdrill.experiments.journal.events import as_definition
from faultdrill.experiments.journal.traffic import Dist

__all__ = [
    "AlertingRecord", "ExampleTrace", "FaultRecord", "FaultSummary", "FaultVerification", "JsonSchemaOf",
    "LoadRecord", "SpanEvent", "SpanNode", "SteadyCriteria", "TraceSummary", "TraceWindow", "VerdictRecord",
    "percentile",
]  # fmt: skip


@dataclass(frozen=True)
class JsonSchemaOf:
    """``Annotated[dict[str, Any], JsonSchemaOf(Model)]``: a field kept as plain JSON whose schema is ``Model``'s."""

    tp: Any

    def __get_pydantic_json_schema__(self, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return handler(as_definition(self.tp))


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, use_attribute_docstrings=True)


class VerdictRecord(_Record):
    """One expectation's verdict, as ``experiments.expect.judge.Verdict.model_dump(mode="json")`` writes it."""

    name: str
    """The expectation in one line (the JUnit test name)."""
    passed: bool
    expected: str = ""
    observed: str = ""
    evidence: list[dict[str, Any]] = Field(default_factory=list)
    """The events that decided it (JSON form, at most 10)."""
    measured: dict[str, float | int | None] = Field(default_factory=dict)
    window: tuple[float, float] | None = None
    """The run-time window it judged (seconds)."""
    evaluated: bool = True
    """False when the run aborted before there was anything to judge (``observed`` says why)."""


class FaultVerification(_Record):
    """A fault's own check that its effect was there (empty until it ran)."""

    effective: bool | None = None
    emulated: bool | None = None
    message: str | None = None


class FaultSummary(_Record):
    """One fault as the run summarised it: the scheduler's summary, MTTD, first signal and MTTR."""

    type: str | None = None
    target: str | None = None
    start_s: float | None = None
    """Run time it was injected (None: never)."""
    end_s: float | None = None
    """Run time its rollback began."""
    state: str | None = None
    """pending, active, ended or failed."""
    error: str | None = None
    """Why it failed to inject or roll back ("" when it did not)."""
    emulated: bool | None = None
    verified: FaultVerification = Field(default_factory=FaultVerification)
    mttd_s: float | None = None
    """Start → the first page about it (None: never detected)."""
    detected_by: str | None = None
    """The alert of that page."""
    receiver: str | None = None
    first_signal_s: float | None = None
    """Start → its first symptom (probe, breaker, failed request)."""
    mttr_s: float | None = None
    """End → steady state regained (None: never recovered)."""


class FaultRecord(_Record):
    """A fault as it ran: its summary completed from its ``fault`` events (``Journal.fault_records``).

    Times are the events' (what verdicts and MTTD/MTTR measure from), else the summary's."""

    id: str
    type: str | None = None
    target: str | None = None
    mode: str | None = None
    start: float | None = None
    end: float | None = None
    emulated: bool = False
    effective: bool | None = None
    """The fault's own check that its effect was there (None: it has no check)."""
    note: str = ""
    """Its error, else its verification message."""
    mttd_s: float | None = None
    detected_by: str | None = None
    receiver: str | None = None
    first_signal_s: float | None = None
    mttr_s: float | None = None


class LoadRecord(_Record):
    """The load generator's own totals (``experiments.observe.load.LoadSummary``): exact from Locust, else counted."""

    requests: int = 0
    failures: int = 0
    events: int = 0
    """``request`` events it put on the timeline."""
    exact: bool = False
    rps: float = 0.0
    p50_s: float | None = None
    p95_s: float | None = None
    max_s: float | None = None
    by_name: dict[str, int] = Field(default_factory=dict)
    exit_codes: list[int | None] = Field(default_factory=list)


class AlertingRecord(_Record):
    """The run's alerting stack (``{"enabled": false}`` when it ran without one)."""

    enabled: bool = False
    rules_file: str | None = None
    rules_sha256: str | None = None
    extra_rules_files: list[str] | None = None
    """Loaded beside ``rules_file``: the Kubernetes-level platform rules, for a described server."""
    alertmanager_file: str | None = None
    speedup: float | None = None
    """Production durations ÷ this."""
    time_scale: float | None = None
    scaling: list[str] = Field(default_factory=list)
    """What was scaled, in words."""
    scrape_interval_s: float | None = None
    evaluation_interval_s: float | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    first_sample_s: float | None = None
    prometheus_url: str | None = None
    alertmanager_url: str | None = None


# -- example traces (``experiments.observe.traces`` collects them) -------------------------------------
class SpanEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    at_ms: float
    """Offset from the trace's start."""
    attributes: dict[str, Any] = Field(default_factory=dict)


class SpanNode(BaseModel):
    """One span of an example trace, in tree order (``depth`` 0 is the request)."""

    model_config = ConfigDict(extra="forbid")
    name: str
    service: str
    instance: str | None = None
    kind: str
    depth: int
    start_ms: float
    """Offset from the trace's start."""
    duration_ms: float
    status: Literal["OK", "ERROR", "UNSET"]
    status_message: str | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)
    events: list[SpanEvent] = Field(default_factory=list)


class ExampleTrace(BaseModel):
    model_config = ConfigDict(extra="forbid")
    trace_id: str
    t: float
    """Run time (s) the request started."""
    duration_ms: float
    failed: bool
    http_status: int | None = None
    replica: str | None = None
    services: list[str]
    spans: list[SpanNode]
    truncated: int = 0
    """Spans left out (beyond the bound of one example)."""


class TraceWindow(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    """``steady`` or a fault id."""
    label: str
    start: float
    end: float
    requests: int
    failed: int
    p50_ms: float | None = None
    p95_ms: float | None = None
    slowest: list[ExampleTrace] = Field(default_factory=list)
    failures: list[ExampleTrace] = Field(default_factory=list)


class TraceSummary(BaseModel):
    """What the journal keeps of the run's traces; the span files stay in the run directory."""

    model_config = ConfigDict(extra="forbid")
    files: list[str] = Field(default_factory=list)
    """Span files, relative to the run directory."""
    spans: int = 0
    """Request (root) spans read."""
    windows: list[TraceWindow] = Field(default_factory=list)
    note: str = ""


# -- request arithmetic shared by the engine and the reports (``experiments.expect.stats`` re-exports it) --
def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..1) of already sorted values; None when empty."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


@dataclass(frozen=True)
class SteadyCriteria:
    """What "steady state" means: over any ``window_s`` of requests, availability at least
    ``availability`` and (when set) p95 latency of ok requests at most ``latency_p95_s``.

    The defaults (5 s, 0.99, no latency bound) are used when a spec gives no steady state.
    """

    window_s: float = 5.0
    availability: float = 0.99
    latency_p95_s: float | None = None

    @classmethod
    def of(cls, steady_state: Any = None) -> SteadyCriteria:
        """From a spec's ``steady_state`` (``window``; ``slo.availability`` / ``slo.error_ratio`` /
        ``slo.latency_p95``, each possibly None = no bound) — the model, or its JSON form as a journal's
        ``spec`` holds it — a ``SteadyCriteria``, or None (defaults). An ``error_ratio`` bound is the
        availability bound ``1 - error_ratio``; the stricter one wins."""
        if steady_state is None or isinstance(steady_state, SteadyCriteria):
            return steady_state or cls()
        if isinstance(steady_state, Mapping):  # a key left out is the spec's default, as for the model
            slo = steady_state.get("slo")
            slo = SimpleNamespace(**slo) if isinstance(slo, Mapping) else None
            steady_state = SimpleNamespace(window=steady_state.get("window"), slo=slo)
        slo, window = getattr(steady_state, "slo", None), getattr(steady_state, "window", None)
        availability = 0.99 if slo is None else getattr(slo, "availability", 0.99)
        error_ratio, p95 = getattr(slo, "error_ratio", None), getattr(slo, "latency_p95", None)
        floor = max(0.0 if availability is None else float(availability),
                    0.0 if error_ratio is None else 1.0 - float(error_ratio))  # fmt: skip
        return cls(window_s=5.0 if window is None else float(window), availability=floor,
                   latency_p95_s=None if p95 is None else float(p95))  # fmt: skip

    def met(self, total: int, ok: int, latencies: Dist) -> bool:
        """Do these requests (counts, the ok ones' latencies) meet the criteria? None at all never do."""
        if not total or ok / total < self.availability:
            return False
        p95 = latencies.quantile(0.95)
        return self.latency_p95_s is None or (p95 is not None and p95 <= self.latency_p95_s)

    def describe(self) -> str:
        text = f"availability ≥ {self.availability:g}"
        if self.latency_p95_s is not None:
            text += f" and p95 ≤ {self.latency_p95_s * 1000:g} ms"
        return f"{text} over {self.window_s:g} s windows"
