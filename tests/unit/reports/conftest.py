"""Synthetic journals for the report tests: built in code, one per outcome and edge case."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from faultdrill.experiments.journal import EXIT_CODES, Environment, Journal
from faultdrill.experiments.journal.timeline import Event

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "reports"
SMOKE = FIXTURES / "smoke_journal.json.gz"
XSD = FIXTURES / "junit.xsd"

SPEC: dict[str, Any] = {
    "apiVersion": "faultdrill/v1", "kind": "Experiment", "metadata": {"name": "synthetic"},
    "target": {"replicas": 2}, "steady_state": {"window": 2.0, "slo": {"availability": 0.99, "latency_p95": 0.2}},
    "faults": [{"id": "hog", "type": "gpu_memory_exhaustion", "target": "replica-0", "at": 5.0, "duration": 10.0}],
    "expect": [{"probe": "readiness", "replica": "replica-0", "becomes": False, "within": 3.0,
                "after": {"ref": "hog", "edge": "start", "offset_s": 0.0}}],
}  # fmt: skip


def environment(**kw: Any) -> Environment:
    base = dict(device="cpu", emulated=True, device_name="cpu", faultdrill="0.1.0", python="3.11", torch=None,
                platform="Linux", host="ci", time_scale=0.1, notes=["no GPU: emulated device-memory budget"])
    return Environment(**{**base, **kw})  # type: ignore[arg-type]


def synthetic_events(*, load: bool = True, faults: bool = True, alerts: bool = True, runbook: bool = True,
                     duration: int = 30, wall0: float = 1_800_000_000.0) -> list[Event]:  # fmt: skip
    """10 requests a second (fails at 10–12 s, slow during the fault), probes, a breaker, a restart,
    an alert that goes pending → firing → notified → resolved, and two runbook steps."""
    ev: list[Event] = [Event(t=0.0, kind="phase", source="run", attrs={"phase": "setup"}),
                       Event(t=2.0, kind="phase", source="run", attrs={"phase": "steady"})]  # fmt: skip
    if load:
        for i in range(duration * 10):
            t = i / 10
            bad = 10.0 <= t < 12.0 and faults
            lat = 0.3 if faults and 5.0 <= t < 15.0 else 0.05 + (i % 10) / 1000
            ev.append(Event(t=t, kind="request", source="load", attrs={
                "ok": not bad, "status": 503 if bad else 200, "latency_s": lat, "name": "/infer", "error": None}))
    for r in ("replica-0", "replica-1"):
        for s in range(duration):
            down = faults and r == "replica-0" and 6 <= s < 14
            ev.append(Event(t=s + 0.05, kind="probe", source=r, attrs={"probe": "readiness", "value": not down}))
            ev.append(Event(t=s + 0.06, kind="probe", source=r, attrs={"probe": "liveness", "value": True}))
        ev.append(Event(t=0.5, kind="breaker", source=r, attrs={"state": "closed"}))
    if faults:
        ev += [
            Event(t=5.0, kind="fault", source="hog", attrs={"event": "start", "fault": "gpu_memory_exhaustion",
                                                            "mode": "in_process", "target": "replica-0",
                                                            "emulated": True}),
            Event(t=5.2, kind="fault", source="hog", attrs={"event": "verified", "effective": True, "message": "held"}),
            Event(t=15.0, kind="fault", source="hog", attrs={"event": "end", "fault": "gpu_memory_exhaustion"}),
            Event(t=7.0, kind="breaker", source="replica-1", attrs={"state": "open"}),
            Event(t=9.0, kind="breaker", source="replica-1", attrs={"state": "half-open"}),
            Event(t=9.5, kind="breaker", source="replica-1", attrs={"state": "closed"}),
            Event(t=11.0, kind="process", source="replica-0", attrs={"event": "exit", "reason": "OOMKilled",
                                                                     "cause": None, "code": 137}),
            Event(t=12.0, kind="process", source="replica-0", attrs={"event": "restart", "reason": "OOMKilled",
                                                                     "restarts": 1}),
        ]  # fmt: skip
    if alerts:
        name, labels = "InferenceGPUMemoryPressure", {"severity": "page", "replica": "replica-0"}
        ev += [Event(t=6.0, kind="alert", source=name, attrs={"state": "pending", "labels": labels}),
               Event(t=8.0, kind="alert", source=name, attrs={"state": "firing", "labels": labels}),
               Event(t=8.4, kind="notification", source="oncall", attrs={"alert": name, "status": "firing",
                                                                         "severity": "page"}),
               Event(t=17.0, kind="alert", source=name, attrs={"state": "resolved", "labels": labels}),
               Event(t=17.3, kind="notification", source="oncall", attrs={"alert": name,
                                                                          "status": "resolved"})]  # fmt: skip
    if runbook:
        book = "gpu-memory.md"
        ev += [Event(t=9.0, kind="runbook", source=book, attrs={"step": "check nvidia-smi", "status": "done",
                                                                "note": "hog found"}),
               Event(t=13.0, kind="runbook", source=book, attrs={"step": "drain replica-0", "status": "failed",
                                                                 "note": "<b>no</b>"})]  # fmt: skip
    ev += [Event(t=16.0, kind="phase", source="run", attrs={"phase": "recover"}),
           Event(t=float(duration), kind="phase", source="run", attrs={"phase": "teardown"})]  # fmt: skip
    return sorted([e.model_copy(update={"wall": wall0 + e.t}) for e in ev], key=lambda e: e.t)


def make_journal(outcome: str = "passed", *, load: bool = True, faults: bool = True, alerts: bool = True,
                 runbook: bool = True, events: bool = True, verdicts: list[dict[str, Any]] | None = None,
                 name: str = "synthetic", reason: str = "", started: float = 1_800_000_000.0,
                 mttd: float | None = 1.0, mttr: float | None = 2.0) -> Journal:  # fmt: skip
    evs = synthetic_events(load=load, faults=faults, alerts=alerts, runbook=runbook, wall0=started) if events else []
    if verdicts is None:
        verdicts = [] if outcome == "error" else [
            {"name": "readiness of replica-0 becomes false within 3 s after hog.start", "passed": True,
             "expected": "readiness of replica-0 becomes false within 3 s after hog.start",
             "observed": "readiness of replica-0 became false 1.1 s after hog.start (limit 3 s)",
             "evidence": [], "measured": {"seconds": 1.1}, "window": [5.0, 6.1]},
            {"name": "availability at least 0.95 during hog", "passed": outcome == "passed",
             "expected": "availability at least 0.95 during hog",
             "observed": "availability during hog was 0.800 over 100 requests (expected at least 0.95)",
             "evidence": [], "measured": {"availability": 0.8, "requests": 100}, "window": [5.0, 15.0]},
        ]  # fmt: skip
    fault_info = {"hog": {"type": "gpu_memory_exhaustion", "target": "replica-0", "start_s": 5.0, "end_s": 15.0,
                          "emulated": True, "mttd_s": mttd, "mttr_s": mttr}} if faults and events else {}  # fmt: skip
    return Journal(run_id=f"20270115-080000-{name[:6]}", name=name, spec={**SPEC, "metadata": {"name": name}},
                   environment=environment(), started_at=started, ended_at=started + 30.0,
                   outcome=outcome, exit_code=EXIT_CODES[outcome], reason=reason, verdicts=verdicts,  # type: ignore[arg-type]
                   faults=fault_info, load={"requests": 300, "failures": 20} if load else {}, events=evs)  # fmt: skip


JournalFactory = Callable[..., Journal]


@pytest.fixture(scope="session")
def journal_factory() -> JournalFactory:
    return make_journal


@pytest.fixture(scope="session")
def smoke_journal() -> Journal:
    from faultdrill.reports.source import load_journal

    return load_journal(SMOKE)


@pytest.fixture(scope="session")
def smoke_view(smoke_journal: Journal) -> Any:
    from faultdrill.reports.model import RunView

    return RunView.of(smoke_journal)


@pytest.fixture(scope="session")
def xsd_path() -> Path:
    return XSD
