"""``{requests: failed, at_most: 10, during: part}``: how many of the load's requests in a window
failed, or were lost (never answered: no status, or a connection error)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from faultdrill.experiments.expect.kind import Kind
from faultdrill.experiments.expect.stats import Finding, SteadyCriteria, judge_requests
from faultdrill.experiments.expect.windows import label, requests_in, window_refs
from faultdrill.experiments.journal.timeline import Timeline
from faultdrill.experiments.timespec import Windowed

__all__ = ["KIND", "RequestsCount", "judge"]


class RequestsCount(Windowed):
    """``{requests: failed, at_most: 10, during: part}`` — failed or lost (never answered)."""

    requests: Literal["failed", "lost"]
    at_most: int = Field(ge=0)


def _describe(x: RequestsCount) -> str:
    return f"at most {x.at_most} {x.requests} requests {label(x)}"


def judge(x: RequestsCount, tl: Timeline, _: SteadyCriteria) -> Finding:
    return judge_requests(x.requests, *requests_in(x, tl), at_most=x.at_most)


KIND = Kind("requests", RequestsCount, "requests", _describe, judge, references=window_refs)
