"""Per-client rate limiting: token-bucket maths, identity, configuration errors, and the real target
over HTTP (429 + Retry-After + RateLimit headers for one client while another is served; the API key
never in logs or metrics)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from faultdrill.experiments.host.process import ServiceProcess, free_port
from faultdrill.target_service.config import Misconfiguration, TargetSettings
from faultdrill.target_service.metrics import TargetMetrics
from faultdrill.target_service.ratelimit import (
    Limit,
    RateLimiter,
    RateLimitTable,
    TokenBucket,
    client_identity,
    hash_api_key,
    limiter_for,
    parse_rate_limits,
)

SECRET = "sk-live-7f3a9c-do-not-log"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def limiter(table: dict[str, object] | None = None, *, rps: float = 2, burst: int = 4, max_clients: int = 100,
            metrics: TargetMetrics | None = None) -> tuple[RateLimiter, Clock]:  # fmt: skip
    clock = Clock()
    t = parse_rate_limits(table) or RateLimitTable()
    return RateLimiter(t, default=Limit(rps=rps, burst=burst), max_clients=max_clients, metrics=metrics,
                       clock=clock), clock  # fmt: skip


def as_client(name: str) -> list[tuple[bytes, bytes]]:
    return [(b"x-client-id", name.encode())]


# -- token bucket ----------------------------------------------------------------------------------
def test_bucket_spends_its_burst_then_refills_at_its_rate() -> None:
    b = TokenBucket(rps=2.0, burst=3, last=0.0)
    assert [b.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert b.retry_after_s() == 1  # 0.5 s to the next token, rounded up
    assert not b.take(0.4)
    assert b.take(0.5)  # one token after 1/rps
    assert b.reset_s() == 2  # 3 tokens missing at 2/s: 1.5 s, rounded up
    assert b.take(10.0) and b.tokens == pytest.approx(2.0)  # refilled to burst, never beyond


def test_retry_after_rounds_up_for_slow_rates() -> None:
    b = TokenBucket(rps=0.25, burst=1, last=0.0)
    assert b.take(0.0) and not b.take(0.0)
    assert b.retry_after_s() == 4
    b.refill(3.0)
    assert b.retry_after_s() == 1


# -- the limiter -----------------------------------------------------------------------------------
def test_clients_have_separate_buckets_and_configured_limits() -> None:
    lim, clock = limiter({"clients": {"tenant-a": {"rps": 100, "burst": 10}}}, rps=1, burst=2)
    flood = [lim.check(as_client("flooder")) for _ in range(5)]
    assert [d.allowed for d in flood] == [True, True, False, False, False]
    assert flood[-1].client == "other"
    assert flood[-1].headers == {"ratelimit-limit": "2", "ratelimit-remaining": "0", "ratelimit-reset": "2",
                                 "retry-after": "1"}  # fmt: skip
    tenant = [lim.check(as_client("tenant-a")) for _ in range(10)]
    assert all(d.allowed for d in tenant) and tenant[0].client == "tenant-a"
    assert lim.check([]).client == "anonymous" and lim.check([]).allowed
    clock.now += 1.0
    assert lim.check(as_client("flooder")).allowed


def test_api_key_is_hashed_and_matches_a_configured_client() -> None:
    digest = hash_api_key(SECRET)
    metrics = TargetMetrics(CollectorRegistry(), model="digits")
    lim, _ = limiter({"clients": {"tenant-b": {"rps": 1, "burst": 1, "api_key_sha256": digest}}}, metrics=metrics)
    key_headers = [(b"x-api-key", SECRET.encode()), (b"x-client-id", b"tenant-a")]
    assert client_identity(key_headers) == (f"key:{digest}", digest)  # the key wins over a claimed id
    first, second = lim.check(key_headers), lim.check(key_headers)
    assert (first.allowed, second.allowed, second.client) == (True, False, "tenant-b")
    unknown = lim.check([(b"x-api-key", b"another-key")])
    assert unknown.client == "other"
    assert all(SECRET not in key for key in lim.buckets)
    exposition = generate_latest(metrics.registry).decode()
    assert SECRET not in exposition and digest not in exposition
    assert 'ratelimit_requests_total{client="tenant-b",decision="limited"} 1.0' in exposition


def test_idle_buckets_are_evicted_and_memory_is_bounded() -> None:
    metrics = TargetMetrics(CollectorRegistry(), model="digits")
    lim, clock = limiter(rps=1, burst=2, max_clients=3, metrics=metrics)
    for name in ("a", "b", "c"):
        lim.check(as_client(name))
    clock.now += 5.0  # every bucket is full again: dropping it loses nothing
    lim.check(as_client("d"))
    assert list(lim.buckets) == ["id:d"]
    for name in ("e", "f", "g", "h"):  # all busy: the least recently used goes
        lim.check(as_client(name))
    assert len(lim.buckets) == 3 and "id:d" not in lim.buckets
    assert metrics.ratelimit_evictions._value.get() == 2  # d and e were not full yet
    assert metrics.ratelimit_tracked._value.get() == 3


def test_no_rate_limit_misconfiguration_turns_it_off() -> None:
    on = TargetSettings(rate_limit_rps=5, rate_limit_burst=5)
    off = TargetSettings(rate_limit_rps=5, misconfigurations=[Misconfiguration.no_rate_limit])
    assert limiter_for(on, None) is not None
    assert limiter_for(off, None) is None


def test_nothing_is_limited_until_limits_are_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    assert limiter_for(TargetSettings(), None) is None  # anonymous traffic would share one bucket
    table = limiter_for(TargetSettings(rate_limits={"clients": {"tenant-a": {"rps": 1, "burst": 1}}}), None)
    assert table is not None and table.default.rps == 1000.0
    monkeypatch.setenv("FAULTDRILL_RATE_LIMIT_BURST", "7")  # set through the environment, as a deployment does
    from_env = limiter_for(TargetSettings(), None)
    assert from_env is not None and from_env.default.burst == 7


# -- configuration errors --------------------------------------------------------------------------
def test_inline_json_errors_are_located_with_did_you_mean() -> None:
    with pytest.raises(ValueError, match=r"FAULTDRILL_RATE_LIMITS line 1: clients\.a\.brust: .*did you mean 'burst'"):
        parse_rate_limits('{"clients": {"a": {"rps": 5, "brust": 10}}}')
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_rate_limits('{"clients": ')
    with pytest.raises(ValueError, match=r"clients\.other: a client name"):
        parse_rate_limits({"clients": {"other": {"rps": 1, "burst": 1}}})


def test_yaml_file_errors_name_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "limits.yaml"
    path.write_text("default: {rps: 10, burst: 20}\nclients:\n  tenant-a:\n    rps: -3\n    burst: 5\n")
    with pytest.raises(ValueError, match=rf"{path} line 4: clients\.tenant-a\.rps: Input should be greater than 0"):
        parse_rate_limits(str(path))
    path.write_text("clients:\n  tenant-a: {rps: 3, burst: 5}\n")
    table = TargetSettings(rate_limits=str(path)).rate_limits
    assert table is not None and table.clients["tenant-a"].burst == 5
    with pytest.raises(ValueError, match="cannot read rate limits"):
        parse_rate_limits(str(tmp_path / "missing.yaml"))


# -- the real target over HTTP ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    from faultdrill.target_service.registry import ModelRegistry

    root = tmp_path_factory.mktemp("ratelimit")
    ModelRegistry(root / "registry").ensure_defaults()
    port, log = free_port(), root / "target.log"
    limits = {"clients": {"batch": {"rps": 0.5, "burst": 2},
                          "keyed": {"rps": 0.5, "burst": 1, "api_key_sha256": hash_api_key(SECRET)}}}
    env = {"FAULTDRILL_PORT": str(port), "FAULTDRILL_MODEL_REGISTRY": str(root / "registry"),
           "FAULTDRILL_DEVICE": "cpu", "FAULTDRILL_RATE_LIMITS": json.dumps(limits), "FAULTDRILL_LOG_LEVEL": "debug"}
    svc = ServiceProcess("target", [sys.executable, "-m", "faultdrill.target_service", "serve"], env=env, log_path=log)
    svc.start()
    try:
        svc.wait_http(f"http://127.0.0.1:{port}/v2/models/digits", 60)
        yield f"http://127.0.0.1:{port}", log
    finally:
        svc.stop()


BODY = {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [3.0] * 64}]}


def test_target_answers_429_to_one_client_while_serving_another(target: tuple[str, Path]) -> None:
    url, _ = target
    with httpx.Client(base_url=url, timeout=10) as http:
        batch = [http.post("/v2/models/digits/infer", json=BODY, headers={"X-Client-Id": "batch"}) for _ in range(3)]
        tenant = [http.post("/v2/models/digits/infer", json=BODY, headers={"X-Client-Id": "tenant-a"})
                  for _ in range(5)]  # fmt: skip
        # Checked before any work: an unparsable body of a throttled client is still a 429, not a 400.
        junk = http.post("/v2/models/digits/infer", content=b"{not json", headers={"X-Client-Id": "batch"})
        metrics = http.get("/metrics").text
    assert [r.status_code for r in batch] == [200, 200, 429]
    limited = batch[2]
    assert limited.headers["retry-after"] == "2"  # 1 token at 0.5/s
    assert limited.headers["ratelimit-limit"] == "2" and limited.headers["ratelimit-remaining"] == "0"
    assert int(limited.headers["ratelimit-reset"]) in (4, 3)
    assert "rate limit exceeded for client 'batch'" in limited.json()["error"]
    assert [r.status_code for r in tenant] == [200] * 5
    assert tenant[0].headers["ratelimit-limit"] == "2000"  # the default limit of unconfigured clients
    assert junk.status_code == 429
    assert 'ratelimit_requests_total{client="batch",decision="limited"} 2.0' in metrics
    assert 'inference_failures_total{model="digits",reason="rate_limited"} 2.0' in metrics


def test_api_key_is_never_logged_nor_a_label(target: tuple[str, Path]) -> None:
    url, log = target
    with httpx.Client(base_url=url, timeout=10) as http:
        codes = [http.post("/v2/models/digits/infer", json=BODY, headers={"X-API-Key": SECRET}).status_code
                 for _ in range(2)]  # fmt: skip
        metrics = http.get("/metrics").text
    assert codes == [200, 429]
    assert 'ratelimit_requests_total{client="keyed",decision="limited"} 1.0' in metrics
    assert SECRET not in metrics and hash_api_key(SECRET) not in metrics
    assert log.read_text().strip() and SECRET not in log.read_text()
