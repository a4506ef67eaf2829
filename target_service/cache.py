"""The target's prediction cache: repeated inputs answered from Redis, never at Redis's mercy.

A key names everything the answer depends on: ``fd:pred:<model>:<version>:<digest>``, the
digest a BLAKE2b hash of the canonical input tensor (shape, dtype, C-order float32 bytes) and
of the features applied to it (temperature, bias). The model version is in the key, so a
rollout never serves the previous version's predictions. The value is the output tensor
(rows, cols, float32 bytes); it expires after ``ttl_s`` (``SET … PX``).

Redis is an optimisation, so with **bypass** (the default) a cache that is down, slow or
partitioned only costs model time:

* every call is bounded by ``timeout_s`` (socket connect/read and an overall
  ``asyncio.timeout``; redis-py's own retries are off, they would multiply the bound);
* purgatory's circuit breaker (as in ``features.py``: closed → open after ``breaker_threshold``
  consecutive failures, half-open after ``breaker_reset_s``, one trial at a time) skips Redis
  altogether while open: the lookup is a ``bypass``, answered by the model at once;
* writes are fire-and-forget tasks (at most ``max_pending_writes``), never awaited by the request;
* *any* exception from the client counts as a cache failure, not only ``RedisError``: a
  connection reset while connecting surfaces from uvloop as a ``RuntimeError`` ("handler is
  closed"), which a narrower ``except`` turned into a 500 (found by ``cache_outage``).

The misconfiguration ``no_cache_bypass`` (``bypass=False``) is the classic mistake: no breaker,
and a failed lookup fails the request (:class:`CacheUnavailable` → 503) after waiting its timeout.

Metrics (on :class:`~target_service.metrics.TargetMetrics`):
``prediction_cache_requests_total{result=hit|miss|error|bypass}`` (hit ratio =
hit / all), ``prediction_cache_duration_seconds{operation=get|set}``,
``prediction_cache_writes_total{outcome=ok|error|skipped|dropped}``,
``prediction_cache_breaker_state`` (0 closed, 1 open, 2 half-open). Calls are traced with the
plain OpenTelemetry API (spans ``cache.get``/``cache.set``; a no-op until a provider is set).

Hand-written around redis-py because no library offers a breaker-guarded, bypassing
read-through cache over asyncio Redis with these metrics.

Example::

    >>> cache = PredictionCache("redis://127.0.0.1:6379/0", metrics, password="s3cret")  # doctest: +SKIP
    >>> key = cache.key("digits", "1", rows, 1.0, None)  # doctest: +SKIP
    >>> (await cache.get(key)).result  # doctest: +SKIP
    'miss'
    >>> cache.put(key, probs)  # background write  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import logging
import struct
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import redis.asyncio as aioredis
from opentelemetry import trace
from purgatory.domain.model import Context, OpenedState
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from .breaker import BreakerState, drain_transitions
from .metrics import BREAKER_STATES, TargetMetrics

__all__ = ["CacheLookup", "CacheResult", "CacheUnavailable", "PredictionCache"]

log = logging.getLogger("faultdrill.cache")

CacheResult = Literal["hit", "miss", "error", "bypass"]
_HEADER = struct.Struct("<II")  # rows, cols
KEY_PREFIX = "fd:pred:"


class CacheUnavailable(Exception):
    """A lookup failed and bypass is off (the ``no_cache_bypass`` misconfiguration)."""


@dataclass(frozen=True, slots=True)
class CacheLookup:
    """The outputs found (None unless a hit) and what happened."""

    outputs: np.ndarray | None
    result: CacheResult


def encode(outputs: np.ndarray) -> bytes:
    """``(rows, cols)`` float32 → header + little-endian bytes."""
    arr = np.ascontiguousarray(outputs, dtype="<f4")
    return _HEADER.pack(*arr.shape) + arr.tobytes()


def decode(blob: bytes) -> np.ndarray:
    """Inverse of :func:`encode`; ``ValueError`` on a value of the wrong size."""
    if len(blob) < _HEADER.size:
        raise ValueError("cache value too short")
    rows, cols = _HEADER.unpack_from(blob)
    if len(blob) != _HEADER.size + 4 * rows * cols:
        raise ValueError("cache value of the wrong size")
    return np.frombuffer(blob, dtype="<f4", offset=_HEADER.size).reshape(rows, cols)


class PredictionCache:
    """Read-through prediction cache with timeout, breaker and bypass (see module doc)."""

    def __init__(
        self,
        url: str,
        metrics: TargetMetrics,
        *,
        password: str | None = None,
        ttl_s: float = 30.0,
        timeout_s: float = 0.05,
        breaker_threshold: int = 5,
        breaker_reset_s: float = 2.0,
        bypass: bool = True,
        max_pending_writes: int = 256,
    ) -> None:
        self.url = url
        self.metrics = metrics
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.timeout_s = timeout_s
        self.bypass = bypass
        self.max_pending_writes = max_pending_writes
        self._redis = aioredis.Redis.from_url(
            url, password=password, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0), retry_on_timeout=False, health_check_interval=0,
            driver_info=None,  # no CLIENT SETINFO: a new connection costs TCP + AUTH, inside the timeout
        )  # fmt: skip
        self._breaker = Context("prediction_cache", threshold=breaker_threshold, ttl=breaker_reset_s)
        self.state: BreakerState = "closed"
        self._trial_in_flight = False
        self._writes: set[asyncio.Task[None]] = set()
        self.transitions: collections.deque[tuple[float, str, str]] = collections.deque(maxlen=64)
        self.last_error: str | None = None
        self._tracer = trace.get_tracer("faultdrill.target")
        m = metrics
        self._count = {r: m.cache_requests.labels(result=r) for r in ("hit", "miss", "error", "bypass")}
        self._get_time = m.cache_duration.labels(operation="get")
        self._set_time = m.cache_duration.labels(operation="set")
        self._writes_count = {o: m.cache_writes.labels(outcome=o) for o in ("ok", "error", "skipped", "dropped")}
        m.cache_breaker_state.set(BREAKER_STATES["closed"])

    async def aclose(self) -> None:
        """Cancel pending writes and close the pool."""
        for task in list(self._writes):
            task.cancel()
        await self._redis.aclose()

    @staticmethod
    def key(model: str, version: str, rows: np.ndarray, temperature: float = 1.0,
            bias: np.ndarray | None = None) -> str:  # fmt: skip
        """The key of ``rows`` (any dtype/layout: hashed in canonical float32 C order)."""
        arr = np.ascontiguousarray(rows, dtype="<f4")
        h = hashlib.blake2b(digest_size=16)
        h.update(struct.pack(f"<{arr.ndim}q", *arr.shape))
        h.update(arr.tobytes())
        h.update(struct.pack("<d", float(temperature)))
        if bias is not None:
            h.update(np.ascontiguousarray(bias, dtype="<f4").tobytes())
        return f"{KEY_PREFIX}{model}:{version}:{h.hexdigest()}"

    # -- breaker -----------------------------------------------------------------------------
    def _sync_breaker(self) -> None:
        for old, new in drain_transitions(self._breaker, self.state):
            self.state = new
            self.transitions.append((time.time(), old, new))
            self.metrics.cache_breaker_state.set(BREAKER_STATES[new])
            self.metrics.cache_breaker_transitions.labels(from_state=old, to_state=new).inc()
            log.log(logging.WARNING if new == "open" else logging.INFO, "cache breaker %s -> %s", old, new,
                    extra={"fields": {"from": old, "to": new, "last_error": self.last_error}})  # fmt: skip

    def _admit(self) -> bool | None:
        """None: skip Redis (open, or a half-open trial is already out); else whether this is the trial."""
        try:
            self._breaker.__enter__()
        except OpenedState:
            return None
        finally:
            self._sync_breaker()
        trial = self._breaker.state == "half-opened"
        if trial and self._trial_in_flight:
            return None
        self._trial_in_flight = trial
        return trial

    def _settle(self, trial: bool, exc: BaseException | None) -> None:
        if exc is None:
            self._breaker.__exit__(None, None, None)
        else:
            self._breaker.__exit__(type(exc), exc, exc.__traceback__)
        if trial:
            self._trial_in_flight = False
        self._sync_breaker()

    # -- reads ---------------------------------------------------------------------------------
    async def _fetch(self, key: str) -> bytes | None:
        started = time.perf_counter()
        try:
            with self._tracer.start_as_current_span("cache.get"):
                async with asyncio.timeout(self.timeout_s):
                    blob = await self._redis.get(key)
            if isinstance(blob, str):  # decode_responses is off: bytes or None
                raise ValueError("cache value decoded as text")
            return blob
        finally:
            self._get_time.observe(time.perf_counter() - started)

    async def get(self, key: str) -> CacheLookup:
        """The cached outputs of ``key``. With bypass never raises: failures are misses to the caller."""
        if not self.bypass:
            return await self._get_strict(key)
        trial = self._admit()
        if trial is None:
            self._count["bypass"].inc()
            return CacheLookup(None, "bypass")
        try:
            blob = await self._fetch(key)
            outputs = decode(blob) if blob is not None else None
        except Exception as exc:  # any failure of the cache is a miss to the caller (module doc)
            self.last_error = _reason(exc)
            self._settle(trial, exc)
            self._count["error"].inc()
            return CacheLookup(None, "error")
        except asyncio.CancelledError:
            if trial:
                self._trial_in_flight = False
            raise
        self._settle(trial, None)
        result: CacheResult = "hit" if outputs is not None else "miss"
        self._count[result].inc()
        return CacheLookup(outputs, result)

    async def _get_strict(self, key: str) -> CacheLookup:
        try:
            blob = await self._fetch(key)
            outputs = decode(blob) if blob is not None else None
        except Exception as exc:
            self.last_error = _reason(exc)
            self._count["error"].inc()
            raise CacheUnavailable(self.last_error) from exc
        result: CacheResult = "hit" if outputs is not None else "miss"
        self._count[result].inc()
        return CacheLookup(outputs, result)

    # -- writes --------------------------------------------------------------------------------
    def put(self, key: str, outputs: np.ndarray) -> None:
        """Store ``outputs`` in the background (skipped while the breaker is not closed)."""
        if self.bypass and self.state != "closed":
            self._writes_count["skipped"].inc()
            return
        if len(self._writes) >= self.max_pending_writes:
            self._writes_count["dropped"].inc()
            return
        task = asyncio.get_running_loop().create_task(self._store(key, encode(outputs)))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _store(self, key: str, value: bytes) -> None:
        started = time.perf_counter()
        try:
            with self._tracer.start_as_current_span("cache.set"):
                async with asyncio.timeout(self.timeout_s):
                    await self._redis.set(key, value, px=self.ttl_ms)
        except Exception as exc:
            self.last_error = _reason(exc)
            self._writes_count["error"].inc()
            if self.bypass and self.state == "closed":
                self._breaker.__exit__(type(exc), exc, exc.__traceback__)
                self._sync_breaker()
        else:
            self._writes_count["ok"].inc()
        finally:
            self._set_time.observe(time.perf_counter() - started)

    async def flush_writes(self) -> None:
        """Wait for the pending writes (tests, shutdown)."""
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)

    def describe(self) -> dict[str, object]:
        """For ``/v2``: breaker state and the last error (never the URL's credentials)."""
        return {"breaker": self.state, "bypass": self.bypass, "last_error": self.last_error}


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    text = str(exc).splitlines()[0][:160] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
