"""OIP v2's binary tensor data extension: the framing (``binary_data.py``) on its own, and the real target
answering raw, hand-framed bodies — every inconsistency a 400 that says what is wrong, never a 500."""

from __future__ import annotations

import gzip
import zlib
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from faultdrill.target_service.binary_data import (
    DATATYPES,
    BinaryDataError,
    decode_tensor,
    encode_tensor,
    frame,
    read_binary_inputs,
    split_body,
)
from faultdrill.target_service.models import load_digits_data

URL = "/v2/models/digits/infer"
ROWS = np.ascontiguousarray(load_digits_data().X_test[:3], dtype=np.float32)  # [3, 64] real digits
FP32_SIZE = ROWS.size * 4


# -- the framing -----------------------------------------------------------------------------------------------
SAMPLES: dict[str, np.ndarray] = {
    "BOOL": np.array([[True, False], [False, True]]),
    "UINT8": np.array([0, 7, 255], dtype=np.uint8),
    "UINT16": np.array([1, 65535], dtype=np.uint16),
    "UINT32": np.array([[1, 2, 3]], dtype=np.uint32),
    "UINT64": np.array([2**64 - 1, 0], dtype=np.uint64),
    "INT8": np.array([-128, 127], dtype=np.int8),
    "INT16": np.array([-2, 300], dtype=np.int16),
    "INT32": np.array([[-7], [2**31 - 1]], dtype=np.int32),
    "INT64": np.array([-(2**63), 42], dtype=np.int64),
    "FP16": np.array([0.5, -65504.0, np.inf], dtype=np.float16),
    "FP32": ROWS[:1],
    "FP64": np.array([1e300, -0.0], dtype=np.float64),
    "BF16": np.array([1.0, -2.5, 3.140625, 0.0], dtype=np.float32),  # exactly representable in bfloat16
}


@pytest.mark.parametrize("datatype", sorted(DATATYPES))
def test_every_fixed_size_datatype_round_trips(datatype: str) -> None:
    array = SAMPLES[datatype]
    raw = encode_tensor(array, datatype)
    assert len(raw) == array.size * DATATYPES[datatype].itemsize  # native size, no padding
    back = decode_tensor(raw, datatype, list(array.shape))
    assert back.shape == array.shape and np.array_equal(back, array)


def test_the_wire_is_little_endian_row_major() -> None:
    big_endian = np.array([[1, 2], [3, 4]], dtype=">i4")
    assert encode_tensor(big_endian, "INT32") == bytes.fromhex("01000000020000000300000004000000")
    assert encode_tensor(np.array([True, False]), "BOOL") == b"\x01\x00"
    assert encode_tensor(np.array([1.0], dtype=np.float32), "BF16") == b"\x80\x3f"  # 0x3f80: bfloat16 1.0
    assert decode_tensor(b"\x00\x00\x80\x3f", "FP32", [1]).tolist() == [1.0]


def test_bytes_tensors_are_length_prefixed_elements() -> None:
    raw = encode_tensor(np.array([b"ab", "é", b""], dtype=object), "BYTES")
    assert raw == b"\x02\x00\x00\x00ab" + b"\x02\x00\x00\x00\xc3\xa9" + b"\x00\x00\x00\x00"
    assert decode_tensor(raw, "BYTES", [3]).tolist() == [b"ab", "é".encode(), b""]
    assert decode_tensor(raw, "BYTES", [1, 3]).shape == (1, 3)


@pytest.mark.parametrize(("raw", "shape", "message"), [
    (b"\x05\x00\x00\x00ab", [1], "element 0 is 5 bytes long but only 2"),
    (b"\x01\x00\x00\x00ab", [1], "1 bytes left over after its 1 BYTES elements"),
    (b"\x00\x00\x00\x00", [2], "2 BYTES elements need at least 8 bytes"),
    (b"\x00\x00", [1], "need at least 4 bytes"),
])  # fmt: skip
def test_inconsistent_bytes_tensors_are_refused(raw: bytes, shape: list[int], message: str) -> None:
    with pytest.raises(BinaryDataError, match=message):
        decode_tensor(raw, "BYTES", shape, "input 's'")


def test_a_bool_element_is_the_byte_0_or_1() -> None:
    with pytest.raises(BinaryDataError, match="BOOL element must be the byte 0 or 1"):
        decode_tensor(b"\x01\x02", "BOOL", [2])


def _tensor(name: str, datatype: str, shape: list[int], size: int | None = None, **extra: Any) -> dict[str, Any]:
    t: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape, **extra}
    if size is not None:
        t["parameters"] = {"binary_data_size": size}
    return t


def test_binary_and_json_inputs_mix_in_one_request_in_order() -> None:
    a, b = np.array([1, 2, 3], dtype=np.int64), np.array([[0.5, 2.0]], dtype=np.float32)
    inputs = [_tensor("a", "INT64", [3], 24), _tensor("j", "FP32", [2], data=[1.0, 2.0]),
              _tensor("b", "FP32", [1, 2], 8), _tensor("s", "BYTES", [1], 7), _tensor("empty", "INT8", [0, 4], 0)]
    header = orjson.dumps({"inputs": inputs})
    body, length = frame(header, [a.tobytes(), b.tobytes(), encode_tensor(np.array([b"abc"]), "BYTES")])
    json_part, tail = split_body(body, str(length))
    assert orjson.loads(json_part) == {"inputs": inputs}
    out = read_binary_inputs(inputs, tail)
    assert out[1] is None  # the JSON input is the caller's to read
    assert out[0] is not None and out[0].tolist() == [1, 2, 3]
    assert out[2] is not None and out[2].tolist() == [[0.5, 2.0]]
    assert out[3] is not None and out[3].tolist() == [b"abc"]
    assert out[4] is not None and out[4].shape == (0, 4)


@pytest.mark.parametrize(("inputs", "data", "message"), [
    ([_tensor("x", "FP32", [2, 2], 12)], b"\0" * 12,
     r"input 'x': binary_data_size is 12 bytes but shape \[2, 2\] of FP32 needs 16"),
    ([_tensor("x", "FP32", [1], 4)], b"\0" * 2, "binary_data_size is 4 bytes but only 2 bytes of binary data are left"),
    ([_tensor("x", "FP32", [1], 4)], b"\0" * 9,
     "5 unexpected bytes after the binary tensor data: .* add up to 4 of the 9"),
    ([_tensor("x", "FP32", [1])], b"\0", "1 unexpected bytes after the binary tensor data"),
    ([_tensor("x", "FP32", [1], -4)], b"", "binary_data_size must be a non-negative integer, got -4"),
    ([_tensor("x", "FP32", [1], True)], b"", "non-negative integer, got True"),
    ([{"name": "x", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": "4"}}], b"\0" * 4,
     "non-negative integer, got '4'"),
    ([_tensor("x", "FP32", [1], 4, data=[1.0])], b"\0" * 4, "both 'data' and parameters.binary_data_size"),
    ([_tensor("x", "FP33", [1], 4)], b"\0" * 4, "datatype 'FP33' is not an OIP v2 datatype"),
    ([_tensor("x", "FP32", [-1, 1], 4)], b"\0" * 4, r"shape must be a list of non-negative integers, got \[-1, 1\]"),
    ([_tensor("x", "FP32", [10**15, 64], 4)], b"\0" * 4, "needs 256000000000000000"),  # nothing allocated from it
    ([{"datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": 4}}], b"\0", r"inputs\[0\]: binary_data"),
])  # fmt: skip
def test_inconsistent_sizes_are_refused_with_the_sizes(inputs: list[Any], data: bytes, message: str) -> None:
    with pytest.raises(BinaryDataError, match=message):
        read_binary_inputs(inputs, data)


@pytest.mark.parametrize(("value", "message"), [
    ("10", "Inference-Header-Content-Length is 10 bytes but the whole body is 4 bytes"),
    ("-1", "must be a number of bytes, got '-1'"),
    ("abc", "must be a number of bytes, got 'abc'"),
    ("²", "must be a number of bytes"),  # str.isdigit() alone would let it through to int()
    ("9" * 5000, "must be a number of bytes, got '9999"),  # past Python's int digit limit: still a 400
])  # fmt: skip
def test_the_header_length_must_fit_the_body(value: str, message: str) -> None:
    with pytest.raises(BinaryDataError, match=message):
        split_body(b"{}xx", value)


def test_nested_json_rows_keep_their_order() -> None:
    # Regression: the JSON path flattened nested rows in reverse, so row 0 was answered with the last row's
    # probabilities; binary inputs (always flat) showed it.
    from faultdrill.target_service.protocol import parse_infer_request

    def rows(data: Any) -> np.ndarray:
        doc = {"inputs": [{"name": "input", "shape": [3, 64], "datatype": "FP32", "data": data}]}
        return parse_infer_request(orjson.dumps(doc), input_name="input", width=64, max_rows=8).rows

    assert np.array_equal(rows(ROWS.tolist()), ROWS)
    assert np.array_equal(rows(ROWS.reshape(3, 8, 8).tolist()), ROWS)
    assert np.array_equal(rows(ROWS.reshape(-1).tolist()), ROWS)


# -- the real target, raw bytes -------------------------------------------------------------------------------
def _header(tensor: dict[str, Any], **doc: Any) -> bytes:
    return orjson.dumps({"inputs": [tensor], **doc})


def _binary(
    rows: np.ndarray = ROWS, *, size: int | None = None, datatype: str = "FP32", **doc: Any
) -> tuple[bytes, dict[str, str]]:
    """A hand-framed request: JSON header, then the rows' bytes (``size``: the binary_data_size to claim)."""
    raw = rows.astype("<f4").tobytes() if datatype == "FP32" else rows.tobytes()
    header = _header(_tensor("input", datatype, list(rows.shape), len(raw) if size is None else size), **doc)
    return header + raw, {"Inference-Header-Content-Length": str(len(header))}


def _json_request(rows: np.ndarray = ROWS, **doc: Any) -> bytes:
    return _header(_tensor("input", "FP32", list(rows.shape), data=rows.tolist()), **doc)


def _error(resp: httpx.Response, status: int = 400) -> str:
    assert resp.status_code == status, (resp.status_code, resp.text[:500])
    assert resp.headers["content-type"] == "application/json"
    return str(resp.json()["error"])


@pytest.fixture(scope="module")
def http(served_target: Any) -> Any:
    with httpx.Client(base_url=served_target.url, timeout=30) as client:
        yield client


def _probabilities(http: httpx.Client, rows: np.ndarray = ROWS) -> np.ndarray:
    resp = http.post(URL, content=_json_request(rows))
    assert resp.status_code == 200, resp.text
    out = resp.json()["outputs"][0]
    return np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])


def test_binary_in_and_out_answers_what_json_answers(http: httpx.Client) -> None:
    body, headers = _binary(outputs=[{"name": "probabilities", "parameters": {"binary_data": True}}])
    resp = http.post(URL, content=body, headers=headers)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/octet-stream"
    length = int(resp.headers["inference-header-content-length"])
    assert int(resp.headers["content-length"]) == len(resp.content) == length + ROWS.shape[0] * 10 * 4
    doc = orjson.loads(resp.content[:length])
    out = doc["outputs"][0]
    assert out == {"name": "probabilities", "shape": [3, 10], "datatype": "FP32",
                   "parameters": {"binary_data_size": 120}}  # fmt: skip
    probs = np.frombuffer(resp.content[length:], dtype="<f4").reshape(3, 10)
    assert np.array_equal(probs, _probabilities(http))  # the same model, so the same numbers, bit for bit
    assert doc["parameters"]["predictions"] == probs.argmax(axis=1).tolist()
    assert doc["model_name"] == "digits" and resp.headers["x-request-id"]


def test_binary_output_for_json_input_by_request_parameter(http: httpx.Client) -> None:
    resp = http.post(URL, content=_json_request(parameters={"binary_data_output": True}, id="r-1"))
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/octet-stream"
    length = int(resp.headers["inference-header-content-length"])
    assert orjson.loads(resp.content[:length])["id"] == "r-1"
    assert np.array_equal(np.frombuffer(resp.content[length:], dtype="<f4").reshape(3, 10), _probabilities(http))
    # the output's own binary_data: false wins over the request's binary_data_output
    override = [{"name": "probabilities", "parameters": {"binary_data": False}}]
    resp = http.post(URL, content=_json_request(parameters={"binary_data_output": True}, outputs=override))
    assert resp.headers["content-type"] == "application/json" and "inference-header-content-length" not in resp.headers


def test_plain_json_stays_plain_json(http: httpx.Client) -> None:
    for extra in ({}, {"outputs": [{"name": "probabilities"}]}, {"parameters": {"binary_data_output": False}}):
        resp = http.post(URL, content=_json_request(**extra))
        assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
        assert "inference-header-content-length" not in resp.headers
        assert resp.json()["outputs"][0]["shape"] == [3, 10] and len(resp.json()["outputs"][0]["data"]) == 30
    # binary input, JSON output (nothing asked for binary)
    body, headers = _binary()
    resp = http.post(URL, content=body, headers=headers)
    assert resp.headers["content-type"] == "application/json"
    out = resp.json()["outputs"][0]
    assert np.array_equal(np.asarray(out["data"], dtype=np.float32).reshape(3, 10), _probabilities(http))
    # a header length covering the whole body, no binary tensor: plain JSON under the extension's header
    body = _json_request()
    resp = http.post(URL, content=body, headers={"Inference-Header-Content-Length": str(len(body))})
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"


def test_the_versioned_route_and_the_echo_route_speak_it_too(http: httpx.Client) -> None:
    body, headers = _binary(parameters={"binary_data_output": True})
    resp = http.post("/v2/models/digits/versions/1/infer", content=body, headers=headers)
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/octet-stream"
    resp = http.post("/v2/models/digits/echo", content=body, headers=headers)
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/octet-stream"
    length = int(resp.headers["inference-header-content-length"])
    assert np.frombuffer(resp.content[length:], dtype="<f4").tolist() == [np.float32(0.1)] * 30


HEADER = "Inference-Header-Content-Length"
GOOD, GOOD_HEADERS = _binary()
GOOD_LENGTH = int(GOOD_HEADERS[HEADER])


@pytest.mark.parametrize(("body", "headers", "status", "message"), [
    (GOOD, {HEADER: str(len(GOOD) + 1)}, 400,
     f"Inference-Header-Content-Length is {len(GOOD) + 1} bytes but the whole body is {len(GOOD)} bytes"),
    (GOOD, {HEADER: "lots"}, 400, "Inference-Header-Content-Length must be a number of bytes, got 'lots'"),
    (GOOD, {HEADER: str(GOOD_LENGTH - 1)}, 400, f"malformed JSON in the first {GOOD_LENGTH - 1} bytes"),
    (GOOD, {HEADER: str(GOOD_LENGTH + 4)}, 400, f"malformed JSON in the first {GOOD_LENGTH + 4} bytes"),
    (GOOD + b"\0\0\0", GOOD_HEADERS, 400,
     f"3 unexpected bytes after the binary tensor data: the inputs' binary_data_size values add up to {FP32_SIZE}"),
    (GOOD[:-4], GOOD_HEADERS, 400,
     f"binary_data_size is {FP32_SIZE} bytes but only {FP32_SIZE - 4} bytes of binary data are left"),
    (*_binary(size=FP32_SIZE - 4), 400,
     f"binary_data_size is {FP32_SIZE - 4} bytes but shape [3, 64] of FP32 needs {FP32_SIZE}"),
    (GOOD, {}, 400, "malformed JSON"),  # no header: the body is JSON, and binary bytes follow it
    (_header(_tensor("input", "FP32", [3, 64], FP32_SIZE)), {}, 400,
     "has parameters.binary_data_size but the request has no Inference-Header-Content-Length header"),
    (_json_request() + b"\0" * 8, {HEADER: str(len(_json_request()))}, 400, "8 unexpected bytes after the binary"),
    (*_binary(ROWS.astype(np.int64), datatype="INT64"), 400, "input datatype 'INT64' not supported: expected 'FP32'"),
    (*_binary(np.full((1, 64), np.nan, dtype=np.float32)), 400, "finite numbers"),
    (*_binary(np.zeros((257, 64), dtype=np.float32)), 413, "257 rows in one request; at most 256"),
    (*_binary(outputs=[{"name": "logits"}]), 400, "unknown output 'logits': this model's output is 'probabilities'"),
    (*_binary(outputs={"name": "probabilities"}), 400, "'outputs' must be a list of objects"),
    (*_binary(outputs=[{"name": "probabilities", "parameters": {"binary_data": "yes"}}]), 400,
     "parameters.binary_data must be true or false"),
    (*_binary(parameters={"binary_data_output": 1}), 400, "parameters.binary_data_output must be true or false"),
    (*_binary(outputs=[{"name": "probabilities", "parameters": {"classification": 3}}]), 400,
     "classification extension is not supported"),
    (GOOD + b"\0" * (1 << 20), GOOD_HEADERS, 413, "exceeds the 1048576-byte limit"),
])  # fmt: skip
def test_malformed_binary_requests_get_a_useful_4xx(http: httpx.Client, body: bytes, headers: dict[str, str],
                                                    status: int, message: str) -> None:  # fmt: skip
    assert message in _error(http.post(URL, content=body, headers=headers), status)


def test_compressed_requests_are_inflated_within_the_size_limit(http: httpx.Client) -> None:
    expected = _probabilities(http)
    for encoding, packed in (("gzip", gzip.compress(GOOD)), ("deflate", zlib.compress(GOOD))):
        resp = http.post(URL, content=packed, headers={**GOOD_HEADERS, "Content-Encoding": encoding})
        assert resp.status_code == 200, resp.text
        assert np.array_equal(np.asarray(resp.json()["outputs"][0]["data"], dtype=np.float32).reshape(3, 10), expected)
    bomb = gzip.compress(b"\0" * (64 << 20))  # 64 MiB of zeros in ~64 KiB: never inflated past the limit
    assert "limit once decompressed" in _error(http.post(URL, content=bomb, headers={"Content-Encoding": "gzip"}), 413)
    assert "not valid gzip data" in _error(http.post(URL, content=b"not gzip", headers={"Content-Encoding": "gzip"}))
    truncated = gzip.compress(GOOD)[:-8]
    resp = http.post(URL, content=truncated, headers={"Content-Encoding": "gzip"})
    assert "not one complete gzip stream" in _error(resp)
    resp = http.post(URL, content=GOOD, headers={"Content-Encoding": "br"})
    assert "Content-Encoding 'br' not supported: gzip, deflate or identity" in _error(resp)


def test_refusals_are_counted_as_bad_requests(http: httpx.Client) -> None:
    before = http.get("/metrics").text
    http.post(URL, content=GOOD + b"\0", headers=GOOD_HEADERS)
    after = http.get("/metrics").text

    def bad(text: str) -> float:
        prefix = 'inference_failures_total{model="digits",reason="bad_request"}'
        line = next(ln for ln in text.splitlines() if ln.startswith(prefix))
        return float(line.rsplit(" ", 1)[1])

    assert bad(after) == bad(before) + 1


@settings(deadline=None, derandomize=True, database=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(size=st.integers(0, FP32_SIZE + 8) | st.none(), length=st.integers(0, len(GOOD) + 8) | st.none(),
       tail=st.binary(max_size=16))  # fmt: skip
def test_any_framing_is_never_a_500(http: httpx.Client, size: int | None, length: int | None, tail: bytes) -> None:
    body, headers = _binary(size=size)
    if length is not None:
        headers[HEADER] = str(length)
    resp = http.post(URL, content=body + tail, headers=headers)
    assert resp.status_code < 500, (resp.status_code, resp.text[:300])
    if resp.status_code != 200:
        assert _error(resp, resp.status_code)
    else:
        assert (size in (None, FP32_SIZE)) and length in (None, int(GOOD_HEADERS[HEADER])) and not tail
