"""cache_outage / cache_slow / cache_flush for real: redis-server, its fault proxy, a replica using it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from faults_helpers import child_env, wait_for_line

from faultdrill.experiments.platforms.local.stack import LocalStack
from faultdrill.faults.base import FaultContext, Scope
from faultdrill.faults.cache import CacheFlushFault, CacheOutageFault, CacheSlowFault, ping
from faultdrill.faults.errors import BlastRadiusError, ConfigError, RollbackError
from faultdrill.faults.ledger import RollbackOutcome, rollback_pending
from faultdrill.faults.proxy_control import ProxyControl
from faultdrill.faults.registry import FaultRegistry
from faultdrill.faults.topology import ServiceHandle, Topology

BODY = {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [(i % 17) / 16 for i in range(64)]}]}


def _registry() -> FaultRegistry:
    registry = FaultRegistry()
    for cls in (CacheOutageFault, CacheSlowFault, CacheFlushFault):
        registry.register(cls)
    return registry


def test_bad_configs_are_located_and_inject_nothing(tmp_path: Path) -> None:
    outage = CacheOutageFault()
    with pytest.raises(ConfigError, match="did you mean 'how'") as err:
        outage.parse_config({"target": "cache", "mode": "partitioned", "hwo": "reset"})
    assert err.value.field == "hwo"
    with pytest.raises(ConfigError, match="mode"):
        outage.parse_config({"target": "cache", "mode": "exploded"})
    with pytest.raises(ConfigError, match="jitter_ms must not exceed"):
        CacheSlowFault().parse_config({"latency_ms": 10, "jitter_ms": 20})
    topo = Topology(services={
        "cache": ServiceHandle(name="cache", role="cache", pid=1, port=6379, url="redis://127.0.0.1:6379/0"),
        "replica-0": ServiceHandle(name="replica-0", role="replica", pid=1, port=1)})  # fmt: skip
    ctx = FaultContext.create(tmp_path, topology=topo, scope=Scope().with_ports(6379))
    with pytest.raises(ConfigError, match="did you mean 'cache'"):
        outage.inject(outage.parse_config({"target": "cahce", "mode": "down"}), ctx)
    with pytest.raises(ConfigError, match="is a replica, this fault needs a cache"):
        outage.inject(outage.parse_config({"target": "replica-0", "mode": "down"}), ctx)
    with pytest.raises(ConfigError, match="needs the fault proxy"):
        outage.inject(outage.parse_config({"mode": "partitioned"}), ctx)
    flush = CacheFlushFault()
    assert "blast_radius" in [p.code for p in flush.preflight(flush.parse_config({}), ctx)]
    with pytest.raises(BlastRadiusError, match="pid '1'"):  # a Redis faultdrill did not start
        flush.inject(flush.parse_config({}), ctx)
    assert ctx.ledger.ids() == []


SPEC = """apiVersion: faultdrill/v1
kind: Experiment
metadata: {name: c}
target: {cache: {enabled: %s, max_memory: %s}}
faults:
  - {id: o, type: cache_outage, target: %s, at: 1s, params: {mode: down}}
"""


def test_spec_cache_section_and_targets_are_located() -> None:
    from faultdrill.experiments.spec.loader import check_experiment_text, load_experiment_text

    exp = load_experiment_text(SPEC % ("true", "32Mi", "cache"))
    assert exp.target.cache.max_memory == 32 * 2**20 and "cache-proxy" in exp.service_names()
    (off,) = check_experiment_text(SPEC % ("false", "32Mi", "cache"), file="c.yaml")
    assert (off.line, off.field) == (6, "faults[0].target") and "target.cache.enabled: true" in str(off)
    (small,) = check_experiment_text(SPEC % ("true", "1Mi", "cache"), file="c.yaml")
    assert small.line == 4 and "below 16Mi" in str(small)
    (wrong,) = check_experiment_text(SPEC % ("true", "32Mi", "cahce"), file="c.yaml")
    assert "did you mean 'cache'" in str(wrong)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(tmp_path_factory.mktemp("cachestack"), replicas=1, cache_max_memory_bytes=16 * 2**20,
                    replica_env={"FAULTDRILL_CACHE_BREAKER_RESET_TIMEOUT_S": "0.5"}) as st:  # fmt: skip
        yield st


@pytest.fixture
def ctx(stack: LocalStack, tmp_path: Path) -> FaultContext:
    return FaultContext.create(tmp_path / "state", scope=stack.scope(), topology=stack.topology(),
                               supervisor=stack)  # fmt: skip


def infer(stack: LocalStack, body: dict[str, Any] = BODY) -> tuple[int, dict[str, Any], float]:
    url = stack.topology().get("replica-0").url
    t0 = time.perf_counter()
    r = httpx.post(f"{url}/v2/models/digits/infer", json=body, timeout=5)
    return r.status_code, r.json(), time.perf_counter() - t0


def fresh_body() -> dict[str, Any]:
    data = [((i * time.time_ns()) % 97) / 97 for i in range(64)]
    return {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": data}]}


def test_platform_cache_is_private_and_used(stack: LocalStack) -> None:
    cache = stack.topology().get("cache")
    assert cache.role == "cache" and cache.admin_token_file is not None
    password = cache.admin_token_file.read_text().strip()
    assert cache.admin_token_file.stat().st_mode & 0o777 == 0o600
    for name in ("cache", "replica-0"):
        pid = stack.topology().get(name).pid
        assert password not in Path(f"/proc/{pid}/cmdline").read_text()
    proxy = stack.topology().get("cache-proxy")
    assert proxy.upstream_of == "cache" and proxy.role == "proxy"
    body = fresh_body()
    first, second = infer(stack, body), infer(stack, body)
    assert (first[0], second[0]) == (200, 200)
    assert (first[1]["parameters"]["cache"], second[1]["parameters"]["cache"]) == ("miss", "hit")
    assert first[1]["outputs"][0]["data"] == second[1]["outputs"][0]["data"]
    for log in stack.workdir.glob("*.log"):
        assert password not in log.read_text(errors="replace"), log
    # Prometheus scrapes each proxy with its own token: one job per token file.
    from faultdrill.experiments.alerting.stack import _scrape_configs, scrape_targets

    jobs = {c["job_name"] for c in _scrape_configs(scrape_targets(stack.topology()))}
    assert {"fault-proxy", "fault-proxy-cache", "target"} <= jobs


def test_partition_is_bypassed_and_rolled_back(stack: LocalStack, ctx: FaultContext) -> None:
    fault = CacheOutageFault()
    cfg = fault.parse_config({"target": "cache", "mode": "partitioned", "duration_s": 20})
    assert fault.preflight(cfg, ctx) == []
    assert "blackhole" in fault.plan(cfg, ctx)[0]
    inj = fault.inject(cfg, ctx)
    try:
        assert ctx.ledger.ids() == [inj.id]
        check = fault.verify(inj, ctx)
        assert check.effective, check
        assert check.details["via_proxy"] == "timeout" and check.details["direct"] == "ok"
        answers, sent, done = [], [], []
        for _ in range(8):
            sent.append(time.monotonic())
            answers.append(infer(stack, fresh_body()))
            done.append(time.monotonic())
        assert all(code == 200 for code, _, _ in answers)  # the bypass: no error surfaces
        results = [doc["parameters"]["cache"] for _, doc, _ in answers]
        assert results[0] == "error" and "bypass" in results, results  # then the breaker opened
        # Open, it bypasses every request until its reset (0.5 s) lets one half-open trial through: on a loaded
        # machine the last requests may come after that, so what is exact is the open window itself.
        opened = done[results.index("bypass") - 1]  # the failure that opened it
        assert all(r == "bypass" for r, s in zip(results, sent, strict=True) if opened <= s < opened + 0.45), results
        assert max(t for *_, t in answers) < 0.05 + 0.5  # bounded by the cache timeout
    finally:
        fault.undo(inj, ctx)
    assert ctx.ledger.ids() == []
    assert not fault.verify(inj, ctx).effective
    fault.undo(inj, ctx)  # idempotent


def test_slow_cache_and_flush(stack: LocalStack, ctx: FaultContext) -> None:
    slow = CacheSlowFault()
    inj = slow.inject(slow.parse_config({"latency_ms": 150, "duration_s": 10}), ctx)
    try:
        check = slow.verify(inj, ctx)
        assert check.effective and check.details["ms"] >= 150, check
        assert infer(stack, fresh_body())[0] == 200
    finally:
        slow.undo(inj, ctx)
    proxy = ctx.topology.get("cache-proxy")
    assert ProxyControl(str(proxy.control_url), proxy.admin_token()).state()["mode"]["mode"] == "passthrough"

    time.sleep(0.6)  # the replica's cache breaker (reset 0.5 s) closes on its next trial
    body = fresh_body()
    infer(stack, body)
    time.sleep(0.1)
    flush = CacheFlushFault()
    inj = flush.inject(flush.parse_config({"duration_s": 5}), ctx)
    check = flush.verify(inj, ctx)
    assert check.effective and check.details["dbsize_before"] >= 1, check
    assert infer(stack, body)[1]["parameters"]["cache"] == "miss"  # cold
    flush.undo(inj, ctx)
    assert ctx.ledger.ids() == []


def test_down_holds_the_cache_and_restarts_it(stack: LocalStack, ctx: FaultContext) -> None:
    fault = CacheOutageFault()
    inj = fault.inject(fault.parse_config({"mode": "down", "duration_s": 10}), ctx)
    try:
        check = fault.verify(inj, ctx)
        assert check.effective and check.details["direct"] == "refused", check
        assert [infer(stack, fresh_body())[0] for _ in range(3)] == [200, 200, 200]
    finally:
        fault.undo(inj, ctx)
    cache = stack.topology().get("cache")
    assert ping("127.0.0.1", int(cache.port or 0), str(cache.admin_token_file), 1.0)[0] == "ok"


CHILD = textwrap.dedent(
    """
    import json, sys, time
    from faultdrill.faults.base import FaultContext, Scope
    from faultdrill.faults.cache import CacheOutageFault
    from faultdrill.faults.topology import Topology
    spec = json.loads(sys.argv[1])
    ctx = FaultContext.create(spec["state"], scope=Scope(pids=frozenset(spec["pids"]),
                              ports=frozenset(spec["ports"])),
                              topology=Topology.model_validate_json(spec["topology"]))
    fault = CacheOutageFault()
    fault.inject(fault.parse_config({"mode": spec["mode"], "how": "reset"}), ctx)
    print("injected", flush=True)
    time.sleep(60)
    """
)


def test_crash_while_partitioned_then_rollback_pending(stack: LocalStack, ctx: FaultContext) -> None:
    spec = {"state": str(ctx.state_dir), "topology": ctx.topology.model_dump_json(), "mode": "partitioned",
            "pids": sorted(ctx.scope.pids), "ports": sorted(ctx.scope.ports)}  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(spec)], env=child_env(),
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    proxy = ctx.topology.get("cache-proxy")
    try:
        wait_for_line(proc, "injected", timeout=60)
        via = ping("127.0.0.1", int(proxy.port or 0), str(ctx.topology.get("cache").admin_token_file), 0.5)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert via[0] in ("reset", "refused"), via
    results = rollback_pending(_registry(), FaultContext.create(ctx.state_dir))  # a fresh context: records only
    assert [r.outcome for r in results] == [RollbackOutcome.ROLLED_BACK], results
    assert ProxyControl(str(proxy.control_url), proxy.admin_token()).state()["mode"]["mode"] == "passthrough"
    assert rollback_pending(_registry(), FaultContext.create(ctx.state_dir)) == []


def test_down_without_a_supervisor_keeps_the_record_until_it_answers(stack: LocalStack, ctx: FaultContext) -> None:
    fault = CacheOutageFault()
    inj = fault.inject(fault.parse_config({"mode": "down"}), ctx)
    bare = FaultContext.create(ctx.state_dir)  # what `faultdrill rollback --pending` has: no platform
    with pytest.raises(RollbackError, match="no supervisor"):
        fault.undo(inj, bare)
    assert ctx.ledger.ids() == [inj.id]  # still visible
    stack.start("cache")
    fault.undo(inj, bare)
    assert ctx.ledger.ids() == []


def test_no_cache_bypass_fails_requests(stack: LocalStack, ctx: FaultContext) -> None:
    # Last in the module: the misconfigured replica is left to the module's teardown (a restart is ~4 s).
    stack.restart("replica-0", env={"FAULTDRILL_MISCONFIGURATIONS": "no_cache_bypass"})
    fault = CacheOutageFault()
    inj = fault.inject(fault.parse_config({"mode": "partitioned"}), ctx)
    try:
        answers = [infer(stack, fresh_body()) for _ in range(4)]
    finally:
        fault.undo(inj, ctx)
    assert [code for code, _, _ in answers] == [503] * 4, answers  # the classic mistake surfaces
    assert all(t >= 0.045 for *_, t in answers)  # and every request waited for the cache's timeout
    assert "prediction cache unavailable" in answers[0][1]["error"]
