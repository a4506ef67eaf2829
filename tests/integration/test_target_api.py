"""The real target process: probes, inference, bad input, metrics, drain."""

from __future__ import annotations

import concurrent.futures
import time

import httpx
import numpy as np
import pytest

from faultdrill.target_service.models import load_digits_data

pytestmark = pytest.mark.slow


def test_probes_and_metadata(stack, client):
    assert client.get(f"{stack.base}/v2/health/live").json() == {"live": True}
    ready = client.get(f"{stack.base}/v2/health/ready")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    meta = client.get(f"{stack.base}/v2").json()
    assert meta["device"] == {"kind": "cpu", "name": meta["device"]["name"], "emulated": True,
                              "label": "cpu (emulated)"}  # fmt: skip
    model = client.get(f"{stack.base}/v2/models/digits").json()
    assert model["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]
    assert model["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}]
    assert model["parameters"]["metrics"]["accuracy"] >= 0.95
    assert client.get(f"{stack.base}/v2/models/digits/ready").status_code == 200


def test_real_inference_is_accurate(stack, client, infer_body):
    data = load_digits_data()
    rows, labels = data.X_test[:100], data.y_test[:100]
    r = client.post(f"{stack.base}/v2/models/digits/infer", json=infer_body(rows.tolist()))
    assert r.status_code == 200, r.text
    doc = r.json()
    out = doc["outputs"][0]
    assert out["name"] == "probabilities" and out["shape"] == [100, 10] and out["datatype"] == "FP32"
    probs = np.asarray(out["data"]).reshape(100, 10)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    accuracy = float((probs.argmax(axis=1) == labels).mean())
    assert accuracy >= 0.9, accuracy
    assert doc["parameters"]["predictions"] == probs.argmax(axis=1).tolist()
    assert doc["parameters"]["feature_source"] in ("fresh", "cache")
    assert doc["parameters"]["degraded"] is False
    assert r.headers["x-request-id"]


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"{not json", 400, "malformed JSON"),
        (b"[]", 400, "JSON object"),
        (b'{"inputs": []}', 400, "exactly one tensor"),
        (b'{"inputs":[{"name":"x","shape":[1,64],"datatype":"FP32","data":[]}]}', 400, "unknown input"),
        (b'{"inputs":[{"name":"input","shape":[1,64],"datatype":"INT8","data":[]}]}', 400, "datatype"),
        (b'{"inputs":[{"name":"input","shape":[1,63],"datatype":"FP32","data":[]}]}', 400, "shape"),
        (b'{"inputs":[{"name":"input","shape":[2,64],"datatype":"FP32","data":[1,2]}]}', 400, "needs 128"),
        (b'{"inputs":[{"name":"input","shape":[1,2],"datatype":"FP32","data":["a","b"]}]}', 400, "shape"),
        (b'{"inputs":[{"name":"input","shape":[9999,64],"datatype":"FP32","data":[]}]}', 413, "rows"),
    ],
)
def test_bad_input_is_a_4xx_never_a_500(stack, client, body, status, fragment):
    r = client.post(f"{stack.base}/v2/models/digits/infer", content=body,
                    headers={"content-type": "application/json"})  # fmt: skip
    assert r.status_code == status, r.text
    assert fragment in r.json()["error"]


def test_non_numeric_data_and_unknown_model_and_oversized_body(stack, client):
    bad = {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": ["x"] * 64}]}
    r = client.post(f"{stack.base}/v2/models/digits/infer", json=bad)
    assert r.status_code == 400 and "numbers" in r.json()["error"]
    r = client.post(f"{stack.base}/v2/models/nope/infer", json=bad)
    assert r.status_code == 404 and "nope" in r.json()["error"]
    assert client.get(f"{stack.base}/v2/models/nope").status_code == 404
    r = client.post(f"{stack.base}/v2/models/digits/infer", content=b"x" * 2_000_000)
    assert r.status_code == 413


def test_metric_names_are_exported(stack, client, infer_body):
    from prometheus_client.parser import text_string_to_metric_families

    client.post(f"{stack.base}/v2/models/digits/infer", json=infer_body([[0.0] * 64]))
    text = client.get(f"{stack.base}/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    expected = {
        "inference_request_duration_seconds": "histogram", "inference_queue_duration_seconds": "histogram",
        "inference_compute_duration_seconds": "histogram", "inference_requests": "counter",
        "inference_failures": "counter", "inference_pending_requests": "gauge",
        "inference_running_requests": "gauge", "inference_batch_size": "histogram",
        "circuit_breaker_state": "gauge", "circuit_breaker_transitions": "counter",
        "inference_fallback_responses": "counter", "gpu_memory_used_bytes": "gauge",
        "gpu_memory_total_bytes": "gauge", "gpu_utilization_ratio": "gauge",
        "torch_memory_allocated_bytes": "gauge", "torch_memory_reserved_bytes": "gauge",
        "process_resident_memory_bytes": "gauge", "inference_model_info": "gauge",
        "inference_prediction_confidence": "histogram", "inference_ready": "gauge", "inference_live": "gauge",
        "tls_certificate_expiry_timestamp_seconds": "gauge", "inference_cuda_oom": "counter",
        "inference_device_info": "gauge", "dependency_requests": "counter",
    }  # fmt: skip
    for name, kind in expected.items():
        assert name in families, name
        assert families[name].type == kind, (name, families[name].type)
    assert 'inference_device_info{device="cpu"' in text and 'emulated="true"' in text
    assert "inference_ready 1.0" in text
    expiry = [s for s in families["tls_certificate_expiry_timestamp_seconds"].samples]
    assert expiry and all(s.value > 1.7e9 for s in expiry)
    assert 'inference_requests_total{code="200",model="digits"}' in text


def test_readiness_false_until_model_loaded_while_liveness_true(make_stack, client):
    # Start a target and poll both probes from its first instant.
    stack = make_stack()
    stack.target.stop()
    stack.target.start()
    saw_live_not_ready = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            live = client.get(f"{stack.base}/v2/health/live").status_code
            ready = client.get(f"{stack.base}/v2/health/ready")
        except httpx.HTTPError:
            time.sleep(0.02)
            continue
        if live == 200 and ready.status_code == 503:
            assert ready.json()["reason"] == "model loading"
            saw_live_not_ready = True
        if ready.status_code == 200:
            break
        time.sleep(0.02)
    assert saw_live_not_ready
    assert client.get(f"{stack.base}/v2/health/ready").status_code == 200


def test_sigterm_drains_in_flight_and_exits_zero(make_stack, infer_body):
    stack = make_stack({"FAULTDRILL_SHUTDOWN_DELAY_S": "1.0"})
    admin = httpx.Client(timeout=10, headers=stack.admin_headers())
    # Hold the worker so requests are in flight when SIGTERM arrives.
    admin.post(f"{stack.admin}/admin/worker/freeze", json={"seconds": 1.0})
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(httpx.post, f"{stack.base}/v2/models/digits/infer",
                               json=infer_body([[0.5] * 64]), timeout=10) for _ in range(4)]  # fmt: skip
        time.sleep(0.3)
        stack.target.signal(15)
        time.sleep(0.1)
        # Readiness is false first (the shutdown delay keeps the port open meanwhile),
        # while the in-flight requests still complete.
        ready = httpx.get(f"{stack.base}/v2/health/ready", timeout=1)
        assert ready.status_code == 503 and ready.json()["reason"] == "draining"
        assert httpx.get(f"{stack.base}/v2/health/live", timeout=1).status_code == 200
        codes = [f.result().status_code for f in futures]
    assert codes == [200] * 4
    assert stack.target.proc.wait(15) == 0
    admin.close()


def test_corrupt_model_fails_startup_with_clear_log(tmp_path, model_registry, client):
    import shutil
    import sys

    from faultdrill.experiments.host.process import ServiceProcess, free_port

    registry = tmp_path / "registry"
    shutil.copytree(model_registry, registry)
    artifact = registry / "digits" / "1" / "model.pt"
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artifact.write_bytes(bytes(data))
    port = free_port()
    proc = ServiceProcess("target", [sys.executable, "-m", "faultdrill.target_service", "serve"],
                          env={"FAULTDRILL_PORT": str(port), "FAULTDRILL_MODEL_REGISTRY": str(registry)},
                          log_path=tmp_path / "t.log")  # fmt: skip
    proc.start()
    assert proc.proc.wait(60) == 1
    log = (tmp_path / "t.log").read_text()
    assert "model load failed" in log and "checksum" in log
    assert "Traceback" not in log
