"""The target's resilience features, each exercised for real against running processes."""

from __future__ import annotations

import concurrent.futures
import shutil
import time
from collections.abc import Callable

import httpx
import pytest

pytestmark = pytest.mark.slow


def wait_for(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.1) -> float:
    """Poll until ``predicate()``; return the seconds it took. Bounded."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if predicate():
            return time.monotonic() - t0
        time.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s}s")


def infer(client: httpx.Client, base: str, body: dict) -> httpx.Response:
    return client.post(f"{base}/v2/models/digits/infer", json=body)


def test_overload_is_shed_with_retry_after(make_stack, infer_body):
    stack = make_stack({"FAULTDRILL_MAX_QUEUE_SIZE": "2", "FAULTDRILL_MAX_BATCH_SIZE": "1"})
    with httpx.Client(timeout=10, headers=stack.admin_headers()) as admin:
        assert admin.post(f"{stack.admin}/admin/worker/freeze", json={"seconds": 1.5}).status_code == 200
    body = infer_body([[0.5] * 64])
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(httpx.post, f"{stack.base}/v2/models/digits/infer", json=body, timeout=10)
                   for _ in range(8)]  # fmt: skip
        responses = [f.result() for f in futures]
    codes = sorted(r.status_code for r in responses)
    shed = [r for r in responses if r.status_code == 503]
    # The worker holds at most one batch (1 row) plus 2 queued; the rest are shed at once.
    assert codes.count(200) <= 3 and len(shed) >= 5, codes
    assert all(r.headers["retry-after"] == "1" and "queue is full" in r.json()["error"] for r in shed)
    metrics = httpx.get(f"{stack.base}/metrics").text
    assert 'inference_failures_total{model="digits",reason="shed"}' in metrics


def test_shed_status_can_be_429(make_stack, infer_body):
    stack = make_stack({"FAULTDRILL_MAX_QUEUE_SIZE": "1", "FAULTDRILL_MAX_BATCH_SIZE": "1",
                        "FAULTDRILL_SHED_STATUS": "429", "FAULTDRILL_RETRY_AFTER_S": "3"})  # fmt: skip
    with httpx.Client(timeout=10, headers=stack.admin_headers()) as admin:
        admin.post(f"{stack.admin}/admin/worker/freeze", json={"seconds": 1.0})
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(httpx.post, f"{stack.base}/v2/models/digits/infer",
                               json=infer_body([[0.1] * 64]), timeout=10) for _ in range(6)]  # fmt: skip
        responses = [f.result() for f in futures]
    limited = [r for r in responses if r.status_code == 429]
    assert limited and all(r.headers["retry-after"] == "3" for r in limited)


def test_breaker_opens_falls_back_and_recovers_when_store_stops(make_stack, infer_body, client):
    stack = make_stack()
    body = infer_body([[0.3] * 64])
    assert infer(client, stack.base, body).json()["parameters"]["feature_source"] in ("fresh", "cache")
    stack.store.stop()
    sources = [infer(client, stack.base, body) for _ in range(10)]
    assert all(r.status_code == 200 for r in sources)
    assert sources[-1].json()["parameters"]["degraded"] is True
    assert sources[-1].json()["parameters"]["feature_source"] in ("stale_cache", "default")
    assert client.get(f"{stack.base}/v2").json()["dependency"]["breaker"] == "open"
    metrics = client.get(f"{stack.base}/metrics").text
    assert 'circuit_breaker_state{dependency="feature_store"} 1.0' in metrics
    # Open breaker: requests no longer wait for the dependency's timeout.
    t0 = time.monotonic()
    for _ in range(5):
        infer(client, stack.base, body)
    assert (time.monotonic() - t0) / 5 < 0.2
    stack.start_store()

    def recovered() -> bool:
        params = infer(client, stack.base, body).json()["parameters"]
        return params["feature_source"] in ("fresh", "cache") and not params["degraded"]

    wait_for(recovered, 15, 0.2)
    assert client.get(f"{stack.base}/v2").json()["dependency"]["breaker"] == "closed"
    metrics = client.get(f"{stack.base}/metrics").text
    assert 'from_state="open",to_state="half-open"' in metrics
    assert 'from_state="half-open",to_state="closed"' in metrics


def test_expired_certificate_is_rejected_after_hot_swap(make_stack, infer_body, client, tmp_path):
    from datetime import UTC, datetime, timedelta

    from faultdrill.target_service.pki import issue_cert

    stack = make_stack()
    body = infer_body([[0.7] * 64])
    assert infer(client, stack.base, body).json()["parameters"]["degraded"] is False
    cert, key = stack.pki.feature_store.cert, stack.pki.feature_store.key
    original = (cert.read_bytes(), key.read_bytes())
    now = datetime.now(UTC)
    expired = issue_cert(stack.pki.ca, tmp_path, "expired", not_before=now - timedelta(days=30),
                         not_after=now - timedelta(days=1))  # fmt: skip
    try:
        shutil.copyfile(expired.key, key)
        shutil.copyfile(expired.cert, cert)

        def rejected() -> bool:
            params = infer(client, stack.base, body).json()["parameters"]
            return params["degraded"] is True

        took = wait_for(rejected, 15, 0.1)

        def breaker_open() -> bool:
            assert infer(client, stack.base, body).status_code == 200  # degraded, still serving
            return bool(client.get(f"{stack.base}/v2").json()["dependency"]["breaker"] == "open")

        wait_for(breaker_open, 10, 0.05)
        meta = client.get(f"{stack.base}/v2").json()
        assert took < 10 and meta["ready"] is True
        assert "expired" in meta["dependency"]["last_error"], meta
        assert "expired" in infer(client, stack.base, body).json()["parameters"]["feature_error"]
        assert "circuit breaker closed -> open" in stack.target.log_tail(300)
        text = client.get(f"{stack.base}/metrics").text
        assert 'dependency_requests_total{dependency="feature_store",outcome="error"}' in text
    finally:
        key.write_bytes(original[1])
        cert.write_bytes(original[0])
    wait_for(lambda: infer(client, stack.base, body).json()["parameters"]["degraded"] is False, 15, 0.2)


def test_emulated_oom_gives_507_unready_then_recovers(make_stack, infer_body, client):
    stack = make_stack({"FAULTDRILL_OOM_UNREADY_THRESHOLD": "2", "FAULTDRILL_OOM_WINDOW_S": "30"})
    admin = httpx.Client(timeout=10, headers=stack.admin_headers())
    body = infer_body([[0.2] * 64] * 4)
    try:
        state = admin.post(f"{stack.admin}/admin/device-memory/hold", json={"leave_free_mib": 0}).json()
        assert state["emulated"] is True and state["device_memory_held_bytes"] > 0
        codes = [infer(client, stack.base, body).status_code for _ in range(3)]
        assert codes.count(507) >= 2, codes
        r = infer(client, stack.base, body)
        assert r.status_code == 507 and "out of memory" in r.json()["error"]
        ready = client.get(f"{stack.base}/v2/health/ready")
        assert ready.status_code == 503 and "out of memory" in ready.json()["reason"]
        assert client.get(f"{stack.base}/v2/health/live").status_code == 200  # never GPU memory
        metrics = client.get(f"{stack.base}/metrics").text
        assert 'inference_cuda_oom_total{model="digits"}' in metrics
        assert 'inference_failures_total{model="digits",reason="oom"}' in metrics
        admin.post(f"{stack.admin}/admin/device-memory/release", json={})
        took = wait_for(lambda: client.get(f"{stack.base}/v2/health/ready").status_code == 200, 10, 0.05)
        assert took < 5
        assert infer(client, stack.base, body).status_code == 200
    finally:
        admin.post(f"{stack.admin}/admin/device-memory/release", json={})
        admin.close()


def test_frozen_worker_fails_liveness_not_the_dependency(make_stack, client):
    stack = make_stack({"FAULTDRILL_LIVENESS_STALL_S": "1"})
    with httpx.Client(timeout=10, headers=stack.admin_headers()) as admin:
        admin.post(f"{stack.admin}/admin/worker/freeze", json={"seconds": 30})
        wait_for(lambda: client.get(f"{stack.base}/v2/health/live").status_code == 503, 5)
        admin.post(f"{stack.admin}/admin/worker/unfreeze")
    wait_for(lambda: client.get(f"{stack.base}/v2/health/live").status_code == 200, 5)
    # The dependency going away never fails liveness (default profile).
    stack.store.stop()
    for _ in range(8):
        client.post(f"{stack.base}/v2/models/digits/infer",
                    json={"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32",
                                      "data": [0.0] * 64}]})  # fmt: skip
    assert client.get(f"{stack.base}/v2/health/live").status_code == 200


def test_admin_api_needs_token_and_binds_loopback(stack, client):
    assert client.get(f"{stack.admin}/admin/state").status_code == 401
    bad = {"Authorization": "Bearer wrong"}
    assert client.get(f"{stack.admin}/admin/state", headers=bad).status_code == 401
    assert client.get(f"{stack.admin}/admin/state", headers=stack.admin_headers()).status_code == 200
    r = client.post(f"{stack.admin}/admin/worker/freeze", json={"seconds": "x"}, headers=stack.admin_headers())
    assert r.status_code == 400
    import psutil

    listeners = [c for c in psutil.net_connections("tcp")
                 if c.status == "LISTEN" and c.laddr.port == stack.admin_port]  # fmt: skip
    assert listeners and all(c.laddr.ip == "127.0.0.1" for c in listeners)
    assert stack.token not in stack.target.log_tail(500)


def test_misconfiguration_readiness_ignores_oom(make_stack, infer_body, client):
    stack = make_stack({"FAULTDRILL_MISCONFIGURATIONS": "readiness_ignores_model",
                        "FAULTDRILL_OOM_UNREADY_THRESHOLD": "1"})  # fmt: skip
    assert "MISCONFIGURATION PROFILE ON" in stack.target.log_tail(100)
    with httpx.Client(timeout=10, headers=stack.admin_headers()) as admin:
        admin.post(f"{stack.admin}/admin/device-memory/hold", json={"leave_free_mib": 0})
        assert infer(client, stack.base, infer_body([[0.2] * 64] * 4)).status_code == 507
        assert client.get(f"{stack.base}/v2/health/ready").status_code == 200  # the mistake
        admin.post(f"{stack.admin}/admin/device-memory/release", json={})


def test_misconfiguration_liveness_checks_dependency(make_stack, infer_body, client):
    stack = make_stack({"FAULTDRILL_MISCONFIGURATIONS": "liveness_checks_dependency"})
    stack.store.stop()
    for _ in range(3):
        infer(client, stack.base, infer_body([[0.2] * 64]))
    assert client.get(f"{stack.base}/v2/health/live").status_code == 503  # the mistake


def test_without_feature_store_target_starts_and_serves_fallback(make_stack, infer_body, client):
    stack = make_stack(with_store=False)
    r = infer(client, stack.base, infer_body([[0.2] * 64]))
    assert r.status_code == 200
    assert r.json()["parameters"]["degraded"] is True
    assert r.json()["parameters"]["feature_source"] == "default"
