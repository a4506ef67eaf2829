"""Tracing set-up and the JSON-lines span exporter (providers built per test, never installed globally)."""

from __future__ import annotations

import asyncio
import importlib.util
import time
from pathlib import Path

import numpy as np
import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from prometheus_client import CollectorRegistry

from faultdrill.target_service.batcher import BatchConfig, DeadlineExceeded, InferenceEngine, estimate_bytes_per_row
from faultdrill.target_service.device import DeviceManager
from faultdrill.target_service.metrics import TargetMetrics
from faultdrill.target_service.models import DigitsNet
from faultdrill.target_service.traceexport import JsonLinesSpanExporter, read_span_file
from faultdrill.target_service.tracing import TARGET_SERVICE, TracingConfig, TracingError, setup_tracing


def _config(path: Path | None, **kw: object) -> TracingConfig:
    return TracingConfig(service=TARGET_SERVICE, instance="replica-7", version="3", trace_file=path,
                         **kw)  # type: ignore[arg-type]  # fmt: skip


def test_file_exporter_round_trip_matches_the_in_memory_spans(tmp_path: Path):
    path = tmp_path / "spans" / "replica-7.jsonl"
    tracing = setup_tracing(_config(path, in_memory=True))
    tracer = tracing.tracer()
    with tracer.start_as_current_span("POST /v2/models/{name}/infer", kind=SpanKind.SERVER,
                                      attributes={"http.response.status_code": 503}) as root:  # fmt: skip
        root.add_event("feature.fallback", {"source": "default", "error": "Authorization: Bearer s3cr3t-token"})
        with tracer.start_as_current_span("queue.wait"):
            pass
        root.set_status(Status(StatusCode.ERROR, "HTTP 503"))
    tracing.shutdown()
    assert tracing.memory is not None
    memory = {format(s.context.span_id, "016x"): s for s in tracing.memory.get_finished_spans()}
    records = list(read_span_file(path))
    assert len(records) == 2 == len(memory)
    by_name = {r["name"]: r for r in records}
    server, child = by_name["POST /v2/models/{name}/infer"], by_name["queue.wait"]
    assert child["parent_id"] == server["span_id"] and child["trace_id"] == server["trace_id"]
    assert server["parent_id"] is None and server["kind"] == "SERVER"
    assert (server["status"], server["status_message"]) == ("ERROR", "HTTP 503")
    assert (server["service"], server["instance"], server["version"]) == (TARGET_SERVICE, "replica-7", "3")
    assert server["attributes"] == {"http.response.status_code": 503}
    event = server["events"][0]
    assert event["name"] == "feature.fallback" and "s3cr3t" not in event["attributes"]["error"]  # redacted
    for r in records:  # the same spans the SDK holds in memory, to the nanosecond
        span = memory[r["span_id"]]
        assert (r["start_ns"], r["end_ns"], r["name"]) == (span.start_time, span.end_time, span.name)


def test_a_torn_last_line_is_skipped(tmp_path: Path):
    path = tmp_path / "s.jsonl"
    tracing = setup_tracing(_config(path))
    tracing.tracer().start_span("one").end()
    tracing.shutdown()
    with open(path, "a") as fh:
        fh.write('{"trace_id": "0af7651916cd43dd8448eb211c80319c", "span')
    assert [r["name"] for r in read_span_file(path)] == ["one"]


def test_sample_ratio_zero_records_no_new_trace_but_keeps_a_callers_decision(tmp_path: Path):
    path = tmp_path / "s.jsonl"
    tracing = setup_tracing(_config(path, sample_ratio=0.0))
    tracer = tracing.tracer()
    for _ in range(50):
        with tracer.start_as_current_span("root") as span:
            assert not span.is_recording()
    sampled = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, is_remote=True,
                          trace_flags=TraceFlags(TraceFlags.SAMPLED))  # fmt: skip
    with tracer.start_as_current_span("child-of-sampled", context=trace.set_span_in_context(
            NonRecordingSpan(sampled))) as span:  # fmt: skip
        assert span.is_recording()  # parent-based: the caller chose to record this trace
    tracing.shutdown()
    assert [r["name"] for r in read_span_file(path)] == ["child-of-sampled"]
    record = next(read_span_file(path))
    assert record["remote_parent"] is True and record["parent_id"] == "b7ad6b7169203331"


def test_off_without_a_file_or_endpoint():
    tracing = setup_tracing(_config(None))
    assert not tracing.enabled and tracing.describe() == "off"
    with tracing.tracer().start_as_current_span("x") as span:
        assert not span.is_recording()


def test_otlp_endpoint_needs_its_package(tmp_path: Path):
    config = _config(tmp_path / "s.jsonl", otlp_endpoint="http://127.0.0.1:1/v1/traces")
    try:
        installed = importlib.util.find_spec("opentelemetry.exporter.otlp.proto.http") is not None
    except ModuleNotFoundError:  # not even the opentelemetry.exporter namespace
        installed = False
    if not installed:
        with pytest.raises(TracingError, match=r"opentelemetry-exporter-otlp-proto-http .*faultdrill\[otlp\]"):
            setup_tracing(config)
        assert not (tmp_path / "s.jsonl").exists()  # nothing set up half-way
    else:
        tracing = setup_tracing(config)
        assert any(e.startswith("otlp ") for e in tracing.exporters)
        tracing.shutdown()
    with pytest.raises(TracingError, match="within"):
        setup_tracing(_config(None, sample_ratio=1.5))


def test_a_write_error_fails_the_export_not_the_caller(tmp_path: Path):
    exporter = JsonLinesSpanExporter(tmp_path / "s.jsonl")
    exporter.shutdown()
    tracing = setup_tracing(_config(tmp_path / "other.jsonl", in_memory=True))
    tracing.tracer().start_span("x").end()
    assert tracing.memory is not None
    from opentelemetry.sdk.trace.export import SpanExportResult

    assert exporter.export(tracing.memory.get_finished_spans()) is SpanExportResult.FAILURE
    tracing.shutdown()


def test_engine_spans_queue_wait_forward_and_one_linked_span_per_batch(tmp_path: Path):
    """Three traced requests queued behind a frozen worker run as one batch: each gets queue.wait and
    model.forward under its own request span; the batch span links all three; a later lone request
    gets no batch span (a batch of one is its own forward)."""
    tracing = setup_tracing(_config(None, in_memory=True))
    tracer = tracing.tracer()
    model = DigitsNet().eval()
    engine = InferenceEngine(model, DeviceManager("cpu", emulated_budget_bytes=512 << 20), BatchConfig(),
                             TargetMetrics(CollectorRegistry(), model="digits"), estimate_bytes_per_row(model))
    engine._tracer = tracer  # the engine's tracer comes from the global API in a server; this test installs none
    x = np.zeros((2, 64), dtype=np.float32)

    async def request(name: str, deadline_s: float = 10.0) -> None:
        with tracer.start_as_current_span(name):
            await engine.infer(x, time.monotonic() + deadline_s)

    async def main() -> None:
        engine.start(asyncio.get_running_loop())
        engine.freeze(30)
        while not engine.is_frozen:
            await asyncio.sleep(0.005)
        batch = [asyncio.create_task(request(f"req-{i}")) for i in range(3)]
        await asyncio.sleep(0.05)
        engine.unfreeze()
        await asyncio.gather(*batch)
        await request("lone")
        with pytest.raises(DeadlineExceeded):  # a deadline that passes while queued behind a freeze
            engine.freeze(30)
            while not engine.is_frozen:
                await asyncio.sleep(0.005)
            try:
                await request("late", deadline_s=0.05)
            finally:
                engine.unfreeze()
        await engine.stop(5)

    asyncio.run(main())
    assert tracing.memory is not None
    spans = tracing.memory.get_finished_spans()
    by_id = {s.context.span_id: s for s in spans}
    roots = {s.name: s for s in spans if s.name.startswith(("req-", "lone", "late"))}
    children = {(by_id[s.parent.span_id].name, s.name): s for s in spans if s.parent and s.parent.span_id in by_id}
    batches = [s for s in spans if s.name == "inference.batch"]
    assert len(batches) == 1 and batches[0].attributes["faultdrill.batch.size"] == 3
    assert batches[0].parent is None and batches[0].attributes["faultdrill.batch.rows"] == 6
    assert {link.context.span_id for link in batches[0].links} == {roots[f"req-{i}"].context.span_id for i in range(3)}
    for i in range(3):
        wait, fwd = children[(f"req-{i}", "queue.wait")], children[(f"req-{i}", "model.forward")]
        assert wait.end_time == fwd.start_time and wait.end_time - wait.start_time > 30_000_000  # ≥ 30 ms frozen
        assert fwd.attributes["faultdrill.batch.size"] == 3
        assert fwd.links[0].context.span_id == batches[0].context.span_id
        assert roots[f"req-{i}"].attributes["faultdrill.rows"] == 2
    lone = children[("lone", "model.forward")]
    assert lone.attributes["faultdrill.batch.size"] == 1 and not lone.links
    late_wait = children[("late", "queue.wait")]
    assert late_wait.status.status_code is StatusCode.ERROR and ("late", "model.forward") not in children
    assert late_wait.attributes["error.type"] == "DeadlineExceeded"


def test_a_process_with_an_otlp_endpoint_but_no_package_exits_2_before_serving(tmp_path: Path):
    import os
    import subprocess
    import sys

    from faultdrill.experiments.host.process import free_port

    try:
        installed = importlib.util.find_spec("opentelemetry.exporter.otlp.proto.http") is not None
    except ModuleNotFoundError:
        installed = False
    if installed:
        pytest.skip("opentelemetry-exporter-otlp-proto-http is installed here: the missing-package path cannot run")
    env = {**os.environ, "FAULTDRILL_FS_PORT": str(free_port()), "FAULTDRILL_FS_TRACE_FILE": str(tmp_path / "s.jsonl"),
           "FAULTDRILL_FS_OTLP_ENDPOINT": "http://127.0.0.1:9/v1/traces"}  # fmt: skip
    result = subprocess.run([sys.executable, "-m", "faultdrill.target_service", "feature-store"], env=env,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 2
    assert "opentelemetry-exporter-otlp-proto-http" in result.stderr and "faultdrill[otlp]" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "s.jsonl").exists()
