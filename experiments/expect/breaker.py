"""``{breaker: replica-0, sequence: [closed, open, half-open, closed], within: 30s, after: part.start}``:
the circuit breaker in front of a replica goes through these states, in order, within the time.

The state at the moment counts as the first one seen (observers may report changes only); repeated
states in ``sequence`` collapse, and other states in between are allowed.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from faultdrill.experiments.expect.kind import Kind, Ref
from faultdrill.experiments.expect.stats import Finding, SteadyCriteria
from faultdrill.experiments.expect.windows import moment_at, moment_ref, timed_after_end
from faultdrill.experiments.journal.timeline import Timeline
from faultdrill.experiments.timespec import Duration, Moment

__all__ = ["KIND", "BreakerSequence", "judge"]


class BreakerSequence(BaseModel):
    """``{breaker: replica-0, sequence: [closed, open, half-open, closed], within: 30s, after: part.start}``"""

    model_config = ConfigDict(frozen=True, extra="forbid")

    breaker: str
    sequence: list[Literal["closed", "open", "half-open"]] = Field(min_length=1)
    within: Duration
    after: Moment


def _describe(x: BreakerSequence) -> str:
    return f"breaker of {x.breaker} goes {' → '.join(x.sequence)} within {x.within:g} s after {x.after}"


def judge(x: BreakerSequence, tl: Timeline, _: SteadyCriteria) -> Finding:
    wanted = [s for i, s in enumerate(x.sequence) if i == 0 or s != x.sequence[i - 1]]
    moment = moment_at(x.after, tl)
    events = tl.select("breaker", source=x.breaker)
    # The state at the moment counts as the first one seen: observers may report changes only.
    prior = next((e for e in reversed(events) if e.t <= moment), None)
    seen: list[tuple[float, str]] = [(moment, str(prior.get("state")))] if prior is not None else []
    for e in events:
        if e.t > moment and (not seen or seen[-1][1] != e.get("state")):
            seen.append((e.t, str(e.get("state"))))
    matched: list[float] = []
    for t, state in seen:
        if len(matched) < len(wanted) and state == wanted[len(matched)]:
            matched.append(t)
    path = " → ".join(f"{s} (t={t:.1f} s)" for t, s in seen[:8]) + (" → …" if len(seen) > 8 else "")
    if len(matched) < len(wanted):
        return Finding(False, f"breaker of {x.breaker} after {x.after}: {path or 'no breaker states'}; never reached "
                       f"{' → '.join(wanted[len(matched):])}", {"seconds": None})  # fmt: skip
    took = matched[-1] - moment
    return Finding(took <= x.within, f"breaker of {x.breaker} went {path}, completing {took:.1f} s after {x.after} "
                   f"(limit {x.within:g} s)", {"seconds": round(took, 6)}, (moment, matched[-1]))  # fmt: skip


def _references(x: BreakerSequence) -> list[Ref]:
    return [*moment_ref(("after",), x.after), Ref("replica", ("breaker",), x.breaker)]


KIND = Kind("breaker", BreakerSequence, "breaker", _describe, judge, references=_references,
            needed_after_end=timed_after_end, catches="mechanism")
