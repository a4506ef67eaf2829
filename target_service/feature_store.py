"""The bundled feature store: the target's dependency, its own process, over HTTPS.

``GET /v1/features/{entity}`` answers per-entity features, deterministic (from a SHA-256 of
the entity) so every replica and every run agree::

    {"entity": "user-1", "temperature": 1.23, "bias": [10 floats], "version": "1"}

``GET /healthz`` and ``GET /metrics`` (its own registry: requests by endpoint and code, a
latency histogram, and ``tls_certificate_expiry_timestamp_seconds`` for its serving
certificate) complete it. Chaos levers for the ``dependency_outage`` fault (``5xx`` at a
rate, ``slow``) sit behind a bearer token and do not exist without one::

    POST   /admin/faults  {"error_rate": 0.5, "error_status": 503, "delay_ms": 300}
    GET    /admin/faults
    DELETE /admin/faults

The levers act on ``/v1/features`` only: health and metrics stay honest, so an experiment
can tell "the dependency is slow" from "the dependency is down".

The serving certificate is hot-reloaded (:mod:`target_service.tlsreload`); after a reload,
responses on older keep-alive connections carry ``Connection: close`` so clients reconnect
and meet the new certificate.

Example::

    >>> from prometheus_client import CollectorRegistry
    >>> app = create_feature_store_app(FeatureStoreSettings(), CollectorRegistry())
    >>> features_for("user-1")["version"]
    '1'
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import importlib.util
import logging
import random
import signal
import struct
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .config import FeatureStoreSettings
from .jsonlog import configure_logging
from .spans import ServerSpanMiddleware, event
from .tlsreload import CertWatcher, ConnectionDrainer, ReloadingServerContext

__all__ = [
    "FEATURES_VERSION",
    "FaultLevers",
    "FeatureStoreThread",
    "build_server",
    "create_feature_store_app",
    "features_for",
    "serve_feature_store",
]

log = logging.getLogger("faultdrill.feature_store")

FEATURES_VERSION = "1"
BIAS_SIZE = 10
MAX_ENTITY_LEN = 256
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


def features_for(entity: str) -> dict[str, Any]:
    """Deterministic features of ``entity``: temperature in [0.5, 2.0), bias in [-0.5, 0.5)."""
    digest = hashlib.sha256(entity.encode()).digest()  # 32 bytes: 11 x 16-bit draws
    draws = [v / 65536.0 for v in struct.unpack(">16H", digest)]
    return {
        "entity": entity,
        "temperature": round(0.5 + 1.5 * draws[0], 6),
        "bias": [round(d - 0.5, 6) for d in draws[1 : 1 + BIAS_SIZE]],
        "version": FEATURES_VERSION,
    }


class FaultSpec(BaseModel):
    """Body of ``POST /admin/faults``."""

    model_config = ConfigDict(extra="forbid")
    error_rate: float = Field(0.0, ge=0.0, le=1.0)
    error_status: int = Field(503, ge=500, le=599)
    delay_ms: float = Field(0.0, ge=0.0, le=600_000.0)


@dataclass
class FaultLevers:
    """Faults in force on ``/v1/features``."""

    error_rate: float = 0.0
    error_status: int = 503
    delay_ms: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"error_rate": self.error_rate, "error_status": self.error_status,
                "delay_ms": self.delay_ms}  # fmt: skip


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "feature_store_requests_total", "Feature-store requests by endpoint and status code.",
            ["endpoint", "code"], registry=registry,
        )  # fmt: skip
        self.duration = Histogram(
            "feature_store_request_duration_seconds", "Feature-store request latency.",
            ["endpoint"], buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.cert_expiry = Gauge(
            "tls_certificate_expiry_timestamp_seconds",
            "notAfter of each certificate in use, Unix seconds.",
            ["role", "path", "subject"], registry=registry,
        )  # fmt: skip
        self.error_rate = Gauge(
            "feature_store_injected_error_rate", "Share of feature requests failed on purpose.",
            registry=registry,
        )  # fmt: skip
        self.delay = Gauge(
            "feature_store_injected_delay_seconds", "Delay added to feature requests on purpose.",
            registry=registry,
        )  # fmt: skip

    def set_expiry(self, role: str, path: str, subject: str, not_after_ts: float) -> None:
        # One serving certificate: drop the old series so a swapped subject leaves no ghost.
        self.cert_expiry.clear()
        self.cert_expiry.labels(role=role, path=path, subject=subject).set(not_after_ts)


def _endpoint(path: str) -> str:
    if path.startswith("/v1/features/"):
        return "features"
    if path in ("/healthz", "/metrics", "/admin/faults"):
        return path.strip("/").replace("/", "_")
    return "other"


class _MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: _Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        code = 500  # what the client sees when the app raises before answering

        async def send_recording(message: Message) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_recording)
        finally:
            endpoint = _endpoint(scope["path"])
            self.metrics.requests.labels(endpoint=endpoint, code=str(code)).inc()
            self.metrics.duration.labels(endpoint=endpoint).observe(time.perf_counter() - started)


class _DrainMiddleware:
    def __init__(self, app: ASGIApp, drainer: ConnectionDrainer) -> None:
        self.wrapped = drainer.middleware(app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.wrapped(scope, receive, send)


def _json(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(doc), status_code=status, media_type="application/json",
                    headers=headers)  # fmt: skip


def create_feature_store_app(
    settings: FeatureStoreSettings,
    registry: CollectorRegistry,
    tls: ReloadingServerContext | None = None,
) -> Starlette:
    """The feature store as an ASGI app.

    With ``settings.tls_cert_file`` set (or ``tls`` given) the app owns a
    :class:`ReloadingServerContext` (``app.state.tls``, hand its ``ssl`` to the server), a
    :class:`ConnectionDrainer` (``app.state.drainer``) and a certificate watcher started
    by its lifespan. ``app.state.levers`` holds the faults in force.
    """
    metrics = _Metrics(registry)
    levers = FaultLevers()
    if tls is None and settings.tls_cert_file is not None:
        if settings.tls_key_file is None:
            raise ValueError("tls_cert_file needs tls_key_file")
        tls = ReloadingServerContext(settings.tls_cert_file, settings.tls_key_file, role="server")
    drainer = ConnectionDrainer(tls) if tls is not None else None
    watcher: CertWatcher | None = None
    if tls is not None:
        watcher = CertWatcher(settings.cert_reload_interval_s, [tls], on_expiry=metrics.set_expiry)
        watcher.report(tls)  # exported before the lifespan starts, for apps run without one
    token = settings.admin_token.get_secret_value().encode() if settings.admin_token else None
    rng = random.Random()

    async def get_features(request: Request) -> Response:
        entity = request.path_params["entity"]
        if not entity or len(entity) > MAX_ENTITY_LEN:
            return _json({"error": f"entity must be 1..{MAX_ENTITY_LEN} characters"}, 400)
        if levers.delay_ms > 0:
            event("fault.injected", {"fault": "delay", "delay_ms": levers.delay_ms})
            await asyncio.sleep(levers.delay_ms / 1000.0)
        if levers.error_rate > 0 and rng.random() < levers.error_rate:
            event("fault.injected", {"fault": "error", "status": levers.error_status, "rate": levers.error_rate})
            return _json({"error": "injected fault"}, levers.error_status)
        return _json(features_for(entity))

    async def healthz(request: Request) -> Response:
        return _json({"status": "ok"})

    async def metrics_endpoint(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    def authorized(request: Request) -> bool:
        assert token is not None
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        # compare_digest: the time taken does not reveal how much of the token matched.
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token)

    def unauthorized() -> Response:
        return _json({"error": "unauthorized"}, 401, {"WWW-Authenticate": "Bearer"})

    def apply(spec: FaultSpec | None) -> None:
        levers.error_rate = spec.error_rate if spec else 0.0
        levers.error_status = spec.error_status if spec else 503
        levers.delay_ms = spec.delay_ms if spec else 0.0
        metrics.error_rate.set(levers.error_rate)
        metrics.delay.set(levers.delay_ms / 1000.0)
        log.warning("chaos levers changed", extra={"fields": {"faults": levers.as_dict()}})

    async def admin_faults(request: Request) -> Response:
        if not authorized(request):
            return unauthorized()
        if request.method == "GET":
            return _json(levers.as_dict())
        if request.method == "DELETE":
            apply(None)
            return _json(levers.as_dict())
        try:
            spec = FaultSpec.model_validate_json(await request.body())
        except ValidationError as exc:
            return _json({"error": exc.errors(include_url=False, include_input=False)}, 422)
        apply(spec)
        return _json(levers.as_dict())

    routes = [
        Route("/v1/features/{entity:path}", get_features, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
    ]
    if token is not None:  # no token, no levers: the routes do not exist (404)
        routes.append(Route("/admin/faults", admin_faults, methods=["GET", "POST", "DELETE"]))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if watcher is not None:
            watcher.start()
        try:
            yield
        finally:
            if watcher is not None:
                await watcher.stop()

    middleware = [Middleware(_MetricsMiddleware, metrics=metrics)]
    from .tracing import installed_tracer

    if (tracer := installed_tracer("faultdrill.feature_store")) is not None:  # spans only when tracing is on
        middleware.append(Middleware(ServerSpanMiddleware, tracer=tracer, prefix="/v1/features/",
                                     route="/v1/features/{entity}"))  # fmt: skip
    if drainer is not None:
        middleware.append(Middleware(_DrainMiddleware, drainer=drainer))
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.tls = tls
    app.state.drainer = drainer
    app.state.levers = levers
    app.state.watcher = watcher
    return app


def _http_protocol_base() -> type[asyncio.Protocol]:
    if importlib.util.find_spec("httptools") is not None:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        return HttpToolsProtocol
    from uvicorn.protocols.http.h11_impl import H11Protocol

    return H11Protocol


def build_server(settings: FeatureStoreSettings, app: Starlette) -> uvicorn.Server:
    """A uvicorn server for ``app`` (from :func:`create_feature_store_app`), not started.

    uvicorn is handed the app's reloading ``ssl.SSLContext`` through ``ssl_context_factory``
    (the same object for the server's life; reloads change it in place) and an HTTP protocol
    that tells the drainer when connections come and go.
    """
    tls: ReloadingServerContext | None = app.state.tls
    drainer: ConnectionDrainer | None = app.state.drainer
    http: type[asyncio.Protocol] | str = (
        drainer.protocol_class(_http_protocol_base()) if drainer is not None else "auto"
    )
    factory: Callable[..., Any] | None = (lambda config, default: tls.ssl) if tls else None
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http=http,
        ssl_context_factory=factory,
        log_config=None,  # keep our JSON logging
        access_log=False,  # requests are counted in metrics; a line each would cost more
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    return uvicorn.Server(config)


def serve_feature_store(settings: FeatureStoreSettings) -> int:
    """Run the feature store until SIGTERM/SIGINT; return the exit code (0 on a signal)."""
    configure_logging(settings.log_level, component="feature-store")
    from .tracing import FEATURE_STORE_SERVICE, TracingConfig, TracingError, setup_tracing

    try:  # once per process, before the app is built (its middleware is added when this is on)
        tracing = setup_tracing(TracingConfig(
            service=FEATURE_STORE_SERVICE, instance="feature-store", version=FEATURES_VERSION,
            trace_file=settings.trace_file, sample_ratio=settings.trace_sample_ratio,
            otlp_endpoint=settings.otlp_endpoint,
        ), install=True)  # fmt: skip
    except TracingError as exc:
        log.error("tracing not set up: %s", exc)
        return 2
    try:
        return _serve(settings)
    finally:
        tracing.shutdown()


def _serve(settings: FeatureStoreSettings) -> int:
    app = create_feature_store_app(settings, CollectorRegistry())
    server = build_server(settings, app)
    # uvicorn re-raises the signal it caught, with the handler that was there before it:
    # a no-op handler makes a graceful SIGTERM end in exit code 0 instead of death by signal.
    previous = {s: signal.signal(s, lambda *_: None) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        log.info(
            "feature store starting",
            extra={"fields": {"host": settings.host, "port": settings.port,
                              "tls": app.state.tls is not None,
                              "admin": settings.admin_token is not None}},
        )  # fmt: skip
        server.run()
    except SystemExit as exc:  # uvicorn exits 1 when it cannot bind
        return int(exc.code) if isinstance(exc.code, int) else 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not server.started:
        return 1
    log.info("feature store stopped")
    return 0


class FeatureStoreThread:
    """An in-process feature store on its own thread and event loop, for tests and benchmarks.

    ``port=0`` in the settings picks a free port; read it back from :attr:`port`.

    Example::

        >>> with FeatureStoreThread(FeatureStoreSettings(port=0)) as fs:  # doctest: +SKIP
        ...     httpx.get(fs.url + "/healthz")
    """

    def __init__(
        self, settings: FeatureStoreSettings, registry: CollectorRegistry | None = None
    ) -> None:
        self.settings = settings
        self.registry = registry or CollectorRegistry()
        self.app = create_feature_store_app(settings, self.registry)
        self.server = build_server(settings, self.app)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`)."""
        for srv in self.server.servers:
            for sock in srv.sockets:
                return int(sock.getsockname()[1])
        return self.settings.port

    @property
    def url(self) -> str:
        scheme = "https" if self.app.state.tls is not None else "http"
        return f"{scheme}://{self.settings.host}:{self.port}"

    def start(self, timeout_s: float = 10.0) -> FeatureStoreThread:
        """Start serving; raise when not up within ``timeout_s``."""
        # Server.serve() skips signal handlers off the main thread: stop() is the only way out.
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self.server.serve()), name="feature-store", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError("feature store failed to start (port in use?)")
            if time.monotonic() > deadline:
                self.stop(timeout_s=2.0)
                raise TimeoutError(f"feature store not up within {timeout_s} s")
            time.sleep(0.005)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Shut down gracefully; raise when the thread has not ended within ``timeout_s``."""
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                self.server.force_exit = True
                self._thread.join(2.0)
                raise TimeoutError(f"feature store did not stop within {timeout_s} s")
            self._thread = None

    def __enter__(self) -> FeatureStoreThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
