"""``{canary: rolled_back | promoted, …}``: the canary analysis' decision, over the timeline's ``canary``
events.

``{canary: rolled_back, within: 30s, after: bad.start}`` passes when the canary analysis
rolled the canary back within 30 s of the moment (and did not promote it first);
``{canary: promoted, within: 60s, after: steady.start}`` when it promoted it. ``version``
narrows to the revision serving that version; a manual rollback (runbook, control API) does
not count as the analysis' unless ``automatic: false``. The verdict measures the seconds from the
moment, and for a rollback also from the revision's first canary request (how long users
were exposed to the bad version).

Example::

    >>> from experiments.journal.timeline import Timeline
    >>> tl = Timeline()
    >>> _ = tl.add("canary", "canary", t=9.0, event="rollback", version="3", reason="success_rate 0.5 below 0.99",
    ...            seconds=4.0, weight=0)
    >>> judge_canary(CanaryExpectation(canary="rolled_back", within=10), tl, 2.0, "bad.start").passed
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict

from faultdrill.experiments.expect.kind import Kind, Ref
from faultdrill.experiments.expect.stats import Finding, SteadyCriteria
from faultdrill.experiments.expect.windows import after_end, moment_at, moment_ref
from faultdrill.experiments.journal.timeline import Timeline
from faultdrill.experiments.timespec import Duration, Moment

__all__ = ["KIND", "CanaryExpectation", "describe_canary", "judge", "judge_canary"]

_EVENT = {"rolled_back": "rollback", "promoted": "promote"}


class CanaryExpectation(BaseModel):
    """``{canary: rolled_back | promoted, within: 30s, after: bad.start, version: "3"}``"""

    model_config = ConfigDict(frozen=True, extra="forbid")

    canary: Literal["rolled_back", "promoted"]
    within: Duration | None = None
    after: Moment | None = None
    """From this moment (default: the run's start)."""
    version: str | None = None
    automatic: bool = True
    """``rolled_back``: only the analysis' own rollback counts (not a person's or a runbook's)."""


def describe_canary(x: CanaryExpectation) -> str:
    what = "rolled back" if x.canary == "rolled_back" else "promoted"
    version = f" (version {x.version})" if x.version else ""
    bound = f" within {x.within:g} s after {x.after or 'run.start'}" if x.within is not None else (
        f" after {x.after}" if x.after else "")
    return f"the canary{version} is {what}{bound}"


def judge_canary(x: CanaryExpectation, tl: Timeline, moment: float, label: str = "run.start") -> Finding:
    """The first promote/rollback at or after ``moment`` decides (the wrong one, or none, fails)."""
    decisions = [e for e in tl.select("canary", start=moment) if e.get("event") in ("promote", "rollback")
                 and (x.version is None or str(e.get("version")) == x.version)
                 and not (x.automatic and x.canary == "rolled_back" and e.get("by") == "manual")]  # fmt: skip
    want = _EVENT[x.canary]
    if not decisions:
        weights = [e for e in tl.select("canary", start=moment) if e.get("event") in ("weight", "revision")]
        last = f"; last weight {weights[-1].get('weight')} % (version {weights[-1].get('version')})" if weights else ""
        return Finding(False, f"the canary was neither promoted nor rolled back after {label} "
                       f"(to t={tl.end:.1f} s){last}", {"seconds": None}, (moment, tl.end))  # fmt: skip
    first = decisions[0]
    seconds = first.t - moment
    exposed = first.get("seconds")
    if first.get("event") != want:
        other = "promoted" if first.get("event") == "promote" else f"rolled back ({first.get('reason')})"
        return Finding(False, f"the canary (version {first.get('version')}) was {other} {seconds:.1f} s after "
                       f"{label}", {"seconds": round(seconds, 3)}, (moment, first.t), (first,))  # fmt: skip
    ok = x.within is None or seconds <= x.within
    limit = f" (limit {x.within:g} s)" if x.within is not None else ""
    if want == "rollback":
        exposure = (f"{exposed} s after it first took traffic" if first.get("took_traffic", True)
                    else "before it ever took traffic (never ready)")  # fmt: skip
        observed = (f"the canary (version {first.get('version')}) was rolled back {seconds:.1f} s after {label}"
                    f"{limit}, {exposure}: {first.get('reason')}")  # fmt: skip
    else:
        observed = f"the canary (version {first.get('version')}) was promoted {seconds:.1f} s after {label}{limit}"
    measured: dict[str, float | int | None] = {"seconds": round(seconds, 3)}
    if exposed is not None:  # rollback: since its first canary request; promotion: since the rollout began
        measured["exposed_s" if want == "rollback" else "rollout_s"] = float(exposed)
    return Finding(ok, observed, measured, (moment, first.t), (first,))


def judge(x: CanaryExpectation, tl: Timeline, _: SteadyCriteria) -> Finding:
    return judge_canary(x, tl, moment_at(x.after, tl) if x.after else 0.0, str(x.after or "run.start"))


def _references(x: CanaryExpectation) -> list[Ref]:
    return [*moment_ref(("after",), x.after), Ref("canary", ("canary",), x.canary)]


def _after_end(x: CanaryExpectation, durations: Mapping[str, float]) -> float:
    return 0.0 if x.within is None else after_end(x.within, x.after, durations)


KIND = Kind("canary", CanaryExpectation, "canary", describe_canary, judge, references=_references,
            needed_after_end=_after_end, catches="mechanism")
