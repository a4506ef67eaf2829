"""Canary analysis: step the canary's weight up while it is healthy, roll it back when it is not.

What Flagger's canary analysis (or an Argo Rollouts ``AnalysisTemplate``) does, on the local
platform. Every ``analysis.interval`` :class:`CanaryAnalyzer` judges the canary pool's SLIs
over the last ``analysis.window`` (from the service endpoint's own per-pool outcomes — see
``split.py``):

* a new revision gets no traffic until a canary replica of it is ready, then ``initial_weight``;
* fewer than ``min_requests`` canary requests, or the canary still starting (within
  ``progress_deadline``) → *inconclusive*: nothing moves;
* every check passes → the weight goes up by ``step_weight`` up to ``max_weight``; one more
  healthy interval at ``max_weight`` → **promoted** (weight 100: the canary serves everything);
* a check fails (or the canary is not ready past ``progress_deadline``) → a failed check; at
  ``threshold`` failed checks → **rolled back** (weight 0, canary replicas stopped), with the
  reason and the seconds from the revision's first canary request to the rollback.

``judge=False`` is the misconfiguration ``no_canary_analysis`` (Argo without an analysis):
weights still step up and the SLIs are still recorded, but nothing is judged, so a bad canary
gets promoted. A new revision (the canary restarted with another version) starts over.

Everything becomes a ``canary`` timeline event (``event``: revision | check | weight |
promote | rollback; ``weight``, ``version``, per-pool SLIs ``stable``/``canary``).

Example::

    analyzer = CanaryAnalyzer(spec, judge=True)
    analyzer.new_revision("3", now=0.0)
    events = analyzer.tick(2.0, canary=slis, stable=stable_slis, canary_ready=True)
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, Literal

from faultdrill.experiments.journal.timeline import Timeline
from faultdrill.experiments.platforms.local.split import PoolStats, Slis, TrafficSplit
from faultdrill.experiments.spec.canary import CanarySpec

__all__ = ["CanaryAnalyzer", "CanaryController", "Phase", "check_slis"]

Phase = Literal["progressing", "promoted", "rolled_back"]


def check_slis(spec: CanarySpec, slis: Slis) -> list[dict[str, Any]]:
    """Each configured check: ``{check, value, limit, ok}`` (a missing value fails its check)."""
    c = spec.analysis.checks
    out: list[dict[str, Any]] = []

    def add(name: str, value: float | None, limit: float, at_least: bool) -> None:
        ok = value is not None and (value >= limit if at_least else value <= limit)
        out.append({"check": name, "value": None if value is None else round(value, 6), "limit": limit,
                    "bound": "at_least" if at_least else "at_most", "ok": ok})  # fmt: skip

    if c.success_rate is not None:
        add("success_rate", slis.success_rate, c.success_rate, True)
    if c.latency_p95 is not None:
        add("latency_p95", slis.latency_p95_s, float(c.latency_p95), False)
    if c.confidence is not None:
        add("confidence", slis.confidence, c.confidence, True)
    if c.burn_rate is not None:
        add("burn_rate", slis.burn_rate(c.slo), c.burn_rate, False)
    return out


class CanaryAnalyzer:
    """The decisions alone (no threads, no I/O): fed SLIs, returns the events to record."""

    def __init__(self, spec: CanarySpec, *, judge: bool = True) -> None:
        self.spec = spec
        self.judge = judge
        self.phase: Phase = "progressing"
        self.weight = spec.initial_weight
        self.failures = 0
        self.version = spec.version
        self.started = 0.0
        self.first_traffic: float | None = None
        self.waiting = True
        self.opened: float | None = None
        """When the revision's traffic began (its canary ready); None before."""

    def new_revision(self, version: str, now: float) -> dict[str, Any]:
        """A new version: no traffic until its canary is ready, then ``initial_weight``."""
        self.phase, self.weight, self.failures, self.waiting = "progressing", 0, 0, True
        self.version, self.started, self.first_traffic, self.opened = version, now, None, None
        return {"event": "revision", "version": version, "weight": self.weight}

    def tick(self, now: float, *, canary: Slis, stable: Slis, canary_ready: bool,
             first_traffic: float | None = None) -> list[dict[str, Any]]:  # fmt: skip
        """One analysis interval; the events it produced (empty once promoted or rolled back)."""
        if self.phase != "progressing":
            return []
        if first_traffic is not None and self.first_traffic is None:
            self.first_traffic = first_traffic
        if self.waiting and canary_ready:  # Flagger's "initialising": traffic only once it is ready
            self.waiting, self.weight, self.opened = False, self.spec.initial_weight, now
            return [{"event": "weight", "version": self.version, "weight": self.weight,
                     "reason": "canary ready: its traffic begins"}]  # fmt: skip
        a, events = self.spec.analysis, []
        checks = check_slis(self.spec, canary) if canary.requests >= a.checks.min_requests else []
        base = {"event": "check", "version": self.version, "weight": self.weight, "judged": self.judge,
                "canary": asdict(canary), "stable": asdict(stable), "checks": checks}  # fmt: skip
        if not canary_ready and now - self.started > float(a.progress_deadline):
            verdict, reason = "failed", f"canary not ready {now - self.started:.1f} s after its rollout began"
        elif not canary_ready or not checks:
            why = "canary not ready yet" if not canary_ready else f"{canary.requests} canary requests in the window"
            verdict, reason = "inconclusive", why
        elif all(c["ok"] for c in checks):
            verdict, reason = "passed", "every check passed"
        else:
            verdict, reason = "failed", "; ".join(_failed(c) for c in checks if not c["ok"])
        if not self.judge:  # no_canary_analysis: shift weight on schedule, judge nothing
            verdict = "inconclusive" if not canary_ready else "not_judged"
        self.failures += verdict == "failed"
        events.append({**base, "result": verdict, "reason": reason, "failures": self.failures})
        if verdict == "failed" and self.failures >= a.threshold:
            events.append(self._rollback(now, f"{self.failures} failed checks (threshold {a.threshold}): {reason}"))
        elif verdict in ("passed", "not_judged"):
            events.append(self._advance(now))
        return events

    def abort(self, now: float, reason: str) -> dict[str, Any] | None:
        """A manual rollback (the runbook's); None when nothing is progressing."""
        if self.phase == "rolled_back":
            return None
        return self._rollback(now, reason, by="manual")

    def _advance(self, now: float) -> dict[str, Any]:
        if self.weight < self.spec.max_weight:
            self.weight = min(self.spec.max_weight, self.weight + self.spec.step_weight)
            return {"event": "weight", "version": self.version, "weight": self.weight}
        self.phase, self.weight = "promoted", 100
        return {"event": "promote", "version": self.version, "weight": 100,
                "seconds": round(now - self.started, 3)}  # fmt: skip

    def _rollback(self, now: float, reason: str, by: str = "analysis") -> dict[str, Any]:
        self.phase, self.weight = "rolled_back", 0
        since = next(t for t in (self.first_traffic, self.opened, self.started) if t is not None)
        return {"event": "rollback", "version": self.version, "weight": 0, "reason": reason, "by": by,
                "seconds": round(now - since, 3), "failures": self.failures,
                "took_traffic": self.first_traffic is not None or self.opened is not None}  # fmt: skip


def _failed(c: dict[str, Any]) -> str:
    word = "below" if c["bound"] == "at_least" else "above"
    value = "no data" if c["value"] is None else f"{c['value']:.4g}"
    return f"{c['check']} {value} {word} {c['limit']:g}"


class CanaryController:
    """Runs a :class:`CanaryAnalyzer` every interval in a thread, acting on the split and the replicas.

    ``canary_ready()`` says whether a canary replica is ready; ``stop_canary()`` stops (and holds)
    the canary replicas on rollback. Events go to ``timeline`` as kind ``canary``.
    """

    def __init__(self, spec: CanarySpec, split: TrafficSplit, stats: PoolStats, timeline: Timeline, *,
                 canary_ready: Callable[[], bool], stop_canary: Callable[[], None],
                 judge: bool = True) -> None:  # fmt: skip
        self.spec, self.split, self.stats, self.timeline = spec, split, stats, timeline
        self.analyzer = CanaryAnalyzer(spec, judge=judge)
        self._ready, self._stop_canary = canary_ready, stop_canary
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with self._lock:
            self._record(self.analyzer.new_revision(self.spec.version, self.stats.now()))
        self._thread = threading.Thread(target=self._loop, name="canary-analysis", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._halt.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None

    def new_revision(self, version: str) -> None:
        """The canary replicas were restarted on ``version``: a new rollout starts."""
        with self._lock:
            self._record(self.analyzer.new_revision(version, self.stats.now()))

    def rollback(self, reason: str = "manual rollback") -> bool:
        """Roll back now (a person's or a runbook's decision); False if already rolled back."""
        with self._lock:
            event = self.analyzer.abort(self.stats.now(), reason)
            if event is not None:
                self._record(event)
        if event is not None:
            self._stop_canary()  # outside the lock: stopping takes the platform's locks
        return event is not None

    def status(self) -> dict[str, Any]:
        a = self.analyzer
        return {"phase": a.phase, "weight": a.weight, "version": a.version, "failures": a.failures,
                "judged": a.judge}  # fmt: skip

    def _loop(self) -> None:
        interval = float(self.spec.analysis.interval)
        while not self._halt.wait(interval):
            try:
                self.tick()
            except Exception as exc:  # a tick must never kill the controller
                self.timeline.add("canary", "canary", event="error", error=f"{type(exc).__name__}: {exc}")

    def tick(self) -> None:
        window = float(self.spec.analysis.window)
        with self._lock:
            now = self.stats.now()
            # The revision's own answers only: not its predecessor's, nor those in flight when it restarted.
            opened = self.analyzer.opened
            since = opened if opened is not None else self.analyzer.started
            canary = self.stats.slis("canary", window, now=now, since=since)
            stable = self.stats.slis("stable", window, now=now)
            first = self.stats.first_since("canary", opened) if opened is not None else None
            events = self.analyzer.tick(now, canary=canary, stable=stable, canary_ready=self._ready(),
                                        first_traffic=first)  # fmt: skip
            for event in events:
                self._record(event)
        if any(e["event"] == "rollback" for e in events):
            self._stop_canary()  # outside the lock: stopping takes the platform's locks

    def _record(self, event: dict[str, Any]) -> None:
        self.split.canary_weight = self.analyzer.weight
        self.timeline.add("canary", "canary", **event)
