"""Weighted traffic split between a stable and a canary pool, and what each pool served.

:class:`TrafficSplit` is what an Istio ``VirtualService`` weight or an SMI ``TrafficSplit``
does, per request: *smooth weighted round robin* (nginx's upstream algorithm) over the two
pools, so a 10 % canary gets exactly 1 request in every 10, evenly spread — deterministic,
which makes the split testable and the canary's sample size predictable. A pool with no
ready replica takes no traffic (its share goes to the other), as a Service does.

:class:`PoolStats` keeps each pool's recent outcomes (time, ok, latency, confidence, version)
in a bounded deque; :meth:`PoolStats.slis` computes the SLIs the canary analysis judges
over a window. Hand-written: a few dozen lines, and no library does per-request weighted
routing inside our own endpoint.

Example::

    >>> split = TrafficSplit(canary_weight=25)
    >>> [split.choose(stable_ready=True, canary_ready=True) for _ in range(4)]
    ['stable', 'stable', 'canary', 'stable']
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

__all__ = ["CanaryRouting", "Outcome", "Pool", "PoolStats", "Slis", "TrafficSplit"]

Pool = Literal["stable", "canary"]


class TrafficSplit:
    """Smooth weighted round robin between ``stable`` and ``canary`` (weights in percent)."""

    def __init__(self, canary_weight: int = 0) -> None:
        self._lock = threading.Lock()
        self._current = {"stable": 0, "canary": 0}
        self.canary_weight = canary_weight

    @property
    def canary_weight(self) -> int:
        return self._weight

    @canary_weight.setter
    def canary_weight(self, value: int) -> None:
        if not 0 <= int(value) <= 100:
            raise ValueError(f"canary weight must be 0..100, got {value}")
        with self._lock:
            if getattr(self, "_weight", None) != int(value):  # a new weight starts a fresh cycle
                self._weight = int(value)
                self._current = {"stable": 0, "canary": 0}

    def choose(self, *, stable_ready: bool, canary_ready: bool) -> Pool | None:
        """The pool of the next request (None: neither pool has a ready replica)."""
        if not stable_ready and not canary_ready:
            return None
        with self._lock:
            weights = {"stable": 100 - self._weight, "canary": self._weight}
            if not canary_ready or weights["canary"] == 0:
                return "stable" if stable_ready else "canary" if weights["canary"] else None
            if not stable_ready or weights["stable"] == 0:
                return "canary"
            for pool, w in weights.items():
                self._current[pool] += w
            best: Pool = "canary" if self._current["canary"] > self._current["stable"] else "stable"
            self._current[best] -= 100
            return best


@dataclass(frozen=True)
class Outcome:
    """One request a pool answered."""

    t: float
    ok: bool
    latency_s: float
    confidence: float | None = None
    version: str | None = None


@dataclass(frozen=True)
class Slis:
    """A pool's SLIs over a window (None where there was nothing to measure)."""

    requests: int
    success_rate: float | None
    latency_p95_s: float | None
    confidence: float | None
    version: str | None

    def burn_rate(self, slo: float) -> float | None:
        """Error ratio ÷ error budget (1 - slo): 1 spends the budget exactly over the SLO period."""
        return None if self.success_rate is None else (1.0 - self.success_rate) / (1.0 - slo)


class PoolStats:
    """Recent outcomes per pool (bounded); thread-safe: the endpoint writes, the controller reads."""

    def __init__(self, maxlen: int = 20_000, clock: object = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._rows: dict[str, deque[Outcome]] = {"stable": deque(maxlen=maxlen), "canary": deque(maxlen=maxlen)}

    def now(self) -> float:
        return float(self._clock())  # type: ignore[operator]

    def record(self, pool: str, outcome: Outcome) -> None:
        with self._lock:
            self._rows.setdefault(pool, deque(maxlen=20_000)).append(outcome)

    def first_since(self, pool: str, t: float) -> float | None:
        """When ``pool`` first answered at or after ``t`` (None: not since then)."""
        with self._lock:
            return next((o.t for o in self._rows.get(pool, ()) if o.t >= t), None)

    def slis(self, pool: str, window_s: float, *, now: float | None = None, since: float | None = None) -> Slis:
        """SLIs over the last ``window_s`` (not before ``since``: a new revision's own answers only)."""
        end = self.now() if now is None else now
        start = max(end - window_s, since if since is not None else end - window_s)
        with self._lock:
            rows = [o for o in self._rows.get(pool, ()) if start <= o.t <= end]
        if not rows:
            return Slis(0, None, None, None, None)
        latencies = sorted(o.latency_s for o in rows)
        p95 = latencies[min(len(latencies) - 1, math.ceil(0.95 * len(latencies)) - 1)]
        conf = [o.confidence for o in rows if o.confidence is not None]
        return Slis(len(rows), sum(o.ok for o in rows) / len(rows), p95,
                    sum(conf) / len(conf) if conf else None, rows[-1].version)  # fmt: skip


@dataclass
class CanaryRouting:
    """What the service endpoint needs to split by weight and record per pool."""

    split: TrafficSplit
    stats: PoolStats
    pool_of: Callable[[str], Pool]
    """The pool of a replica name (``canary-N`` → canary)."""

    def order(self, backends: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Backends of the chosen pool first, the other pool's after (tried if the first refuse)."""
        stable = [b for b in backends if self.pool_of(b[0]) == "stable"]
        canary = [b for b in backends if self.pool_of(b[0]) == "canary"]
        pool = self.split.choose(stable_ready=bool(stable), canary_ready=bool(canary))
        if pool == "canary":
            return canary + (stable if self.split.canary_weight < 100 else [])
        return stable + (canary if self.split.canary_weight > 0 else [])

    def observe(self, replica: str, status: int, latency_s: float, body: bytes, infer: bool) -> str | None:
        """Record one answer of ``replica``; returns the model version it served (from the body)."""
        confidence, version, finite = None, None, True
        if infer and status == 200:
            confidence, version, finite = _read_answer(body)
        ok = status < 500 and finite
        self.stats.record(self.pool_of(replica), Outcome(self.stats.now(), ok, latency_s, confidence, version))
        return version


def _read_answer(body: bytes) -> tuple[float | None, str | None, bool]:
    """(mean top-class probability, model_version, all outputs finite) of an OIP v2 answer."""
    import orjson

    try:
        doc = orjson.loads(body)
        out = doc["outputs"][0]
        data, (rows, k) = out["data"], out["shape"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None, None, False
    version = str(doc.get("model_version")) if doc.get("model_version") is not None else None
    if not isinstance(data, list) or any(not isinstance(v, int | float) or not math.isfinite(v) for v in data):
        return None, version, False  # NaN/inf serialise as null: a silently broken model
    tops = [max(data[i * k:(i + 1) * k]) for i in range(rows)] if rows and k else []
    return (sum(tops) / len(tops) if tops else None), version, True
