"""The journal's typed models: they read what the producers write today, agree with the producers' own
types, leave the file as it was, and are what the reports (importing ``experiments.journal`` only) use."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from faultdrill.experiments.journal import (
    ATTRS,
    KINDS,
    AlertingRecord,
    Event,
    FaultAttrs,
    FaultSummary,
    Journal,
    JournalValueError,
    LoadRecord,
    ProbeAttrs,
    RequestAttrs,
    SteadyCriteria,
    VerdictRecord,
    units,
)
from faultdrill.reports.jsonout import journal_schema, render_json


def test_every_kind_has_a_model_and_the_old_homes_re_export_the_moved_names():
    import faultdrill.experiments.expect.stats as slo
    import faultdrill.experiments.journal as journal
    import faultdrill.experiments.journal.timeline as timeline
    import faultdrill.experiments.observe.traces as traces

    assert set(ATTRS) == set(KINDS)
    assert timeline.Event is journal.Event and timeline.KINDS is journal.KINDS
    assert slo.percentile is journal.percentile and slo.SteadyCriteria is journal.SteadyCriteria
    for name in ("ExampleTrace", "SpanEvent", "SpanNode", "TraceSummary", "TraceWindow"):
        assert getattr(traces, name) is getattr(journal, name)


def test_a_real_run_is_fully_described_by_the_models(smoke_journal):
    """Every attribute the producers wrote in a real run is a declared field (nothing left to ``.get``)."""
    for e in smoke_journal.events:
        payload = e.payload()
        assert isinstance(payload, ATTRS[e.kind])
        assert not payload.model_extra, (e.kind, payload.model_extra)
    for fid, raw in smoke_journal.faults.items():
        assert set(raw) <= set(FaultSummary.model_fields), fid
    assert set(smoke_journal.load) <= set(LoadRecord.model_fields)
    assert set(smoke_journal.alerting) <= set(AlertingRecord.model_fields)
    for raw in smoke_journal.verdicts:
        assert set(raw) <= set(VerdictRecord.model_fields)
    assert {f.id for f in smoke_journal.fault_records()} == set(smoke_journal.faults)


def test_the_records_mirror_the_producers_types():
    from faultdrill.experiments.expect import ProbeHolds
    from faultdrill.experiments.expect.judge import Verdict, not_evaluated
    from faultdrill.experiments.observe.load import LoadSummary

    assert set(VerdictRecord.model_fields) == set(Verdict.model_fields)
    holds = ProbeHolds(probe="liveness", replica="replica-0", holds=True, during="hog")
    verdicts = [Verdict(name="n", passed=True, expected="e", observed="o", measured={"seconds": 1.5, "requests": 3},
                        window=(1.0, 2.0), evidence=[{"t": 1.0}]), not_evaluated(holds, "no platform")]  # fmt: skip
    for v in verdicts:
        record = VerdictRecord.model_validate(v.model_dump(mode="json"))
        assert record.model_dump() == v.model_dump() and not record.model_extra
    assert set(LoadRecord.model_fields) == {f.name for f in dataclasses.fields(LoadSummary)}
    load = dataclasses.asdict(LoadSummary(requests=10, failures=1, events=10, exact=True, exit_codes=(0, None)))
    assert LoadRecord.model_validate(load).exit_codes == [0, None]


def test_reading_never_changes_what_the_journal_writes(smoke_journal, journal_factory):
    for journal in (smoke_journal, journal_factory()):
        before = render_json(journal)
        journal.verdict_records(), journal.fault_records(), journal.load_record(), journal.alerting_record()
        [e.payload() for e in journal.events]
        assert render_json(journal) == before
        assert Journal.model_validate_json(before) == journal


def test_fault_records_complete_the_summary_from_the_events(journal_factory):
    journal = journal_factory()
    ctk = [Event(t=20.0, kind="fault", source="ctk:drain", attrs={"event": "start", "fault": "chaostoolkit",
                                                                  "mode": "action", "target": "process x"}),
           Event(t=21.0, kind="fault", source="ctk:drain", attrs={"event": "error", "status": "failed"})]  # fmt: skip
    late = {"type": "cert_expiry", "state": "pending", "emulated": None, "verified": {}}  # never injected
    journal = journal.model_copy(update={"events": [*journal.events, *ctk], "faults": {**journal.faults, "late": late}})
    hog, late, drain = journal.fault_records()
    assert (hog.id, hog.mode, hog.start, hog.end, hog.effective, hog.note, hog.mttd_s) == (
        "hog", "in_process", 5.0, 15.0, True, "held", 1.0)  # fmt: skip
    assert (late.id, late.type, late.start, late.emulated, late.effective) == ("late", "cert_expiry", None, False, None)
    assert (drain.id, drain.type, drain.target, drain.start, drain.note) == (
        "ctk:drain", "chaostoolkit", "process x", 20.0, "error")  # fmt: skip


def test_steady_criteria_are_the_runs_read_back_from_the_spec_in_the_journal(journal_factory):
    from faultdrill.experiments.spec.experiment import Experiment

    for steady in (None, {"window": "3s", "slo": {"availability": 0.95, "error_ratio": 0.001, "latency_p95": "500ms"}},
                   {"slo": {"availability": None}}):  # fmt: skip
        doc: dict[str, Any] = {"apiVersion": "faultdrill/v1", "kind": "Experiment", "metadata": {"name": "x"}}
        spec = Experiment.model_validate({**doc, **({"steady_state": steady} if steady is not None else {})})
        dumped = spec.model_dump(mode="json", by_alias=True)  # what experiments.engine.run puts in the journal
        journal = journal_factory().model_copy(update={"spec": dumped})
        assert journal.steady_criteria() == SteadyCriteria.of(spec.steady_state)
    assert journal_factory().model_copy(update={"spec": {}}).steady_criteria() == SteadyCriteria()


def test_a_version_1_journal_reads_one_unit_per_request_as_request_attrs_does(smoke_journal):
    """The fixture predates buckets (journal version 1): each ``request`` event is a unit of one."""
    assert smoke_journal.version == 1
    requests = [e for e in smoke_journal.events if e.kind == "request"]
    read = list(units(smoke_journal.events))
    typed = [RequestAttrs.of(e) for e in requests]
    assert [u.t for u in read] == [e.t for e in requests] and all(u.total == 1 for u in read)
    assert [u.ok == 1 for u in read] == [r.ok for r in typed]
    assert [u.latency[0][0] if u.latency else None for u in read] == [r.latency_s if r.ok else None for r in typed]
    assert next(units([Event(t=0.0, kind="request", source="load")])).ok == int(RequestAttrs().ok)


def test_a_wrong_value_is_one_line_naming_the_field(journal_factory):
    journal = journal_factory()
    journal.verdicts[0] = {**journal.verdicts[0], "window": ["replica-0", 1]}
    with pytest.raises(JournalValueError, match=r"^verdicts\.0\.window\.0: Input should be a valid number"):
        journal.verdict_records()
    with pytest.raises(JournalValueError, match=r"^events\[probe from replica-0 at t=1\.5\]\.attrs\.value: "):
        ProbeAttrs.of(Event(t=1.5, kind="probe", source="replica-0", attrs={"value": "maybe"}))
    with pytest.raises(ValueError, match="a probe event has no FaultAttrs"):
        FaultAttrs.of(Event(t=1.5, kind="probe", source="replica-0"))


def test_the_schema_ties_each_kind_to_its_attributes(journal_factory):
    import jsonschema

    validator = jsonschema.Draft202012Validator(journal_schema())
    doc = json.loads(render_json(journal_factory()))
    assert validator.is_valid(doc)
    request = next(e for e in doc["events"] if e["kind"] == "request")
    request["attrs"]["ok"] = "maybe"
    assert not validator.is_valid(doc)
    request["attrs"]["ok"], request["attrs"]["from_a_newer_producer"] = True, {"any": "thing"}
    assert validator.is_valid(doc)

