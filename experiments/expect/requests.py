"""``{requests: failed, at_most: 10, during: part}``: how many of the load's requests in a window
failed, were lost (never answered: no status, or a connection error) or were answered wrongly (``wrong``:
whatever their status, outputs that are malformed, non-finite, of another shape, or fail a known answer).
``at_most`` is a count, or a share of the window's requests (``at_most: 1%``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from faultdrill.experiments.expect.kind import Kind
from faultdrill.experiments.expect.stats import Finding, SteadyCriteria, judge_requests
from faultdrill.experiments.expect.windows import label, requests_in, window_refs
from faultdrill.experiments.journal.timeline import Timeline
from faultdrill.experiments.timespec import Windowed

__all__ = ["KIND", "RequestShare", "RequestsCount", "judge"]


class RequestShare(BaseModel):
    """``at_most: 1%``: a share of the window's requests."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    percent: float = Field(ge=0, le=100)

    def __str__(self) -> str:
        return f"{self.percent:g}%"


def _count_or_share(value: Any) -> Any:
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            return RequestShare(percent=float(value.strip().removesuffix("%")))
        except ValueError:
            raise ValueError(f"expected a count (10) or a share of the requests (0%–100%), got {value!r}") from None
    return value


class RequestsCount(Windowed):
    """``{requests: failed, at_most: 10, during: part}`` — failed, lost (never answered) or wrong (answered
    wrongly); ``at_most`` a count or a share (``1%``)."""

    requests: Literal["failed", "lost", "wrong"]
    at_most: Annotated[Annotated[int, Field(ge=0)] | RequestShare, BeforeValidator(_count_or_share)]


def _describe(x: RequestsCount) -> str:
    return f"at most {x.at_most} {x.requests} requests {label(x)}"


def judge(x: RequestsCount, tl: Timeline, _: SteadyCriteria) -> Finding:
    if isinstance(x.at_most, RequestShare):
        return judge_requests(x.requests, *requests_in(x, tl), at_most=0, share=x.at_most.percent / 100)
    return judge_requests(x.requests, *requests_in(x, tl), at_most=x.at_most)


KIND = Kind("requests", RequestsCount, "requests", _describe, judge, references=window_refs, catches="damage")
