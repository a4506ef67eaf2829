"""The expectation vocabulary of an experiment spec: one module per kind, and the table of them.

Each expectation is one small model; the key that names it decides which (:data:`EXPECTATION_KEYS`).
Times are durations (``500ms``, ``3s``, ``2m``); moments are event references:
``run.start``, ``steady.start``, ``<fault id>.start``, ``<fault id>.end``, optionally with an
offset (``hog.end+5s``, ``hog.start-2s``), or an absolute offset from the run start (``30s``).

Windows (``during``, ``before``, ``after``, ``between``):

* ``during: hog``                  — from ``hog.start`` to ``hog.end``;
* ``before: hog``                  — from ``steady.start`` (or ``run.start``) to ``hog.start``;
* ``after: hog.end``               — from that moment to the end of the run;
* ``between: [hog.start+2s, 40s]`` — explicit bounds.

Example (YAML)::

    expect:
      - {probe: readiness, replica: replica-0, becomes: false, within: 3s, after: hog.start}
      - {probe: liveness, replica: replica-0, holds: true, during: hog}
      - {breaker: replica-0, sequence: [closed, open, half-open, closed], within: 30s, after: part.start}
      - {slo: availability, at_least: 0.95, during: hog}
      - {recovers: steady_state, within: 20s, after: hog.end}
      - {restarts: replica-0, at_least: 1, reason: OOMKilled, during: oom}
      - {requests: failed, at_most: 10, during: part}
      - {requests: wrong, at_most: 0.5%, between: [bad.start+15s, bad.end]}
      - {error_budget: availability, at_most: 0.5, during: hog}
      - {alert: InferenceGPUMemoryPressure, fires: {within: 30s, after: hog.start}, notifies: chat}
      - {no_alerts: firing}
      - {runbook: hog, restores: steady_state, within: 30s}
      - {canary: rolled_back, within: 30s, after: bad.start}
      - {slo: latency_p95, at_most: 300ms, during: flood, clients: [tenant-a, tenant-b]}
      - {counter: inference_failures_total, labels: {reason: rate_limited}, at_least: 100, during: flood}
      - {answers: [ok, 503, 429], share_at_least: 0.99, during: spike}
      - {gauge: process_resident_memory_bytes, rise_at_most: 64Mi, during: spike}
    halt_if: [{slo: availability, below: 0.5, for: 10s}]

A kind is one module here — its model, how it is named, how it is judged (``experiments.expect.kind.Kind``),
and optionally what it references, how long after its fault it still needs events and which alerts it
names — and one line in :data:`KINDS`. The ``Expectation`` union, :data:`EXPECTATION_KEYS`, the union's
discriminator, :func:`describe`, ``experiments.expect.judge.evaluate``, the spec's reference checks, the run's
settle time and the loader's alert-name check all read the table. Moments and windows: ``windows``.

Example::

    >>> describe(probe.ProbeHolds(probe="liveness", replica="replica-0", holds=True, during="hog"))
    'liveness of replica-0 holds true during hog'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, TypeAlias, Union

from pydantic import BaseModel, Discriminator, Tag

from faultdrill.experiments.expect import (
    alert,
    answers,
    breaker,
    canary,
    counter,
    error_budget,
    gauge,
    no_alerts,
    probe,
    recovers,
    requests,
    restarts,
    runbook,
    slo,
)
from faultdrill.experiments.expect.alert import AlertExpectation
from faultdrill.experiments.expect.answers import Answers
from faultdrill.experiments.expect.breaker import BreakerSequence
from faultdrill.experiments.expect.canary import CanaryExpectation
from faultdrill.experiments.expect.counter import CounterIncrease
from faultdrill.experiments.expect.error_budget import ErrorBudget
from faultdrill.experiments.expect.gauge import Gauge
from faultdrill.experiments.expect.kind import Kind, Path, Ref
from faultdrill.experiments.expect.no_alerts import NoAlerts
from faultdrill.experiments.expect.probe import ProbeBecomes, ProbeHolds
from faultdrill.experiments.expect.recovers import Recovers
from faultdrill.experiments.expect.requests import RequestsCount
from faultdrill.experiments.expect.restarts import Restarts
from faultdrill.experiments.expect.runbook import RunbookRestores
from faultdrill.experiments.expect.slo import SloOver

__all__ = ["EXPECTATION_KEYS", "KINDS", "AlertExpectation", "Answers", "BreakerSequence", "CanaryExpectation",
           "CounterIncrease", "ErrorBudget", "Expectation", "Gauge", "NoAlerts", "ProbeBecomes", "ProbeHolds",
           "Recovers", "RequestsCount", "Restarts", "RunbookRestores", "SloOver", "alert_names", "describe",
           "kind_of", "needed_after_end", "references"]

KINDS: tuple[Kind[Any], ...] = (
    probe.BECOMES,
    probe.HOLDS,
    breaker.KIND,
    slo.KIND,
    recovers.KIND,
    restarts.KIND,
    requests.KIND,
    error_budget.KIND,
    alert.KIND,
    no_alerts.KIND,
    runbook.KIND,
    canary.KIND,
    counter.KIND,
    answers.KIND,
    gauge.KIND,
)
"""Every expectation kind. A spec mapping is of the first kind that claims it; the order is also the
order of the ``Expectation`` union (and of the published JSON Schema's ``oneOf``)."""

EXPECTATION_KEYS: tuple[str, ...] = tuple(dict.fromkeys(k.key for k in KINDS))
"""The key an expectation starts with (the loader's did-you-mean draws from it too)."""

_BY_MODEL: dict[type, Kind[Any]] = {k.model: k for k in KINDS}


def kind_of(x: Any) -> Kind[Any] | None:
    """The kind of an expectation model (None for anything else)."""
    return _BY_MODEL.get(type(x))


def _tag(value: Any) -> str | None:
    if isinstance(value, dict):
        return next((k.tag for k in KINDS if k.claimed(value)), None)
    # Serialisation hands over the model itself.
    kind = kind_of(value)
    return None if kind is None else kind.tag


if TYPE_CHECKING:
    Expectation: TypeAlias = BaseModel
else:
    Expectation = Annotated[
        Union[tuple(Annotated[k.model, Tag(k.tag)] for k in KINDS)],  # noqa: UP007 (built from the table)
        Discriminator(
            _tag,
            custom_error_type="unknown_expectation",
            custom_error_message="an expectation starts with one of: " + ", ".join(EXPECTATION_KEYS),
        ),
    ]
"""One expectation of a spec's ``expect`` list: the model of the kind its key names."""


def describe(x: Any) -> str:
    """A readable one-line name of an expectation (used as the JUnit test name)."""
    kind = kind_of(x)
    return type(x).__name__ if kind is None else kind.describe(x)


def references(x: Any) -> list[Ref]:
    """The fault ids, moments, load clients and services an expectation names."""
    kind = kind_of(x)
    return [] if kind is None or kind.references is None else list(kind.references(x))


def needed_after_end(x: Any, durations: Mapping[str, float]) -> float:
    """How long after its fault ends an expectation may still need events (``durations``: each fault's)."""
    kind = kind_of(x)
    return 0.0 if kind is None or kind.needed_after_end is None else kind.needed_after_end(x, durations)


def alert_names(x: Any) -> list[tuple[Path, str]]:
    """The alert names an expectation gives, each with its path in the expectation."""
    kind = kind_of(x)
    return [] if kind is None or kind.alerts is None else list(kind.alerts(x))
