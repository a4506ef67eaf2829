"""FeatureClient against a real feature store on loopback: cache, breaker, fallback, TLS."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import time
from collections.abc import Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from prometheus_client import CollectorRegistry

from faultdrill.target_service.config import FeatureStoreSettings
from faultdrill.target_service.feature_store import FeatureStoreThread, features_for
from faultdrill.target_service.features import DEFAULT_FEATURES, FeatureClient, Features
from faultdrill.target_service.metrics import TargetMetrics
from faultdrill.target_service.pki import DevPki, create_ca, ensure_dev_pki, issue_cert

TOKEN = "tok-features"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], bound_s: float = 30.0) -> T:
    return asyncio.run(asyncio.wait_for(coro, bound_s))


@pytest.fixture
def pki(tmp_path: Path) -> DevPki:
    return ensure_dev_pki(tmp_path / "pki")


def store_settings(pki: DevPki, port: int = 0) -> FeatureStoreSettings:
    return FeatureStoreSettings.model_validate(
        {
            "port": port,
            "tls_cert_file": pki.feature_store.cert,
            "tls_key_file": pki.feature_store.key,
            "cert_reload_interval_s": 0.05,
            "admin_token": TOKEN,
        }
    )


@pytest.fixture
def store(pki: DevPki) -> Iterator[FeatureStoreThread]:
    with FeatureStoreThread(store_settings(pki)) as fs:
        yield fs


@pytest.fixture
def metrics() -> TargetMetrics:
    return TargetMetrics(CollectorRegistry(), model="digits")


def sample(m: TargetMetrics, name: str, **labels: str) -> float:
    value = m.registry.get_sample_value(name, {"dependency": "feature_store", **labels})
    return value or 0.0


def levers(fs: FeatureStoreThread, pki: DevPki, **faults: float) -> None:
    ctx = ssl.create_default_context(cafile=str(pki.ca.cert))
    if faults:
        r = httpx.post(fs.url + "/admin/faults", json=faults, headers=AUTH, verify=ctx, timeout=5)
    else:
        r = httpx.delete(fs.url + "/admin/faults", headers=AUTH, verify=ctx, timeout=5)
    r.raise_for_status()


def expected(entity: str) -> Features:
    doc = features_for(entity)
    return Features(doc["temperature"], tuple(doc["bias"]))


def test_without_a_store_defaults_are_not_degraded(metrics: TargetMetrics) -> None:
    async def scenario() -> None:
        client = FeatureClient(None, None, metrics)
        await client.start()
        result = await client.get("anyone")
        assert (result.source, result.degraded, result.error) == ("default", False, None)
        assert result.features == DEFAULT_FEATURES and client.reachable
        await client.aclose()

    run(scenario())
    assert sample(metrics, "dependency_requests_total", outcome="ok") == 0


def test_fresh_then_cache_then_refresh_after_ttl(
    store: FeatureStoreThread, pki: DevPki, metrics: TargetMetrics
) -> None:
    async def scenario() -> None:
        client = FeatureClient(store.url, pki.ca.cert, metrics, ttl_s=0.2)
        await client.start()
        first = await client.get("user/1?x")  # quoted: path separators stay in the entity
        assert first.source == "fresh" and not first.degraded
        assert first.features == expected("user/1?x")
        assert (await client.get("user/1?x")).source == "cache"
        # Concurrent misses for one entity share one call.
        results = await asyncio.gather(*(client.get("shared") for _ in range(20)))
        assert {r.source for r in results} == {"fresh"}
        await asyncio.sleep(0.25)
        assert (await client.get("user/1?x")).source == "fresh"
        assert client.breaker_state == "closed" and client.reachable
        await client.aclose()

    run(scenario())
    assert sample(metrics, "dependency_requests_total", outcome="ok") == 3
    assert sample(metrics, "dependency_request_duration_seconds_count") == 3
    assert sample(metrics, "circuit_breaker_state") == 0


def test_breaker_opens_falls_back_and_recovers_when_the_store_returns(
    pki: DevPki, metrics: TargetMetrics
) -> None:
    fs = FeatureStoreThread(store_settings(pki)).start()
    port = fs.port
    figures: dict[str, float] = {}

    async def scenario() -> None:
        client = FeatureClient(
            fs.url, pki.ca.cert, metrics, ttl_s=0.0, breaker_threshold=3, breaker_reset_s=0.5
        )
        await client.start()
        assert (await client.get("known")).source == "fresh"
        await asyncio.to_thread(fs.stop)  # the store is stopped: connections are refused

        stopped_at = time.monotonic()
        seen = [await client.get(e) for e in ("known", "unknown", "known")]
        assert [r.source for r in seen] == ["stale_cache", "default", "stale_cache"]
        assert all(r.degraded and r.error == "connect" for r in seen)
        assert seen[0].features == expected("known") and seen[1].features == DEFAULT_FEATURES
        assert client.breaker_state == "open" and not client.reachable
        figures["open_after_s"] = time.monotonic() - stopped_at

        started = time.perf_counter()
        rejected = await client.get("known")
        figures["rejected_call_s"] = time.perf_counter() - started
        assert (rejected.source, rejected.error) == ("stale_cache", "breaker open (last error: connect)")
        assert (await client.get("new")).source == "default"

        await asyncio.to_thread(fs_restart)
        back_at = time.monotonic()
        states = set()
        while client.breaker_state != "closed":
            assert time.monotonic() - back_at < 5.0, "breaker did not close"
            result = await client.get("known")
            states.add(client.breaker_state)
            await asyncio.sleep(0.02)
        figures["closed_after_return_s"] = time.monotonic() - back_at
        assert result.source == "fresh" and not result.degraded and client.reachable
        await client.aclose()

    restarted: list[FeatureStoreThread] = []

    def fs_restart() -> None:
        restarted.append(FeatureStoreThread(store_settings(pki, port)).start())

    try:
        run(scenario())
    finally:
        for s in restarted:
            s.stop()
        fs.stop()
    assert sample(metrics, "dependency_requests_total", outcome="error") == 3
    assert sample(metrics, "dependency_requests_total", outcome="rejected") >= 2
    t = "circuit_breaker_transitions_total"
    assert sample(metrics, t, from_state="closed", to_state="open") == 1
    assert sample(metrics, t, from_state="open", to_state="half-open") == 1
    assert sample(metrics, t, from_state="half-open", to_state="closed") == 1
    assert sample(metrics, "circuit_breaker_state") == 0
    assert figures["rejected_call_s"] < 0.1  # no network call while open
    assert figures["closed_after_return_s"] < 2.0
    print("breaker figures:", figures)


def test_half_open_failure_reopens_and_lets_one_trial_through(
    pki: DevPki, metrics: TargetMetrics
) -> None:
    async def scenario() -> None:
        # A closed port on loopback: refused at once (never a "dead" IP, see FIELD-NOTES).
        with FeatureStoreThread(store_settings(pki)) as fs:
            url = fs.url
        client = FeatureClient(url, pki.ca.cert, metrics, breaker_threshold=1, breaker_reset_s=0.2)
        await client.start()
        assert (await client.get("a")).error == "connect"
        assert client.breaker_state == "open"
        await asyncio.sleep(0.25)
        results = await asyncio.gather(*(client.get(f"e{i}") for i in range(5)))
        errors = sorted(r.error or "" for r in results)
        assert errors == ["breaker open (last error: connect)"] * 4 + ["connect"], errors
        assert client.breaker_state == "open"  # the failed trial re-opened it
        await client.aclose()

    run(scenario())
    t = "circuit_breaker_transitions_total"
    assert sample(metrics, t, from_state="half-open", to_state="open") == 1


def test_timeout_through_the_delay_lever(
    store: FeatureStoreThread, pki: DevPki, metrics: TargetMetrics
) -> None:
    levers(store, pki, delay_ms=1000)

    async def scenario() -> float:
        client = FeatureClient(store.url, pki.ca.cert, metrics, timeout_s=0.2)
        await client.start()
        started = time.monotonic()
        result = await client.get("slow")
        elapsed = time.monotonic() - started
        assert (result.source, result.degraded, result.error) == ("default", True, "timeout")
        await client.aclose()
        return elapsed

    elapsed = run(scenario())
    assert 0.19 < elapsed < 1.5  # bounded by timeout_s, with slack for a busy CI box
    assert sample(metrics, "dependency_requests_total", outcome="timeout") == 1


def test_error_rate_lever_gives_5xx_fallbacks(
    store: FeatureStoreThread, pki: DevPki, metrics: TargetMetrics
) -> None:
    async def scenario() -> None:
        client = FeatureClient(store.url, pki.ca.cert, metrics, ttl_s=0.0, breaker_threshold=100)
        await client.start()
        assert (await client.get("e")).source == "fresh"
        await asyncio.to_thread(levers, store, pki, error_rate=1.0, error_status=503)
        result = await client.get("e")
        assert (result.source, result.degraded, result.error) == ("stale_cache", True, "http 503")
        await asyncio.to_thread(levers, store, pki)
        assert (await client.get("e")).source == "fresh"
        await client.aclose()

    run(scenario())
    assert sample(metrics, "dependency_requests_total", outcome="error") == 1


def test_without_a_breaker_every_request_pays_the_call(pki: DevPki, metrics: TargetMetrics) -> None:
    async def scenario() -> None:
        with FeatureStoreThread(store_settings(pki)) as fs:
            url = fs.url
        client = FeatureClient(url, pki.ca.cert, metrics, breaker_threshold=2, use_breaker=False)
        await client.start()
        for i in range(6):
            assert (await client.get(f"e{i}")).error == "connect"
        assert client.breaker_state == "closed"
        await client.aclose()

    run(scenario())
    assert sample(metrics, "dependency_requests_total", outcome="error") == 6
    assert sample(metrics, "dependency_requests_total", outcome="rejected") == 0


def test_expired_certificate_after_hot_swap_is_a_tls_failure(
    store: FeatureStoreThread, pki: DevPki, metrics: TargetMetrics
) -> None:
    live = pki.feature_store
    original = live.cert.read_bytes(), live.key.read_bytes()

    async def scenario() -> None:
        client = FeatureClient(store.url, pki.ca.cert, metrics, ttl_s=0.0, breaker_threshold=50)
        await client.start()
        assert (await client.get("k")).source == "fresh"  # keep-alive connection in the pool
        now = datetime.now(UTC)
        start, end = now - timedelta(days=3), now - timedelta(hours=1)
        issue_cert(pki.ca, live.cert.parent, "feature-store", not_before=start, not_after=end)
        started = time.monotonic()
        errors: list[str | None] = []
        while "tls: certificate has expired" not in errors:
            assert time.monotonic() - started < 5.0, f"expired cert not seen: {errors}"
            errors.append((await client.get("k")).error)
            await asyncio.sleep(0.02)
        live.key.write_bytes(original[1])
        live.cert.write_bytes(original[0])
        started = time.monotonic()
        while (await client.get("k")).source != "fresh":
            assert time.monotonic() - started < 5.0, "restored cert not picked up"
            await asyncio.sleep(0.02)
        await client.aclose()

    run(scenario())


def test_ca_rotation_rebuilds_the_pool(pki: DevPki, tmp_path: Path, metrics: TargetMetrics) -> None:
    trusted = tmp_path / "trusted.pem"
    shutil.copyfile(pki.ca.cert, trusted)
    new_ca = create_ca(tmp_path / "ca2", common_name="next CA")
    with FeatureStoreThread(store_settings(pki)) as fs:

        async def scenario() -> None:
            client = FeatureClient(fs.url, trusted, metrics, ttl_s=0.0, breaker_threshold=50)
            await client.start()
            assert (await client.get("k")).source == "fresh"
            generation = client.ca_context.generation if client.ca_context else 0
            leaf = issue_cert(new_ca, tmp_path / "leaf", "feature-store")
            shutil.copyfile(leaf.key, pki.feature_store.key)
            shutil.copyfile(leaf.cert, pki.feature_store.cert)
            trusted.write_bytes(new_ca.cert.read_bytes())
            started = time.monotonic()
            while True:
                result = await client.get("k")
                ca = client.ca_context
                if result.source == "fresh" and ca is not None and ca.generation > generation:
                    break
                assert time.monotonic() - started < 5.0, f"rotation not picked up: {result}"
                await asyncio.sleep(0.05)
            await client.aclose()

        run(scenario())


def test_without_a_breaker_stale_features_are_still_served_while_a_refresh_waits(
    store: FeatureStoreThread, pki: DevPki, metrics: TargetMetrics
) -> None:
    """``no_circuit_breaker`` removes the breaker alone: stale-while-revalidate still answers the callers
    that arrive while one refresh of their entity is in flight (what that profile costs is the breaker's)."""

    async def scenario() -> None:
        client = FeatureClient(store.url, pki.ca.cert, metrics, ttl_s=0.0, timeout_s=0.5, use_breaker=False)
        await client.start()
        assert (await client.get("u")).source == "fresh"
        levers(store, pki, delay_ms=2000)  # hung: a refresh waits its full timeout
        first = asyncio.create_task(client.get("u"))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        second = await client.get("u")  # arrives while the first refresh is in flight
        assert second.source in ("cache", "stale_cache") and time.monotonic() - started < 0.1
        assert (await first).error == "timeout"
        await client.aclose()

    run(scenario())
