"""The target's client of the feature store: timeout, circuit breaker, cache and fallback.

The target must keep answering when its dependency is down, marked degraded. So each
:meth:`FeatureClient.get`:

1. reuses features fetched less than ``ttl_s`` ago (source ``cache``, no call);
2. otherwise calls the store through the circuit breaker, bounded by ``timeout_s`` overall
   (source ``fresh``); concurrent requests for one entity share one call;
3. on failure, or while the breaker is open, falls back to the last features known for
   the entity (``stale_cache``) or to :data:`DEFAULT_FEATURES` (``default``), with
   ``degraded=True`` and ``error`` saying why: ``timeout``, ``connect``,
   ``tls: certificate has expired``, ``http 503``, ``breaker open``...

The breaker is purgatory's: a maintained, asyncio-friendly library (pybreaker's async path
needs tornado). Its state model, ``purgatory.domain.model.Context``, is used directly as a
synchronous context manager around each call: closed → open after ``breaker_threshold``
consecutive failures, open → half-open after ``breaker_reset_s``, half-open → closed on a
success or back to open on a failure. purgatory's factory adds a message bus and a
repository (for sharing state through Redis) that one process does not need; its events
are read from ``Context.messages`` instead. purgatory lets every request through while
half-open; this client sends one trial at a time and rejects the rest, as a half-open
breaker should.

Traffic is TLS verified against the project's CA (an ``ssl.SSLContext`` handed to httpx,
rebuilt with a new connection pool when the CA file changes).

Metrics (on :class:`~target_service.metrics.TargetMetrics`): ``circuit_breaker_state``,
``circuit_breaker_transitions_total``, ``dependency_requests_total{outcome}`` and
``dependency_request_duration_seconds``. Fallback responses are counted by the server
(``inference_fallback_responses_total`` needs the response's model).

Example::

    >>> client = FeatureClient("https://127.0.0.1:8443", Path("ca.crt"), metrics)  # doctest: +SKIP
    >>> await client.start()  # doctest: +SKIP
    >>> result = await client.get("user-1")  # doctest: +SKIP
    >>> result.source, result.degraded  # doctest: +SKIP
    ('fresh', False)
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import ssl
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import quote

import httpx
import numpy as np
from opentelemetry import trace
from purgatory.domain.model import Context, OpenedState

from .breaker import BreakerState, drain_transitions
from .metrics import BREAKER_STATES, TargetMetrics
from .spans import client_headers, end_client_span
from .spans import event as span_event
from .tlsreload import ReloadingClientContext
from .tracing import TRACER_NAME

__all__ = [
    "DEFAULT_FEATURES",
    "BreakerState",
    "FeatureClient",
    "FeatureResult",
    "FeatureSource",
    "Features",
]

log = logging.getLogger("faultdrill.features")

FeatureSource = Literal["fresh", "cache", "stale_cache", "default"]
BIAS_SIZE = 10
# How often the CA file is stat'ed from the request path (a stat is ~1 µs; still, not per call).
CA_CHECK_INTERVAL_S = 0.5


@dataclass(frozen=True)
class Features:
    """What the model needs from the store: a softmax temperature and a per-class bias."""

    temperature: float
    bias: tuple[float, ...]
    bias_array: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Built once per fetched feature set, not once per request on the hot path.
        object.__setattr__(self, "bias_array", np.asarray(self.bias, dtype=np.float32))


DEFAULT_FEATURES = Features(temperature=1.0, bias=(0.0,) * BIAS_SIZE)
"""Neutral features: the model's own output, unchanged."""


@dataclass(frozen=True)
class FeatureResult:
    """Features for one request, where they came from, and why if not fresh."""

    features: Features
    source: FeatureSource
    degraded: bool
    error: str | None = None


class DependencyError(Exception):
    """A failed feature-store call; ``reason`` is short and safe to show."""

    def __init__(self, reason: str, outcome: str = "error") -> None:
        super().__init__(reason)
        self.reason = reason
        self.outcome = outcome


def _tls_reason(exc: BaseException) -> str | None:
    """``tls: <verify message>`` when an SSL error is anywhere in ``exc``'s chain."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, ssl.SSLCertVerificationError):
            return f"tls: {cur.verify_message or cur.reason or 'verification failed'}"
        if isinstance(cur, ssl.SSLError):
            return f"tls: {cur.reason or type(cur).__name__}"
        cur = cur.__cause__ or cur.__context__
    text = str(exc)
    if "certificate verify failed:" in text:  # the chain was lost: parse the message
        return "tls: " + text.split("certificate verify failed:", 1)[1].split("(_ssl", 1)[0].strip()
    return None


def _parse(doc: object) -> Features:
    if not isinstance(doc, dict):
        raise ValueError("not an object")
    temperature = float(doc["temperature"])
    bias = tuple(float(b) for b in doc["bias"])
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError("temperature must be a positive number")
    if len(bias) != BIAS_SIZE or not all(math.isfinite(b) for b in bias):
        raise ValueError(f"bias must be {BIAS_SIZE} finite numbers")
    return Features(temperature=temperature, bias=bias)


class FeatureClient:
    """Features for the target, resilient to an unavailable feature store (see module doc)."""

    def __init__(
        self,
        base_url: str | None,
        ca_file: Path | None,
        metrics: TargetMetrics,
        timeout_s: float = 0.25,
        ttl_s: float = 1.0,
        breaker_threshold: int = 5,
        breaker_reset_s: float = 2.0,
        use_breaker: bool = True,
        dependency: str = "feature_store",
        max_entries: int = 10_000,
    ) -> None:
        self.base_url = base_url.rstrip("/") if base_url else None
        self.ca_file = ca_file
        self.metrics = metrics
        self.timeout_s = timeout_s
        self.ttl_s = ttl_s
        self.use_breaker = use_breaker
        self.dependency = dependency
        self.max_entries = max_entries
        self._breaker = Context(dependency, threshold=breaker_threshold, ttl=breaker_reset_s)
        self._state: BreakerState = "closed"
        self._trial_in_flight = False
        self._cache: OrderedDict[str, tuple[Features, float]] = OrderedDict()
        self._inflight: dict[str, asyncio.Task[FeatureResult]] = {}
        self._ca: ReloadingClientContext | None = None
        self._ca_generation = 0
        self._ca_checked_at = 0.0
        self._client: httpx.AsyncClient | None = None
        self._retired: set[asyncio.Task[None]] = set()
        self._reachable = True
        self.last_error: str | None = None  # why the last failed call failed (for logs and /v2)
        # Recent transitions with their wall time: a half-open state can last milliseconds, too
        # short for any poller to see, so observers read the history instead of sampling the state.
        self.transitions: collections.deque[tuple[float, str, str]] = collections.deque(maxlen=64)
        self.breaker_changed_at: float | None = None
        """``time.monotonic()`` of the last breaker transition."""
        if use_breaker and self.base_url is not None:
            metrics.breaker_state.labels(dependency=dependency).set(BREAKER_STATES["closed"])
        self._tracer = trace.get_tracer(TRACER_NAME)  # a no-op until a provider is installed
        url = httpx.URL(self.base_url or "http://localhost")
        port = url.port or (443 if url.scheme == "https" else 80)
        self._span_attrs = {"http.request.method": "GET", "url.template": "/v1/features/{entity}",
                            "server.address": url.host, "server.port": port, "faultdrill.dependency": dependency}

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the connection pool (and load the CA). Idempotent."""
        if self.base_url is None or self._client is not None:
            return
        if self.ca_file is not None and self.base_url.startswith("https:"):
            self._ca = ReloadingClientContext(self.ca_file)
            self._ca_generation = self._ca.generation
            self._ca_checked_at = time.monotonic()
        self._client = self._new_client()

    async def aclose(self) -> None:
        """Close the pool; pending shared calls are cancelled."""
        for task in list(self._inflight.values()):
            task.cancel()
        for closer in list(self._retired):
            closer.cancel()
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def _new_client(self) -> httpx.AsyncClient:
        verify: ssl.SSLContext | bool = self._ca.ssl if self._ca is not None else True
        return httpx.AsyncClient(
            base_url=self.base_url or "",
            verify=verify,
            timeout=httpx.Timeout(self.timeout_s),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
            trust_env=False,  # a proxy from the environment must not sit between us and the store
        )

    def _maybe_rotate_ca(self) -> None:
        if self._ca is None:
            return
        now = time.monotonic()
        if now - self._ca_checked_at < CA_CHECK_INTERVAL_S:
            return
        self._ca_checked_at = now
        self._ca.check()
        if self._ca.generation != self._ca_generation:
            self._ca_generation = self._ca.generation
            old, self._client = self._client, self._new_client()
            if old is not None:  # let calls in flight on the old pool finish, then close it
                task = asyncio.get_running_loop().create_task(self._close_later(old))
                self._retired.add(task)
                task.add_done_callback(self._retired.discard)

    async def _close_later(self, client: httpx.AsyncClient) -> None:
        try:
            await asyncio.sleep(self.timeout_s + 1.0)
        finally:
            await client.aclose()

    # -- state -------------------------------------------------------------------------------

    @property
    def breaker_state(self) -> BreakerState:
        return self._state

    @property
    def reachable(self) -> bool:
        """Whether the last call to the store succeeded (True before any call)."""
        return self._reachable

    @property
    def ca_context(self) -> ReloadingClientContext | None:
        """The CA context in use, for a :class:`~target_service.tlsreload.CertWatcher`."""
        return self._ca

    def _sync_breaker(self) -> None:
        """Turn purgatory's state-change events into metrics and logs."""
        for old, new in drain_transitions(self._breaker, self._state):
            self._state = new
            self.breaker_changed_at = time.monotonic()
            self.transitions.append((time.time(), old, new))
            dep = self.dependency
            self.metrics.breaker_state.labels(dependency=dep).set(BREAKER_STATES[new])
            self.metrics.breaker_transitions.labels(
                dependency=dep, from_state=old, to_state=new
            ).inc()
            span_event("breaker.transition", {"dependency": dep, "from": old, "to": new, "last_error": self.last_error})
            level = logging.WARNING if new == "open" else logging.INFO
            log.log(level, "circuit breaker %s -> %s", old, new,
                    extra={"fields": {"dependency": dep, "from": old, "to": new,
                                      "last_error": self.last_error}})  # fmt: skip

    # -- the call ----------------------------------------------------------------------------

    async def get(self, entity: str) -> FeatureResult:
        """Features for ``entity``; never raises for a dependency failure."""
        if self.base_url is None:
            return FeatureResult(DEFAULT_FEATURES, "default", degraded=False)
        cached = self._cache.get(entity)
        if cached is not None and time.monotonic() - cached[1] < self.ttl_s:
            return FeatureResult(cached[0], "cache", degraded=False)
        task = self._inflight.get(entity)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._refresh(entity))
            self._inflight[entity] = task
            task.add_done_callback(lambda _t: self._inflight.pop(entity, None))
        elif cached is not None:
            # Stale-while-revalidate: one caller refreshes; the others answer from the cache at
            # once instead of queueing behind a call that may take its full timeout (a half-open
            # trial against a hung store). It holds with or without the breaker: the
            # ``no_circuit_breaker`` profile removes the breaker alone, so what it costs is the
            # breaker's (every refresh waits its full timeout instead of failing fast).
            healthy = self._state == "closed" and self._reachable
            return FeatureResult(cached[0], "cache" if healthy else "stale_cache", degraded=not healthy,
                                 error=None if healthy else self.last_error)  # fmt: skip
        # shield: one caller giving up (its own deadline) must not cancel the others' call.
        return await asyncio.shield(task)

    async def _refresh(self, entity: str) -> FeatureResult:
        try:
            features = await self._call(entity)
        except DependencyError as exc:
            cached = self._cache.get(entity)
            if cached is not None:
                return FeatureResult(cached[0], "stale_cache", degraded=True, error=exc.reason)
            return FeatureResult(DEFAULT_FEATURES, "default", degraded=True, error=exc.reason)
        self._cache[entity] = (features, time.monotonic())
        self._cache.move_to_end(entity)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
        return FeatureResult(features, "fresh", degraded=False)

    async def _call(self, entity: str) -> Features:
        if self._client is None:
            await self.start()
        self._maybe_rotate_ca()
        if not self.use_breaker:
            return await self._request(entity)
        try:
            self._breaker.__enter__()
        except OpenedState:
            self._reject()
        finally:
            self._sync_breaker()
        trial = self._breaker.state == "half-opened"
        if trial and self._trial_in_flight:
            self._reject()  # half-open: one trial at a time (entering half-open changes nothing)
        self._trial_in_flight = trial
        try:
            features = await self._request(entity)
        except DependencyError as exc:
            self._breaker.__exit__(type(exc), exc, exc.__traceback__)
            raise
        except asyncio.CancelledError:
            raise  # neither success nor failure: the breaker is not told
        else:
            self._breaker.__exit__(None, None, None)
            return features
        finally:
            if trial:
                self._trial_in_flight = False
            self._sync_breaker()

    def _reject(self) -> None:
        self.metrics.dependency_requests.labels(
            dependency=self.dependency, outcome="rejected"
        ).inc()
        why = f" (last error: {self.last_error})" if self.last_error else ""
        span_event("breaker.rejected", {"dependency": self.dependency, "state": self._state,
                                        "last_error": self.last_error})  # fmt: skip
        raise DependencyError(f"breaker open{why}", outcome="rejected")

    async def _request(self, entity: str) -> Features:
        assert self._client is not None
        started = time.perf_counter()
        outcome: str | None = "error"
        span, headers = client_headers(self._tracer, "GET /v1/features/{entity}", self._span_attrs)
        response: httpx.Response | None = None
        try:
            try:
                async with asyncio.timeout(self.timeout_s):  # overall: httpx's are per phase
                    response = await self._client.get(f"/v1/features/{quote(entity, safe='')}", headers=headers)
            except (TimeoutError, httpx.TimeoutException) as exc:
                outcome = "timeout"
                raise DependencyError("timeout", "timeout") from exc
            except asyncio.CancelledError:
                outcome = None  # shutting down: neither a success nor a failure to count
                raise
            except httpx.ConnectError as exc:
                raise DependencyError(_tls_reason(exc) or "connect") from exc
            except httpx.TransportError as exc:
                raise DependencyError(_tls_reason(exc) or f"network: {type(exc).__name__}") from exc
            if response.status_code != 200:
                raise DependencyError(f"http {response.status_code}")
            try:
                features = _parse(response.json())
            except (ValueError, KeyError, TypeError) as exc:
                raise DependencyError("bad response") from exc
            outcome = "ok"
            return features
        except DependencyError as exc:
            self.last_error = str(exc)
            raise
        finally:
            if outcome is not None:
                self._reachable = outcome == "ok"
                dep = self.dependency
                self.metrics.dependency_duration.labels(dependency=dep).observe(
                    time.perf_counter() - started
                )
                self.metrics.dependency_requests.labels(dependency=dep, outcome=outcome).inc()
            if span is not None:
                end_client_span(span, response.status_code if response is not None else None, outcome,
                                self.last_error if outcome != "ok" else None)  # fmt: skip
