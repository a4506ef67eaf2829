"""The feature store for real on loopback: HTTPS, hot reload, draining, chaos levers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from faultdrill.target_service.config import FeatureStoreSettings
from faultdrill.target_service.feature_store import FeatureStoreThread, create_feature_store_app, features_for
from faultdrill.target_service.pki import DevPki, cert_info, create_ca, ensure_dev_pki, issue_cert

TOKEN = "s3cret-token"
REPO = Path(__file__).resolve().parents[3]


def cert_expiry_samples(text: str) -> dict[str, float]:
    """The exported certificate-expiry gauge by subject, parsed as Prometheus parses it."""
    return {
        sample.labels["subject"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "tls_certificate_expiry_timestamp_seconds"
        for sample in family.samples
    }


@pytest.fixture
def pki(tmp_path: Path) -> DevPki:
    return ensure_dev_pki(tmp_path / "pki")


@pytest.fixture
def store(pki: DevPki) -> Iterator[FeatureStoreThread]:
    settings = FeatureStoreSettings.model_validate(
        {
            "port": 0,
            "tls_cert_file": pki.feature_store.cert,
            "tls_key_file": pki.feature_store.key,
            "cert_reload_interval_s": 0.05,
            "admin_token": TOKEN,
        }
    )
    with FeatureStoreThread(settings) as fs:
        yield fs


def verifying(pki: DevPki) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki.ca.cert))


def wait_reload(fs: FeatureStoreThread, generation: int, bound_s: float = 3.0) -> float:
    started = time.monotonic()
    while fs.app.state.tls.generation < generation:
        assert time.monotonic() - started < bound_s, "certificate reload not seen"
        time.sleep(0.005)
    return time.monotonic() - started


def test_features_are_deterministic_and_well_formed() -> None:
    a, b = features_for("user-1"), features_for("user-1")
    assert a == b and a != features_for("user-2")
    assert a["temperature"] > 0 and len(a["bias"]) == 10 and a["version"] == "1"
    assert features_for("default")["entity"] == "default"


def test_serves_features_health_and_metrics_over_verified_tls(
    store: FeatureStoreThread, pki: DevPki
) -> None:
    with httpx.Client(base_url=store.url, verify=verifying(pki), timeout=5) as c:
        r = c.get("/v1/features/user%201")
        assert r.status_code == 200 and r.json() == features_for("user 1")
        assert c.get("/v1/features/default").json()["entity"] == "default"
        assert c.get("/healthz").json() == {"status": "ok"}
        assert c.get("/v1/features/" + "x" * 300).status_code == 400
        text = c.get("/metrics").text
    assert 'feature_store_requests_total{code="200",endpoint="features"} 2.0' in text
    assert "feature_store_request_duration_seconds_bucket" in text
    expiry = cert_info(pki.feature_store.cert).not_after.timestamp()
    assert cert_expiry_samples(text) == {"CN=feature-store,O=faultdrill": expiry}
    with (
        httpx.Client(base_url=store.url, timeout=5) as untrusting,  # system CAs only
        pytest.raises(httpx.ConnectError, match="unable to get local issuer"),
    ):
        untrusting.get("/healthz")


def test_expired_swap_rejects_new_and_drained_keepalive_clients_then_rollback(
    store: FeatureStoreThread, pki: DevPki
) -> None:
    live = pki.feature_store
    original = live.cert.read_bytes(), live.key.read_bytes()
    keepalive = httpx.Client(base_url=store.url, verify=verifying(pki), timeout=5)
    assert keepalive.get("/healthz").headers.get("connection") != "close"

    now = datetime.now(UTC)
    issue_cert(pki.ca, live.cert.parent, "feature-store",
               not_before=now - timedelta(days=30), not_after=now - timedelta(days=1))  # fmt: skip
    reload_s = wait_reload(store, 2)
    assert reload_s < 1.0

    with pytest.raises(httpx.ConnectError, match="certificate has expired"):
        httpx.get(store.url + "/healthz", verify=verifying(pki), timeout=5)
    # The keep-alive connection predates the reload: answered once, told to close...
    drained = keepalive.get("/healthz")
    assert drained.status_code == 200 and drained.headers["connection"] == "close"
    # ...so its next request reconnects and meets the expired certificate.
    with pytest.raises(httpx.ConnectError, match="certificate has expired"):
        keepalive.get("/healthz")
    metrics = httpx.get(store.url + "/metrics", verify=False, timeout=5).text
    assert cert_expiry_samples(metrics) == {"CN=feature-store,O=faultdrill": cert_info(live.cert).not_after.timestamp()}

    live.key.write_bytes(original[1])  # rollback, byte for byte, no restart
    live.cert.write_bytes(original[0])
    wait_reload(store, 3)
    assert keepalive.get("/healthz").status_code == 200
    keepalive.close()
    assert store.app.state.drainer.drained >= 1


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("wrong_ca", "unable to get local issuer certificate"),
        ("wrong_host", "IP address mismatch"),
        ("not_yet_valid", "certificate is not yet valid"),
    ],
)
def test_bad_certificates_are_rejected(
    store: FeatureStoreThread, pki: DevPki, tmp_path: Path, kind: str, message: str
) -> None:
    now = datetime.now(UTC)
    if kind == "wrong_ca":
        bad = issue_cert(create_ca(tmp_path / "rogue"), tmp_path, "bad")
    elif kind == "wrong_host":
        bad = issue_cert(pki.ca, tmp_path, "bad", hosts=("elsewhere.example", "10.1.2.3"))
    else:
        bad = issue_cert(pki.ca, tmp_path, "bad", not_before=now + timedelta(days=2))
    shutil.copyfile(bad.key, pki.feature_store.key)
    shutil.copyfile(bad.cert, pki.feature_store.cert)
    wait_reload(store, 2)
    with pytest.raises(httpx.ConnectError, match=message):
        httpx.get(store.url + "/healthz", verify=verifying(pki), timeout=5)


def test_admin_levers_need_the_token(store: FeatureStoreThread, pki: DevPki) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=store.url, verify=verifying(pki), timeout=5) as c:
        r = c.post("/admin/faults", json={"error_rate": 1})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert c.post("/admin/faults", json={"error_rate": 1},
                      headers={"Authorization": "Bearer wrong"}).status_code == 401  # fmt: skip
        assert c.delete("/admin/faults", headers={"Authorization": TOKEN}).status_code == 401
        assert c.post("/admin/faults", json={"error_rate": 2}, headers=auth).status_code == 422
        assert c.post("/admin/faults", json={"bogus": 1}, headers=auth).status_code == 422

        r = c.post("/admin/faults", json={"error_rate": 1.0, "error_status": 502}, headers=auth)
        assert r.json() == {"error_rate": 1.0, "error_status": 502, "delay_ms": 0.0}
        assert [c.get(f"/v1/features/u{i}").status_code for i in range(5)] == [502] * 5
        assert c.get("/healthz").status_code == 200  # levers act on features only

        c.post("/admin/faults", json={"error_rate": 0.5}, headers=auth)
        codes = [c.get(f"/v1/features/u{i}").status_code for i in range(200)]
        assert 40 < codes.count(503) < 160 and set(codes) == {200, 503}

        c.post("/admin/faults", json={"delay_ms": 200}, headers=auth)
        started = time.monotonic()
        assert c.get("/v1/features/slow").status_code == 200
        assert 0.19 < time.monotonic() - started < 2.0
        assert "feature_store_injected_delay_seconds 0.2" in c.get("/metrics").text

        assert c.delete("/admin/faults", headers=auth).json()["delay_ms"] == 0.0
        assert c.get("/admin/faults", headers=auth).json() == {
            "error_rate": 0.0, "error_status": 503, "delay_ms": 0.0,
        }  # fmt: skip
        assert c.get("/v1/features/u1").status_code == 200


def test_admin_endpoints_absent_without_a_token() -> None:
    with FeatureStoreThread(
        FeatureStoreSettings.model_validate({"port": 0})
    ) as fs:  # plain HTTP, no token
        r = httpx.post(fs.url + "/admin/faults", json={"error_rate": 1},
                       headers={"Authorization": "Bearer anything"}, timeout=5)  # fmt: skip
        assert r.status_code == 404
        assert httpx.get(fs.url + "/v1/features/x", timeout=5).status_code == 200


def test_tls_cert_without_key_is_refused(pki: DevPki) -> None:
    with pytest.raises(ValueError):
        create_feature_store_app(
            FeatureStoreSettings.model_validate({"tls_cert_file": pki.feature_store.cert}),
            CollectorRegistry(),
        )


def test_serve_feature_store_process_logs_json_and_exits_zero_on_sigterm(
    pki: DevPki, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "FAULTDRILL_FS_PORT": "0",
        "FAULTDRILL_FS_TLS_CERT_FILE": str(pki.feature_store.cert),
        "FAULTDRILL_FS_TLS_KEY_FILE": str(pki.feature_store.key),
        "FAULTDRILL_FS_ADMIN_TOKEN": TOKEN,
        "PYTHONPATH": str(REPO),
    }
    # Port 0, and uvicorn's startup line tells the port: no race for a free one.
    code = (
        "import sys\n"
        "from target_service.config import FeatureStoreSettings\n"
        "from target_service.feature_store import serve_feature_store\n"
        "sys.exit(serve_feature_store(FeatureStoreSettings()))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], env=env, cwd=tmp_path,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: list[str] = []
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 30
        port = None
        while port is None:
            assert time.monotonic() < deadline, f"no startup line: {lines}"
            line = proc.stderr.readline()
            assert line, f"process ended: {lines}"
            lines.append(line)
            doc = json.loads(line)  # every line is JSON
            if "running on" in doc["msg"].lower():
                port = int(doc["msg"].split(":")[-1].split()[0])
        r = httpx.get(f"https://127.0.0.1:{port}/v1/features/a", verify=verifying(pki), timeout=5)
        assert r.status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        rest = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert TOKEN not in "".join(lines) + rest
    assert all(json.loads(x)["component"] == "feature-store" for x in rest.splitlines() if x)
