"""A typed view over one journal: everything the renderers show, computed once.

Request arithmetic follows :mod:`experiments.slo` (availability = ok / all requests;
latency percentiles over ok requests, nearest rank), so a report never disagrees with the
verdicts. Series are per second of run time (``t`` since the run started).

Example::

    view = RunView.of(Journal.read(Path("runs/smoke-…/journal.json")))
    view.series.p95_ms[40], view.faults[0].mttd_s, view.slo.budget_consumed, view.score.label
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from experiments.journal import Journal
from experiments.slo import percentile
from reports.lanes import AlertRow, Lane, RunbookRow, alert_rows, build_lanes, runbook_rows
from reports.score import Score, resilience_score

__all__ = ["FaultWindow", "Requests", "RunView", "Series", "SloView", "VerdictRow"]

Floats = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Requests:
    """Every request of the run as arrays: time, ok, latency (NaN unless ok)."""

    t: Floats
    ok: npt.NDArray[np.bool_]
    latency_s: Floats

    def window(self, start: float, end: float) -> tuple[int, int, float | None, float | None]:
        """(total, ok, availability, p95 seconds) over ``start <= t <= end``."""
        inside = (self.t >= start) & (self.t <= end)
        total, ok = int(inside.sum()), int((inside & self.ok).sum())
        lat = np.sort(self.latency_s[inside & self.ok & ~np.isnan(self.latency_s)])
        return total, ok, (ok / total if total else None), percentile(lat.tolist(), 0.95)


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
        total = np.bincount(idx, minlength=n).astype(np.float64)
        failed = np.bincount(idx, weights=(~req.ok).astype(np.float64), minlength=n)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(total > 0, failed / np.where(total > 0, total, 1.0), np.nan)
        good = req.ok & ~np.isnan(req.latency_s)
        bins, lat = idx[good], req.latency_s[good]
        order = np.lexsort((lat, bins))
        bins, lat = bins[order], lat[order]
        counts = np.bincount(bins, minlength=n)
        starts = np.cumsum(counts) - counts

        def nearest_rank(q: float) -> Floats:  # experiments.slo.percentile, per bin
            out = np.full(n, np.nan)
            has = counts > 0
            rank = np.maximum(1, np.ceil(q * counts[has])).astype(np.int64)
            out[has] = lat[starts[has] + np.minimum(rank, counts[has]) - 1] * 1000.0
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


@dataclass(frozen=True)
class VerdictRow:
    name: str
    passed: bool
    expected: str
    observed: str
    window: tuple[float, float] | None
    measured: dict[str, Any]
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


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


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
        t, ok, lat, counts = [], [], [], dict[str, int]()
        for e in journal.events:
            counts[e.kind] = counts.get(e.kind, 0) + 1
            if e.kind == "request":
                good = e.attrs.get("ok") is True
                t.append(e.t)
                ok.append(good)
                lat.append(_float(e.attrs.get("latency_s")) if good else None)
        req = Requests(np.asarray(t, dtype=np.float64), np.asarray(ok, dtype=np.bool_),
                       np.asarray([math.nan if x is None else x for x in lat], dtype=np.float64))  # fmt: skip
        last = max((e.t for e in journal.events), default=0.0)
        wall = (journal.ended_at - journal.started_at) if journal.ended_at else 0.0
        duration = max(last, wall, 0.0)
        phases = tuple((str(e.attrs.get("phase")), e.t) for e in journal.events if e.kind == "phase")
        faults = _faults(journal, req, duration)
        slo = _slo(journal, req, faults, phases, duration)
        verdicts = tuple(_verdict(v) for v in journal.verdicts)
        score = resilience_score(
            outcome=journal.outcome, passed=sum(v.passed for v in verdicts), expectations=len(verdicts),
            availability_faults=slo.fault_availability, slo_availability=slo.availability_target,
            mttd_s=[f.mttd_s for f in faults], mttr_s=[f.mttr_s for f in faults],
            evaluated=sum(v.evaluated for v in verdicts),
        )  # fmt: skip
        return cls(journal, duration, req, Series.of(req, duration), faults, build_lanes(journal.events, duration),
                   alert_rows(journal.events, [(f.id, f.start) for f in faults]), runbook_rows(journal.events),
                   phases, slo, verdicts, score, counts)  # fmt: skip


def _faults(journal: Journal, req: Requests, duration: float) -> tuple[FaultWindow, ...]:
    """Faults from the journal's summary, completed (or found) from the fault events."""
    events: dict[str, dict[str, Any]] = {}
    for e in journal.events:
        if e.kind != "fault":
            continue
        info = events.setdefault(e.source, {})
        what = e.attrs.get("event")
        if what == "start" and "start" not in info:
            info.update(start=e.t, **{k: e.attrs[k] for k in ("fault", "mode", "target", "emulated") if k in e.attrs})
        elif what == "end" and "end" not in info:
            info["end"] = e.t
        elif what == "verified":
            info.update(effective=e.attrs.get("effective"), message=e.attrs.get("message", ""))
        elif what == "error":
            info["error"] = e.attrs.get("error") or e.attrs.get("message") or "error"
    out = []
    for fid in [*journal.faults, *(f for f in events if f not in journal.faults)]:
        s, ev = journal.faults.get(fid, {}), events.get(fid, {})
        # The events first: the verdicts and MTTD/MTTR place a fault by its start/end events.
        start = _float(ev.get("start", s.get("start_s", s.get("start"))))
        end = _float(ev.get("end", s.get("end_s", s.get("end"))))
        verified: dict[str, Any] = s["verified"] if isinstance(s.get("verified"), dict) else {}
        effective = verified.get("effective", ev.get("effective"))
        note = str(s.get("error") or ev.get("error") or verified.get("message") or ev.get("message") or "")
        total, _, avail, p95 = req.window(start, duration if end is None else end) if start is not None \
            else (0, 0, None, None)  # fmt: skip
        out.append(FaultWindow(
            id=fid, type=str(s.get("type") or ev.get("fault") or "?"), target=str(s.get("target") or ev.get("target")
            or "?"), mode=str(s.get("mode") or ev.get("mode") or ""), start=start, end=end,
            emulated=bool(s.get("emulated", ev.get("emulated", False))), mttd_s=_float(s.get("mttd_s")),
            mttr_s=_float(s.get("mttr_s")), requests=total, availability=avail, p95_s=p95,
            effective=effective if isinstance(effective, bool) else None, note=note,
        ))  # fmt: skip
    return tuple(out)


def _slo(journal: Journal, req: Requests, faults: tuple[FaultWindow, ...], phases: tuple[tuple[str, float], ...],
         duration: float) -> SloView:  # fmt: skip
    steady = journal.spec.get("steady_state") or {}
    slo = steady.get("slo") or {} if isinstance(steady, dict) else {}
    availability = _float(slo.get("availability")) if "availability" in slo else 0.99
    error_ratio = _float(slo.get("error_ratio"))
    target = max(availability or 0.0, 0.0 if error_ratio is None else 1.0 - error_ratio)
    start = next((t for name, t in phases if name == "steady"), float(req.t[0]) if len(req.t) else 0.0)
    end = next((t for name, t in phases if name == "teardown" and t >= start), duration)
    total, ok, avail, p95 = req.window(start, end)
    inside = np.zeros(len(req.t), dtype=np.bool_)
    for f in faults:
        if f.start is not None:
            inside |= (req.t >= f.start) & (req.t <= (duration if f.end is None else f.end))
    f_total = int(inside.sum())
    f_avail = int((inside & req.ok).sum()) / f_total if f_total else None
    return SloView(
        availability_target=target, latency_p95_target_s=_float(slo.get("latency_p95")),
        window_s=_float(steady.get("window")) or 5.0 if isinstance(steady, dict) else 5.0,
        measured_from=start, measured_to=end, requests=total, failed=total - ok, availability=avail, p95_s=p95,
        budget_consumed=_consumed(avail, target), fault_requests=f_total, fault_availability=f_avail,
        fault_budget_consumed=_consumed(f_avail, target),
    )  # fmt: skip


def _verdict(raw: dict[str, Any]) -> VerdictRow:
    window = raw.get("window")
    span = (float(window[0]), float(window[1])) if isinstance(window, list | tuple) and len(window) == 2 else None
    measured = raw.get("measured") if isinstance(raw.get("measured"), dict) else {}
    return VerdictRow(name=str(raw.get("name", "?")), passed=raw.get("passed") is True,
                      expected=str(raw.get("expected", "")), observed=str(raw.get("observed", "")), window=span,
                      measured=dict(measured or {}), evidence=len(raw.get("evidence") or []),
                      evaluated=raw.get("evaluated") is not False)  # fmt: skip
