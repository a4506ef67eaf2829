"""The "Example traces" section: waterfalls per fault window in HTML and Markdown, from the journal alone."""

from __future__ import annotations

import re

from faultdrill.experiments.observe.traces import ExampleTrace, SpanEvent, SpanNode, TraceSummary, TraceWindow
from faultdrill.reports import RunView, render_html, render_markdown
from faultdrill.reports.traces import bar, traces_markdown

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def _example(failed: bool, duration: float = 250.0) -> ExampleTrace:
    spans = [
        SpanNode(name="POST /v2/models/{name}/infer", service="faultdrill-target", instance="replica-0", kind="SERVER",
                 depth=0, start_ms=0.0, duration_ms=duration, status="ERROR" if failed else "UNSET",
                 status_message="HTTP 504" if failed else None,
                 attributes={"http.response.status_code": 504 if failed else 200, "faultdrill.rows": 1}),
        SpanNode(name="GET /v1/features/{entity}", service="faultdrill-target", kind="CLIENT", depth=1, start_ms=1.0,
                 duration_ms=200.0, status="ERROR", status_message="timeout", attributes={"error.type": "timeout"},
                 events=[SpanEvent(name="breaker.transition", at_ms=201.0,
                                   attributes={"from": "closed", "to": "open"})]),
        SpanNode(name="GET /v1/features/{entity}", service="faultdrill-feature-store", kind="SERVER", depth=2,
                 start_ms=2.0, duration_ms=198.0, status="UNSET",
                 events=[SpanEvent(name="fault.injected", at_ms=2.1, attributes={"fault": "delay"})]),
        SpanNode(name="model.forward", service="faultdrill-target", kind="INTERNAL", depth=1, start_ms=230.0,
                 duration_ms=19.0, status="UNSET", attributes={"faultdrill.batch.id": 7}),
    ]  # fmt: skip
    return ExampleTrace(trace_id=TRACE_ID if failed else "0" * 31 + "1", t=7.5, duration_ms=duration, failed=failed,
                        http_status=504 if failed else 200, replica="replica-0",
                        services=["faultdrill-feature-store", "faultdrill-target"], spans=spans)  # fmt: skip


def _summary() -> TraceSummary:
    return TraceSummary(files=["platform/traces/replica-0.jsonl"], spans=240, windows=[
        TraceWindow(id="steady", label="steady state (before the first fault)", start=2.0, end=5.0, requests=30,
                    failed=0, p50_ms=4.0, p95_ms=6.0),
        TraceWindow(id="hog", label="fault hog (gpu_memory_exhaustion on replica-0)", start=5.0, end=15.0,
                    requests=100, failed=20, p50_ms=50.0, p95_ms=300.0, slowest=[_example(False, 240.0)],
                    failures=[_example(True)]),
    ])  # fmt: skip


def test_html_shows_a_waterfall_per_example_inside_its_fault_window(journal_factory):
    journal = journal_factory().model_copy(update={"traces": _summary()})
    html = render_html(RunView.of(journal))
    section = html[html.index('id="traces"'):html.index("SLO and error budget")]
    assert "fault hog (gpu_memory_exhaustion on replica-0)" in section and "100 traced request(s), 20 failed" in section
    assert section.count('class="trace failed"') == 1 and section.count('class="trace"') == 1
    assert TRACE_ID in section and "HTTP 504" in section
    # bars placed by percent of the trace: the store's span starts at 2/250 = 0.8 % and spans 79.2 %
    assert 'style="margin-left:0.80%;width:79.20%"' in section
    assert "⚑ breaker.transition at +201.0 ms" in section and "fault.injected" in section
    assert "No traced request in this window." in section  # the steady window had no example
    assert not re.search(r'(src|href)="https?:', html)  # no external asset
    assert "<script" not in html


def test_markdown_has_the_section_with_text_waterfalls(journal_factory):
    journal = journal_factory().model_copy(update={"traces": _summary()})
    md = render_markdown(RunView.of(journal))
    section = md[md.index("#### Example traces"):]
    assert "fault hog (gpu_memory_exhaustion on replica-0), t = 5.0–15.0 s: 100 traced, 20 failed" in section
    assert f"**250.0 ms** at t = 7.5 s on replica-0, HTTP 504 — `{TRACE_ID}`" in section
    assert "**error**: timeout" in section and "⚑ fault.injected +2.1 ms" in section
    assert "`" + bar(2.0, 198.0, 250.0) + "`" in section
    assert "`platform/traces/replica-0.jsonl`" in section


def test_a_journal_without_traces_renders_without_the_section(journal_factory):
    view = RunView.of(journal_factory())
    assert "Example traces" not in render_html(view) and "Example traces" not in render_markdown(view)
    off = TraceSummary(note="no span files in x (tracing off)")
    assert "tracing off" in "\n".join(traces_markdown(off))


def test_text_bar_places_the_span_inside_the_trace():
    assert bar(0, 250, 250, width=10) == "█" * 10
    assert bar(125, 25, 250, width=10) == "·" * 5 + "█" + "·" * 4
    assert bar(249, 0.001, 250, width=10) == "·" * 9 + "█"  # never empty, never past the end
