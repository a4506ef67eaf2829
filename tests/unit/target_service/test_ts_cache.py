"""PredictionCache against a real redis-server (and the real fault proxy in front of it)."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from faultdrill.experiments.platforms.local.redis import RedisServerConfig, redis_client, wait_redis
from faultdrill.faults.proxy_control import RunningProxy, spawn_proxy
from faultdrill.target_service.cache import CacheUnavailable, PredictionCache, decode, encode
from faultdrill.target_service.metrics import TargetMetrics

T = TypeVar("T")
ROWS = np.arange(128, dtype=np.float32).reshape(2, 64) / 128
PROBS = np.full((2, 10), 0.1, dtype=np.float32)


def run(coro: Coroutine[Any, Any, T], bound_s: float = 20.0) -> T:
    return asyncio.run(asyncio.wait_for(coro, bound_s))


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServerConfig]:
    server = RedisServerConfig(tmp_path_factory.mktemp("redis"), max_memory_bytes=16 * 2**20)
    proc = subprocess.Popen(server.write(), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_redis(server.host, server.port, server.password_file, 10, alive=lambda: proc.poll() is None)
        yield server
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def proxy(redis_server: RedisServerConfig, tmp_path: Path) -> Iterator[RunningProxy]:
    p = spawn_proxy((redis_server.host, redis_server.port), token_file=tmp_path / "proxy.token")
    try:
        yield p
    finally:
        p.stop()


def counts(metrics: TargetMetrics) -> dict[str, float]:
    out = {}
    for result in ("hit", "miss", "error", "bypass"):
        value = metrics.registry.get_sample_value("prediction_cache_requests_total", {"result": result})
        out[result] = value or 0.0
    return out


def make(server: RedisServerConfig, port: int | None = None, **kw: Any) -> tuple[PredictionCache, TargetMetrics]:
    metrics = TargetMetrics(CollectorRegistry(), model="digits")
    password = server.password_file.read_text().strip()
    url = f"redis://127.0.0.1:{port or server.port}/0"
    return PredictionCache(url, metrics, password=password, **kw), metrics


def test_files_are_private_and_the_password_is_not_on_the_command_line(redis_server: RedisServerConfig) -> None:
    assert redis_server.password_file.stat().st_mode & 0o777 == 0o600
    assert redis_server.config_file.stat().st_mode & 0o777 == 0o600
    argv = redis_server.write()
    password = redis_server.password_file.read_text().strip()
    assert all(password not in a for a in argv)
    # Unauthenticated clients are refused; the memory cap and LRU policy are in force.
    anonymous = redis_client(redis_server.host, redis_server.port, None)
    with pytest.raises(Exception, match=r"(?i)auth"):
        anonymous.get("x")
    client = redis_client(redis_server.host, redis_server.port, redis_server.password_file)
    try:
        assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "allkeys-lru"
        assert int(client.config_get("maxmemory")["maxmemory"]) == 16 * 2**20
        assert client.config_get("appendonly")["appendonly"] == "no"
    finally:
        client.close()
        anonymous.close()


def test_key_is_canonical_and_names_model_version_and_features() -> None:
    key = PredictionCache.key("digits", "1", ROWS)
    assert key.startswith("fd:pred:digits:1:")
    assert PredictionCache.key("digits", "1", ROWS.astype(np.float64)) == key  # dtype-canonical
    assert PredictionCache.key("digits", "1", np.asfortranarray(ROWS)) == key  # layout-canonical
    assert PredictionCache.key("digits", "2", ROWS) != key  # a rollout never serves v1's answers
    assert PredictionCache.key("digits", "1", ROWS.reshape(1, 128)) != key  # shape is in the digest
    assert PredictionCache.key("digits", "1", ROWS, temperature=2.0) != key
    assert PredictionCache.key("digits", "1", ROWS, bias=np.ones(10, np.float32)) != key
    assert np.array_equal(decode(encode(PROBS)), PROBS)
    with pytest.raises(ValueError, match="wrong size"):
        decode(encode(PROBS)[:-1])


def test_miss_then_hit_then_expiry(redis_server: RedisServerConfig) -> None:
    async def scenario() -> tuple[list[str], np.ndarray | None]:
        cache, _ = make(redis_server, ttl_s=0.3)
        key = cache.key("digits", f"t{time.time_ns()}", ROWS)
        try:
            first = await cache.get(key)
            cache.put(key, PROBS)
            await cache.flush_writes()
            second = await cache.get(key)
            other_version = await cache.get(key.replace(":t", ":u"))
            await asyncio.sleep(0.45)
            expired = await cache.get(key)
            return [first.result, second.result, other_version.result, expired.result], second.outputs
        finally:
            await cache.aclose()

    results, outputs = run(scenario())
    assert results == ["miss", "hit", "miss", "miss"]
    assert outputs is not None and np.array_equal(outputs, PROBS)


def test_unreachable_cache_is_bypassed_within_the_timeout_and_the_breaker_opens(
    redis_server: RedisServerConfig, proxy: RunningProxy
) -> None:
    async def scenario() -> tuple[list[str], list[float], str, dict[str, float], str]:
        cache, metrics = make(redis_server, port=proxy.listen[1], timeout_s=0.05, breaker_threshold=3,
                              breaker_reset_s=0.3)  # fmt: skip
        key = cache.key("digits", "1", ROWS)
        try:
            assert (await cache.get(key)).result in ("hit", "miss")  # healthy through the proxy
            proxy.control().set_mode("drop")  # existing connections stop forwarding
            results, took = [], []
            for _ in range(5):
                t0 = time.perf_counter()
                results.append((await cache.get(key)).result)
                took.append(time.perf_counter() - t0)
            state_when_down = cache.state
            proxy.control().set_mode("passthrough")
            await asyncio.sleep(0.35)  # past breaker_reset_s: the next call is the half-open trial
            trial = (await cache.get(key)).result
            return results, took, state_when_down, counts(metrics), trial + "/" + cache.state
        finally:
            await cache.aclose()

    results, took, state, seen, after = run(scenario())
    assert results == ["error", "error", "error", "bypass", "bypass"]
    assert max(took) < 0.05 + 0.1, took  # bounded by the timeout (+ scheduling slack)
    assert max(took[3:]) < 0.005, took  # the breaker skips Redis altogether
    assert state == "open"
    assert seen["error"] == 3 and seen["bypass"] == 2
    assert after in ("miss/closed", "hit/closed")


def test_stopped_redis_refuses_fast_and_writes_never_block(tmp_path: Path) -> None:
    server = RedisServerConfig(tmp_path / "gone")
    server.write()  # its port is free and nothing listens: a stopped Redis

    async def scenario() -> tuple[str, float, float]:
        cache, metrics = make(server, timeout_s=0.05)
        try:
            t0 = time.perf_counter()
            cache.put("k", PROBS)  # returns at once
            put_s = time.perf_counter() - t0
            result = (await cache.get("k")).result
            await cache.flush_writes()
            return result, put_s, metrics.registry.get_sample_value(
                "prediction_cache_writes_total", {"outcome": "error"}) or 0.0  # fmt: skip
        finally:
            await cache.aclose()

    result, put_s, write_errors = run(scenario())
    assert result == "error" and put_s < 0.005 and write_errors == 1


def test_without_bypass_a_failed_lookup_raises_after_the_timeout(
    redis_server: RedisServerConfig, proxy: RunningProxy
) -> None:
    async def scenario() -> list[float]:
        cache, _ = make(redis_server, port=proxy.listen[1], timeout_s=0.08, bypass=False, breaker_threshold=1)
        took = []
        try:
            await cache.get("warm")
            proxy.control().set_mode("drop")
            for _ in range(3):  # no breaker: every request waits the full timeout, then fails
                t0 = time.perf_counter()
                with pytest.raises(CacheUnavailable, match="timeout"):
                    await cache.get("k")
                took.append(time.perf_counter() - t0)
            return took
        finally:
            proxy.control().set_mode("passthrough")
            await cache.aclose()

    took = run(scenario())
    assert all(0.07 <= t < 0.25 for t in took), took


def test_connections_reset_while_connecting_never_raise(redis_server: RedisServerConfig, proxy: RunningProxy) -> None:
    # A Redis that is gone behind its proxy: every new connection is reset (during TCP + AUTH), under uvloop
    # as in the target. In a catalog run such a reset surfaced once as uvloop's RuntimeError ("handler is
    # closed") rather than a RedisError; this test does not force that timing, it pins the outcome.
    async def scenario() -> list[str]:
        import uvloop

        proxy.control().set_mode("reset")
        cache, _ = make(redis_server, port=proxy.listen[1], timeout_s=0.05, breaker_threshold=100)
        try:
            return [(await cache.get(f"k{i}")).result for i in range(20)]
        finally:
            await cache.aclose()
            proxy.control().set_mode("passthrough")
            assert isinstance(asyncio.get_running_loop(), uvloop.Loop)

    import uvloop

    results = uvloop.run(asyncio.wait_for(scenario(), 20))
    assert results == ["error"] * 20
