"""Process lifecycle of the target: start, load, serve, drain, exit.

Order of events, as Kubernetes expects of a well-behaved pod:

1. the HTTP port opens at once (liveness 200, readiness 503 "model loading");
2. the model loads in a worker thread (checksum verified), warms up, readiness turns 200;
   a missing or corrupt artifact logs one clear line and the process exits 1;
3. on SIGTERM (or SIGINT) readiness turns false *first*, in-flight requests drain
   (at most ``drain_timeout_s``), the batcher finishes its queue, the process exits 0.

The chaos admin API runs as a second uvicorn server in the same loop, bound to 127.0.0.1.

Example::

    python -m target_service serve --port 8000 --admin-port 9001
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from types import FrameType
from typing import TYPE_CHECKING, NoReturn

import uvicorn
from prometheus_client import CollectorRegistry
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .admin import create_admin
from .api import create_api
from .config import Misconfiguration, TargetSettings
from .features import FeatureClient
from .jsonlog import configure_logging
from .metrics import TargetMetrics
from .replica import Replica
from .tlsreload import CertWatcher, ConnectionDrainer, ReloadingServerContext, Watchable

if TYPE_CHECKING:
    from .cache import PredictionCache

__all__ = ["exit_process", "serve_target"]

log = logging.getLogger("target")


class _DrainingServer(uvicorn.Server):
    """uvicorn server whose first signal marks the replica unready before shutting down.

    uvicorn re-raises captured signals after shutdown, which would make the exit status
    "killed by SIGTERM"; a drained replica exits 0, so the handlers are our own.
    """

    def __init__(self, config: uvicorn.Config, replica: Replica, peers: list[uvicorn.Server]):
        super().__init__(config)
        self.replica = replica
        self.peers = peers
        self.loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().serve(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        originals = {s: signal.signal(s, self.handle_exit) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        delay = self.replica.settings.shutdown_delay_s
        if not self.replica.draining:
            self.replica.draining = True  # readiness false before anything closes
            log.info("signal received: draining", extra={"fields": {"signal": sig, "delay_s": delay}})
            if delay > 0 and self.loop is not None:
                # Keep answering (readiness 503) until load balancers have noticed.
                self.loop.call_soon_threadsafe(self.loop.call_later, delay, self._exit_now, sig)
                return
        self._exit_now(sig)

    def _exit_now(self, sig: int) -> None:
        super().handle_exit(sig, None)
        for peer in self.peers:
            peer.should_exit = True


class _QuietServer(uvicorn.Server):
    """A second server in the same loop: signals belong to the main one."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _uvicorn_config(app: object, host: str, port: int, settings: TargetSettings, **kw: object) -> uvicorn.Config:
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=host,
        port=port,
        loop="uvloop",
        http=kw.pop("http", "httptools"),  # type: ignore[arg-type]
        lifespan="off",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(max(1, settings.drain_timeout_s)),
        backlog=2048,
        **kw,  # type: ignore[arg-type]
    )


async def _run(settings: TargetSettings) -> int:
    t_start = time.monotonic()
    registry = CollectorRegistry()
    metrics = TargetMetrics(registry, model=settings.model)
    replica = Replica(settings, metrics)
    for profile in settings.misconfigurations:
        log.warning(
            "MISCONFIGURATION PROFILE ON: %s — this replica deliberately misbehaves",
            profile.value,
            extra={"fields": {"profile": profile.value}},
        )
    loop = asyncio.get_running_loop()

    def on_expiry(role: str, path: str, subject: str, not_after: float) -> None:
        metrics.cert_expiry.labels(role=role, path=path, subject=subject).set(not_after)

    replica.features = FeatureClient(
        settings.feature_store_url,
        settings.ca_file,
        metrics,
        timeout_s=settings.dependency_timeout_s,
        ttl_s=settings.feature_ttl_s,
        breaker_threshold=settings.breaker_failure_threshold,
        breaker_reset_s=settings.breaker_reset_timeout_s,
        use_breaker=not settings.misconfigured(Misconfiguration.no_circuit_breaker),
    )
    await replica.features.start()
    cache = _prediction_cache(settings, metrics)

    api_app: object = create_api(replica, cache)
    api_kwargs: dict[str, object] = {}
    server_ctx: ReloadingServerContext | None = None
    if settings.tls_cert_file and settings.tls_key_file:
        # One SSLContext for the server's life, reloaded in place when the files change;
        # connections opened before a reload are drained so clients see the new certificate.
        server_ctx = ReloadingServerContext(settings.tls_cert_file, settings.tls_key_file)
        drainer = ConnectionDrainer(server_ctx)
        api_app = drainer.middleware(api_app)  # type: ignore[arg-type]
        tls = server_ctx
        api_kwargs = {
            "ssl_context_factory": lambda config, default: tls.ssl,
            "http": drainer.protocol_class(HttpToolsProtocol),
        }
    peers: list[uvicorn.Server] = []
    main = _DrainingServer(_uvicorn_config(api_app, settings.host, settings.port, settings, **api_kwargs),
                           replica, peers)  # fmt: skip
    token = settings.admin_token.get_secret_value() if settings.admin_token else None
    if settings.admin_port and token:
        admin_config = _uvicorn_config(create_admin(replica, token), "127.0.0.1", settings.admin_port, settings)
        peers.append(_QuietServer(admin_config))
        log.warning("chaos admin API enabled on 127.0.0.1:%d", settings.admin_port)
    elif settings.admin_port:
        log.warning("admin port set but no FAULTDRILL_ADMIN_TOKEN: chaos admin API stays off")

    watchables: list[Watchable] = []
    if server_ctx is not None:
        watchables.append(server_ctx)
    if replica.features.ca_context is not None:
        watchables.append(replica.features.ca_context)
    watcher = CertWatcher(settings.cert_reload_interval_s, watchables, on_expiry=on_expiry)
    if watchables:
        watcher.start()

    exit_code = 0

    async def load_model() -> None:
        nonlocal exit_code
        try:
            state = await asyncio.to_thread(replica.load, loop)
        except Exception as exc:
            replica.load_error = str(exc)
            log.error("model load failed: %s", exc, extra={"fields": {"model": settings.model,
                      "version": settings.model_version, "registry": str(settings.model_registry)}})  # fmt: skip
            exit_code = 1
            main.should_exit = True
            for peer in peers:
                peer.should_exit = True
            return
        m = state.manifest
        log.info(
            "ready: model %s v%s on %s%s, loaded in %.2fs (process up %.2fs)",
            m.name, m.version, state.device.kind, " (emulated device memory)" if state.device.emulated else "",
            state.load_seconds, time.monotonic() - t_start,
            extra={"fields": {"sha256": m.sha256, "accuracy": m.metrics.get("accuracy")}},
        )  # fmt: skip

    loader = loop.create_task(load_model())
    try:
        await asyncio.gather(main.serve(), *(p.serve() for p in peers))
    finally:
        replica.draining = True
        if not loader.done():
            loader.cancel()
        if replica.loaded is not None:
            await replica.loaded.engine.stop(settings.drain_timeout_s)
            replica.loaded.device.close()
        replica.stop_leak(free=True)
        if watchables:
            await watcher.stop()
        await replica.features.aclose()
        if cache is not None:
            await cache.aclose()
    log.info("stopped", extra={"fields": {"exit_code": exit_code}})
    return exit_code


def _prediction_cache(settings: TargetSettings, metrics: TargetMetrics) -> PredictionCache | None:
    """The prediction cache when ``cache_url`` is set; its password is read from a file, never logged."""
    if not settings.cache_url:
        return None
    from .cache import PredictionCache

    password = settings.cache_password_file.read_text().strip() if settings.cache_password_file else None
    bypass = not settings.misconfigured(Misconfiguration.no_cache_bypass)
    log.info("prediction cache on", extra={"fields": {"ttl_s": settings.cache_ttl_s, "bypass": bypass,
             "timeout_s": settings.cache_timeout_s, "authenticated": password is not None}})  # fmt: skip
    return PredictionCache(
        settings.cache_url, metrics, password=password, ttl_s=settings.cache_ttl_s,
        timeout_s=settings.cache_timeout_s, breaker_threshold=settings.cache_breaker_failure_threshold,
        breaker_reset_s=settings.cache_breaker_reset_timeout_s, bypass=bypass,
    )  # fmt: skip


def exit_process(code: int) -> NoReturn:
    """End the process with ``code`` right after an orderly shutdown, skipping interpreter teardown.

    Everything that matters is done by then: requests drained, spans exported
    (``tracing.shutdown``), logs written. What is left — the finalization of torch and
    every imported module — takes ~0.75 s on a 2-core machine, during which the port
    is already closed: a supervisor's liveness probe would see a dead server and kill
    it, recording a clean exit (or a load failure's exit 1) as a liveness kill (137).
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def serve_target(settings: TargetSettings) -> int:
    """Run the target until SIGTERM/SIGINT; return the process exit code."""
    configure_logging(settings.log_level, component="target")
    from .tracing import TARGET_SERVICE, TracingConfig, TracingError, setup_tracing

    try:  # once per process, before the app is built: its routes are instrumented if this is on
        tracing = setup_tracing(TracingConfig(
            service=TARGET_SERVICE, instance=settings.service_instance, version=settings.model_version,
            trace_file=settings.trace_file, sample_ratio=settings.trace_sample_ratio,
            otlp_endpoint=settings.otlp_endpoint,
        ), install=True)  # fmt: skip
    except TracingError as exc:
        log.error("tracing not set up: %s", exc)
        return 2
    if tracing.enabled:
        log.info("tracing on: %s", tracing.describe())
    try:
        try:
            import uvloop

            return uvloop.run(_run(settings))
        except ImportError:  # uvicorn[standard] brings uvloop; plain asyncio still works
            return asyncio.run(_run(settings))
    finally:
        tracing.shutdown()  # the queued spans are exported before the process exits
