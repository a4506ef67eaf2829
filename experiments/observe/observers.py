"""Observers: everything that watches a run and writes what it sees to the timeline.

An :class:`Observer` has two methods, ``start(ctx)`` and ``stop()``; between them it pushes
events to ``ctx.timeline``. The probe sampler (``experiments.platforms.local.probes``), the
restart watcher (``experiments.platforms.local.platform``) and the :class:`BreakerPoller` below
implement it; a Prometheus alert watcher (a :class:`Poller` over the alerts API) and an
Alertmanager webhook receiver (a small server started in ``start`` and shut in ``stop``)
plug in the same way, because the context carries only the timeline, the current topology
and a run-time bound — anything else an observer needs is given to its constructor.

:class:`Poller` is the shared machinery for sampling observers: one daemon thread, a fixed
period measured from the previous tick's start (no drift), a bounded number of ticks, and
a tick that raises is logged and retried next period — an observer never ends a run.

Example::

    ctx = ObserverContext(timeline, topology=platform.topology)
    group = ObserverGroup([BreakerPoller(period_s=0.25)])
    group.start(ctx)
    ...
    group.stop()          # stops every observer, even when one of them raises
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import httpx

from faultdrill.experiments.journal.timeline import Timeline
from faultdrill.faults.topology import Topology

__all__ = ["BreakerPoller", "Observer", "ObserverContext", "ObserverGroup", "Poller"]

log = logging.getLogger("faultdrill.observers")


@dataclass(frozen=True)
class ObserverContext:
    """What every observer gets: where to write, what exists now, and how long at most."""

    timeline: Timeline
    topology: Callable[[], Topology] = Topology
    """Called for the *current* services (pids change on restart; URLs do not)."""
    max_runtime_s: float = 6 * 3600.0
    """Upper bound of any observer loop: a forgotten observer stops by itself."""


@runtime_checkable
class Observer(Protocol):
    """Watches something from ``start`` to ``stop`` and records it on ``ctx.timeline``."""

    name: str

    def start(self, ctx: ObserverContext) -> None: ...

    def stop(self) -> None: ...


class Poller:
    """Run ``tick(ctx)`` every ``period_s`` on a daemon thread until stopped (bounded).

    Example::

        poller = Poller("alerts", 1.0, lambda ctx: scrape_alerts(ctx.timeline))
        poller.start(ctx); ...; poller.stop()
    """

    def __init__(self, name: str, period_s: float, tick: Callable[[ObserverContext], None]) -> None:
        if period_s <= 0:
            raise ValueError(f"period_s must be > 0, got {period_s}")
        self.name = name
        self.period_s = period_s
        self._tick = tick
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.ticks = 0
        self.errors = 0

    def start(self, ctx: ObserverContext) -> None:
        if self._thread is not None:
            raise RuntimeError(f"observer {self.name!r} already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(ctx,), name=f"observer-{self.name}", daemon=True)
        self._thread.start()

    def _run(self, ctx: ObserverContext) -> None:
        deadline = time.monotonic() + ctx.max_runtime_s
        next_at = time.monotonic()
        for _ in range(int(ctx.max_runtime_s / self.period_s) + 1):
            if self._stop.is_set() or time.monotonic() > deadline:
                return
            try:
                self._tick(ctx)
            except Exception:  # a broken sample must not blind the rest of the run
                self.errors += 1
                log.exception("observer %s: tick failed", self.name)
            self.ticks += 1
            next_at = max(next_at + self.period_s, time.monotonic())
            if self._stop.wait(max(0.0, next_at - time.monotonic())):
                return

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None


class ObserverGroup:
    """Start observers in order; stop them in reverse, every one, whatever raises."""

    def __init__(self, observers: Sequence[Observer] = ()) -> None:
        self.observers = list(observers)
        self._started: list[Observer] = []

    def start(self, ctx: ObserverContext) -> None:
        try:
            for observer in self.observers:
                observer.start(ctx)
                self._started.append(observer)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        first: BaseException | None = None
        while self._started:
            observer = self._started.pop()
            try:
                observer.stop()
            except BaseException as exc:  # keep stopping the others; report the first failure
                log.exception("observer %s: stop failed", getattr(observer, "name", observer))
                first = first or exc
        if first is not None:
            raise first


class BreakerPoller:
    """Poll each replica's ``GET /v2`` and emit a ``breaker`` event when its state changes.

    An unreachable replica emits nothing (its state is unknown, not changed); the first
    state seen after a restart is emitted again, so a restarted replica's closed breaker shows.

    Example::

        BreakerPoller(period_s=0.25).start(ObserverContext(timeline, topology=stack.topology))
    """

    def __init__(self, period_s: float = 0.25, timeout_s: float = 0.5) -> None:
        self.name = "breaker"
        self.timeout_s = timeout_s
        self._poller = Poller(self.name, period_s, self._tick)
        self._client: httpx.Client | None = None
        self._last: dict[str, tuple[int | None, str]] = {}
        self._seen: dict[str, float] = {}

    def start(self, ctx: ObserverContext) -> None:
        self._client = httpx.Client(timeout=self.timeout_s)
        self._poller.start(ctx)

    def stop(self) -> None:
        self._poller.stop()
        if self._client is not None:
            self._client.close()
            self._client = None

    def _tick(self, ctx: ObserverContext) -> None:
        client = self._client
        if client is None:
            return
        for handle in ctx.topology().by_role("replica"):
            if handle.url is None:
                continue
            try:
                doc = client.get(f"{handle.url}/v2").json()
            except (httpx.HTTPError, ValueError):
                continue
            dep = (doc.get("dependency") or {}) if isinstance(doc, dict) else {}
            state = dep.get("breaker")
            if not isinstance(state, str):
                continue
            if self._last.get(handle.name, (None, ""))[0] != handle.pid:  # a new pid re-announces its state
                self._last[handle.name] = (handle.pid, state)
                self._seen[handle.name] = time.time()  # its history before now belongs to the old process
                ctx.timeline.add("breaker", handle.name, state=state, pid=handle.pid)
                continue
            # Every transition the replica recorded since the last look, at the time it happened.
            for tr in dep.get("transitions") or []:
                at = float(tr.get("at", 0.0))
                if at <= self._seen.get(handle.name, 0.0):
                    continue
                self._seen[handle.name] = at
                self._last[handle.name] = (handle.pid, str(tr.get("to")))
                t = min(at - ctx.timeline.start_wall, ctx.timeline.now())
                ctx.timeline.add("breaker", handle.name, t=t, state=str(tr.get("to")), pid=handle.pid,
                                 from_state=tr.get("from"))  # fmt: skip
            # A target without a history (or one that overflowed it): a sampled state change.
            if self._last.get(handle.name, (None, ""))[1] != state:
                self._last[handle.name] = (handle.pid, state)
                ctx.timeline.add("breaker", handle.name, state=state, pid=handle.pid)
