"""``{recovers: steady_state, within: 20s, after: hog.end}``: steady state regained in time.

Steady state is the spec's ``steady_state`` criteria over one window of requests; the measured
seconds — the MTTR — are reported even when over the limit.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from faultdrill.experiments.expect.kind import Kind, Ref
from faultdrill.experiments.expect.stats import Finding, SteadyCriteria, regained_at, request_stats
from faultdrill.experiments.expect.windows import moment_at, moment_ref, timed_after_end
from faultdrill.experiments.journal.timeline import Timeline
from faultdrill.experiments.timespec import Duration, Moment

__all__ = ["KIND", "Recovers", "judge"]


class Recovers(BaseModel):
    """``{recovers: steady_state, within: 20s, after: hog.end}`` — the measured time is the MTTR."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    recovers: Literal["steady_state"]
    within: Duration
    after: Moment


def _describe(x: Recovers) -> str:
    return f"recovers steady state within {x.within:g} s after {x.after}"


def judge(x: Recovers, tl: Timeline, steady: SteadyCriteria) -> Finding:
    # The measured seconds (the MTTR) are reported even when over the limit.
    moment, requests = moment_at(x.after, tl), tl.requests()
    at = regained_at(requests, moment, steady, horizon=tl.end)
    if at is None:
        return Finding(False, f"steady state not regained by the end of the run (t={tl.end:.1f} s, "
                       f"{max(0.0, tl.end - moment):.1f} s after {x.after}; limit {x.within:g} s)",
                       {"seconds": None}, (moment, tl.end))  # fmt: skip
    stats, mttr = request_stats(tl.requests(start=at, end=at + steady.window_s)), at - moment
    return Finding(mttr <= x.within, f"steady state regained {mttr:.1f} s after {x.after} (limit {x.within:g} s): "
                   f"availability {stats.availability or 0.0:.3f} over {stats.total:,} requests from t={at:.1f} s",
                   {"seconds": round(mttr, 6), "availability": stats.availability,
                    "latency_p95_s": stats.latency(0.95)}, (at, at + steady.window_s))  # fmt: skip


def _references(x: Recovers) -> list[Ref]:
    return moment_ref(("after",), x.after)


KIND = Kind("recovers", Recovers, "recovers", _describe, judge, references=_references,
            needed_after_end=timed_after_end, judged_on_steady_state=True, catches="damage")
