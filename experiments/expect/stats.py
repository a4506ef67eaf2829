"""Windowed request statistics, steady state, MTTD/MTTR: the arithmetic under the SLO assertions.

Pure functions over timeline events, single ``request`` events and ``requests`` buckets alike
(``experiments.journal.traffic``): availability is ok requests / all requests; latency
percentiles are over **ok** requests only (a refused connection answers fast and would
flatter p95), nearest-rank, so every percentile is a latency really observed (from a bucket:
within its HDR histogram's precision, at most 1 % above). Streamed
answers' time to first token and mean inter-token latency (``ttft_s``, ``itl_s``) are judged
the same way: p95 over the ok requests that measured one. Windows are inclusive at both ends,
as :meth:`Timeline.select` is.

First signal of a fault: from its start to the first symptom at or after it — a readiness
probe turning false, a breaker turning open, or a failed request, whichever is first (a
replica or breaker already in that state at the start counts only once it changes). The MTTD
proper — fault start to the first page — is measured on notifications by
``experiments.expect.mttd``. MTTR: from its end until steady state is regained
(:func:`regained_at`).

Example::

    >>> from experiments.journal.timeline import Timeline
    >>> tl = Timeline()
    >>> for i in range(10):
    ...     _ = tl.add("request", "load", t=i * 0.1, ok=i != 3, status=503 if i == 3 else 200, latency_s=0.01)
    >>> stats = request_stats(tl.requests(start=0.0, end=1.0))
    >>> stats.total, stats.ok, stats.availability
    (10, 9, 0.9)
    >>> regained_at(tl.requests(), 0.0, SteadyCriteria(window_s=0.5, availability=0.99), horizon=1.0)
    0.4
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, model_validator

from faultdrill.experiments.journal.models import (  # their home: readers of a journal need them
    SteadyCriteria,
    percentile,
)
from faultdrill.experiments.journal.timeline import Event
from faultdrill.experiments.journal.traffic import Dist, is_lost, is_wrong, units
from faultdrill.experiments.timespec import Duration

if TYPE_CHECKING:
    from faultdrill.experiments.journal.timeline import Timeline

__all__ = ["STREAM_SLOS", "Finding", "HaltCondition", "RequestStats", "SteadyCriteria", "check_halt", "clients_label",
           "fmt_value", "is_lost", "judge_budget", "judge_requests", "judge_slo", "mttd_mttr", "of_clients",
           "percentile", "regained_at", "request_stats"]  # fmt: skip

@dataclass(frozen=True)
class RequestStats:
    """Counts and ok-request latencies of the requests in one window (single requests and buckets alike)."""

    total: int
    ok: int
    lost: int
    latencies: Dist = field(default_factory=Dist)
    """Latencies (seconds) of the ok requests (buckets: within their histograms' precision)."""
    ttfts: Dist = field(default_factory=Dist)
    """Times to first token (seconds) of the ok streamed requests."""
    itls: Dist = field(default_factory=Dist)
    """Mean inter-token latencies (seconds) of the ok streamed requests."""
    failures: tuple[Event, ...] = ()
    """The failed requests kept raw (all single ones; a bounded number per bucket)."""
    wrong: int = 0
    """Failed requests that were answered wrongly (``WrongAnswer``)."""

    @property
    def failed(self) -> int:
        return self.total - self.ok

    @property
    def availability(self) -> float | None:
        return self.ok / self.total if self.total else None

    @property
    def error_ratio(self) -> float | None:
        return self.failed / self.total if self.total else None

    def latency(self, q: float) -> float | None:
        return self.latencies.quantile(q)


def request_stats(events: Iterable[Event]) -> RequestStats:
    """Aggregate ``request`` and ``requests`` events (other kinds are ignored)."""
    total = ok = lost = wrong = 0
    latencies, ttfts, itls = Dist(), Dist(), Dist()
    failures: list[Event] = []
    for u in units(events):
        total, ok, lost, wrong = total + u.total, ok + u.ok, lost + u.lost, wrong + u.wrong
        latencies.add(u.latency)
        ttfts.add(u.ttft)
        itls.add(u.itl)
        failures.extend(u.failures)
    return RequestStats(total=total, ok=ok, lost=lost, latencies=latencies, ttfts=ttfts, itls=itls,
                        failures=tuple(failures), wrong=wrong)  # fmt: skip


def regained_at(requests: Sequence[Event], start: float, criteria: SteadyCriteria, *, horizon: float) -> float | None:
    """The earliest ``T >= start`` whose window ``[T, T + window_s]`` of requests meets ``criteria``.

    Candidates are ``start`` itself and every request (or bucket) time after it (a window is tightest when
    it opens on one); a bucket counts in a window only once all its span is inside; a window must end by
    ``horizon`` (the end of what was observed), so a run cut short never "recovers" on a half-seen window.
    ``requests`` must be sorted by time. Two pointers and a running latency multiset keep this near-linear.
    """
    reqs = [u for u in units(requests) if u.t >= start]
    lo = hi = total = ok = 0
    window = Dist()
    for t in [start, *sorted({u.t for u in reqs if u.t > start})]:
        if t + criteria.window_s > horizon:
            return None
        while hi < len(reqs) and reqs[hi].t + reqs[hi].span <= t + criteria.window_s + 1e-9:  # a bucket: all of it
            total, ok = total + reqs[hi].total, ok + reqs[hi].ok
            window.add(reqs[hi].latency)
            hi += 1
        while lo < hi and reqs[lo].t < t:
            total, ok = total - reqs[lo].total, ok - reqs[lo].ok
            window.remove(reqs[lo].latency)
            lo += 1
        if criteria.met(total, ok, window):
            return t
    return None


def of_clients(events: Iterable[Event], clients: Sequence[str] | None, except_clients: Sequence[str] | None = None,
               ) -> list[Event]:  # fmt: skip
    """The requests of ``clients`` (their ``client`` attribute), or of everyone but ``except_clients``."""
    if clients is not None:
        wanted = set(clients)
        return [e for e in events if e.get("client") in wanted]
    unwanted = set(except_clients or ())
    return [e for e in events if e.get("client") not in unwanted]


def clients_label(clients: Sequence[str] | None, except_clients: Sequence[str] | None = None) -> str:
    """`` (clients a, b)`` / `` (except clients c)`` / ``""``: the filter in a verdict's name."""
    if clients is not None:
        return f" (clients {', '.join(clients)})"
    return f" (except clients {', '.join(except_clients)})" if except_clients else ""


def fmt_value(slo: str, value: float) -> str:
    """``412 ms`` for latencies, ``0.962`` for ratios."""
    return f"{value * 1000:.0f} ms" if slo.startswith("latency") else f"{value:.3f}"


STREAM_SLOS = {"latency_ttft_p95": ("ttfts", 0.95, "time to first token"),
               "latency_itl_p95": ("itls", 0.95, "inter-token latency")}  # fmt: skip
"""SLOs over streamed answers: which :class:`RequestStats` field, which quantile, what the verdict calls it."""


def _value(slo: str, stats: RequestStats) -> float | None:
    if slo in STREAM_SLOS:
        values, q, _ = STREAM_SLOS[slo]
        return getattr(stats, values).quantile(q)
    if slo.startswith("latency_p"):  # latency_p50, latency_p95, latency_p99
        return stats.latency(int(slo.removeprefix("latency_p")) / 100)
    return stats.availability if slo == "availability" else stats.error_ratio


class Finding(NamedTuple):
    """What a judgement saw: the verdict's fields other than its name and expectation."""

    passed: bool
    observed: str
    measured: dict[str, float | int | None]
    window: tuple[float, float] | None = None
    evidence: tuple[Event, ...] = ()


def judge_slo(slo: str, events: Sequence[Event], label: str, span: tuple[float, float], *,
              at_least: float | None, at_most: float | None) -> Finding:  # fmt: skip
    """An SLO over a window's requests; no requests (or, for latency, no ok ones) fails."""
    stats, metric = request_stats(events), slo.replace("_", " ")
    value = _value(slo, stats)
    streamed = STREAM_SLOS.get(slo)
    if value is None:
        none = "no successful requests to measure latency" if stats.total else "no requests at all"
        if streamed is not None and stats.total:
            none = f"no successful streamed requests to measure {streamed[2]}"
        return Finding(False, f"{metric} {label} (t={span[0]:.1f}–{span[1]:.1f} s): {none}",
                       {"requests": stats.total}, span)  # fmt: skip
    basis = f"{stats.latencies.count:,} successful requests" if slo.startswith("lat") else f"{stats.total:,} requests"
    if streamed is not None:
        basis = f"{getattr(stats, streamed[0]).count:,} successful streamed requests"
    passed = value >= at_least if at_least is not None else value <= float(at_most or 0.0)
    bound = f"at least {at_least:g}" if at_least is not None else f"at most {fmt_value(slo, float(at_most or 0.0))}"
    return Finding(passed, f"{metric} {label} was {fmt_value(slo, value)} over {basis} (expected {bound})",
                   {slo: value, "requests": stats.total}, span)  # fmt: skip


def judge_requests(kind: str, events: Sequence[Event], label: str, span: tuple[float, float], *,
                   at_most: int, share: float | None = None) -> Finding:  # fmt: skip
    """Failed (``ok`` false), lost (never answered) or wrong (answered wrongly) requests, at most ``at_most`` of
    them or, with ``share``, that share of the window's requests; an empty window fails (was load on?). The
    evidence is the failures kept raw (a bucket keeps a bounded number of its own)."""
    stats = request_stats(events)
    if not stats.total:
        return Finding(False, f"no requests {label} (t={span[0]:.1f}–{span[1]:.1f} s): nothing to count",
                       {"requests": 0}, span)  # fmt: skip
    bad = {"failed": stats.failed, "lost": stats.lost, "wrong": stats.wrong}[kind]
    keep = {"failed": lambda e: True, "lost": is_lost, "wrong": is_wrong}[kind]
    evidence = tuple(e for e in stats.failures if keep(e))
    measured: dict[str, float | int | None] = {kind: bad, "requests": stats.total}
    if share is not None:
        passed, bound = bad <= share * stats.total, f"{share:.2%}".replace(".00%", "%")
        measured["share"] = bad / stats.total
        text = f"{bad:,} of {stats.total:,} requests ({bad / stats.total:.2%}) {kind} {label}"
    else:
        passed, text, bound = bad <= at_most, f"{bad:,} of {stats.total:,} requests {kind} {label}", str(at_most)
    text += f" (expected at most {bound})"
    return Finding(passed, text, measured, span, evidence)


def judge_budget(events: Sequence[Event], label: str, span: tuple[float, float], *, at_most: float,
                 slo_availability: float) -> Finding:  # fmt: skip
    """Error budget consumed = (1 - availability) / (1 - SLO availability)."""
    stats = request_stats(events)
    if stats.availability is None:
        return Finding(False, f"no requests {label} (t={span[0]:.1f}–{span[1]:.1f} s): no budget was measured",
                       {"requests": 0}, span)  # fmt: skip
    budget = 1.0 - slo_availability
    # A 100 % SLO has no budget: any failure consumes all of it and more.
    consumed = (1.0 - stats.availability) / budget if budget > 0 else (0.0 if not stats.failed else math.inf)
    return Finding(consumed <= at_most, f"consumed {consumed:.0%} of the error budget {label} (availability "
                   f"{stats.availability:.4f} over {stats.total:,} requests, SLO {slo_availability:g}; "
                   f"expected at most {at_most:.0%})",
                   {"consumed": consumed, "availability": stats.availability, "requests": stats.total},
                   span)  # fmt: skip


class HaltCondition(BaseModel):
    """``{slo: availability, below: 0.5, for: 10s}`` — a spec's ``halt_if`` entry: stop early (exit 3) when it
    holds that long (``check_halt``)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    slo: Literal["availability", "error_ratio", "latency_p95"]
    below: float | None = None
    above: float | Duration | None = None
    for_: Duration = Field(alias="for")

    @model_validator(mode="after")
    def _bound(self) -> HaltCondition:
        if (self.below is None) == (self.above is None):
            raise ValueError("give exactly one of below or above")
        return self


def check_halt(condition: HaltCondition, timeline: Timeline, now: float, *, step_s: float = 1.0) -> str | None:
    """Why to halt, or None: the condition held in every ``step_s`` slice of ``[now - for, now]``.

    The span is cut into equal slices of at most ``step_s`` (one slice of ``step_s`` when ``for``
    is 0). A slice with no requests (or, for latency, no ok requests) is no evidence, so the
    condition does not hold there: a stalled load generator never halts a run by itself.
    """
    span = float(condition.for_) if condition.for_ > 0 else step_s
    if now < span:
        return None
    slices = max(1, math.ceil(span / step_s - 1e-9))
    width = span / slices
    for k in range(slices):
        part = timeline.requests(start=now - span + k * width, end=now - span + (k + 1) * width)
        value = _value(condition.slo, request_stats(part))
        if value is None or (condition.below is not None and not value < condition.below):
            return None
        if condition.above is not None and not value > float(condition.above):
            return None
    stats = request_stats(timeline.requests(start=now - span, end=now))
    bound = condition.below if condition.below is not None else float(condition.above or 0.0)
    side = "below" if condition.below is not None else "above"
    shown = fmt_value(condition.slo, _value(condition.slo, stats) or 0.0)
    return (f"{condition.slo.replace('_', ' ')} was {side} {fmt_value(condition.slo, bound)} for {span:g} s "
            f"up to t={now:.1f} s ({shown} over {stats.total:,} requests)")  # fmt: skip


def _detected(events: list[Event], start: float, is_signal: Callable[[Event], bool]) -> float | None:
    """First time at/after ``start`` a source *turns* into the signal state (pre-existing states skip)."""
    last: dict[str, bool] = {}
    for e in events:
        signal = is_signal(e)
        if e.t >= start and signal and not last.get(e.source, False):
            return e.t
        last[e.source] = signal
    return None


def mttd_mttr(timeline: Timeline, *, steady_state: Any = None) -> dict[str, dict[str, float | None]]:
    """Per fault id, in order of start: ``first_signal_s`` (start → first symptom) and ``mttr_s``
    (end → steady state regained); None when that never happened on the timeline."""
    steady, requests = SteadyCriteria.of(steady_state), timeline.requests()
    probes, breakers = timeline.select("probe", probe="readiness"), timeline.select("breaker")
    out: dict[str, dict[str, float | None]] = {}
    for started in timeline.select("fault", event="start"):
        if started.source in out:
            continue
        start = started.t
        end = next((e.t for e in timeline.select("fault", source=started.source, event="end", start=start)), None)
        signals = [_detected(probes, start, lambda e: e.get("value") is not True),
                   _detected(breakers, start, lambda e: e.get("state") == "open"),
                   next((f for u in units(requests) if u.failed and (f := u.first_failure or u.t) >= start), None)]
        found = [t for t in signals if t is not None]
        regained = None if end is None else regained_at(requests, end, steady, horizon=timeline.end)
        mttr = None if regained is None or end is None else round(regained - end, 6)
        out[started.source] = {"first_signal_s": round(min(found) - start, 6) if found else None, "mttr_s": mttr}
    return out
