"""Judging alert expectations and measuring MTTD, over the timeline's ``alert`` and ``notification`` events.

``alert`` events (source = alert name; ``state`` pending|firing|resolved, ``labels``,
``severity``) come from the Prometheus alert watcher; ``notification`` events (source =
receiver; ``alert``, ``status`` firing|resolved, ``labels``) from the webhook receiver that
Alertmanager calls. Only changes count: an alert already firing before the moment an
expectation starts from is reported as such, never as a fresh detection.

MTTD of a fault (:func:`time_to_notification`): fault start → the first *firing* notification
of an alert that became active while the fault was in effect — the moment a person would have
been told. Re-notifications of older alerts (repeat_interval) and alerts raised after the fault
ended do not count.

Example::

    >>> from experiments.timeline import Timeline
    >>> tl = Timeline()
    >>> _ = tl.add("alert", "GpuHot", t=7.0, state="firing", labels={"severity": "warning"}, severity="warning")
    >>> judge_fires("GpuHot", tl, 5.0, within=3.0, label="hog.start").observed
    'GpuHot fired 2.0 s after hog.start (limit 3 s)'
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime

from experiments.slo import Finding
from experiments.timeline import Event, Timeline

__all__ = ["alert_events", "judge_alert", "judge_fires", "judge_no_alerts", "time_to_notification"]


def _matches(event: Event, labels: Mapping[str, str]) -> bool:
    have = event.get("labels") or {}
    return all(str(have.get(k)) == v for k, v in labels.items())


def alert_events(tl: Timeline, name: str, labels: Mapping[str, str] = {}) -> list[Event]:
    """The ``alert`` events of ``name`` whose labels include ``labels``, in time order."""
    return [e for e in tl.select("alert", source=name) if _matches(e, labels)]


def _others(tl: Timeline, start: float, end: float, name: str) -> str:
    fired: dict[str, float] = {}
    for e in tl.select("alert", start=start, end=end):
        if e.get("state") == "firing" and e.source != name:
            fired.setdefault(e.source, e.t)
    if not fired:
        return "no other alert fired either"
    shown = ", ".join(f"{n} at t={t:.1f} s" for n, t in sorted(fired.items(), key=lambda kv: kv[1])[:5])
    return f"alerts that did fire: {shown}"


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
        return Finding(False, f"{name} {why} after {label} (t={moment:.1f} s; run ended t={tl.end:.1f} s); "
                       f"{_others(tl, moment, tl.end, name)}", {"fired_s": None}, (moment, tl.end),
                       (pending,) if pending else ())  # fmt: skip
    delay = hit.t - moment
    return Finding(delay <= within, f"{name} fired {delay:.1f} s after {label} (limit {within:g} s)",
                   {"fired_s": round(delay, 6)}, (moment, hit.t), (hit,))  # fmt: skip


def _severity(event: Event) -> str | None:
    value = event.get("severity") or (event.get("labels") or {}).get("severity")
    return None if value is None else str(value)


def judge_alert(x: object, tl: Timeline, *, fires_at: float | None, resolves_at: float | None) -> Finding:
    """An ``AlertExpectation``: fires (with severity, notifying a receiver) and/or resolves."""
    name: str = x.alert  # type: ignore[attr-defined]
    labels: dict[str, str] = x.labels  # type: ignore[attr-defined]
    parts: list[Finding] = []
    if fires_at is not None:
        fires = x.fires  # type: ignore[attr-defined]
        fired = judge_fires(name, tl, fires_at, within=float(fires.within), label=str(fires.after), labels=labels)
        parts.append(fired)
        hit = fired.evidence[0] if fired.measured.get("fired_s") is not None else None
        if x.severity is not None and hit is not None and _severity(hit) != x.severity:  # type: ignore[attr-defined]
            parts.append(Finding(False, f"it carried severity {_severity(hit)}, not {x.severity}",  # type: ignore[attr-defined]
                                 {}, None, (hit,)))  # fmt: skip
        if x.notifies is not None:  # type: ignore[attr-defined]
            parts.append(_judge_notified(name, x.notifies, tl, fires_at, float(fires.within), str(fires.after),  # type: ignore[attr-defined]
                                         labels))  # fmt: skip
    if resolves_at is not None:
        resolves = x.resolves  # type: ignore[attr-defined]
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
        return Finding(False, f"{name} never fired, so it cannot resolve", {"resolved_s": None})
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


def judge_no_alerts(x: object, tl: Timeline, start: float, end: float, label: str) -> Finding:
    """A ``NoAlerts``: no alert (besides ``allow``) reached the state ``no_alerts`` in the window."""
    strict = x.no_alerts == "pending"  # type: ignore[attr-defined]
    allow = set(x.allow)  # type: ignore[attr-defined]
    bad_states = ("pending", "firing") if strict else ("firing",)
    # An alert that became active before the window and is still active in it counts too.
    active: dict[str, Event] = {}
    for e in tl.select("alert", end=start):
        key = e.source + repr(sorted((e.get("labels") or {}).items()))
        if e.get("state") in bad_states:
            active[key] = e
        else:
            active.pop(key, None)
    bad = [e for e in active.values() if e.source not in allow]
    bad += [e for e in tl.select("alert", start=start, end=end)
            if e.get("state") in bad_states and e.source not in allow]  # fmt: skip
    what = "pending or firing" if strict else "firing"
    where = f"{label} (t={start:.1f}–{end:.1f} s)"
    allowed = f" (allowed: {', '.join(sorted(allow))})" if allow else ""
    if not bad:
        return Finding(True, f"no alert was {what} {where}{allowed}", {"alerts": 0}, (start, end))
    names = sorted({e.source for e in bad})
    first = min(bad, key=lambda e: e.t)
    return Finding(False, f"{len(names)} alert(s) {what} {where}: {', '.join(names)}; first {first.source} "
                   f"{first.get('state')} at t={first.t:.1f} s{allowed}", {"alerts": len(names)}, (start, end),
                   tuple(sorted(bad, key=lambda e: e.t)))  # fmt: skip


def _unix(value: object) -> float | None:
    """Unix seconds from a number or an RFC 3339 time (Alertmanager's startsAt, nanoseconds allowed)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str) or not value or value.startswith("0001-"):
        return None
    text = re.sub(r"(\.\d{6})\d+", r"\1", value.strip()).replace("Z", "+00:00")
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def _activation(alerts: list[Event], notification: Event) -> float | None:
    """When the alert episode behind ``notification`` began (its first pending/firing event after the
    last resolution), from the watcher's events; None when the watcher never saw that instance."""
    labels = notification.get("labels") or {}
    began: float | None = None
    for e in alerts:
        if e.t > notification.t:
            break
        have = e.get("labels") or {}
        if e.source != notification.get("alert") or any(labels.get(k, v) != v for k, v in have.items()):
            continue
        if e.get("state") == "resolved":
            began = None
        elif began is None:
            began = e.t
    return began


def time_to_notification(tl: Timeline, fault_start: float, target: str | None = None,
                         fault_end: float | None = None) -> dict[str, object] | None:  # fmt: skip
    """The first firing notification of an alert that became active while the fault was in effect.

    Returns ``{"seconds", "alert", "receiver"}`` or None. An alert episode's activation is its first
    pending/firing event after its last resolution (the watcher's timeline); without one, Alertmanager's
    ``starts_at``. It must lie in [fault start − 1 s, fault end] (the rules' evaluation tick is the
    slack): an alert already active before the fault, or raised after it ended, is not a detection of
    it. With ``target`` (the fault's service), a page about it (its ``pod`` label) is preferred —
    overlapping faults page about each other.
    """
    end = tl.end if fault_end is None else fault_end
    alerts = tl.select("alert")
    fresh: list[Event] = []
    for e in tl.select("notification", start=fault_start):
        if e.get("status") != "firing":
            continue
        began = _activation(alerts, e)
        if began is None and (starts := _unix(e.get("starts_at"))) is not None:
            began = starts - (e.wall - e.t if e.wall is not None else tl.start_wall)  # wall → run time
        if began is not None and fault_start - 1.0 <= began <= end:
            fresh.append(e)
    about = [e for e in fresh if target is not None and (e.get("labels") or {}).get("pod") == target]
    candidates = about or fresh
    if not candidates:
        return None
    hit = candidates[0]
    return {"seconds": round(hit.t - fault_start, 6), "alert": hit.get("alert"), "receiver": hit.source}
