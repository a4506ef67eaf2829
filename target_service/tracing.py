"""OpenTelemetry set-up of one process of the bundled system (target replica or feature store).

:func:`setup_tracing` builds a ``TracerProvider`` with

* a resource: ``service.name`` (``faultdrill-target`` / ``faultdrill-feature-store``),
  ``service.instance.id`` (the replica's name) and ``service.version`` (the model version);
* a sampler: ``ParentBased(TraceIdRatioBased(ratio))`` — a caller's sampling decision,
  carried in its ``traceparent`` header, is kept, so a trace is whole or absent;
* exporters: a JSON-lines file (:class:`~target_service.traceexport.JsonLinesSpanExporter`,
  the default), OTLP/HTTP when an endpoint is configured (the optional package
  ``opentelemetry-exporter-otlp-proto-http``: ``pip install 'faultdrill[otlp]'``), or an
  in-memory exporter for tests. File and OTLP exporters sit behind a ``BatchSpanProcessor``
  (bounded queue, export on its own thread: a request never waits for I/O).

``install=True`` (what ``server.py`` and ``feature_store.py`` do once at process start) makes
it the OTel API's global provider, so every ``trace.get_tracer(...)`` in the process — the
target's spans, the prediction cache's — records through it. That global is the OTel API's
own; this module keeps none. With neither a file nor an endpoint, nothing is installed and
the instrumentation costs one ``is_recording()`` check per request.

Example::

    tracing = setup_tracing(TracingConfig(service="faultdrill-target", instance="replica-0",
                                          version="1", trace_file=Path("spans.jsonl")))
    ...
    tracing.shutdown()          # flush the queue before the process exits
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from .traceexport import JsonLinesSpanExporter

__all__ = [
    "FEATURE_STORE_SERVICE",
    "TARGET_SERVICE",
    "TRACER_NAME",
    "Tracing",
    "TracingConfig",
    "TracingError",
    "installed_tracer",
    "setup_tracing",
]

TARGET_SERVICE = "faultdrill-target"
FEATURE_STORE_SERVICE = "faultdrill-feature-store"
TRACER_NAME = "faultdrill.target"
OTLP_PACKAGE = "opentelemetry-exporter-otlp-proto-http"
# Spans waiting for export; past this they are dropped (never waited for). At ~4 spans a request and
# ~1k req/s this is 2 s of spans; the processor exports every EXPORT_DELAY_MS or when half full.
QUEUE_SIZE = 8192
EXPORT_DELAY_MS = 500


class TracingError(Exception):
    """Tracing cannot be set up as configured (e.g. OTLP requested, its package missing)."""


@dataclass(frozen=True)
class TracingConfig:
    """What one process exports, and where."""

    service: str
    instance: str | None = None
    version: str | None = None
    trace_file: Path | None = None
    sample_ratio: float = 1.0
    otlp_endpoint: str | None = None
    in_memory: bool = False
    extra_resource: dict[str, str] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return self.trace_file is not None or bool(self.otlp_endpoint) or self.in_memory


@dataclass
class Tracing:
    """A configured provider (None when tracing is off) and its exporters."""

    config: TracingConfig
    provider: TracerProvider | None = None
    file_exporter: JsonLinesSpanExporter | None = None
    memory: InMemorySpanExporter | None = None
    exporters: list[str] = field(default_factory=list)

    @property
    def enabled(self) -> bool:
        return self.provider is not None

    def tracer(self, name: str = TRACER_NAME) -> trace.Tracer:
        """A tracer of this provider (a no-op tracer when tracing is off)."""
        if self.provider is None:
            return trace.NoOpTracer()
        return self.provider.get_tracer(name)

    def flush(self, timeout_ms: int = 5000) -> bool:
        return self.provider.force_flush(timeout_ms) if self.provider is not None else True

    def shutdown(self) -> None:
        """Export what is queued and close the exporters (call once, at process exit)."""
        if self.provider is not None:
            self.provider.shutdown()

    def describe(self) -> str:
        if not self.enabled:
            return "off"
        return f"{', '.join(self.exporters)}; sample ratio {self.config.sample_ratio:g}"


def _otlp_exporter(endpoint: str) -> SpanExporter:
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        raise TracingError(
            f"OTLP endpoint {endpoint!r} is configured but the package {OTLP_PACKAGE} is not installed: "
            "pip install 'faultdrill[otlp]' (or unset the OTLP endpoint to keep the local span file only)"
        ) from None
    return OTLPSpanExporter(endpoint=endpoint)


def setup_tracing(config: TracingConfig, *, install: bool = False) -> Tracing:
    """Build the provider of ``config`` (see the module doc); ``install`` makes it the global one.

    Raises :class:`TracingError` for an OTLP endpoint without its package, or a sample ratio
    outside [0, 1].
    """
    if not 0.0 <= config.sample_ratio <= 1.0:
        raise TracingError(f"sample ratio must be within [0, 1], got {config.sample_ratio}")
    tracing = Tracing(config)
    if not config.enabled:
        return tracing
    otlp = _otlp_exporter(config.otlp_endpoint) if config.otlp_endpoint else None  # fail before anything
    attrs: dict[str, str] = {"service.name": config.service,
                             "service.instance.id": config.instance or f"{socket.gethostname()}:{os.getpid()}",
                             **config.extra_resource}  # fmt: skip
    if config.version:
        attrs["service.version"] = config.version
    provider = TracerProvider(
        sampler=ParentBased(TraceIdRatioBased(config.sample_ratio)),
        resource=Resource.create(attrs),
        shutdown_on_exit=False,  # shut down by the server's own exit path, after the drain
    )
    if config.trace_file is not None:
        tracing.file_exporter = JsonLinesSpanExporter(config.trace_file)
        provider.add_span_processor(BatchSpanProcessor(tracing.file_exporter, max_queue_size=QUEUE_SIZE,
                                                       schedule_delay_millis=EXPORT_DELAY_MS))  # fmt: skip
        tracing.exporters.append(f"file {config.trace_file}")
    if otlp is not None:
        provider.add_span_processor(BatchSpanProcessor(otlp, max_queue_size=QUEUE_SIZE))
        tracing.exporters.append(f"otlp {config.otlp_endpoint}")
    if config.in_memory:
        tracing.memory = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(tracing.memory))
        tracing.exporters.append("memory")
    tracing.provider = provider
    if install:
        trace.set_tracer_provider(provider)
    return tracing


def installed_tracer(name: str = TRACER_NAME) -> trace.Tracer | None:
    """A tracer of the globally installed SDK provider; None when none is installed (tracing off)."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        return provider.get_tracer(name)
    return None
