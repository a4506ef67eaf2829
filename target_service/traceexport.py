"""Span exporters of the bundled services: one JSON object per line in a local file.

Hand-written because the SDK has no parseable file exporter: ``ConsoleSpanExporter`` prints
each span as an indented, multi-line JSON document (``ReadableSpan.to_json(indent=4)``)
into one stream, so a reader cannot split the file into spans without a streaming JSON
parser, and it keeps the resource, scope and every field verbatim (about 1.5 kB a span).
:class:`JsonLinesSpanExporter` writes one compact line per span in a flat shape
(:func:`span_record`) that :mod:`experiments.observe.traces` reads back, with string values redacted
like the logs (:func:`target_service.jsonlog.redact`).

The exporter runs behind the SDK's ``BatchSpanProcessor``: requests only append the ended
span to its bounded queue (spans are dropped, never waited for, when it is full) and this
exporter writes on the processor's own thread. A write error is logged once and reported as
``FAILURE``; it never reaches a request.

Example::

    exporter = JsonLinesSpanExporter(Path("traces/replica-0.jsonl"))
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=500))
    ...
    records = read_span_file(Path("traces/replica-0.jsonl"))
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import orjson
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import format_span_id, format_trace_id

from .jsonlog import redact

__all__ = ["JsonLinesSpanExporter", "read_span_file", "span_record"]

log = logging.getLogger("faultdrill.tracing")

# Bounds of one record: a runaway attribute must not turn a span file into a log dump.
MAX_VALUE_CHARS = 512
MAX_EVENTS = 32


# Only strings that may hold a secret go through the (slower) redaction patterns: a span has ~10 strings.
_SUSPECT = re.compile(r"(?i)bearer|token|secret|passw|api.?key|private key")


def _value(value: Any) -> Any:
    if isinstance(value, str):
        value = value[:MAX_VALUE_CHARS]
        return redact(value) if _SUSPECT.search(value) else value
    if isinstance(value, tuple | list):
        return [_value(v) for v in value[:64]]
    return value


def _attrs(attributes: Any) -> dict[str, Any]:
    if not attributes:
        return {}
    out = dict(attributes)  # one copy of the SDK's bounded mapping; most values are numbers or plain strings
    for k, v in out.items():
        if isinstance(v, str | tuple | list):
            out[k] = _value(v)
    return out


def span_record(span: ReadableSpan) -> dict[str, Any]:
    """One span as a flat dict: ids in hex, times in ns since the epoch, resource folded in."""
    ctx = span.get_span_context()
    assert ctx is not None
    parent = span.parent
    res = span.resource.attributes if span.resource is not None else {}
    status = span.status
    return {
        "trace_id": format_trace_id(ctx.trace_id),
        "span_id": format_span_id(ctx.span_id),
        "parent_id": format_span_id(parent.span_id) if parent is not None else None,
        "remote_parent": bool(parent is not None and parent.is_remote),
        "name": span.name,
        "kind": span.kind.name,
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": status.status_code.name,
        "status_message": _value(status.description) if status.description else None,
        "service": res.get("service.name"),
        "instance": res.get("service.instance.id"),
        "version": res.get("service.version"),
        "attributes": _attrs(span.attributes),
        "events": [
            {"name": e.name, "t_ns": e.timestamp, "attributes": _attrs(e.attributes)}
            for e in list(span.events)[:MAX_EVENTS]
        ],
        "links": [
            {"trace_id": format_trace_id(link.context.trace_id), "span_id": format_span_id(link.context.span_id),
             "attributes": _attrs(link.attributes)}
            for link in list(span.links)[:MAX_EVENTS]
        ],
    }


class JsonLinesSpanExporter(SpanExporter):
    """Appends each exported span to ``path`` as one JSON line (see the module doc)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._file: IO[bytes] | None = open(self.path, "ab")  # noqa: SIM115 - closed in shutdown()
        self._failed = False
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if not spans:
            return SpanExportResult.SUCCESS
        data = b"".join(orjson.dumps(span_record(s), default=str) + b"\n" for s in spans)
        with self._lock:
            if self._file is None:
                return SpanExportResult.FAILURE
            try:
                self._file.write(data)  # one write per batch: lines of a batch are never interleaved
                self._file.flush()
            except OSError as exc:
                if not self._failed:
                    log.error("span file not writable: %s", exc, extra={"fields": {"path": str(self.path)}})
                self._failed = True
                return SpanExportResult.FAILURE
            self.exported += len(spans)
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        with self._lock:
            if self._file is not None:
                self._file.flush()
        return True

    def shutdown(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def read_span_file(path: Path) -> Iterator[dict[str, Any]]:
    """The records of a span file; a torn last line (a killed process) is skipped, not an error."""
    with open(path, "rb") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                doc = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(doc, dict) and "trace_id" in doc and "span_id" in doc:
                yield doc
