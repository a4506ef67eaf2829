"""Circuit-breaker transitions from purgatory's events, shared by the feature-store client and the cache.

purgatory queues a ``ContextChanged`` message on the breaker factory for every state change; a
client drains them after each call and gets (old, new) transitions in the names the metrics,
logs and faultdrill's timeline use: ``closed``, ``open``, ``half-open``.

Example::

    for old, new in drain_transitions(factory, state):
        state = new
"""

from __future__ import annotations

from typing import Any, Literal

from purgatory.domain.messages.events import ContextChanged

__all__ = ["BreakerState", "drain_transitions"]

BreakerState = Literal["closed", "open", "half-open"]
_STATE_NAMES: dict[str, BreakerState] = {"closed": "closed", "opened": "open", "half-opened": "half-open"}


def drain_transitions(factory: Any, current: BreakerState) -> list[tuple[BreakerState, BreakerState]]:
    """Pop every queued purgatory message; the state changes they make, starting from ``current``."""
    out: list[tuple[BreakerState, BreakerState]] = []
    while factory.messages:
        event = factory.messages.pop(0)
        if not isinstance(event, ContextChanged):
            continue
        new = _STATE_NAMES.get(event.state, "closed")
        if new != current:
            out.append((current, new))
            current = new
    return out
