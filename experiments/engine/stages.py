"""``load.rate_stages`` on a run: the open-model rate's spikes and ramps, timed from steady state like faults.

The Locust processes shape the rate themselves (``target_service/loadkit.py``: ``RateSchedule``); the run tells
them when steady state held by writing the stages, rates resolved to requests per second, to the file their
pacers poll (``LoadGenerator.schedule_rates``). Each stage's start and end go on the timeline as ``phase`` events
of source ``load`` (``phase``: the stage id, ``edge``: start or end, ``rate_rps``), at their planned times once
those have passed, so windows name a stage as they name a fault (``during: spike``, ``after: spike.end``:
``experiments.expect.windows``). The run watches recovery only after the last stage ended.

Example::

    stages = RateStages(timeline, [ResolvedStage("spike", at=5.0, ramp=0.0, hold=8.0, rate_rps=900.0)])
    stages.start(steady_at=12.5, load=generator)   # the pacers follow from now on
    stages.tick(timeline.now()); stages.pending()
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, NamedTuple

from faultdrill.experiments.journal.timeline import Timeline

__all__ = ["SOURCE", "RateStages", "ResolvedStage"]

SOURCE = "load"
"""The source of a stage's ``phase`` events (the run's own phases are ``run``'s)."""


class ResolvedStage(NamedTuple):
    """A ``load.rate_stages`` entry with its rate in requests per second (a share resolved by the capacity probe)."""

    id: str
    at: float
    ramp: float
    hold: float
    rate_rps: float

    @property
    def end(self) -> float:
        return self.at + self.ramp + self.hold


class RateStages:
    """The run's rate stages: started at steady state, marked on the timeline as their times pass."""

    def __init__(self, timeline: Timeline, stages: Sequence[ResolvedStage]) -> None:
        self.timeline, self.stages = timeline, tuple(stages)
        self._steady_at: float | None = None
        self._marked: set[tuple[str, str]] = set()

    def start(self, steady_at: float, load: Any) -> None:
        """Hand the stages to the load (its pacers count from ``steady_at``); a no-op without stages."""
        if not self.stages:
            return
        self._steady_at = steady_at
        t0_wall = time.time() - (self.timeline.now() - steady_at)
        schedule = getattr(load, "schedule_rates", None)
        if schedule is None:
            raise RuntimeError("load.rate_stages need a load generator on this machine (open model)")
        schedule(t0_wall, [(s.at, s.ramp, s.hold, s.rate_rps) for s in self.stages])

    def tick(self, now: float) -> None:
        """Mark each stage's start and end once its planned time has passed."""
        if self._steady_at is None:
            return
        for s in self.stages:
            for edge, at in (("start", s.at), ("end", s.end)):
                t = self._steady_at + at
                if now >= t and (s.id, edge) not in self._marked:
                    self._marked.add((s.id, edge))
                    self.timeline.add("phase", SOURCE, t=t, phase=s.id, edge=edge, rate_rps=s.rate_rps)

    def pending(self) -> bool:
        """Whether a stage has not ended yet (the run keeps driving until none has)."""
        return self._steady_at is not None and len(self._marked) < 2 * len(self.stages)

    def planned_end(self) -> float:
        """Seconds after steady state when the last stage ends (0 without stages)."""
        return max((s.end for s in self.stages), default=0.0)
