"""``{gauge: process_resident_memory_bytes, rise_at_most: 64Mi, during: spike}``: a scraped gauge stays bounded
(or reaches a level: ``max_at_least``).

The run's metrics scraper samples each replica's ``/metrics`` once a second onto the timeline (``metric``
events, source the replica). This expectation reads the gauge's samples in the window, over every series whose
labels include ``labels`` (and only ``source``'s, when given), and bounds, per series, its highest value
(``max_at_most``) or its rise — the highest value in the window less the last sample before it (else the first
in it) — (``rise_at_most``). Memory is its first use: an overloaded replica must not hold ever more requests.
``max_at_least`` asks the opposite, of the highest series: that a signal *did* reach a level — a saturation or
autoscaling signal that must show a slow GPU (``{gauge: gpu_utilization_ratio, source: replica-0,
max_at_least: 0.9, during: slow}``). Its failure is a signal's (mechanism): the damage is judged elsewhere.
Sizes take ``Ki``/``Mi``/``Gi`` (and ``k``/``M``/``G``) suffixes. No sample is a failure (is it scraped?).

Example::

    >>> from experiments.journal.timeline import Timeline
    >>> tl = Timeline()
    >>> for t, v in ((0.0, 100.0), (2.0, 130.0), (3.0, 120.0)):
    ...     _ = tl.add("metric", "replica-0", t=t, name="rss", value=v)
    >>> judge(Gauge(gauge="rss", rise_at_most=50, between=["1s", "4s"]), tl, None).measured["rise"]
    30.0
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Field, StringConstraints, field_validator, model_validator

from faultdrill.experiments.expect.kind import Catches, Kind, Ref
from faultdrill.experiments.expect.stats import Finding, SteadyCriteria
from faultdrill.experiments.expect.windows import label, span, window_refs
from faultdrill.experiments.journal.timeline import Event, Timeline
from faultdrill.experiments.timespec import Windowed

__all__ = ["KIND", "Gauge", "judge"]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(Ki|Mi|Gi|k|K|M|G)?\s*$")
_UNITS = {None: 1, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def _size(value: Any) -> Any:
    if isinstance(value, str):
        m = _SIZE.match(value)
        if not m:
            raise ValueError(f"expected a number or a size like 64Mi or 1.5G, got {value!r}")
        return float(m.group(1)) * _UNITS[m.group(2)]
    return value


def _fmt(name: str, value: float) -> str:
    return f"{value / 2**20:,.1f} MiB" if name.endswith("_bytes") else f"{value:g}"


class Gauge(Windowed):
    """``{gauge: process_resident_memory_bytes, rise_at_most: 64Mi, during: spike}`` (or ``max_at_most``)."""

    gauge: Annotated[str, StringConstraints(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$")]
    """The sample name as scraped."""
    labels: dict[str, str] = Field(default_factory=dict)
    source: str | None = None
    """Only this service's samples (``replica-0``); None: every replica's, each series judged alone."""
    max_at_most: float | None = Field(default=None, ge=0)
    rise_at_most: float | None = Field(default=None, ge=0)
    max_at_least: float | None = Field(default=None, ge=0)

    _sizes = field_validator("max_at_most", "rise_at_most", "max_at_least", mode="before")(_size)

    @model_validator(mode="after")
    def _bound(self) -> Gauge:
        if sum(b is not None for b in (self.max_at_most, self.rise_at_most, self.max_at_least)) != 1:
            raise ValueError("give exactly one of max_at_most, rise_at_most or max_at_least")
        return self


def _describe(x: Gauge) -> str:
    bound: float | None
    if x.max_at_least is not None:
        what, bound = "reaches at least", x.max_at_least
    else:
        what = "rises by at most" if x.rise_at_most is not None else "stays at most"
        bound = x.rise_at_most if x.rise_at_most is not None else x.max_at_most
    where = f" of {x.source}" if x.source else ""
    return f"{x.gauge}{where} {what} {_fmt(x.gauge, float(bound or 0))} {label(x)}"


def judge(x: Gauge, tl: Timeline, _: SteadyCriteria | None) -> Finding:
    start, end, name = span(x.window(), tl)
    series: dict[tuple[str, tuple[tuple[str, str], ...]], list[Event]] = {}
    for e in tl.select("metric", source=x.source, start=start - 5.0, end=end):
        labels = e.get("labels") or {}
        if e.get("name") == x.gauge and all(labels.get(k) == v for k, v in x.labels.items()):
            series.setdefault((e.source, tuple(sorted(labels.items()))), []).append(e)
    where = f"{name} (t={start:.1f}–{end:.1f} s)"
    worst: tuple[float, float, float, str] | None = None  # (judged value, max, baseline, series)
    for (source, _labels), samples in series.items():
        inside = [float(e.get("value")) for e in samples if start <= e.t <= end]
        if not inside:
            continue
        before = [float(e.get("value")) for e in samples if e.t < start]
        base = before[-1] if before else inside[0]
        top = max(inside)
        value = top - base if x.rise_at_most is not None else top
        if worst is None or value > worst[0]:  # the highest: the worst for a bound, the best for max_at_least
            worst = (value, top, base, source)
    if worst is None:
        return Finding(False, f"{x.gauge}: no sample {where} (is it scraped?)",
                       {"max": None, "reaching": 1 if x.max_at_least is not None else 0}, (start, end))  # fmt: skip
    value, top, base, source = worst
    measured: dict[str, float | int | None] = {"max": top, "baseline": base, "rise": top - base,
                                               "reaching": 1 if x.max_at_least is not None else 0}
    if x.max_at_least is not None:
        return Finding(top >= x.max_at_least, f"{x.gauge} of {source} reached {_fmt(x.gauge, top)} {where} (expected "
                       f"at least {_fmt(x.gauge, x.max_at_least)})", measured, (start, end))  # fmt: skip
    if x.rise_at_most is not None:
        return Finding(value <= x.rise_at_most, f"{x.gauge} of {source} rose by {_fmt(x.gauge, value)} {where} "
                       f"({_fmt(x.gauge, base)} → {_fmt(x.gauge, top)}; expected at most "
                       f"{_fmt(x.gauge, x.rise_at_most)})", measured, (start, end))  # fmt: skip
    bound = float(x.max_at_most or 0)
    return Finding(top <= bound, f"{x.gauge} of {source} reached {_fmt(x.gauge, top)} {where} (expected at most "
                   f"{_fmt(x.gauge, bound)})", measured, (start, end))  # fmt: skip


def _refs(x: Gauge) -> list[Ref]:
    refs = list(window_refs(x))
    if x.source is not None:
        refs.append(Ref("supervised", ("source",), x.source))
    return refs


def _catches(measured: Mapping[str, float | int | None]) -> Catches:
    """A bound broken (memory grew) is damage; a signal that never reached its level is the signal's mechanism."""
    return "mechanism" if measured.get("reaching") else "damage"


KIND = Kind("gauge", Gauge, "gauge", _describe, judge, references=_refs, catches="damage", catches_when=_catches)
