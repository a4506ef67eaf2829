"""``{answers: [ok, 503, 429], share_at_least: 0.99, during: spike}``: what the load's clients were answered.

A request matches when it is ``ok`` (listed as ``ok``) or when it failed with one of the listed HTTP statuses
(``0``: never answered — refused, reset, timed out by the client, or not sent over the load's in-flight cap).
The bound is the matched share of the window's requests (``share_at_least``/``share_at_most``), or their rate
(``per_second_at_least``: requests per second over the window, or ``N%`` of the capacity the run's probe measured,
its ``load_capacity_rps`` metric). Two questions an SRE asks of an overload:

* *were clients answered correctly, or told to back off?* ``{answers: [ok, 503, 429], share_at_least: 0.99}`` —
  every other answer (a 504 after a long wait, a 500, a dropped connection) is a failure that tells the client
  nothing it can act on;
* *how much useful work got through?* ``{answers: [ok], within: 300ms, per_second_at_least: 60%}`` — goodput
  against capacity: ok answers that came in time (an ok answer after ten seconds of queueing is no good to a
  client that gave up; ``within`` needs the latency histograms of the load's buckets, which count only ok requests).

Buckets (``requests`` events) count by status (``statuses``); an ok request is taken off its 2xx status, so a
listed 200 counts the 200s that were wrong answers. Requests are placed as every requests window places them
(``experiments.expect.windows``).

Example::

    >>> from experiments.journal.timeline import Timeline
    >>> tl = Timeline()
    >>> _ = tl.add("requests", "load", t=1.0, span_s=0.1, count=10, ok=6, lost=1,
    ...            statuses={"200": 6, "503": 3, "0": 1})
    >>> x = Answers(answers=["ok", 503], share_at_least=0.9, between=["0s", "2s"])
    >>> judge(x, tl, None).measured["share"]  # type: ignore[arg-type]
    0.9
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from faultdrill.experiments.expect.kind import Kind
from faultdrill.experiments.expect.stats import Finding, SteadyCriteria
from faultdrill.experiments.expect.windows import label, requests_in, window_refs
from faultdrill.experiments.journal.timeline import Event, Timeline
from faultdrill.experiments.journal.traffic import units
from faultdrill.experiments.timespec import Duration, Windowed

__all__ = ["KIND", "Answers", "count_answers", "judge"]

Status = Annotated[int, Field(ge=0, le=599)]


class Answers(Windowed):
    """``{answers: [ok, 503, 429], share_at_least: 0.99, during: spike}`` — ok requests and failures by status."""

    answers: list[Literal["ok"] | Status] = Field(min_length=1)
    """``ok``, and HTTP statuses of failed requests (0: never answered)."""
    share_at_least: float | None = Field(default=None, ge=0, le=1)
    share_at_most: float | None = Field(default=None, ge=0, le=1)
    per_second_at_least: float | str | None = None
    """Requests per second, or ``N%`` of the probed capacity (``load.rate: N%`` runs measure it)."""
    within: Duration | None = None
    """``ok`` counts only the ok requests answered within this latency (goodput: useful *and* in time); the
    others are ``slow``."""

    @field_validator("per_second_at_least", mode="before")
    @classmethod
    def _rate(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            try:
                number = float(text.removesuffix("%"))
            except ValueError:
                raise ValueError(f"expected requests per second or a share of capacity (80%), got {value!r}") from None
            if not text.endswith("%"):
                return number
            if not 0 < number <= 1000:
                raise ValueError(f"a share of capacity is above 0% and at most 1000%, got {value!r}")
            return f"{number:g}%"
        if isinstance(value, bool) or (isinstance(value, int | float) and value <= 0):
            raise ValueError(f"expected requests per second above 0 or a share of capacity (80%), got {value!r}")
        return value

    @model_validator(mode="after")
    def _one_bound(self) -> Answers:
        given = [k for k in ("share_at_least", "share_at_most", "per_second_at_least") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of share_at_least, share_at_most or per_second_at_least")
        return self


def _listed(x: Answers) -> str:
    said = ", ".join(str(a) for a in x.answers)
    return said if x.within is None else f"{said} (ok within {float(x.within) * 1000:g} ms)"


def _describe(x: Answers) -> str:
    if x.per_second_at_least is not None:
        rate = x.per_second_at_least
        bound = f"at least {rate} of capacity" if isinstance(rate, str) else f"at least {rate:g}"
        return f"requests answered {_listed(x)} per second {bound} {label(x)}"
    bound = f"at least {x.share_at_least:g}" if x.share_at_least is not None else f"at most {x.share_at_most:g}"
    return f"share of requests answered {_listed(x)} {bound} {label(x)}"


def count_answers(events: Iterable[Event], answers: list[Any], within: float | None = None,
                  ) -> tuple[int, int, dict[str, int]]:  # fmt: skip
    """``(matched, total, by answer)`` over single ``request`` and bucketed ``requests`` events: ``ok`` counts
    the ok requests (with ``within``: only those answered within that many seconds; the others are ``slow``); a
    status, the failed requests answered with it (``0``: never answered)."""
    wanted = {str(a) for a in answers}
    matched = total = 0
    seen: dict[str, int] = {}
    for e in events:
        if e.kind == "request":
            counts = {"ok" if e.get("ok") is True else str(e.get("status") or 0): 1}
        elif e.kind == "requests":
            statuses = {str(k): int(v) for k, v in (e.get("statuses") or {}).items()}
            ok_count = int(e.get("ok") or 0)
            counts = {"ok": ok_count} if ok_count else {}
            left = ok_count
            for status in sorted(s for s in statuses if s.startswith("2")):  # the ok ones are off their 2xx
                taken = min(left, statuses[status])
                statuses[status] -= taken
                left -= taken
            counts |= {s: n for s, n in statuses.items() if n > 0}
            missing = int(e.get("count") or 0) - sum(counts.values())
            if missing > 0:  # a bucket whose statuses do not add up: never answered
                counts["0"] = counts.get("0", 0) + missing
        else:
            continue
        if within is not None and counts.get("ok"):
            fast = min(counts["ok"], sum(n for latency, n in next(units([e])).latency if latency <= within))
            counts["ok"], counts["slow"] = fast, counts["ok"] - fast
        for key, n in counts.items():
            total += n
            seen[key] = seen.get(key, 0) + n
            if key in wanted:
                matched += n
    return matched, total, seen


def _capacity(tl: Timeline) -> float | None:
    probe = tl.last("metric", source="run", name="load_capacity_rps")
    return None if probe is None else float(probe.get("value"))


def _others(seen: dict[str, int], wanted: set[str]) -> str:
    rest = sorted(((n, k) for k, n in seen.items() if k not in wanted), reverse=True)[:4]
    names = {"0": "never answered", "slow": "ok but slow"}
    return ", ".join(f"{n:,} {names.get(k, k)}" for n, k in rest) or "none"


def judge(x: Answers, tl: Timeline, _: SteadyCriteria | None) -> Finding:
    events, name, (start, end) = requests_in(x, tl)
    matched, total, seen = count_answers(events, x.answers, None if x.within is None else float(x.within))
    where = f"{name} (t={start:.1f}–{end:.1f} s)"
    if not total:
        return Finding(False, f"no requests {where}: nothing was answered", {"requests": 0}, (start, end))
    wanted = {str(a) for a in x.answers}
    share = matched / total
    measured: dict[str, float | int | None] = {"matched": matched, "requests": total, "share": round(share, 4)}
    if x.per_second_at_least is None:
        lo, hi = x.share_at_least, x.share_at_most
        passed = (lo is None or share >= lo) and (hi is None or share <= hi)
        bound = f"at least {lo:g}" if lo is not None else f"at most {hi:g}"
        return Finding(passed, f"{share:.3f} of {total:,} requests {where} were answered {_listed(x)} (expected "
                       f"{bound}; others: {_others(seen, wanted)})", measured, (start, end))  # fmt: skip
    seconds = max(end - start, 1e-9)
    rate = matched / seconds
    measured["per_second"] = round(rate, 1)
    asked = x.per_second_at_least
    if isinstance(asked, str):
        capacity = _capacity(tl)
        if capacity is None:
            return Finding(False, f"{rate:,.0f} requests/s answered {_listed(x)} {where}, but no capacity was probed "
                           f"to compare with {asked} (load.rate: N% measures it)", measured, (start, end))  # fmt: skip
        floor = capacity * float(asked.removesuffix("%")) / 100.0
        measured["capacity_rps"] = capacity
        said = f"{asked} of the probed {capacity:,.0f} req/s = {floor:,.0f}"
    else:
        floor, said = float(asked), f"{float(asked):,.0f}"
    return Finding(rate >= floor, f"{rate:,.1f} requests/s answered {_listed(x)} {where} ({matched:,} of {total:,}; "
                   f"expected at least {said})", measured, (start, end))  # fmt: skip


KIND = Kind("answers", Answers, "answers", _describe, judge, references=window_refs, catches="damage")
