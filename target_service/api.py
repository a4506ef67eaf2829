"""The inference API: Open Inference Protocol v2 over Starlette, plus ``/metrics``.

Status codes follow what production servers answer under faults: 400 bad input, 404 unknown
model, 413 body too large, 503 (or 429) with ``Retry-After`` when shed, 504 past the
request deadline, 507 on device out-of-memory (as TorchServe), 503 while not loaded.

Infer speaks OIP v2's binary tensor data extension as Triton does (``binary_data.py``): binary
inputs after a JSON header of ``Inference-Header-Content-Length`` bytes, and, when asked, the
output as binary data in an ``application/octet-stream`` answer carrying that header. Request
bodies compressed by the client (``Content-Encoding: gzip``/``deflate``) are inflated within the
same size limit.

Example::

    >>> app = create_api(replica)  # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .binary_data import HEADER as BINARY_HEADER
from .config import Misconfiguration
from .protocol import (
    InferRequest,
    ProtocolError,
    build_binary_infer_response,
    build_infer_response,
    decode_content,
    parse_infer_request,
    parse_timeout_header,
)
from .ratelimit import limiter_for
from .replica import Replica
from .spans import annotate, event, instrument_route

if TYPE_CHECKING:
    from .cache import PredictionCache

__all__ = ["create_api", "read_body"]

log = logging.getLogger("target.api")
JSON = "application/json"
OCTETS = "application/octet-stream"
_BINARY_HEADER = BINARY_HEADER.encode()


def _json(doc: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(doc), status_code=status, media_type=JSON, headers=headers)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return _json({"error": message}, status, headers)


async def read_body(request: Request, limit: int) -> bytes:
    """Read at most ``limit`` bytes; a larger body (declared or streamed) is a 413."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ProtocolError(413, f"request body of {declared} bytes exceeds the {limit}-byte limit")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ProtocolError(413, f"request body exceeds the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def _request_headers(request: Request) -> tuple[str | None, str | None, str | None, str | None]:
    """``x-request-id``, ``x-request-timeout-ms``, ``inference-header-content-length`` and
    ``content-encoding`` in one pass over the raw headers (hot path)."""
    rid = timeout = header_length = encoding = None
    for name, value in request.scope["headers"]:
        if name == b"x-request-id":
            rid = value.decode("latin-1")[:128]
        elif name == b"x-request-timeout-ms":
            timeout = value.decode("latin-1")
        elif name == _BINARY_HEADER:
            header_length = value.decode("latin-1")
        elif name == b"content-encoding":
            encoding = value.decode("latin-1")
    return rid, timeout, header_length, encoding


async def _read_request(
    request: Request, limit: int, header_length: str | None, encoding: str | None, **model: Any
) -> InferRequest:
    """Read, inflate and parse an infer body (``model``: ``parse_infer_request``'s model facts)."""
    body = decode_content(await read_body(request, limit), encoding, limit)
    return parse_infer_request(body, header_length=header_length, **model)


def _infer_reply(req: InferRequest, headers: dict[str, str] | None = None, **response: Any) -> Response:
    """The answer in the form the request asked for: all JSON, or the output as binary tensor data."""
    if not req.binary_output:
        return Response(build_infer_response(**response), media_type=JSON, headers=headers)
    payload, header_length = build_binary_infer_response(**response)
    return Response(payload, media_type=OCTETS, headers={**(headers or {}), BINARY_HEADER: str(header_length)})


def create_api(replica: Replica, cache: PredictionCache | None = None) -> Starlette:
    """Build the inference app around ``replica`` (no global state); ``cache``: the prediction cache."""
    settings = replica.settings
    metrics = replica.metrics
    model_name = settings.model
    code_counters: dict[int, Any] = {}
    # Request ids: unique per process start, and cheaper than uuid4 on the hot path.
    id_prefix = uuid.uuid4().hex[:8]
    id_counter = itertools.count(1)
    request_duration = metrics.request_duration.labels(model=model_name)
    limiter = limiter_for(settings, metrics)  # per client, per replica; None: no_rate_limit
    shed_broken = settings.misconfigured(Misconfiguration.shed_as_server_error)
    metrics.failures.labels(model=model_name, reason="rate_limited")  # exported at 0 from the start

    def count(code: int, reason: str | None = None) -> None:
        counter = code_counters.get(code)
        if counter is None:
            counter = code_counters[code] = metrics.requests.labels(model=model_name, code=str(code))
        counter.inc()
        if reason is not None:
            metrics.failures.labels(model=model_name, reason=reason).inc()

    async def live(_: Request) -> Response:
        ok = replica.live()
        return _json({"live": ok}, 200 if ok else 503)

    async def ready(_: Request) -> Response:
        ok = replica.ready()
        return _json({"ready": ok, "reason": replica.readiness_reason()}, 200 if ok else 503)

    async def server_meta(_: Request) -> Response:
        return _json(replica.describe())

    def _known(request: Request) -> str | None:
        name = request.path_params["name"]
        return None if name == model_name else name

    async def model_meta(request: Request) -> Response:
        if (unknown := _known(request)) is not None:
            return _error(404, f"unknown model {unknown!r}; this server serves {model_name!r}")
        loaded = replica.loaded
        if loaded is None:
            return _error(503, f"model {model_name!r} is {replica.readiness_reason()}")
        m = loaded.manifest
        return _json(
            {
                "name": m.name,
                "versions": [m.version],
                "platform": "pytorch",
                "inputs": [i.model_dump() for i in m.inputs],
                "outputs": [o.model_dump() for o in m.outputs],
                "parameters": {"sha256": m.sha256, "metrics": m.metrics, "arch": m.arch},
            }
        )

    async def model_ready(request: Request) -> Response:
        if (unknown := _known(request)) is not None:
            return _error(404, f"unknown model {unknown!r}; this server serves {model_name!r}")
        ok = replica.ready()
        return _json({"name": model_name, "ready": ok}, 200 if ok else 503)

    def shed(exc: Exception, rid: str, headers: dict[str, str]) -> Response:
        """A full queue's answer: 503 (or 429) with ``Retry-After`` (the ``shed_as_server_error`` profile: the
        generic handler's 500, without it)."""
        if shed_broken:
            count(500, "internal")
            log.error("inference failed: %r", exc, extra={"fields": {"request_id": rid}})
            return _error(500, f"internal error: {type(exc).__name__}", headers)
        status = int(settings.shed_status.value)
        count(status, "shed")
        return _error(status, "overloaded: request queue is full",
                      {**headers, "retry-after": str(settings.retry_after_s)})  # fmt: skip

    async def infer(request: Request) -> Response:
        t0 = time.monotonic()
        rid, header_timeout, header_length, encoding = _request_headers(request)
        rid = rid or f"{id_prefix}-{next(id_counter):x}"
        headers = {"x-request-id": rid}
        if limiter is not None:  # before any work: body, features, cache, queue
            decision = limiter.check(request.scope["headers"])
            headers.update(decision.headers)
            if not decision.allowed:
                count(429, "rate_limited")
                return _error(429, f"rate limit exceeded for client {decision.client!r}", headers)
        if (unknown := _known(request)) is not None:
            count(404, "bad_request")
            return _error(404, f"unknown model {unknown!r}; this server serves {model_name!r}", headers)
        loaded = replica.loaded
        if loaded is not None and loaded.engine.full:  # shed before any work: reading the body is work too
            from .batcher import QueueFull

            return shed(QueueFull("the inference queue is full"), rid, headers)
        width = loaded.input_width if loaded is not None else 64
        input_name = loaded.manifest.inputs[0].name if loaded is not None else "input"
        output_name = loaded.manifest.outputs[0].name if loaded is not None else "probabilities"
        try:
            req = await _read_request(request, settings.max_body_bytes, header_length, encoding,
                                      input_name=input_name, width=width, output_name=output_name,
                                      max_rows=settings.max_rows_per_request)  # fmt: skip
            header_timeout_s = parse_timeout_header(header_timeout)
        except ProtocolError as exc:
            count(exc.status, "bad_request")
            return _error(exc.status, exc.message, headers)
        if loaded is None or replica.draining:
            count(503, "unready")
            return _error(503, f"not serving: {replica.readiness_reason()}",
                          {**headers, "retry-after": str(settings.retry_after_s)})  # fmt: skip
        timeout = req.timeout_s
        if header_timeout_s is not None:
            timeout = header_timeout_s
        deadline = t0 + (timeout if timeout is not None else settings.request_timeout_s)
        from .batcher import DeadlineExceeded, DeviceOutOfMemory, EngineStopped, QueueFull

        features = None
        temperature, bias = 1.0, None
        if replica.features is not None:
            features = await replica.features.get(req.entity)
            temperature, bias = features.features.temperature, features.features.bias_array
        cache_key, cached = None, None
        if cache is not None:  # after the features: they change the answer, so they are in the key
            from .cache import CacheUnavailable

            cache_key = cache.key(model_name, loaded.manifest.version, req.rows, temperature, bias)
            try:
                cached = await cache.get(cache_key)
            except CacheUnavailable as exc:  # only without bypass (the no_cache_bypass misconfiguration)
                count(503, "dependency")
                return _error(503, f"prediction cache unavailable: {exc}",
                              {**headers, "retry-after": str(settings.retry_after_s)})  # fmt: skip
        try:
            if cached is not None and cached.outputs is not None:
                probs = cached.outputs
            else:
                probs = await loaded.engine.infer(req.rows, deadline, temperature=temperature, bias=bias)
                if cache is not None and cache_key is not None and not (features is not None and features.degraded):
                    cache.put(cache_key, probs)  # background, best-effort; degraded answers are not kept
        except QueueFull as exc:
            return shed(exc, rid, headers)
        except DeadlineExceeded:
            count(504, "timeout")
            return _error(504, "request deadline exceeded while queued", headers)
        except DeviceOutOfMemory as exc:
            count(507, "oom")
            log.warning("device out of memory", extra={"fields": {"request_id": rid, "error": str(exc)}})
            return _error(507, f"device out of memory: {exc}", headers)
        except EngineStopped:
            count(503, "unready")
            return _error(503, "not serving: shutting down", headers)
        except Exception as exc:  # an internal fault, never the client's: 500 and logged
            count(500, "internal")
            log.exception("inference failed", extra={"fields": {"request_id": rid}})
            return _error(500, f"internal error: {type(exc).__name__}", headers)
        params: dict[str, object] = {"degraded": False, "feature_source": "none"}
        if features is not None:
            params = {"degraded": features.degraded, "feature_source": features.source}
            annotate({"faultdrill.feature_source": features.source, "faultdrill.degraded": features.degraded})
            if features.degraded:
                event("feature.fallback", {"source": features.source, "error": features.error})
                params["feature_error"] = features.error
                metrics.fallbacks.labels(model=model_name, source=features.source).inc()
        if cached is not None:
            params["cache"] = cached.result
            annotate({"faultdrill.cache": cached.result})
            if cached.result in ("bypass", "error"):  # answered by the model without the cache
                event("cache.fallback", {"result": cached.result})
        params["predictions"] = probs.argmax(axis=1).tolist()
        reply = _infer_reply(req, headers, model=model_name, version=loaded.manifest.version,
                             output_name=output_name, probabilities=probs, request_id=req.request_id,
                             parameters=params)  # fmt: skip
        count(200)
        request_duration.observe(time.monotonic() - t0)
        return reply

    async def echo(request: Request) -> Response:
        # The HTTP/JSON path alone (benchmark ceiling): same parsing, same-size reply.
        if (unknown := _known(request)) is not None:
            return _error(404, f"unknown model {unknown!r}")
        _, _, header_length, encoding = _request_headers(request)
        try:
            req = await _read_request(request, settings.max_body_bytes, header_length, encoding,
                                      input_name="input", width=64, output_name="probabilities",
                                      max_rows=settings.max_rows_per_request)  # fmt: skip
        except ProtocolError as exc:
            return _error(exc.status, exc.message)
        probs = np.full((req.rows.shape[0], 10), 0.1, dtype=np.float32)
        return _infer_reply(
            req, model=model_name, version="echo", output_name="probabilities", probabilities=probs,
            request_id=req.request_id,
            parameters={"degraded": False, "feature_source": "none", "predictions": [0] * len(probs)},
        )  # fmt: skip

    def span_attrs() -> dict[str, Any]:  # per request: the version is known once the model loaded
        loaded = replica.loaded
        return {"faultdrill.replica": settings.service_instance or "", "faultdrill.model": model_name,
                "faultdrill.model.version": loaded.manifest.version if loaded is not None else ""}  # fmt: skip

    async def prom(_: Request) -> Response:
        replica.refresh_gauges()
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    routes = [
        Route("/v2/health/live", live),
        Route("/v2/health/ready", ready),
        Route("/v2", server_meta),
        Route("/v2/models/{name}", model_meta),
        Route("/v2/models/{name}/ready", model_ready),
        Route("/v2/models/{name}/versions/{version}/ready", model_ready),
        Route("/v2/models/{name}/infer", instrument_route(infer, "/v2/models/{name}/infer", span_attrs),
              methods=["POST"]),
        Route("/v2/models/{name}/versions/{version}/infer",
              instrument_route(infer, "/v2/models/{name}/versions/{version}/infer", span_attrs), methods=["POST"]),
        Route("/metrics", prom),
    ]
    if settings.echo_endpoint:
        routes.append(Route("/v2/models/{name}/echo", echo, methods=["POST"]))
    return Starlette(routes=routes)
