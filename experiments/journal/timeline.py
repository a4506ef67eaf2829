"""The one timeline of a run: every observation, as an event, in time order.

Everything a run sees becomes an :class:`Event` — request outcomes from the load generator,
probe results, breaker states, process starts/exits/restarts (with reason, e.g.
``OOMKilled``), fault start/end, alert state changes, notifications, runbook steps. The
assertions are pure functions of a :class:`Timeline`, so they are unit-tested with synthetic
timelines; the journal stores the timeline, so reports can be re-rendered from any run.

Time is **seconds since the run started** (``t``, from a monotonic clock) plus the wall time
(``wall``) for humans. Events may be appended from several threads; reads sort by ``t``.

Event kinds (``request``, ``requests`` (a bucket of them, aggregated at the source), ``probe``,
``breaker``, ``process``, ``fault``, ``metric``, ``alert``, ``notification``, ``runbook``, ``phase``,
``canary``) and the attributes of each are typed in
``experiments.journal.events`` (one pydantic model per kind; the journal's JSON Schema is generated
from them): that module, not a table here, is the reference.

Example::

    >>> tl = Timeline()
    >>> _ = tl.add("probe", "replica-0", t=1.5, probe="readiness", value=False)
    >>> [e.attrs["value"] for e in tl.select("probe", source="replica-0")]
    [False]
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from faultdrill.experiments.journal.events import KINDS, Event, EventKind  # their home: the journal's own models

__all__ = ["KINDS", "Event", "EventKind", "Timeline"]

class Timeline:
    """Append-only, thread-safe event store; reads are sorted by time.

    ``clock`` is a monotonic clock; ``t`` of an event added without one is ``clock() - start``.
    """

    def __init__(self, events: Iterable[Event] = (), *, start: float | None = None,
                 clock: Any = time.monotonic) -> None:  # fmt: skip
        self._clock = clock
        self.start = clock() if start is None else start
        self.start_wall = time.time()
        self._lock = threading.Lock()
        self._events: list[Event] = sorted(events, key=lambda e: e.t)
        self._times: list[float] = [e.t for e in self._events]

    # -- writing -------------------------------------------------------------------------
    def now(self) -> float:
        """Seconds since the run started."""
        return float(self._clock() - self.start)

    def add(self, kind: EventKind, source: str, *, t: float | None = None, **attrs: Any) -> Event:
        """Record an event now (or at ``t``) and return it."""
        when = self.now() if t is None else t
        event = Event(t=when, kind=kind, source=source, attrs=attrs, wall=self.start_wall + when)
        self.append(event)
        return event

    def append(self, event: Event) -> None:
        with self._lock:
            # Events mostly arrive in order; insort keeps reads sorted when they do not.
            if not self._times or event.t >= self._times[-1]:
                self._events.append(event)
                self._times.append(event.t)
            else:
                i = bisect.bisect_right(self._times, event.t)
                self._events.insert(i, event)
                self._times.insert(i, event.t)

    def extend(self, events: Iterable[Event]) -> None:
        for event in events:
            self.append(event)

    # -- reading -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._events)

    def __iter__(self) -> Iterator[Event]:
        with self._lock:
            return iter(list(self._events))

    def events(self) -> list[Event]:
        with self._lock:
            return list(self._events)

    def select(
        self,
        kind: EventKind | None = None,
        *,
        source: str | None = None,
        start: float | None = None,
        end: float | None = None,
        **attrs: Any,
    ) -> list[Event]:
        """Events of ``kind`` from ``source`` with ``start <= t <= end`` whose attrs match."""
        with self._lock:
            lo = 0 if start is None else bisect.bisect_left(self._times, start)
            hi = len(self._events) if end is None else bisect.bisect_right(self._times, end)
            window = self._events[lo:hi]
        return [
            e for e in window
            if (kind is None or e.kind == kind)
            and (source is None or e.source == source)
            and all(e.attrs.get(k) == v for k, v in attrs.items())
        ]  # fmt: skip

    def requests(self, *, start: float | None = None, end: float | None = None, **attrs: Any) -> list[Event]:
        """The ``request`` and ``requests`` events (single requests and buckets; ``experiments.journal.traffic``
        reads both) with ``start <= t <= end`` whose attrs match."""
        return [e for e in self.select(start=start, end=end, **attrs) if e.kind in ("request", "requests")]

    def first(self, kind: EventKind | None = None, **filters: Any) -> Event | None:
        found = self.select(kind, **filters)
        return found[0] if found else None

    def last(self, kind: EventKind | None = None, **filters: Any) -> Event | None:
        found = self.select(kind, **filters)
        return found[-1] if found else None

    @property
    def end(self) -> float:
        """Time of the last event (0.0 when empty)."""
        with self._lock:
            return self._times[-1] if self._times else 0.0

    def slice(self, start: float, end: float | None = None) -> Timeline:
        """The events from ``start`` on, re-based so ``start`` is t=0 (one scenario of a game day).

        The state each source was in at ``start`` is kept: the last ``probe``, ``breaker``,
        ``process``, ``alert`` and ``canary`` event of every source before it comes along at its (negative)
        time, so "was it already ready/open/firing?" stays answerable. Wall times are unchanged.
        """
        carried: dict[tuple[str, str, str], Event] = {}
        for e in self.select(end=start):
            if e.t < start and e.kind in ("probe", "breaker", "process", "alert", "canary"):
                labels = repr(sorted((e.attrs.get("labels") or {}).items()))
                key = (e.kind, e.source, f"{e.attrs.get('probe', '')}{labels}")
                carried[key] = e
        kept = [*carried.values(), *(e for e in self.select(start=start, end=end) if e.t >= start)]
        rebased = [_rebased(e, start) for e in kept]
        out = Timeline(rebased, start=self.start + start, clock=self._clock)
        out.start_wall = self.start_wall + start
        return out

    # -- persistence ---------------------------------------------------------------------
    def to_jsonable(self) -> list[dict[str, Any]]:
        return [e.model_dump(mode="json") for e in self.events()]

    @classmethod
    def from_jsonable(cls, rows: Iterable[dict[str, Any]]) -> Timeline:
        return cls(Event.model_validate(r) for r in rows)


_RUN_TIMES = {"requests": ("samples",), "alert": ("active_at", "last_seen")}
"""Attributes that hold run times too (a bucket's raw samples, an alert's activation and last poll)."""


def _rebased(e: Event, start: float) -> Event:
    """``e`` with ``t`` and the run times among its attributes moved ``start`` earlier."""
    attrs, changed = e.attrs, False
    for key in _RUN_TIMES.get(e.kind, ()):
        value = attrs.get(key)
        if key == "samples" and isinstance(value, list):
            value = [{**s, "t": s["t"] - start} if isinstance(s, dict) and isinstance(s.get("t"), int | float)
                     else s for s in value]  # fmt: skip
        elif isinstance(value, int | float) and not isinstance(value, bool):
            value = value - start
        else:
            continue
        attrs, changed = {**attrs, key: value}, True
    return e.model_copy(update={"t": e.t - start, **({"attrs": attrs} if changed else {})})
