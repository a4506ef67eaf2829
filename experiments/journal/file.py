"""The journal: one JSON file per run, the only thing reports read.

It holds the spec that ran, the environment (device real or emulated, versions, time scale),
every timeline event, the verdicts, MTTD/MTTR per fault, and the outcome with its exit code
(0 passed, 1 an expectation failed, 2 bad input, 3 halted). ``JOURNAL_VERSION`` is bumped
on any incompatible change; readers refuse versions they do not know. Version 2 added the ``requests``
event (requests aggregated at the source, ``experiments.journal.traffic``); version 1 journals (one
``request`` event per request) are still read.

Its sections are kept as their producers wrote them (plain JSON: the file never changes shape); readers
use typed accessors over the models of ``experiments.journal.models`` and ``experiments.journal.events``:
``verdict_records()``, ``fault_summaries()``, ``fault_records()`` (each fault completed from its events),
``load_record()``, ``alerting_record()``, ``steady_criteria()`` (the steady state the run judged by, read
from its ``spec``) and, per event, ``XxxAttrs.of(event)`` / ``event.payload()``. The package
``experiments.journal`` re-exports all of them: it is the one part of ``experiments`` the reports import
(an import-linter contract).

Example::

    journal = Journal.new(spec_doc, environment=collect_environment(device="cpu", emulated=True))
    journal.finish(timeline, verdicts=[...], outcome="passed")
    path = journal.write(run_dir)            # run_dir/journal.json
    again = Journal.read(path)
    again.fault_records()[0].mttd_s, again.steady_criteria().availability
"""

from __future__ import annotations

import os
import platform
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from faultdrill.experiments.journal.events import (
    ATTRS,
    KINDS,
    AlertAttrs,
    BreakerAttrs,
    CanaryAttrs,
    CanarySlis,
    Event,
    EventAttrs,
    EventKind,
    FaultAttrs,
    JournalValueError,
    MetricAttrs,
    NotificationAttrs,
    PhaseAttrs,
    ProbeAttrs,
    ProcessAttrs,
    RequestAttrs,
    RequestsAttrs,
    RunbookAttrs,
    read_as,
)
from faultdrill.experiments.journal.models import (
    AlertingRecord,
    ExampleTrace,
    FaultRecord,
    FaultSummary,
    FaultVerification,
    JsonSchemaOf,
    LoadRecord,
    SpanEvent,
    SpanNode,
    SteadyCriteria,
    TraceSummary,
    TraceWindow,
    VerdictRecord,
    percentile,
)
from faultdrill.experiments.journal.timeline import Timeline
from faultdrill.experiments.journal.traffic import Dist, Unit, decoded, encode_latencies, is_lost, is_wrong, units
from faultdrill.faults.errors import ConfigError

__all__ = [
    "ATTRS",
    "EXIT_CODES",
    "JOURNAL_VERSION",
    "KINDS",
    "READABLE_VERSIONS",
    "AlertAttrs",
    "AlertingRecord",
    "BreakerAttrs",
    "CanaryAttrs",
    "CanarySlis",
    "Dist",
    "Environment",
    "Event",
    "EventAttrs",
    "EventKind",
    "ExampleTrace",
    "FaultAttrs",
    "FaultRecord",
    "FaultSummary",
    "FaultVerification",
    "Journal",
    "JournalValueError",
    "LoadRecord",
    "MetricAttrs",
    "NotificationAttrs",
    "Outcome",
    "PhaseAttrs",
    "ProbeAttrs",
    "ProcessAttrs",
    "RequestAttrs",
    "RequestsAttrs",
    "RunbookAttrs",
    "SpanEvent",
    "SpanNode",
    "SteadyCriteria",
    "TraceSummary",
    "TraceWindow",
    "Unit",
    "VerdictRecord",
    "collect_environment",
    "decoded",
    "encode_latencies",
    "faultdrill_version",
    "is_lost",
    "is_wrong",
    "percentile",
    "units",
]  # fmt: skip

JOURNAL_VERSION = 2
READABLE_VERSIONS = (1, 2)
Outcome = Literal["passed", "failed", "halted", "error"]
EXIT_CODES: dict[str, int] = {"passed": 0, "failed": 1, "error": 2, "halted": 3}


class Environment(BaseModel):
    """Where a run happened; ``device_label`` is what reports show (``cpu (emulated)``)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    device: str
    emulated: bool
    device_name: str = ""
    faultdrill: str
    python: str
    torch: str | None = None
    platform: str
    host: str
    time_scale: float = 1.0
    """Factor applied to alert rule durations and back-offs in this run (1.0 = production)."""
    notes: list[str] = Field(default_factory=list)
    """What was emulated and why, in plain words."""

    @property
    def device_label(self) -> str:
        return f"{self.device} ({'emulated' if self.emulated else 'real'})"


def faultdrill_version() -> str:
    """The installed distribution's version (its metadata: no import reaches up into the CLI package)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("faultdrill")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


def collect_environment(*, device: str, emulated: bool, device_name: str = "", time_scale: float = 1.0,
                        notes: list[str] | None = None) -> Environment:  # fmt: skip
    """The environment of this process (torch's version only if torch is already imported)."""
    torch_mod = sys.modules.get("torch")
    return Environment(
        device=device, emulated=emulated, device_name=device_name, faultdrill=faultdrill_version(),
        python=platform.python_version(), torch=getattr(torch_mod, "__version__", None),
        platform=platform.platform(), host=platform.node(), time_scale=time_scale, notes=notes or [],
    )  # fmt: skip


@dataclass
class _FaultEvents:
    """What one fault's events say: its first start and end, its last verification and error."""

    start: float | None = None
    end: float | None = None
    started: FaultAttrs | None = None
    effective: bool | None = None
    message: str | None = None
    error: str | None = None

    def add(self, t: float, a: FaultAttrs) -> None:
        if a.event == "start" and self.start is None:
            self.start, self.started = t, a
        elif a.event == "end" and self.end is None:
            self.end = t
        elif a.event == "verified":
            self.effective, self.message = a.effective, a.message or ""
        elif a.event == "error":
            self.error = a.error or a.message or "error"


class Journal(BaseModel):
    """Everything one run saw and decided."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    version: int = JOURNAL_VERSION
    run_id: str
    name: str
    spec: dict[str, Any]
    environment: Environment
    started_at: float
    ended_at: float | None = None
    outcome: Outcome | None = None
    exit_code: int | None = None
    reason: str = ""
    """Why the run halted or errored; empty when it passed or failed on expectations."""
    # The sections below are stored as written (plain JSON); their schema, and the typed accessors, are the models'.
    verdicts: Annotated[list[dict[str, Any]], JsonSchemaOf(list[VerdictRecord])] = Field(default_factory=list)
    """Each expectation's verdict (``VerdictRecord``; read with :meth:`verdict_records`)."""
    faults: Annotated[dict[str, dict[str, Any]], JsonSchemaOf(dict[str, FaultSummary])] = Field(default_factory=dict)
    """Per fault id: type, target, start/end times, state, error, emulated, verification, mttd_s (start → first
    page), detected_by (that alert), receiver, first_signal_s (start → first symptom), mttr_s (``FaultSummary``)."""
    load: Annotated[dict[str, Any], JsonSchemaOf(LoadRecord)] = Field(default_factory=dict)
    """The load generator's own totals (Locust's exact counts; ``LoadRecord``); empty when no load ran."""
    alerting: Annotated[dict[str, Any], JsonSchemaOf(AlertingRecord)] = Field(default_factory=dict)
    """The alerting stack of the run: enabled, rules file and its sha256, speedup and what it scaled,
    scrape/evaluation intervals, Prometheus/Alertmanager versions, seconds to the first sample (``AlertingRecord``)."""
    traces: TraceSummary | None = None
    """Example traces per window (steady state, each fault): the slowest and the failed requests' span trees
    across target and feature store (``experiments.observe.traces``); the span files stay in the run directory."""
    events: list[Event] = Field(default_factory=list)

    @classmethod
    def new(cls, spec: dict[str, Any], environment: Environment) -> Journal:
        name = str(spec.get("metadata", {}).get("name", "experiment"))
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        return cls(run_id=f"{stamp}-{uuid.uuid4().hex[:6]}", name=name, spec=spec, environment=environment,
                   started_at=time.time())  # fmt: skip

    def finish(self, timeline: Timeline, *, verdicts: list[dict[str, Any]], outcome: Outcome,
               faults: dict[str, dict[str, Any]] | None = None, reason: str = "") -> None:  # fmt: skip
        self.events = timeline.events()
        self.verdicts = verdicts
        self.faults = faults or {}
        self.outcome = outcome
        self.exit_code = EXIT_CODES[outcome]
        self.reason = reason
        self.ended_at = time.time()

    def timeline(self) -> Timeline:
        return Timeline(self.events, start=0.0)

    # -- typed reading ---------------------------------------------------------------------------
    def verdict_records(self) -> list[VerdictRecord]:
        return [read_as(VerdictRecord, v, f"verdicts.{i}") for i, v in enumerate(self.verdicts)]

    def fault_summaries(self) -> dict[str, FaultSummary]:
        """The faults as the run summarised them (``faults``), by id."""
        return {fid: read_as(FaultSummary, s, f"faults.{fid}") for fid, s in self.faults.items()}

    def fault_records(self) -> list[FaultRecord]:
        """Every fault of the run: those summarised first, then those only the events know (a Chaos Toolkit
        action, a pytest fixture's fault); each summary completed from its ``fault`` events — its times the
        events' (verdicts and MTTD/MTTR place a fault by them), mode, verification, error."""
        summaries, seen = self.fault_summaries(), dict[str, _FaultEvents]()
        for e in self.events:
            if e.kind == "fault":
                seen.setdefault(e.source, _FaultEvents()).add(e.t, FaultAttrs.of(e))
        out = []
        for fid in [*summaries, *(f for f in seen if f not in summaries)]:
            s, ev = summaries.get(fid) or FaultSummary(), seen.get(fid) or _FaultEvents()
            began = ev.started or FaultAttrs()
            out.append(FaultRecord(
                id=fid, type=s.type or began.fault, target=s.target or began.target, mode=began.mode,
                start=ev.start if ev.start is not None else s.start_s, end=ev.end if ev.end is not None else s.end_s,
                emulated=bool(s.emulated if s.emulated is not None else began.emulated),
                effective=s.verified.effective if s.verified.effective is not None else ev.effective,
                note=s.error or ev.error or s.verified.message or ev.message or "", mttd_s=s.mttd_s,
                detected_by=s.detected_by, receiver=s.receiver, first_signal_s=s.first_signal_s, mttr_s=s.mttr_s,
            ))  # fmt: skip
        return out

    def load_record(self) -> LoadRecord | None:
        """The load generator's totals (None: no load generator ran)."""
        return read_as(LoadRecord, self.load, "load") if self.load else None

    def alerting_record(self) -> AlertingRecord | None:
        """The alerting stack (None: the run ended before it was decided; ``enabled`` False: none ran)."""
        return read_as(AlertingRecord, self.alerting, "alerting") if self.alerting else None

    def steady_criteria(self) -> SteadyCriteria:
        """The steady state the run judged by: ``SteadyCriteria.of`` the spec's ``steady_state``, as the run
        computed it (the spec's defaults are in the spec the journal holds; a spec without one, the defaults)."""
        return SteadyCriteria.of(self.spec.get("steady_state"))

    def write(self, run_dir: Path) -> Path:
        """Write ``run_dir/journal.json`` atomically: indented, but one compact line per event (the bulk of a
        journal; ~35 % smaller than indenting them, and still one ``grep`` hit per event)."""
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / "journal.json"
        tmp = path.with_suffix(".json.tmp")
        head = self.model_dump_json(indent=1, exclude={"events"})
        events = ",\n".join(e.model_dump_json() for e in self.events)
        tmp.write_text(f'{head.removesuffix("}").rstrip()},\n "events": [\n{events}\n ]\n}}\n'
                       if head.strip() != "{}" else f'{{"events": [{events}]}}\n')
        os.replace(tmp, path)
        return path

    @classmethod
    def read(cls, path: Path) -> Journal:
        """Read a journal; a missing file, bad JSON, one over the input limits (``MAX_JOURNAL_BYTES``, nesting)
        or an unknown version is a ConfigError."""
        import json

        from faultdrill.faults.inputlimits import MAX_JOURNAL_BYTES, decode_utf8, json_depth_error, read_bytes

        try:
            raw = decode_utf8(read_bytes(path, limit=MAX_JOURNAL_BYTES, what="journal"), str(path))
        except OSError as exc:
            raise ConfigError(f"cannot read journal: {exc.strerror}", file=str(path)) from None
        try:
            doc = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"not a journal: {exc.msg}", file=str(path), line=exc.lineno, column=exc.colno) from None
        except RecursionError:
            raise json_depth_error(raw, str(path), "a journal") from None
        if not isinstance(doc, dict) or doc.get("version") not in READABLE_VERSIONS:
            found = doc.get("version") if isinstance(doc, dict) else None
            raise ConfigError(f"journal version {found!r} is not supported (this faultdrill reads versions "
                              f"{', '.join(map(str, READABLE_VERSIONS))})",
                              file=str(path), field="version")  # fmt: skip
        try:
            return cls.model_validate(doc)
        except ValidationError as exc:
            first = exc.errors()[0]
            more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
            raise ConfigError(f"not a valid journal: {first['msg']}{more}", file=str(path),
                              field=".".join(str(p) for p in first["loc"])) from None  # fmt: skip
