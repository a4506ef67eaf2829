"""``{slo: availability, at_least: 0.95, during: hog}``: an SLO over the requests in a window.

``availability`` and ``error_ratio`` take ``at_least``/``at_most`` as fractions; ``latency_p50``,
``latency_p95`` and ``latency_p99`` (over ok requests only) a duration (``at_most: 500ms``), and so do
``latency_ttft_p95`` and ``latency_itl_p95``: the p95 time to first token and mean inter-token latency of
ok streamed answers (``load.protocol`` openai with ``stream: true``).
``clients``/``except_clients`` narrow the requests to some of the load's clients (``load.clients``).
The arithmetic is ``experiments.expect.stats``'s.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from faultdrill.experiments.expect.kind import Kind, Ref
from faultdrill.experiments.expect.stats import Finding, SteadyCriteria, clients_label, fmt_value, judge_slo, of_clients
from faultdrill.experiments.expect.windows import label, requests_in, window_refs
from faultdrill.experiments.journal.timeline import Timeline
from faultdrill.experiments.timespec import Duration, Windowed, parse_duration

__all__ = ["KIND", "SloOver", "judge"]


class SloOver(Windowed):
    """``{slo: availability, at_least: 0.95, during: hog}`` — availability, error_ratio,
    latency_p50/p95/p99, latency_ttft_p95/latency_itl_p95 (streamed answers; ``at_most: 500ms``) over the
    requests in the window."""

    slo: Literal["availability", "error_ratio", "latency_p50", "latency_p95", "latency_p99", "latency_ttft_p95",
                 "latency_itl_p95"]  # fmt: skip
    at_least: float | None = None
    at_most: float | Duration | None = None
    clients: list[str] | None = Field(default=None, min_length=1)
    """Only the requests of these load clients (``load.clients`` ids)."""
    except_clients: list[str] | None = Field(default=None, min_length=1)
    """All requests but those of these load clients."""

    @model_validator(mode="after")
    def _bound(self) -> SloOver:
        if (self.at_least is None) == (self.at_most is None):
            raise ValueError("give exactly one of at_least or at_most")
        if self.clients is not None and self.except_clients is not None:
            raise ValueError("give clients or except_clients, not both")
        return self

    @field_validator("at_most", mode="before")
    @classmethod
    def _latency(cls, value: Any) -> Any:
        return parse_duration(value) if isinstance(value, str) else value


def _describe(x: SloOver) -> str:
    bound = f"at least {x.at_least:g}" if x.at_least is not None else f"at most {fmt_value(x.slo, x.at_most or 0)}"
    return f"{x.slo.replace('_', ' ')} {bound} {label(x)}{clients_label(x.clients, x.except_clients)}"


def judge(x: SloOver, tl: Timeline, _: SteadyCriteria) -> Finding:
    at_most = None if x.at_most is None else float(x.at_most)
    events, name, span = requests_in(x, tl)
    if x.clients is not None or x.except_clients is not None:
        events = of_clients(events, x.clients, x.except_clients)
        name += clients_label(x.clients, x.except_clients)
    return judge_slo(x.slo, events, name, span, at_least=x.at_least, at_most=at_most)


def _references(x: SloOver) -> list[Ref]:
    return [*window_refs(x), *(Ref("client", (key, j), cid) for key in ("clients", "except_clients")
                               for j, cid in enumerate(getattr(x, key) or ()))]  # fmt: skip


KIND = Kind("slo", SloOver, "slo", _describe, judge, references=_references, catches="damage")
