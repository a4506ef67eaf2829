"""MTTD: fault start → the first page, over the timeline's ``alert`` and ``notification`` events.

``alert`` events (source = alert name; ``state`` pending|firing|resolved, ``labels``,
``severity``) come from the Prometheus alert watcher; ``notification`` events (source =
receiver; ``alert``, ``status`` firing|resolved, ``labels``) from the webhook receiver that
Alertmanager calls. The alert expectations are judged in ``experiments.expect.alert`` and
``experiments.expect.no_alerts`` (re-exported here, their old import path).

MTTD of a fault (:func:`time_to_notification`): fault start → the first *firing* notification
of an alert that became active while the fault was in effect — the moment a person would have
been told. Re-notifications of older alerts (repeat_interval) and alerts raised after the fault
ended do not count.

Example::

    >>> from experiments.journal.timeline import Timeline
    >>> tl = Timeline()
    >>> _ = tl.add("alert", "GpuHot", t=7.0, state="firing", labels={"pod": "replica-0"})
    >>> _ = tl.add("notification", "pager", t=8.0, alert="GpuHot", status="firing", labels={"pod": "replica-0"})
    >>> time_to_notification(tl, 5.0, target="replica-0")
    {'seconds': 3.0, 'alert': 'GpuHot', 'receiver': 'pager'}
"""

from __future__ import annotations

import re
from datetime import datetime

from faultdrill.experiments.expect.alert import alert_events, judge_alert, judge_fires
from faultdrill.experiments.expect.no_alerts import judge_no_alerts
from faultdrill.experiments.journal.timeline import Event, Timeline

__all__ = ["alert_events", "judge_alert", "judge_fires", "judge_no_alerts", "time_to_notification"]


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
