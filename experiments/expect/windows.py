"""Moments and windows on a run's timeline, shared by every expectation kind.

* Moments resolve on the timeline: ``run.start`` is 0 (``run.end`` the last event),
  ``steady.start`` the ``phase`` event ``steady``, ``<fault>.start``/``.end`` the first
  ``fault`` start/end events of that id (a ``load.rate_stages`` id: its ``phase`` events of
  source ``load``). A reference that never happened gives a *failed* verdict saying so
  (:class:`Missing`), never an exception out of ``evaluate``.
* Windows are inclusive at both ends; an open end is the end of the run; an expectation
  with no window covers the whole run; a window opening at ``steady.start`` opens at
  ``run.start`` when the run recorded no steady phase. No evidence (no samples, no
  requests) is a failure that says so, never a pass.

Example::

    >>> from experiments.journal.timeline import Timeline
    >>> tl = Timeline()
    >>> _ = tl.add("fault", "hog", t=5.0, event="start", fault="gpu_memory_exhaustion")
    >>> resolve_moment(Moment.model_validate("hog.start+2s"), tl)
    7.0
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from faultdrill.experiments.expect.kind import Path, Ref
from faultdrill.experiments.journal.timeline import Event, Timeline
from faultdrill.experiments.timespec import Moment, Window, Windowed

__all__ = ["Missing", "Timed", "after_end", "anchor", "label", "moment_at", "moment_ref", "requests_in",
           "resolve_moment", "resolve_window", "span", "timed_after_end", "window_refs"]


class Missing(Exception):
    """A moment or window that cannot be placed on the timeline (becomes a failed verdict)."""


def anchor(ref: str | None, edge: str, timeline: Timeline) -> float | None:
    """When ``ref``'s ``edge`` happened (``run``, ``steady`` or a fault id), or None when it never did."""
    if ref in (None, "run"):
        return 0.0 if edge == "start" else timeline.end
    if ref == "steady":
        phases = timeline.select("phase", source="run")
        start = next((e.t for e in phases if e.get("phase") == "steady"), None)
        if start is None or edge == "start":
            return start
        return next((e.t for e in phases if e.t >= start and e.get("phase") != "steady"), None)
    if stage := timeline.select("phase", source="load", phase=ref, edge=edge):  # a load.rate_stages entry
        return stage[0].t
    starts = timeline.select("fault", source=ref, event="start")
    if edge == "start":
        return starts[0].t if starts else None
    ends = timeline.select("fault", source=ref, event="end", start=starts[0].t if starts else None)
    return ends[0].t if ends else None


def resolve_moment(moment: Moment, timeline: Timeline) -> float | None:
    """Seconds since the run started, or None when the referenced event never happened."""
    base = anchor(moment.ref, moment.edge, timeline)
    return None if base is None else base + moment.offset_s


def moment_at(moment: Moment, timeline: Timeline) -> float:
    """:func:`resolve_moment`, or :class:`Missing` saying which event never happened."""
    at = resolve_moment(moment, timeline)
    if at is None:
        what = "'steady' phase event" if moment.ref == "steady" else f"fault '{moment.ref}' {moment.edge} event"
        raise Missing(f"{moment.ref}.{moment.edge} never happened: no {what} on the timeline")
    return at


def span(window: Window | None, timeline: Timeline) -> tuple[float, float, str]:
    """``(start, end, label)`` of a window (the whole run for None), or :class:`Missing`."""
    if window is None:
        return 0.0, timeline.end, "over the whole run"
    if window.start.ref == "steady" and resolve_moment(window.start, timeline) is None:
        start = window.start.offset_s
    else:
        start = moment_at(window.start, timeline)
    end = timeline.end if window.end is None else moment_at(window.end, timeline)
    if end < start:
        raise Missing(f"the window {window.label} is empty: it ends at t={end:.1f} s, before it starts at "
                      f"t={start:.1f} s")  # fmt: skip
    return start, end, window.label


def resolve_window(window: Window | None, timeline: Timeline) -> tuple[float, float] | None:
    """``(start, end)`` in seconds (both inclusive), or None when a reference never happened."""
    try:
        return span(window, timeline)[:2]
    except Missing:
        return None


def label(x: Windowed) -> str:
    """How a windowed expectation names its window (``during hog``, ``over the whole run``)."""
    window = x.window()
    return window.label if window is not None else "over the whole run"


def requests_in(x: Windowed, tl: Timeline) -> tuple[list[Event], str, tuple[float, float]]:
    """The ``request`` and ``requests`` events in ``x``'s window, its label and its span."""
    start, end, name = span(x.window(), tl)
    return tl.requests(start=start, end=end), name, (start, end)


def moment_ref(path: Path, moment: Moment | None) -> list[Ref]:
    """The reference a moment makes (none for an absolute offset)."""
    return [] if moment is None or moment.ref is None else [Ref("moment", path, moment.ref)]


def window_refs(x: Windowed) -> list[Ref]:
    """The references of a window: ``during``/``before`` a fault id, ``after``/``between`` moments."""
    refs = [Ref("fault", (key,), name) for key in ("during", "before") if (name := getattr(x, key)) is not None]
    refs += moment_ref(("after",), x.after)
    for j, moment in enumerate(x.between or ()):
        refs += moment_ref(("between", j), moment)
    return refs


def after_end(within: float, moment: Moment | None, durations: Mapping[str, float]) -> float:
    """How long after its fault ends a ``within`` past ``moment`` still runs: less the fault's duration
    when the moment is a fault's start (None: the run's start)."""
    if moment is None:
        return max(0.0, float(within))
    early = durations.get(moment.ref or "", 0.0) if moment.edge == "start" else 0.0
    return max(0.0, float(within) + float(moment.offset_s) - early)


class Timed(Protocol):
    """An expectation judged ``within`` a time ``after`` a moment."""

    @property
    def within(self) -> float: ...

    @property
    def after(self) -> Moment: ...


def timed_after_end(x: Timed, durations: Mapping[str, float]) -> float:
    """:func:`after_end` of a :class:`Timed` expectation (a kind's ``needed_after_end``)."""
    return after_end(x.within, x.after, durations)
