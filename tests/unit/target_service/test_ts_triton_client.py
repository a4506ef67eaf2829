"""The official Triton HTTP client (``tritonclient.http``, sync and asyncio) against the real target: what a
new user tries first. Its defaults use the binary tensor data extension both ways; every combination must
answer exactly what the plain-JSON path answers for the same rows (the same model: the same numbers)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from faultdrill.target_service.models import load_digits_data

httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient[http] is in the dev extra")
from tritonclient.utils import InferenceServerException  # noqa: E402

MODEL, INPUT, OUTPUT = "digits", "input", "probabilities"
DATA = load_digits_data()
ROWS = np.ascontiguousarray(DATA.X_test[:8], dtype=np.float32)


@pytest.fixture(scope="module")
def client(served_target: Any) -> Iterator[Any]:
    c = httpclient.InferenceServerClient(url=served_target.host_port, network_timeout=30.0)
    yield c
    c.close()


def _json_answer(url: str, rows: np.ndarray) -> np.ndarray:
    """The plain-JSON path's probabilities for ``rows`` (no extension anywhere in the request)."""
    tensor = {"name": INPUT, "shape": list(rows.shape), "datatype": "FP32", "data": rows.reshape(-1).tolist()}
    body = {"inputs": [tensor]}
    resp = httpx.post(f"{url}/v2/models/{MODEL}/infer", json=body, timeout=30)
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json", resp.text
    out = resp.json()["outputs"][0]
    return np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])


@pytest.fixture(scope="module")
def json_path(served_target: Any) -> np.ndarray:
    return _json_answer(served_target.url, ROWS)


def _input(rows: np.ndarray, *, binary: bool, datatype: str = "FP32", name: str = INPUT) -> Any:
    tensor = httpclient.InferInput(name, list(rows.shape), datatype)
    tensor.set_data_from_numpy(rows, binary_data=binary)
    return tensor


def test_health_and_metadata(client: Any) -> None:
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(MODEL)
    assert client.is_model_ready(MODEL, model_version="1")
    server = client.get_server_metadata()
    assert server["name"] == "faultdrill-target" and "binary_tensor_data" in server["extensions"]
    meta = client.get_model_metadata(MODEL)
    assert meta["name"] == MODEL and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": INPUT, "datatype": "FP32", "shape": [-1, 64]}]
    assert meta["outputs"] == [{"name": OUTPUT, "datatype": "FP32", "shape": [-1, 10]}]


def test_the_defaults_binary_inputs_and_outputs(client: Any, json_path: np.ndarray) -> None:
    # No outputs named: the client asks for every output as binary data (parameters.binary_data_output).
    result = client.infer(MODEL, [_input(ROWS, binary=True)], request_id="triton-1")
    probs = result.as_numpy(OUTPUT)
    assert probs.dtype == np.float32 and probs.shape == (8, 10)
    assert np.array_equal(probs, json_path)
    response = result.get_response()
    assert response["id"] == "triton-1" and response["model_name"] == MODEL
    assert response["outputs"][0]["parameters"] == {"binary_data_size": 8 * 10 * 4}
    assert response["parameters"]["predictions"] == probs.argmax(axis=1).tolist()
    assert result.get_output(OUTPUT)["shape"] == [8, 10]


@pytest.mark.parametrize(("binary_in", "binary_out"), [(True, True), (False, True), (True, False), (False, False)])
def test_every_mix_of_binary_and_json_answers_what_json_answers(client: Any, json_path: np.ndarray, binary_in: bool,
                                                                binary_out: bool) -> None:  # fmt: skip
    outputs = [httpclient.InferRequestedOutput(OUTPUT, binary_data=binary_out)]
    result = client.infer(MODEL, [_input(ROWS, binary=binary_in)], outputs=outputs)
    assert np.array_equal(result.as_numpy(OUTPUT), json_path)
    data = result.get_output(OUTPUT)
    assert ("data" in data) is not binary_out and ("parameters" in data) is binary_out


def test_one_row_at_a_time_and_the_versioned_route(client: Any, served_target: Any, json_path: np.ndarray) -> None:
    for i in (0, 5):
        row = ROWS[i:i + 1]
        result = client.infer(MODEL, [_input(row, binary=True)], model_version="1")
        # bit for bit against JSON for the same one row; a row computed in a batch of 8 differs in the last bits
        # (another BLAS kernel), as on any server
        assert np.array_equal(result.as_numpy(OUTPUT), _json_answer(served_target.url, row))
        assert np.allclose(result.as_numpy(OUTPUT), json_path[i:i + 1], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests(client: Any, json_path: np.ndarray, algorithm: str) -> None:
    result = client.infer(MODEL, [_input(ROWS, binary=True)], request_compression_algorithm=algorithm,
                          response_compression_algorithm=algorithm)  # fmt: skip
    assert np.array_equal(result.as_numpy(OUTPUT), json_path)


def test_accuracy_through_the_client(client: Any) -> None:
    rows, labels = np.ascontiguousarray(DATA.X_test[:200], dtype=np.float32), DATA.y_test[:200]
    probs = client.infer(MODEL, [_input(rows, binary=True)]).as_numpy(OUTPUT)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    assert float((probs.argmax(axis=1) == labels).mean()) >= 0.9


@pytest.mark.parametrize(("tensor", "outputs", "message"), [
    (lambda: _input(ROWS.astype(np.float64), binary=True, datatype="FP64"), None,
     "input datatype 'FP64' not supported: expected 'FP32'"),
    (lambda: _input(ROWS.astype(np.int64), binary=True, datatype="INT64"), None, "expected 'FP32'"),
    (lambda: _input(ROWS, binary=True, name="pixels"), None, "unknown input 'pixels': this model expects 'input'"),
    (lambda: _input(ROWS[:, :32].copy(), binary=True), None, "input shape [8, 32] not supported: expected [n, 64]"),
    (lambda: _input(np.full((1, 64), np.inf, dtype=np.float32), binary=True), None, "finite numbers"),
    (lambda: _input(ROWS, binary=True), lambda: [httpclient.InferRequestedOutput("logits")],
     "unknown output 'logits'"),
    (lambda: _input(ROWS, binary=True), lambda: [httpclient.InferRequestedOutput(OUTPUT, class_count=3)],
     "classification extension is not supported"),
])  # fmt: skip
def test_client_mistakes_come_back_as_400_with_the_reason(client: Any, tensor: Any, outputs: Any, message: str) -> None:
    with pytest.raises(InferenceServerException) as caught:
        client.infer(MODEL, [tensor()], outputs=outputs() if outputs else None)
    assert caught.value.status() == "400" and message in caught.value.message()


def test_an_unknown_model_is_a_404(client: Any) -> None:
    with pytest.raises(InferenceServerException) as caught:
        client.infer("mnist", [_input(ROWS, binary=True)])
    assert caught.value.status() == "404" and "unknown model 'mnist'" in caught.value.message()


def test_the_asyncio_client(served_target: Any, json_path: np.ndarray) -> None:
    aio = pytest.importorskip("tritonclient.http.aio")

    async def scenario() -> tuple[bool, np.ndarray, np.ndarray]:
        c = aio.InferenceServerClient(url=served_target.host_port)
        try:
            live = await c.is_server_live()
            binary = await c.infer(MODEL, [_input(ROWS, binary=True)])
            plain = await c.infer(MODEL, [_input(ROWS, binary=False)],
                                  outputs=[httpclient.InferRequestedOutput(OUTPUT, binary_data=False)])  # fmt: skip
            return live, binary.as_numpy(OUTPUT), plain.as_numpy(OUTPUT)
        finally:
            await c.close()

    live, binary, plain = asyncio.run(scenario())
    assert live and np.array_equal(binary, json_path) and np.array_equal(plain, json_path)
