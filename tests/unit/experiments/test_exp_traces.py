"""The journal's example traces: span files written by the real exporter, windows from a timeline."""

from __future__ import annotations

import json
from pathlib import Path

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from faultdrill.experiments.journal import Environment, Journal
from faultdrill.experiments.journal.timeline import Timeline
from faultdrill.experiments.observe.traces import MAX_SPANS, collect_traces, windows_of
from faultdrill.target_service.tracing import FEATURE_STORE_SERVICE, TARGET_SERVICE, TracingConfig, setup_tracing

WALL0 = 1_800_000_000.0


def _ns(t: float) -> int:
    return int((WALL0 + t) * 1e9)


def _timeline() -> Timeline:
    tl = Timeline(start=0.0)
    tl.start_wall = WALL0
    tl.add("phase", "run", t=0.0, phase="setup")
    tl.add("phase", "run", t=2.0, phase="steady")
    tl.add("fault", "fs-down", t=10.0, event="start", fault="dependency_outage", target="feature-store")
    tl.add("fault", "fs-down", t=20.0, event="end", fault="dependency_outage")
    tl.add("phase", "run", t=30.0, phase="teardown")
    return tl


def _write_spans(trace_dir: Path) -> dict[str, str]:
    """Requests every 0.5 s from t=2 to t=29: slow and failing ones inside the fault window; returns
    the trace ids of the notable requests by name."""
    target = setup_tracing(TracingConfig(service=TARGET_SERVICE, instance="replica-0", version="1",
                                         trace_file=trace_dir / "replica-0.jsonl"))  # fmt: skip
    store = setup_tracing(TracingConfig(service=FEATURE_STORE_SERVICE, instance="feature-store",
                                        trace_file=trace_dir / "feature-store.jsonl"))  # fmt: skip
    t_tr, f_tr = target.tracer(), store.tracer()
    notable: dict[str, str] = {}
    for i in range(4, 58):
        t = i / 2
        in_fault = 10.0 <= t <= 20.0
        failed = in_fault and i % 4 == 0
        dur = 0.005 + (0.2 + i / 1000 if in_fault and i % 4 == 1 else 0.0) + (0.25 if failed else 0.0)
        dur += 0.01 if i == 6 else 0.0  # the slowest of steady state, and the biggest trace
        root = t_tr.start_span("POST /v2/models/{name}/infer", kind=SpanKind.SERVER, start_time=_ns(t),
                               attributes={"http.response.status_code": 504 if failed else 200,
                                           "faultdrill.replica": "replica-0", "url.scheme": "http"})  # fmt: skip
        ctx = trace.set_span_in_context(root)
        client = t_tr.start_span("GET /v1/features/{entity}", context=ctx, kind=SpanKind.CLIENT,
                                 start_time=_ns(t + 0.001))  # fmt: skip
        remote = SpanContext(client.get_span_context().trace_id, client.get_span_context().span_id, is_remote=True,
                             trace_flags=TraceFlags(TraceFlags.SAMPLED))  # fmt: skip
        server = f_tr.start_span("GET /v1/features/{entity}", kind=SpanKind.SERVER, start_time=_ns(t + 0.0015),
                                 context=trace.set_span_in_context(NonRecordingSpan(remote)))  # fmt: skip
        if in_fault:
            server.add_event("fault.injected", {"fault": "error", "status": 503}, timestamp=_ns(t + 0.002))
            server.set_status(Status(StatusCode.ERROR, "HTTP 503"))
            client.add_event("breaker.transition", {"from": "closed", "to": "open"}, timestamp=_ns(t + 0.003))
        server.end(end_time=_ns(t + 0.0025))
        client.end(end_time=_ns(t + 0.003))
        fwd = t_tr.start_span("model.forward", context=ctx, start_time=_ns(t + 0.004),
                              attributes={"faultdrill.batch.id": i})  # fmt: skip
        fwd.end(end_time=_ns(t + dur - 0.0005))
        if i == 6:  # one request with far more spans than an example keeps
            for k in range(MAX_SPANS + 5):
                extra = t_tr.start_span(f"cache.get #{k}", context=ctx, start_time=_ns(t + 0.0041))
                extra.end(end_time=_ns(t + 0.0042))
        if failed:
            root.set_attribute("error.type", "504")
            root.set_status(Status(StatusCode.ERROR, "HTTP 504"))
        root.end(end_time=_ns(t + dur))
        if in_fault and i % 4 == 1:
            notable[f"slow-{i}"] = format(root.get_span_context().trace_id, "032x")
        if failed:
            notable[f"failed-{i}"] = format(root.get_span_context().trace_id, "032x")
    target.shutdown()
    store.shutdown()
    with open(trace_dir / "replica-0.jsonl", "a") as fh:  # a replica killed mid-write leaves a torn line
        fh.write('{"trace_id": "abc", "span_')
    return notable


def test_windows_are_steady_state_then_each_fault():
    assert windows_of(_timeline()) == [
        ("steady", "steady state (before the first fault)", 2.0, 10.0),
        ("fs-down", "fault fs-down (dependency_outage on feature-store)", 10.0, 20.0),
    ]


def test_slowest_and_failed_traces_of_the_fault_window(tmp_path: Path):
    trace_dir = tmp_path / "platform" / "traces"
    notable = _write_spans(trace_dir)
    summary = collect_traces(trace_dir, _timeline(), run_dir=tmp_path, examples=2)
    assert summary.files == ["platform/traces/feature-store.jsonl", "platform/traces/replica-0.jsonl"]
    assert summary.spans == 54  # request spans read; the torn line skipped
    steady, fault = summary.windows
    assert (steady.requests, steady.failed) == (16, 0) and steady.failures == []
    assert fault.requests == 20 and fault.failed == 5  # [start, end): t = 20.0 is after the fault
    # the slowest successful requests inside the window: the last two slow ones (longest)
    assert [x.trace_id for x in fault.slowest] == [notable["slow-37"], notable["slow-33"]]
    assert all(not x.failed and 10.0 <= x.t <= 20.0 for x in fault.slowest)
    assert fault.slowest[0].duration_ms > fault.slowest[1].duration_ms > 200
    failed = fault.failures
    assert len(failed) == 2 and all(x.failed and x.http_status == 504 for x in failed)
    assert {x.trace_id for x in failed} <= {v for k, v in notable.items() if k.startswith("failed-")}
    # one trace across both services, as a tree: request → client → feature store server
    tree = [(s.depth, s.name, s.service, s.kind, s.status) for s in failed[0].spans]
    assert tree[:3] == [
        (0, "POST /v2/models/{name}/infer", TARGET_SERVICE, "SERVER", "ERROR"),
        (1, "GET /v1/features/{entity}", TARGET_SERVICE, "CLIENT", "UNSET"),
        (2, "GET /v1/features/{entity}", FEATURE_STORE_SERVICE, "SERVER", "ERROR"),
    ]
    assert failed[0].services == [FEATURE_STORE_SERVICE, TARGET_SERVICE]
    store_span = failed[0].spans[2]
    assert store_span.events[0].name == "fault.injected" and store_span.events[0].at_ms == 2.0
    assert store_span.start_ms == 1.5 and store_span.duration_ms == 1.0
    assert "url.scheme" not in failed[0].spans[0].attributes  # the same for every request: left out
    assert failed[0].spans[0].attributes["error.type"] == "504"


def test_an_example_is_bounded_and_the_steady_window_has_its_own(tmp_path: Path):
    _write_spans(tmp_path)
    summary = collect_traces(tmp_path, _timeline(), examples=3)
    steady = summary.windows[0]
    assert len(steady.slowest) == 3
    big = steady.slowest[0]
    assert len(big.spans) == MAX_SPANS and big.truncated == 45 + 4 - MAX_SPANS  # 45 cache spans + 4 others
    assert big.duration_ms > steady.slowest[1].duration_ms
    assert len(json.dumps(summary.model_dump(mode="json"))) < 120_000  # what goes into the journal stays small


def test_no_span_files_is_a_note_not_an_error(tmp_path: Path):
    summary = collect_traces(tmp_path / "missing", _timeline())
    assert summary.windows == [] and "tracing off" in summary.note


def test_the_journal_keeps_the_summary(tmp_path: Path):
    _write_spans(tmp_path)
    summary = collect_traces(tmp_path, _timeline())
    env = Environment(device="cpu", emulated=True, faultdrill="0", python="3.11", platform="x", host="h")
    journal = Journal.new({"metadata": {"name": "t"}}, env)
    journal.traces = summary
    again = Journal.read(journal.write(tmp_path / "run"))
    assert again.traces == summary
