"""The spans of one inference request, and the W3C ``traceparent`` that joins two processes.

A sampled request to a replica makes this tree (names and attributes follow the OTel HTTP
semantic conventions where they apply; ours are ``faultdrill.*``)::

    POST /v2/models/{name}/infer      SERVER  target        http.*, faultdrill.replica/model/rows;
    │                                                       events feature.fallback, breaker.*, cache.fallback
    ├─ cache.get / cache.set          INTERNAL target       (the prediction cache's own spans)
    ├─ GET /v1/features/{entity}      CLIENT  target        injects traceparent
    │  └─ GET /v1/features/{entity}   SERVER  feature store extracts traceparent; event fault.injected
    ├─ queue.wait                     INTERNAL target       enqueue → its batch starts
    └─ model.forward                  INTERNAL target       batch start → result back on the loop;
                                                            faultdrill.batch.id/size/rows + a link
    inference.batch                   INTERNAL target       one per batch of 2+ requests (its own
                                                            trace), linked to every request it served

5xx responses set the server span's status to ERROR with ``error.type``; fallbacks and breaker
transitions are span events. Queue and forward spans are recorded on the event loop after the
result arrives, with the worker thread's timestamps, so the worker only opens one span per batch.

Everything here is a no-op when tracing is off: :func:`instrument_route` returns the handler
itself, and the other helpers start by checking ``is_recording()`` on the current span.

Example::

    Route("/v2/models/{name}/infer", instrument_route(infer, "/v2/models/{name}/infer", attrs), ...)
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .tracing import TRACER_NAME, installed_tracer

__all__ = [
    "ServerSpanMiddleware",
    "annotate",
    "client_headers",
    "end_client_span",
    "event",
    "instrument_route",
    "record_engine_spans",
    "start_batch_span",
]

_PROPAGATOR = TraceContextTextMapPropagator()
Handler = Callable[[Request], Awaitable[Response]]


def _error(span: Span, status: int | None, kind: str, message: str = "") -> None:
    span.set_attribute("error.type", kind)
    span.set_status(Status(StatusCode.ERROR, message or (f"HTTP {status}" if status else kind)))


def instrument_route(handler: Handler, route: str, attrs: Callable[[], Mapping[str, Any]],
                     tracer: trace.Tracer | None = None) -> Handler:  # fmt: skip
    """``handler`` inside a SERVER span (the caller's ``traceparent`` extracted); itself when tracing is off.

    ``attrs()`` is read per request (a replica's model version can change with a reload).
    """
    tracer = tracer or installed_tracer(TRACER_NAME)
    if tracer is None:
        return handler
    active: trace.Tracer = tracer

    async def traced(request: Request) -> Response:
        # Raw ASGI scope reads: Starlette's Headers and URL objects cost more than the span itself.
        scope = request.scope
        carrier = _trace_headers(scope["headers"])
        method = scope["method"]
        start_attrs = {"http.request.method": method, "http.route": route, "url.path": scope["path"],
                       "url.scheme": scope.get("scheme", "http"), **attrs()}  # fmt: skip
        with active.start_as_current_span(
            f"{method} {route}", context=_PROPAGATOR.extract(carrier) if carrier else None, kind=SpanKind.SERVER,
            attributes=start_attrs, record_exception=False, set_status_on_exception=False,
        ) as span:
            try:
                response = await handler(request)
            except Exception as exc:  # the server's error handler answers 500
                span.record_exception(exc)
                span.set_attribute("http.response.status_code", 500)
                _error(span, 500, type(exc).__name__, str(exc))
                raise
            code = response.status_code
            if span.is_recording():
                span.set_attribute("http.response.status_code", code)
                for name, value in response.raw_headers:
                    if name == b"x-request-id":
                        span.set_attribute("faultdrill.request_id", value.decode("latin-1"))
                if code >= 500:
                    _error(span, code, str(code))
            return response

    return traced


def _trace_headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """``traceparent``/``tracestate`` from raw ASGI headers (empty when the caller sent none)."""
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in raw if k in (b"traceparent", b"tracestate")}


class ServerSpanMiddleware:
    """ASGI middleware: a SERVER span for paths under ``prefix`` (the feature store's ``/v1/features/``)."""

    def __init__(self, app: ASGIApp, tracer: trace.Tracer, prefix: str, route: str) -> None:
        self.app, self.tracer, self.prefix, self.route = app, tracer, prefix, route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        carrier = _trace_headers(scope["headers"])
        parent = _PROPAGATOR.extract(carrier) if carrier else None
        method = scope["method"]
        start_attrs = {"http.request.method": method, "http.route": self.route, "url.path": scope["path"],
                       "url.scheme": scope.get("scheme", "http")}  # fmt: skip
        with self.tracer.start_as_current_span(
            f"{method} {self.route}", context=parent, kind=SpanKind.SERVER, attributes=start_attrs,
            record_exception=False, set_status_on_exception=False,
        ) as span:

            async def send_recording(message: Message) -> None:
                if message["type"] == "http.response.start" and span.is_recording():
                    code = int(message["status"])
                    span.set_attribute("http.response.status_code", code)
                    if code >= 500:
                        _error(span, code, str(code))
                await send(message)

            try:
                await self.app(scope, receive, send_recording)
            except Exception as exc:
                span.record_exception(exc)
                _error(span, 500, type(exc).__name__, str(exc))
                raise


def annotate(attrs: Mapping[str, Any]) -> None:
    """Attributes on the current span; free when not recording."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes({k: v for k, v in attrs.items() if v is not None})


def event(name: str, attrs: Mapping[str, Any]) -> None:
    """An event on the current span (breaker transition, fallback, injected fault); free when not recording."""
    span = trace.get_current_span()
    if span.is_recording():
        span.add_event(name, {k: v for k, v in attrs.items() if v is not None})


def client_headers(tracer: trace.Tracer, name: str, attrs: Mapping[str, Any]) -> tuple[Span | None, dict[str, str]]:
    """A CLIENT span under the current one and the headers carrying it (``traceparent``).

    Outside a sampled request no span is made; a valid unsampled context is still propagated,
    so the callee does not start traces of its own for requests the caller chose not to record.
    """
    current = trace.get_current_span()
    headers: dict[str, str] = {}
    if not current.is_recording():
        if current.get_span_context().is_valid:
            _PROPAGATOR.inject(headers)
        return None, headers
    span = tracer.start_span(name, kind=SpanKind.CLIENT, attributes=dict(attrs))
    _PROPAGATOR.inject(headers, context=trace.set_span_in_context(span))
    return span, headers


def end_client_span(span: Span, status: int | None, outcome: str | None, error: str | None) -> None:
    """End a dependency call's span: status code, and ERROR with ``error.type`` unless it succeeded."""
    if status is not None:
        span.set_attribute("http.response.status_code", status)
    if outcome is not None:
        span.set_attribute("faultdrill.outcome", outcome)
    if outcome not in (None, "ok"):
        _error(span, status, outcome if outcome != "error" else (error or "error"), error or "")
    span.end()


# -- the batcher's spans -------------------------------------------------------------------------

def _offset() -> int:
    """Epoch ns minus monotonic ns now: adds to a ``time.monotonic()`` moment to give the clock spans use."""
    return time.time_ns() - time.monotonic_ns()


def _ns(monotonic_s: float, offset: int | None = None) -> int:
    return int(monotonic_s * 1e9) + (_offset() if offset is None else offset)


def start_batch_span(tracer: trace.Tracer, batch_id: int, parents: list[Span], rows: int, started: float) -> Span:
    """The worker's span of one batch: its own trace, linked to every traced request it serves."""
    links = [Link(p.get_span_context()) for p in parents]
    return tracer.start_span("inference.batch", context=otel_context.Context(), links=links, start_time=_ns(started),
                             attributes={"faultdrill.batch.id": batch_id, "faultdrill.batch.size": len(parents),
                                         "faultdrill.batch.rows": rows})  # fmt: skip


def record_engine_spans(
    tracer: trace.Tracer, parent: Span, *, enqueued: float, started: float | None,
    batch: tuple[int, int, int, Span | None] | None, error: BaseException | None,
) -> None:
    """``queue.wait`` and ``model.forward`` under ``parent``, from the worker's timestamps (monotonic)."""
    now, offset = time.monotonic(), _offset()
    ctx = trace.set_span_in_context(parent)
    queued_until = started if started is not None else now
    wait = tracer.start_span("queue.wait", context=ctx, start_time=_ns(enqueued, offset))
    if started is None and error is not None:
        _error(wait, None, type(error).__name__, str(error))
    wait.end(end_time=_ns(queued_until, offset))
    if started is None:
        return
    attrs: dict[str, Any] = {}
    links: list[Link] = []
    if batch is not None:
        bid, size, rows, bspan = batch
        attrs = {"faultdrill.batch.id": bid, "faultdrill.batch.size": size, "faultdrill.batch.rows": rows}
        if bspan is not None:
            links = [Link(bspan.get_span_context())]
    fwd = tracer.start_span("model.forward", context=ctx, start_time=_ns(started, offset), attributes=attrs,
                            links=links)  # fmt: skip
    if error is not None:
        _error(fwd, None, type(error).__name__, str(error))
    fwd.end(end_time=_ns(now, offset))
