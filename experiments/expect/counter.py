"""``{counter: NAME, labels: {…}, at_least: N, during: flood}``: how much a scraped counter grew.

The run's metrics scraper samples each replica's ``/metrics`` once a second onto the timeline
(``metric`` events: ``name``, ``value``, ``labels``). This expectation sums, over every series
whose labels include ``labels``, the counter's increase inside the window — from the last sample
at or before the window's start (else the first inside it) to the last inside it, a drop being a
counter reset (a restarted replica counts from 0 again), as Prometheus' ``increase()`` does without
extrapolation. It judges what the *target* counted — e.g. how many requests it rate-limited while
one client flooded (``inference_failures_total{reason="rate_limited"}``) — where the load
generator's ``request`` events cannot see it (the flood is a fault, not a client of the SLO).

Example::

    >>> from experiments.journal.timeline import Timeline
    >>> tl = Timeline()
    >>> for t, v in ((0.0, 5.0), (1.0, 5.0), (2.0, 40.0), (3.0, 90.0)):
    ...     _ = tl.add("metric", "replica-0", t=t, name="x_total", value=v, labels={"reason": "r"})
    >>> x = CounterIncrease(counter="x_total", labels={"reason": "r"}, at_least=50, between=["1s", "3s"])
    >>> judge_counter(x, tl.select("metric"), "between 1s and 3s", (1.0, 3.0)).measured["increase"]
    85.0
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Annotated

from pydantic import Field, StringConstraints, model_validator

from faultdrill.experiments.expect.kind import Kind
from faultdrill.experiments.expect.stats import Finding, SteadyCriteria
from faultdrill.experiments.expect.windows import label, span, window_refs
from faultdrill.experiments.journal.timeline import Event, Timeline
from faultdrill.experiments.timespec import Windowed

__all__ = ["KIND", "CounterIncrease", "describe_counter", "judge", "judge_counter"]


class CounterIncrease(Windowed):
    """``{counter: inference_failures_total, labels: {reason: rate_limited}, at_least: 100, during: flood}``"""

    counter: Annotated[str, StringConstraints(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$")]
    """The sample name as scraped (a counter keeps its ``_total`` suffix)."""
    labels: dict[str, str] = Field(default_factory=dict)
    at_least: float | None = Field(default=None, ge=0)
    at_most: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _bound(self) -> CounterIncrease:
        if self.at_least is None and self.at_most is None:
            raise ValueError("give at_least, at_most or both")
        return self


def _selector(x: CounterIncrease) -> str:
    return x.counter + ("{" + ", ".join(f'{k}="{v}"' for k, v in sorted(x.labels.items())) + "}" if x.labels else "")


def _bound(x: CounterIncrease) -> str:
    return " and ".join(([f"at least {x.at_least:g}"] if x.at_least is not None else [])
                        + ([f"at most {x.at_most:g}"] if x.at_most is not None else []))  # fmt: skip


def describe_counter(x: CounterIncrease, label: str) -> str:
    return f"{_selector(x)} increases by {_bound(x)} {label}"


def judge_counter(x: CounterIncrease, metrics: Sequence[Event], label: str, span: tuple[float, float]) -> Finding:
    """Sum of the matching series' increases in ``span``; no sample at all fails (was it scraped?)."""
    start, end = span
    series: dict[tuple[str, tuple[tuple[str, str], ...]], list[Event]] = {}
    for e in metrics:
        labels = e.get("labels") or {}
        if e.kind == "metric" and e.get("name") == x.counter and all(labels.get(k) == v for k, v in x.labels.items()):
            series.setdefault((e.source, tuple(sorted(labels.items()))), []).append(e)
    total, used = 0.0, 0
    for samples in series.values():
        before = [e for e in samples if e.t <= start]
        inside = [e for e in samples if start < e.t <= end]
        points = ([before[-1]] if before else []) + inside
        if len(points) < 2:
            continue
        used += 1
        for prev, cur in itertools.pairwise(points):
            a, b = float(prev.get("value")), float(cur.get("value"))
            total += b - a if b >= a else b  # a drop is a reset: the new value is all increase
    where = f"{label} (t={start:.1f}–{end:.1f} s)"
    if not used:
        return Finding(False, f"{_selector(x)}: no two samples {where} (is it scraped?)", {"increase": None}, span)
    ok = (x.at_least is None or total >= x.at_least) and (x.at_most is None or total <= x.at_most)
    return Finding(ok, f"{_selector(x)} increased by {total:g} {where} over {used} series "
                   f"(expected {_bound(x)})",
                   {"increase": total, "series": used}, span)  # fmt: skip


def _describe(x: CounterIncrease) -> str:
    return describe_counter(x, label(x))


def judge(x: CounterIncrease, tl: Timeline, _: SteadyCriteria) -> Finding:
    start, end, name = span(x.window(), tl)  # samples up to 5 s before: the baseline of the increase
    return judge_counter(x, tl.select("metric", start=start - 5.0, end=end), name, (start, end))


KIND = Kind("counter", CounterIncrease, "counter", _describe, judge, references=window_refs, catches="mechanism")
