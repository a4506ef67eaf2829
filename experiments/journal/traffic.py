"""Requests as the journal keeps them: single ``request`` events and ``requests`` buckets, read as one.

The load generator aggregates at the source (``target_service/loadkit.py``): per 100 ms of send time and per
endpoint, client, model version and replica, one ``requests`` event counts the requests by status and carries
an HDR histogram of the ok requests' latency (the ``hdrhistogram`` package's standard compressed encoding,
microseconds, 2 significant digits), plus the raw failures (a bounded number) and a sample. A stall that
holds requests for seconds adds more events for the same 100 ms (late answers), never one per request, so a
journal grows with a run's duration, not with its request count. Readers that predate buckets, tests and
generators without aggregation still write one ``request`` event per request; every reader goes through
:func:`units`, which sees both as :class:`Unit` (a bucket, or one request).

Precision, stated once: a percentile read from a bucket is the highest value equivalent to the recorded
one within 2 significant digits (HDR's ``value_at_percentile``): at most 1 % above the measured latency,
never below it. A bucket sits at its start on the timeline, so windows place its requests to within its
span (100 ms).

Why HDR and not a hand-written histogram: the encoding is the standard one (readable by HdrHistogram in
Java, Go, Rust and by ``hdr-plot``), recording costs ~0.7 µs, and merging is exact. Decoded counts are
cached per encoding (:func:`decoded`): readers decode each bucket once, however many windows they judge.

>>> from faultdrill.experiments.journal.events import Event
>>> one = Event(t=1.0, kind="request", source="load", attrs={"ok": True, "status": 200, "latency_s": 0.004})
>>> [(u.total, u.ok, u.latency) for u in units([one])]
[(1, 1, ((0.004, 1),))]
"""

from __future__ import annotations

import bisect
import functools
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hdrh.histogram import HdrHistogram

from faultdrill.experiments.journal.events import Event

__all__ = ["HDR_DIGITS", "HDR_MAX_US", "Dist", "Unit", "decoded", "encode_latencies", "is_lost", "is_wrong",
           "new_histogram", "units"]  # fmt: skip

HDR_MAX_US = 3_600_000_000
"""The histograms' range: 1 µs to one hour (longer values are recorded as one hour)."""
HDR_DIGITS = 2
"""Significant digits: a recorded value reads back at most 1 % above what was measured."""

# Locust reports a refused/reset connection as status 0; httpx-based generators give None.
_CONNECTION = re.compile(r"connect|connection|disconnect|reset by peer|broken pipe", re.IGNORECASE)


def is_wrong(event: Event) -> bool:
    """A single request answered wrongly (its error a ``WrongAnswer``, whatever its status)."""
    return event.get("ok") is not True and str(event.get("error") or "").startswith("WrongAnswer")


def is_lost(event: Event) -> bool:
    """A single request that was never answered: no status (None or Locust's 0) or a connection error."""
    status = event.get("status")
    return status in (None, 0) or bool(_CONNECTION.search(str(event.get("error") or "")))


def new_histogram() -> HdrHistogram:
    """An empty latency histogram as the load generator records them (µs, 1 µs – 1 h, 2 digits)."""
    return HdrHistogram(1, HDR_MAX_US, HDR_DIGITS)


def encode_latencies(seconds: Iterable[float]) -> str:
    """The HDR encoding of these latencies (tests, and generators that aggregate after the fact)."""
    hist = new_histogram()
    for s in seconds:
        hist.record_value(min(HDR_MAX_US, max(1, round(s * 1e6))))
    return str(hist.encode().decode("ascii"))


@functools.lru_cache(maxsize=1 << 16)
def decoded(encoding: str) -> tuple[tuple[float, int], ...]:
    """``(seconds, count)`` per recorded value of an encoded histogram, ascending; ``()`` when unreadable
    (a hand-edited journal: its counts still count, it has no latencies)."""
    try:  # hdrh raises bare Exceptions, and zlib/base64 errors, alike
        hist = HdrHistogram.decode(encoding)
        counts = np.frombuffer(hist.counts, dtype=np.uint64, count=hist.counts_len)
    except Exception:
        return ()
    # The recorded indices only (hdrh's own iterator walks every one of the ~3,300 counts in Python: ~2 ms).
    return tuple((hist.get_highest_equivalent_value(hist.get_value_from_index(int(i))) / 1e6, int(counts[i]))
                 for i in np.flatnonzero(counts))  # fmt: skip


@dataclass(frozen=True)
class Unit:
    """Requests on the timeline at ``t``: one bucket, or one request (``total`` 1)."""

    t: float
    total: int
    ok: int
    lost: int
    latency: tuple[tuple[float, int], ...] = ()
    """The ok requests' latencies (seconds) with their counts, ascending."""
    ttft: tuple[tuple[float, int], ...] = ()
    itl: tuple[tuple[float, int], ...] = ()
    failures: tuple[Event, ...] = ()
    """The failed requests kept raw (all of them for a single request; a bounded number per bucket)."""
    source: str = "load"
    span: float = 0.0
    """Seconds of send time it covers (0 for a single request)."""
    wrong: int = 0
    """Failed requests that were answered wrongly (``WrongAnswer``; 0 in journals from before it)."""

    @property
    def failed(self) -> int:
        return self.total - self.ok

    @property
    def first_failure(self) -> float | None:
        """When the first failure of this unit was sent (the bucket's start when none was kept raw)."""
        if not self.failed:
            return None
        return min((e.t for e in self.failures), default=self.t)


def _pairs(value: Any) -> tuple[tuple[float, int], ...]:
    return decoded(value) if isinstance(value, str) and value else ()


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _bucket(e: Event) -> Unit:
    a = e.attrs
    total = _int(a.get("count"))
    ok = min(total, _int(a.get("ok")))
    lost = min(total - ok, _int(a.get("lost")))
    wrong = min(total - ok - lost, _int(a.get("wrong")))
    failures: list[Event] = []
    for s in a.get("samples") or ():
        if isinstance(s, dict) and s.get("ok") is not True and isinstance(s.get("t"), int | float):
            attrs = {k: v for k, v in s.items() if k != "t"}
            attrs |= {k: a[k] for k in ("name", "client", "version", "replica") if a.get(k) is not None}
            failures.append(Event.model_construct(t=float(s["t"]), kind="request", source=e.source, attrs=attrs,
                                                  wall=None))  # fmt: skip
    span = a.get("span_s")
    return Unit(e.t, total, ok, lost, _pairs(a.get("latency")), _pairs(a.get("ttft")), _pairs(a.get("itl")),
                tuple(failures), e.source, float(span) if isinstance(span, int | float) and span > 0 else 0.0, wrong)


def _single(e: Event) -> Unit:
    ok = e.get("ok") is True
    pairs = {k: ((float(e.get(k)), 1),) if ok and isinstance(e.get(k), int | float) else ()
             for k in ("latency_s", "ttft_s", "itl_s")}  # fmt: skip
    wrong = not ok and is_wrong(e)
    return Unit(e.t, 1, int(ok), int(not ok and not wrong and is_lost(e)), pairs["latency_s"], pairs["ttft_s"],
                pairs["itl_s"], () if ok else (e,), e.source, wrong=int(wrong))  # fmt: skip


def units(events: Iterable[Event]) -> Iterator[Unit]:
    """Every ``request`` and ``requests`` event as a :class:`Unit`, in the given order (others are skipped)."""
    for e in events:
        if e.kind == "requests":
            yield _bucket(e)
        elif e.kind == "request":
            yield _single(e)


@dataclass
class Dist:
    """A multiset of values (seconds) with counts: nearest-rank percentiles over merged buckets and
    single requests alike. Values are kept sorted; adding and removing are O(distinct values)."""

    _values: list[float] = field(default_factory=list)
    _counts: dict[float, int] = field(default_factory=dict)
    count: int = 0

    @classmethod
    def of(cls, pairs: Iterable[tuple[float, int]]) -> Dist:
        d = cls()
        d.add(pairs)
        return d

    def add(self, pairs: Iterable[tuple[float, int]]) -> None:
        for value, n in pairs:
            if value not in self._counts:
                bisect.insort(self._values, value)
                self._counts[value] = 0
            self._counts[value] += n
            self.count += n

    def remove(self, pairs: Iterable[tuple[float, int]]) -> None:
        for value, n in pairs:
            left = self._counts[value] - n
            self.count -= n
            if left > 0:
                self._counts[value] = left
            else:
                del self._counts[value]
                del self._values[bisect.bisect_left(self._values, value)]

    def quantile(self, q: float) -> float | None:
        """Nearest rank (``q`` in 0..1): the smallest value with at least ``ceil(q·n)`` values at or below it."""
        if not self.count:
            return None
        rank, seen = max(1, math.ceil(q * self.count)), 0
        for value in self._values:
            seen += self._counts[value]
            if seen >= rank:
                return value
        return self._values[-1]

    def pairs(self) -> Sequence[tuple[float, int]]:
        return [(v, self._counts[v]) for v in self._values]
