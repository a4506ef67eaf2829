"""``http_fault`` through a real Envoy (the service endpoint of ``target.endpoint: envoy``) and real backends.

Abort: every request answered 503 by Envoy, none reaching a replica; delay: each held the given time; rollback
(also from the ledger alone, as ``rollback --pending`` does) puts the filter back at 0 %; aimed at an endpoint
that is not Envoy, refused at preflight.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from faultdrill.experiments.platforms.local.envoy import EnvoyEndpoint
from faultdrill.faults.base import FaultContext
from faultdrill.faults.http_fault import HttpFaultFault
from faultdrill.faults.ledger import RollbackOutcome, rollback_pending
from faultdrill.faults.registry import FaultRegistry
from faultdrill.faults.topology import ServiceHandle, Topology

pytestmark = [pytest.mark.slow, pytest.mark.tools("envoy")]


@pytest.fixture
def envoy(tmp_path: Path, serve_text: Callable[[str], str]) -> Iterator[EnvoyEndpoint]:
    ep = EnvoyEndpoint(lambda: [("web-0", serve_text("web-0"))], workdir=tmp_path / "envoy")
    ep.start()
    yield ep
    ep.stop()


def _ctx(tmp_path: Path, ep: EnvoyEndpoint) -> FaultContext:
    service = ServiceHandle(name="service", role="other", url=ep.url, port=ep.port,
                            control_url=f"unix:{ep.admin_socket}")  # fmt: skip
    return FaultContext.create(tmp_path / "state", topology=Topology(services={"service": service}))


def _statuses(url: str, n: int = 10) -> set[int]:
    with httpx.Client(timeout=5) as client:
        return {client.get(f"{url}/x").status_code for _ in range(n)}


def test_abort_answers_at_the_edge_and_rollback_clears_it(tmp_path: Path, envoy: EnvoyEndpoint) -> None:
    ctx, fault = _ctx(tmp_path, envoy), HttpFaultFault()
    cfg = fault.parse_config({"mode": "abort", "status": 503, "percent": 100})
    assert fault.preflight(cfg, ctx) == [] and "fault.http.abort.abort_percent=100" in fault.plan(cfg, ctx)[0]
    assert _statuses(envoy.url) == {200}
    reached = envoy.stats().get("upstream_rq_completed", 0)
    inj = fault.inject(cfg, ctx)
    try:
        assert _statuses(envoy.url) == {503}
        v = fault.verify(inj, ctx)
        assert v.effective and v.details["aborts_injected"] >= 10, v.message
        assert envoy.stats().get("upstream_rq_completed", 0) == reached  # none reached the replica
    finally:
        fault.undo(inj, ctx)
    assert _statuses(envoy.url) == {200}
    fault.rollback(inj, ctx)  # idempotent


def test_delay_holds_each_request(tmp_path: Path, envoy: EnvoyEndpoint) -> None:
    ctx, fault = _ctx(tmp_path, envoy), HttpFaultFault()
    inj = fault.inject(fault.parse_config({"mode": "delay", "delay_ms": 300, "percent": 100}), ctx)
    try:
        t0 = time.monotonic()
        assert _statuses(envoy.url, 3) == {200}
        assert time.monotonic() - t0 >= 0.9  # 3 × 300 ms
    finally:
        fault.undo(inj, ctx)
    t0 = time.monotonic()
    _statuses(envoy.url, 3)
    assert time.monotonic() - t0 < 0.6


def test_rollback_pending_clears_it_from_the_record_alone(tmp_path: Path, envoy: EnvoyEndpoint) -> None:
    ctx, fault = _ctx(tmp_path, envoy), HttpFaultFault()
    fault.inject(fault.parse_config({"mode": "abort", "status": 500, "percent": 100}), ctx)
    assert _statuses(envoy.url) == {500}
    registry = FaultRegistry()
    registry.register(HttpFaultFault, source="test")
    # As a fresh process would (this one is alive: the record is its own, so it has to be asked for).
    results = rollback_pending(registry, FaultContext.create(ctx.state_dir), include_live=True)
    assert [r.outcome for r in results] == [RollbackOutcome.ROLLED_BACK], results
    assert _statuses(envoy.url) == {200}


def test_an_endpoint_that_is_not_envoy_is_refused(tmp_path: Path) -> None:
    plain = ServiceHandle(name="service", role="other", url="http://127.0.0.1:1", port=1)
    ctx = FaultContext.create(tmp_path / "state", topology=Topology(services={"service": plain}))
    fault = HttpFaultFault()
    assert [p.code for p in fault.preflight(fault.parse_config({}), ctx)] == ["no_envoy"]
