"""faultdrill's probes as Chaos Toolkit probes, against the target ``experiments.chaostoolkit.target`` started.

Each probe returns a plain value for a tolerance: ``replica_ready``/``replica_live`` a bool
(the Kubernetes probe routes of one replica; ``replica`` left out: the target's first replica),
``breaker_state`` the replica's circuit-breaker state (``closed``/``open``/``half-open``),
``alert_firing`` whether Prometheus has that alert firing (the target must be up with ``alerting: true``),
``slo_availability`` the fraction of inference requests answered 2xx and ``slo_latency_p95_ms`` their p95,
both measured by a short sampling load of their own (``concurrency`` clients for ``window_s`` seconds against the
readiness-aware service URL — the load is the probe's, so a hypothesis needs no load generator).

Annotations are real types (no ``from __future__ import annotations``): ``chaos discover``
reads them.

Example (a steady-state hypothesis probe)::

    {"type": "probe", "name": "service-availability", "tolerance": {"type": "range", "range": [0.95, 1.0]},
     "provider": {"type": "python", "module": "faultdrill.experiments.chaostoolkit.probes", "func": "slo_availability",
                  "arguments": {"window_s": 3}}}
"""

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from faultdrill.faults.chaostoolkit import TargetState, read_state, state_path
from faultdrill.faults.errors import ConfigError

__all__ = [
    "alert_firing",
    "breaker_state",
    "replica_live",
    "replica_ready",
    "slo_availability",
    "slo_latency_p95_ms",
]

_TIMEOUT_S = 2.0


def _target(state: str | None, configuration: dict[str, Any] | None) -> TargetState:
    found = read_state(state_path(state, configuration))
    if not found.ready:
        raise ConfigError(f"the faultdrill target is not ready (status {found.status})", field="faultdrill_state")
    return found


def _replica_url(target: TargetState, replica: str) -> str:
    """``replica``'s URL; ``""`` is the target's first replica (the first its system describes)."""
    if not replica and target.replicas:
        return next(iter(target.replicas.values()))
    try:
        return target.replicas[replica]
    except KeyError:
        raise ConfigError(f"unknown replica '{replica}'", field="replica",
                          expected="one of " + ", ".join(sorted(target.replicas))) from None  # fmt: skip


def _probe(url: str) -> bool:
    try:
        return httpx.get(url, timeout=_TIMEOUT_S).status_code == 200
    except httpx.HTTPError:
        return False


def replica_ready(replica: str = "", state: str | None = None,
                  configuration: dict[str, Any] | None = None) -> bool:  # fmt: skip
    """Whether ``replica``'s readiness route answers 200 now (unreachable counts as not ready)."""
    return _probe(f"{_replica_url(_target(state, configuration), replica)}/v2/health/ready")


def replica_live(replica: str = "", state: str | None = None,
                 configuration: dict[str, Any] | None = None) -> bool:  # fmt: skip
    """Whether ``replica``'s liveness route answers 200 now (unreachable counts as not live)."""
    return _probe(f"{_replica_url(_target(state, configuration), replica)}/v2/health/live")


def breaker_state(replica: str = "", state: str | None = None,
                  configuration: dict[str, Any] | None = None) -> str:  # fmt: skip
    """``replica``'s circuit breaker towards the feature store: closed, open or half-open (``unknown`` if
    the replica does not answer)."""
    url = _replica_url(_target(state, configuration), replica)
    try:
        doc = httpx.get(f"{url}/v2", timeout=_TIMEOUT_S).json()
    except (httpx.HTTPError, ValueError):
        return "unknown"
    dep = doc.get("dependency") if isinstance(doc, dict) else None
    value = dep.get("breaker") if isinstance(dep, dict) else None
    return str(value) if isinstance(value, str) else "unknown"


def alert_firing(alert: str, labels: dict[str, str] | None = None, state: str | None = None,
                 configuration: dict[str, Any] | None = None) -> bool:  # fmt: skip
    """Whether Prometheus has ``alert`` firing now (with these ``labels``, if given).

    Needs the target up with ``alerting: true`` (the shipped rules, time-scaled ÷60).
    """
    target = _target(state, configuration)
    if not target.prometheus_url:
        raise ConfigError("alert_firing needs Prometheus: bring the target up with alerting: true", field="alerting")
    doc = httpx.get(f"{target.prometheus_url}/api/v1/alerts", timeout=_TIMEOUT_S).json()
    wanted = labels or {}
    for a in doc.get("data", {}).get("alerts", []):
        have = a.get("labels", {})
        if have.get("alertname") == alert and a.get("state") == "firing" and all(
                have.get(k) == v for k, v in wanted.items()):  # fmt: skip
            return True
    return False


# -- the SLO over a window, from a short sampling load -------------------------------------
@dataclass
class _Samples:
    ok: int = 0
    total: int = 0
    latencies: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, ok: bool, latency_s: float) -> None:
        with self.lock:
            self.total += 1
            self.ok += int(ok)
            self.latencies.append(latency_s)


def _body(i: int) -> dict[str, Any]:
    # A digit-shaped row (64 pixels, 0-16) without importing torch or scikit-learn here.
    data = [float((i * 7 + j * 3) % 17) for j in range(64)]
    return {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": data}]}


def _sample(url: str, window_s: float, concurrency: int, model: str = "digits") -> _Samples:
    """``concurrency`` clients sending inference requests back to back for ``window_s`` seconds."""
    samples = _Samples()
    stop_at = time.monotonic() + window_s

    def client(k: int) -> None:
        with httpx.Client(timeout=_TIMEOUT_S) as http:
            i = k
            while time.monotonic() < stop_at:
                start = time.monotonic()
                try:
                    ok = 200 <= http.post(f"{url}/v2/models/{model}/infer", json=_body(i)).status_code < 300
                except httpx.HTTPError:
                    ok = False
                samples.add(ok, time.monotonic() - start)
                i += concurrency

    threads = [threading.Thread(target=client, args=(k,), name=f"slo-sample-{k}") for k in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return samples


def slo_availability(window_s: float = 3.0, concurrency: int = 4, state: str | None = None,
                     configuration: dict[str, Any] | None = None) -> float:  # fmt: skip
    """The fraction of inference requests answered 2xx over ``window_s`` seconds of sampling load
    (0.0 when none could be sent)."""
    s = _sample(str(_target(state, configuration).service_url), float(window_s), int(concurrency))
    return round(s.ok / s.total, 6) if s.total else 0.0


def slo_latency_p95_ms(window_s: float = 3.0, concurrency: int = 4, state: str | None = None,
                       configuration: dict[str, Any] | None = None) -> float:  # fmt: skip
    """The p95 latency in milliseconds of the 2xx-or-not inference requests over ``window_s`` seconds
    of sampling load (infinity when none could be sent)."""
    s = _sample(str(_target(state, configuration).service_url), float(window_s), int(concurrency))
    if not s.latencies:
        return math.inf
    ordered = sorted(s.latencies)
    return round(1000.0 * ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)], 3)
