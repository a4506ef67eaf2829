"""A typed view over one journal: everything the renderers show, computed once.

Request arithmetic follows :mod:`experiments.expect.stats` (availability = ok / all requests;
latency percentiles over ok requests, nearest rank), so a report never disagrees with the
verdicts. Series are per second of run time (``t`` since the run started). Everything is read
through the journal's typed accessors (``experiments.journal``): the faults as they ran, the
verdicts, the steady state the run judged by, each event's attributes.

Example::

    view = RunView.of(Journal.read(Path("runs/smoke-…/journal.json")))
    view.series.p95_ms[40], view.faults[0].mttd_s, view.slo.budget_consumed, view.score.label
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from faultdrill.experiments.journal import Event, FaultRecord, Journal, PhaseAttrs, VerdictRecord, units
from faultdrill.reports.lanes import AlertRow, Lane, RunbookRow, alert_rows, build_lanes, runbook_rows
from faultdrill.reports.score import Score, resilience_score

__all__ = ["FaultWindow", "Requests", "RunView", "Series", "SloView", "VerdictRow"]

Floats = npt.NDArray[np.float64]


def _weighted_rank(values: Floats, counts: Floats, q: float) -> float | None:
    """Nearest rank over values with counts (``values`` ascending): ``percentile`` of the multiset."""
    total = float(counts.sum())
    if total <= 0:
        return None
    rank = max(1.0, math.ceil(q * total))
    return float(values[min(int(np.searchsorted(np.cumsum(counts), rank - 0.5)), len(values) - 1)])


@dataclass(frozen=True)
class Requests:
    """Every request of the run as arrays: per unit (a ``requests`` bucket, or one ``request``) its time, count
    and ok count; per distinct ok latency of a unit its time, value and count (``experiments.journal.traffic``).
    Memory grows with the run's buckets, not with its requests."""

    t: Floats
    total: Floats
    ok: Floats
    lat_t: Floats
    lat_s: Floats
    lat_n: Floats
    wrong: Floats = field(default_factory=lambda: np.zeros(0))
    """Per unit: its failed requests that were answered wrongly (``WrongAnswer``)."""

    @classmethod
    def of(cls, events: Iterable[Event]) -> Requests:
        t: list[float] = []
        total: list[int] = []
        ok: list[int] = []
        lat_t: list[float] = []
        lat_s: list[float] = []
        lat_n: list[int] = []
        wrong: list[int] = []
        for u in units(events):
            t.append(u.t)
            total.append(u.total)
            ok.append(u.ok)
            wrong.append(u.wrong)
            for value, n in u.latency:
                lat_t.append(u.t)
                lat_s.append(value)
                lat_n.append(n)

        def arr(x: list[float] | list[int]) -> Floats:
            return np.asarray(x, dtype=np.float64)

        return cls(arr(t), arr(total), arr(ok), arr(lat_t), arr(lat_s), arr(lat_n), arr(wrong))

    def window(self, start: float, end: float) -> tuple[int, int, float | None, float | None]:
        """(total, ok, availability, p95 seconds) over ``start <= t <= end``."""
        inside = (self.t >= start) & (self.t <= end)
        total, ok = int(self.total[inside].sum()), int(self.ok[inside].sum())
        lat = (self.lat_t >= start) & (self.lat_t <= end)
        order = np.argsort(self.lat_s[lat], kind="stable")
        p95 = _weighted_rank(self.lat_s[lat][order], self.lat_n[lat][order], 0.95)
        return total, ok, (ok / total if total else None), p95


@dataclass(frozen=True)
class Series:
    """Per-second series (``t`` = left edge of each second); NaN where a second had no (ok) requests."""

    t: Floats
    throughput: Floats
    error_ratio: Floats
    p50_ms: Floats
    p95_ms: Floats
    p99_ms: Floats

    @classmethod
    def of(cls, req: Requests, duration: float) -> Series:
        n = max(1, math.ceil(duration)) if len(req.t) else 0
        idx = np.clip(np.floor(req.t).astype(np.int64), 0, max(n - 1, 0))
        total = np.bincount(idx, weights=req.total, minlength=n).astype(np.float64)
        failed = np.bincount(idx, weights=req.total - req.ok, minlength=n)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(total > 0, failed / np.where(total > 0, total, 1.0), np.nan)
        bins = np.clip(np.floor(req.lat_t).astype(np.int64), 0, max(n - 1, 0))
        order = np.lexsort((req.lat_s, bins))
        bins, lat, cnt = bins[order], req.lat_s[order], req.lat_n[order]
        entries = np.bincount(bins, minlength=n)
        weight = np.bincount(bins, weights=cnt, minlength=n)
        starts = np.cumsum(entries) - entries
        cum = np.cumsum(cnt)  # running count over the sorted entries; per bin, less what came before it
        before = np.where(starts > 0, cum[np.maximum(starts - 1, 0)], 0.0) if len(cum) else np.zeros(n)

        def nearest_rank(q: float) -> Floats:  # experiments.journal.traffic.Dist.quantile, per bin
            out = np.full(n, np.nan)
            for b in np.flatnonzero(weight > 0):
                rank = max(1.0, math.ceil(q * weight[b])) + before[b]
                k = int(np.searchsorted(cum[starts[b]:starts[b] + entries[b]], rank - 0.5))
                out[b] = lat[starts[b] + min(k, entries[b] - 1)] * 1000.0
            return out

        return cls(np.arange(n, dtype=np.float64), total, ratio, nearest_rank(0.50), nearest_rank(0.95),
                   nearest_rank(0.99))  # fmt: skip


@dataclass(frozen=True)
class FaultWindow:
    """One fault as it ran: its window, whether it was emulated, what it did to availability."""

    id: str
    type: str
    target: str
    mode: str
    start: float | None
    end: float | None
    emulated: bool
    mttd_s: float | None
    mttr_s: float | None
    requests: int
    availability: float | None
    p95_s: float | None
    effective: bool | None
    """The fault's own check that its effect was really there (None: it has no check)."""
    note: str
    """The fault's verification message or error."""


@dataclass(frozen=True)
class SloView:
    """The SLO of the spec, what was measured from steady state on, and the error budget spent."""

    availability_target: float
    latency_p95_target_s: float | None
    window_s: float
    measured_from: float
    measured_to: float
    requests: int
    failed: int
    availability: float | None
    p95_s: float | None
    budget_consumed: float | None
    fault_requests: int
    fault_availability: float | None
    fault_budget_consumed: float | None
    wrong: int = 0
    """Of ``failed``: answered wrongly (HTTP status aside: malformed, non-finite, a failed known answer)."""


@dataclass(frozen=True)
class VerdictRow:
    name: str
    passed: bool
    expected: str
    observed: str
    window: tuple[float, float] | None
    measured: dict[str, float | int | None]
    evidence: int
    evaluated: bool = True
    """False when the run aborted before it could be judged (``observed`` says why)."""

    @property
    def status(self) -> str:
        """``passed``, ``failed`` or ``not evaluated``."""
        return "passed" if self.passed else "failed" if self.evaluated else "not evaluated"


def _consumed(availability: float | None, target: float) -> float | None:
    if availability is None:
        return None
    budget = 1.0 - target
    return (1.0 - availability) / budget if budget > 0 else (0.0 if availability >= 1.0 else math.inf)


@dataclass(frozen=True)
class RunView:
    """Everything a report shows about one run (build it with :meth:`of`)."""

    journal: Journal
    duration: float
    requests: Requests
    series: Series
    faults: tuple[FaultWindow, ...]
    lanes: tuple[Lane, ...]
    alerts: tuple[AlertRow, ...]
    runbook: tuple[RunbookRow, ...]
    phases: tuple[tuple[str, float], ...]
    slo: SloView
    verdicts: tuple[VerdictRow, ...]
    score: Score
    counts: dict[str, int]

    @property
    def passed(self) -> int:
        return sum(v.passed for v in self.verdicts)

    @property
    def failed(self) -> int:
        """Judged and not held (expectations an aborted run never judged are not failures)."""
        return sum(v.evaluated and not v.passed for v in self.verdicts)

    @property
    def not_evaluated(self) -> int:
        return sum(not v.evaluated for v in self.verdicts)

    @property
    def summary(self) -> str:
        """``8 of 8 expectations held`` (what the outcome badge stands next to)."""
        n = len(self.verdicts)
        if n and self.not_evaluated == n:
            return f"none of {n} expectations evaluated (the run aborted before any fault was injected)"
        return f"{self.passed} of {n} expectations held" if n else "no expectations were judged"

    @property
    def headline(self) -> str:
        """``FAILED: 7 of 8 expectations held`` (halted and error runs say why)."""
        j = self.journal
        if j.outcome in ("halted", "error"):
            return f"{j.outcome.upper()}: {j.reason or 'no reason recorded'} — {self.summary}"
        return f"{(j.outcome or 'unfinished').upper()}: {self.summary}"

    @classmethod
    def of(cls, journal: Journal) -> RunView:
        counts: dict[str, int] = dict(Counter(e.kind for e in journal.events))
        req = Requests.of(journal.events)  # one pass over every request and bucket
        last = max((e.t for e in journal.events), default=0.0)
        wall = (journal.ended_at - journal.started_at) if journal.ended_at else 0.0
        duration = max(last, wall, 0.0)
        phases = tuple((_phase_name(e), e.t) for e in journal.events if e.kind == "phase")
        faults = tuple(_fault(f, req, duration) for f in journal.fault_records())
        slo = _slo(journal, req, faults, phases, duration)
        verdicts = tuple(_verdict(v) for v in journal.verdict_records())
        score = resilience_score(
            outcome=journal.outcome, passed=sum(v.passed for v in verdicts), expectations=len(verdicts),
            availability_faults=slo.fault_availability, slo_availability=slo.availability_target,
            mttd_s=[f.mttd_s for f in faults], mttr_s=[f.mttr_s for f in faults],
            evaluated=sum(v.evaluated for v in verdicts),
        )  # fmt: skip
        return cls(journal, duration, req, Series.of(req, duration), faults, build_lanes(journal.events, duration),
                   alert_rows(journal.events, [(f.id, f.start) for f in faults]), runbook_rows(journal.events),
                   phases, slo, verdicts, score, counts)  # fmt: skip


def _fault(f: FaultRecord, req: Requests, duration: float) -> FaultWindow:
    """A fault as the journal records it, with what it did to the requests in its window."""
    total, _, avail, p95 = req.window(f.start, duration if f.end is None else f.end) if f.start is not None \
        else (0, 0, None, None)  # fmt: skip
    return FaultWindow(id=f.id, type=f.type or "?", target=f.target or "?", mode=f.mode or "", start=f.start,
                       end=f.end, emulated=f.emulated, mttd_s=f.mttd_s, mttr_s=f.mttr_s, requests=total,
                       availability=avail, p95_s=p95, effective=f.effective, note=f.note)  # fmt: skip


def _phase_name(e: Event) -> str:
    """The run's phases by name; a load stage's (``load.rate_stages``, source ``load``) with its edge: ``spike end``."""
    name = PhaseAttrs.of(e).phase
    return name if e.source == "run" else f"{name} {e.attrs.get('edge', '')}".strip()


def _slo(journal: Journal, req: Requests, faults: tuple[FaultWindow, ...], phases: tuple[tuple[str, float], ...],
         duration: float) -> SloView:  # fmt: skip
    steady = journal.steady_criteria()  # what the run judged by, not the spec's defaults again
    start = next((t for name, t in phases if name == "steady"), float(req.t[0]) if len(req.t) else 0.0)
    end = next((t for name, t in phases if name == "teardown" and t >= start), duration)
    total, ok, avail, p95 = req.window(start, end)
    inside = np.zeros(len(req.t), dtype=np.bool_)
    for f in faults:
        if f.start is not None:
            inside |= (req.t >= f.start) & (req.t <= (duration if f.end is None else f.end))
    f_total = int(req.total[inside].sum())
    f_avail = int(req.ok[inside].sum()) / f_total if f_total else None
    target = steady.availability
    return SloView(
        availability_target=target, latency_p95_target_s=steady.latency_p95_s, window_s=steady.window_s,
        measured_from=start, measured_to=end, requests=total, failed=total - ok, availability=avail, p95_s=p95,
        budget_consumed=_consumed(avail, target), fault_requests=f_total, fault_availability=f_avail,
        fault_budget_consumed=_consumed(f_avail, target),
        wrong=int(req.wrong[(req.t >= start) & (req.t <= end)].sum()) if len(req.wrong) == len(req.t) else 0,
    )  # fmt: skip


def _verdict(v: VerdictRecord) -> VerdictRow:
    return VerdictRow(name=v.name, passed=v.passed, expected=v.expected, observed=v.observed, window=v.window,
                      measured=dict(v.measured), evidence=len(v.evidence), evaluated=v.evaluated)  # fmt: skip
