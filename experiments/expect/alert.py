"""``{alert: NAME, fires: {within, after}, resolves: {within, after}, severity, notifies, labels}``: did we
get paged, how fast, by the right alert, and did it clear.

Example (YAML)::

    expect:
      - {alert: InferenceGPUMemoryPressure, fires: {within: 30s, after: hog.start},
         severity: warning, notifies: chat}
      - {alert: InferenceGPUMemoryPressure, resolves: {within: 60s, after: hog.end}}

``fires`` is judged on the alert state Prometheus reports (pending → firing); ``notifies``
on the webhook call Alertmanager made to that receiver, within the same ``within`` — the
page, not just the rule. ``labels`` narrows to one alert instance (``{pod: replica-0}``).

``alert`` events (source = alert name; ``state`` pending|firing|resolved, ``labels``,
``severity``) come from the Prometheus alert watcher; ``notification`` events (source =
receiver; ``alert``, ``status`` firing|resolved, ``labels``) from the webhook receiver that
Alertmanager calls. Only changes count: an alert already firing before the moment an
expectation starts from is reported as such, never as a fresh detection.

Example::

    >>> from experiments.journal.timeline import Timeline
    >>> tl = Timeline()
    >>> _ = tl.add("alert", "GpuHot", t=7.0, state="firing", labels={"severity": "warning"}, severity="warning")
    >>> judge_fires("GpuHot", tl, 5.0, within=3.0, label="hog.start").observed
    'GpuHot fired 2.0 s after hog.start (limit 3 s)'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from faultdrill.experiments.expect.kind import Catches, Kind, Path, Ref
from faultdrill.experiments.expect.stats import Finding, SteadyCriteria
from faultdrill.experiments.expect.windows import after_end, moment_at, moment_ref
from faultdrill.experiments.journal.timeline import Event, Timeline
from faultdrill.experiments.timespec import Duration, Moment

__all__ = ["KIND", "RECEIVERS", "SEVERITIES", "AlertExpectation", "AlertName", "AlertWithin", "alert_events",
           "judge", "judge_alert", "judge_fires"]

SEVERITIES: tuple[str, ...] = ("critical", "warning", "ticket")
RECEIVERS: tuple[str, ...] = ("pager", "chat", "ticket")
"""The shipped Alertmanager config routes critical → pager, warning → chat, ticket → ticket."""

Severity = Literal["critical", "warning", "ticket"]
Receiver = Literal["pager", "chat", "ticket"]
AlertName = str


class AlertWithin(BaseModel):
    """``{within: 30s, after: hog.start}``"""

    model_config = ConfigDict(frozen=True, extra="forbid")

    within: Duration
    after: Moment


class AlertExpectation(BaseModel):
    """``{alert: NAME, fires: {within, after}, resolves: {within, after}, severity, notifies, labels}``"""

    model_config = ConfigDict(frozen=True, extra="forbid")

    alert: AlertName = Field(min_length=1)
    fires: AlertWithin | None = None
    resolves: AlertWithin | None = None
    severity: Severity | None = None
    """The ``severity`` label the firing alert must carry."""
    notifies: Receiver | None = None
    """The receiver Alertmanager must call with this alert firing, within ``fires.within``."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Only alert instances with these labels count (e.g. ``{pod: replica-0}``)."""

    @model_validator(mode="after")
    def _something(self) -> AlertExpectation:
        if self.fires is None and self.resolves is None:
            raise ValueError("give fires: {within, after} and/or resolves: {within, after}")
        if (self.notifies or self.severity) and self.fires is None:
            raise ValueError("notifies and severity are judged on the firing alert: give fires: {within, after}")
        return self


def _matches(event: Event, labels: Mapping[str, str]) -> bool:
    have = event.get("labels") or {}
    return all(str(have.get(k)) == v for k, v in labels.items())


def alert_events(tl: Timeline, name: str, labels: Mapping[str, str] = {}) -> list[Event]:
    """The ``alert`` events of ``name`` whose labels include ``labels``, in time order."""
    return [e for e in tl.select("alert", source=name) if _matches(e, labels)]


def _others(tl: Timeline, start: float, end: float, name: str) -> tuple[str, int]:
    """The other alerts that fired in the window, in words, and how many."""
    fired: dict[str, float] = {}
    for e in tl.select("alert", start=start, end=end):
        if e.get("state") == "firing" and e.source != name:
            fired.setdefault(e.source, e.t)
    if not fired:
        return "no other alert fired either", 0
    shown = ", ".join(f"{n} at t={t:.1f} s" for n, t in sorted(fired.items(), key=lambda kv: kv[1])[:5])
    return f"alerts that did fire: {shown}", len(fired)


def judge_fires(name: str, tl: Timeline, moment: float, *, within: float, label: str,
                labels: Mapping[str, str] = {}) -> Finding:  # fmt: skip
    """``name`` turned firing at/after ``moment`` within ``within`` seconds."""
    events = alert_events(tl, name, labels)
    prior = next((e for e in reversed(events) if e.t < moment), None)
    hit = next((e for e in events if e.t >= moment and e.get("state") == "firing"), None)
    if hit is None:
        pending = next((e for e in events if e.t >= moment and e.get("state") == "pending"), None)
        why = f"was pending from t={pending.t:.1f} s but never firing" if pending else "never went pending or firing"
        if prior is not None and prior.get("state") == "firing":
            why = f"was already firing since t={prior.t:.1f} s, before {label}, and no new firing followed"
        others, count = _others(tl, moment, tl.end, name)
        return Finding(False, f"{name} {why} after {label} (t={moment:.1f} s; run ended t={tl.end:.1f} s); "
                       f"{others}", {"fired_s": None, "others_fired": count}, (moment, tl.end),
                       (pending,) if pending else ())  # fmt: skip
    delay = hit.t - moment
    return Finding(delay <= within, f"{name} fired {delay:.1f} s after {label} (limit {within:g} s)",
                   {"fired_s": round(delay, 6)}, (moment, hit.t), (hit,))  # fmt: skip


def _severity(event: Event) -> str | None:
    value = event.get("severity") or (event.get("labels") or {}).get("severity")
    return None if value is None else str(value)


def judge_alert(x: AlertExpectation, tl: Timeline, *, fires_at: float | None, resolves_at: float | None) -> Finding:
    """An ``AlertExpectation``: fires (with severity, notifying a receiver) and/or resolves."""
    name, labels, fires, resolves = x.alert, x.labels, x.fires, x.resolves
    parts: list[Finding] = []
    if fires_at is not None and fires is not None:
        fired = judge_fires(name, tl, fires_at, within=float(fires.within), label=str(fires.after), labels=labels)
        parts.append(fired)
        hit = fired.evidence[0] if fired.measured.get("fired_s") is not None else None
        if x.severity is not None and hit is not None and _severity(hit) != x.severity:
            parts.append(Finding(False, f"it carried severity {_severity(hit)}, not {x.severity}", {}, None, (hit,)))
        if x.notifies is not None:
            parts.append(_judge_notified(name, x.notifies, tl, fires_at, float(fires.within), str(fires.after),
                                         labels))  # fmt: skip
    if resolves_at is not None and resolves is not None:
        parts.append(_judge_resolves(name, tl, resolves_at, float(resolves.within), str(resolves.after), labels))
    measured: dict[str, float | int | None] = {}
    for p in parts:
        measured.update(p.measured)
    windows = [p.window for p in parts if p.window is not None]
    window = (min(w[0] for w in windows), max(w[1] for w in windows)) if windows else None
    evidence = tuple(e for p in parts for e in p.evidence)
    return Finding(all(p.passed for p in parts), "; ".join(p.observed for p in parts), measured, window, evidence)


def _judge_notified(name: str, receiver: str, tl: Timeline, moment: float, within: float, label: str,
                    labels: Mapping[str, str]) -> Finding:  # fmt: skip
    sent = [e for e in tl.select("notification", start=moment)
            if e.get("alert") == name and e.get("status") == "firing" and _matches(e, labels)]  # fmt: skip
    hit = next((e for e in sent if e.source == receiver), None)
    if hit is None:
        elsewhere = sorted({e.source for e in sent})
        where = f"it went to {', '.join(elsewhere)} instead" if elsewhere else "no notification of it at all"
        return Finding(False, f"{receiver} was never notified of {name} after {label}: {where}",
                       {"notified_s": None}, None, tuple(sent[:3]))  # fmt: skip
    delay = hit.t - moment
    return Finding(delay <= within, f"{receiver} notified {delay:.1f} s after {label} (limit {within:g} s)",
                   {"notified_s": round(delay, 6)}, (moment, hit.t), (hit,))  # fmt: skip


def _judge_resolves(name: str, tl: Timeline, moment: float, within: float, label: str,
                    labels: Mapping[str, str]) -> Finding:  # fmt: skip
    events = alert_events(tl, name, labels)
    if not any(e.get("state") in ("pending", "firing") for e in events):
        return Finding(False, f"{name} never fired, so it cannot resolve", {"resolved_s": None, "never_fired": 1})
    hit = next((e for e in events if e.t >= moment and e.get("state") == "resolved"), None)
    if hit is None:
        last = events[-1]
        if last.get("state") == "resolved" and last.t < moment:  # cleared before the moment: nothing to wait for
            return Finding(True, f"{name} had already resolved at t={last.t:.1f} s, before {label}",
                           {"resolved_s": 0.0}, (last.t, moment), (last,))  # fmt: skip
        return Finding(False, f"{name} did not resolve after {label}: still {last.get('state')} at the end of the "
                       f"run (t={tl.end:.1f} s)", {"resolved_s": None}, (moment, tl.end), (last,))  # fmt: skip
    delay = hit.t - moment
    return Finding(delay <= within, f"{name} resolved {delay:.1f} s after {label} (limit {within:g} s)",
                   {"resolved_s": round(delay, 6)}, (moment, hit.t), (hit,))  # fmt: skip


def _describe(x: AlertExpectation) -> str:
    said = []
    if x.fires is not None:
        said.append(f"fires within {x.fires.within:g} s after {x.fires.after}"
                    + (f" with severity {x.severity}" if x.severity else "")
                    + (f", notifying {x.notifies}" if x.notifies else ""))  # fmt: skip
    if x.resolves is not None:
        said.append(f"resolves within {x.resolves.within:g} s after {x.resolves.after}")
    where = "".join(f" {k}={v}" for k, v in sorted(x.labels.items()))
    return f"alert {x.alert}{where} " + " and ".join(said)


def judge(x: AlertExpectation, tl: Timeline, _: SteadyCriteria) -> Finding:
    fires_at = moment_at(x.fires.after, tl) if x.fires is not None else None
    resolves_at = moment_at(x.resolves.after, tl) if x.resolves is not None else None
    return judge_alert(x, tl, fires_at=fires_at, resolves_at=resolves_at)


def _references(x: AlertExpectation) -> list[Ref]:
    return [ref for key in ("fires", "resolves") if (w := getattr(x, key)) is not None
            for ref in moment_ref((key, "after"), w.after)]  # fmt: skip


def _after_end(x: AlertExpectation, durations: Mapping[str, float]) -> float:
    return max((after_end(w.within, w.after, durations) for w in (x.fires, x.resolves) if w is not None),
               default=0.0)  # fmt: skip


def _alerts(x: AlertExpectation) -> list[tuple[Path, str]]:
    return [(("alert",), x.alert)]


def _catches(measured: Mapping[str, float | int | None]) -> Catches:
    """A page that did not come is damage when the on-call heard nothing: if other alerts fired instead (the
    expected one reads a switch the variant removed — a breaker that is not there cannot open), it is the
    alerting's mechanism that differs; a resolution judged on an alert that never fired follows its ``fires``."""
    if measured.get("never_fired") or (measured.get("fired_s", 0) is None and measured.get("others_fired")):
        return "mechanism"
    return "damage"


KIND = Kind("alert", AlertExpectation, "alert", _describe, judge, references=_references, needed_after_end=_after_end,
            alerts=_alerts, catches="damage", catches_when=_catches)
