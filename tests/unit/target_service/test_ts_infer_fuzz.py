"""``POST /v2/models/digits/infer`` under fuzzing: never a 500 — a 4xx ``{"error": …}`` for bad input, 200 for valid.

The bundled target runs in process (a replica with the real digits model on the CPU, its Starlette app
driven through ``httpx.ASGITransport`` on the loop its inference engine runs on). Payloads: random
JSON of any shape, OIP v2 requests with each field valid or broken in a known way (so the expected
answer is known), raw bytes, wrong content types, huge shapes, NaN/Infinity, nested garbage, and the
``x-request-timeout-ms`` header. Reproducible: ``derandomize=True``, no example database.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

WIDTH, MAX_ROWS = 64, 256
URL = "/v2/models/digits/infer"
FUZZ = settings(deadline=None, derandomize=True, database=None, print_blob=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip


class Served:
    """The target's app on its own event loop; ``post`` sends one request and waits for the answer."""

    def __init__(self, registry_dir: Path) -> None:
        from prometheus_client import CollectorRegistry

        from faultdrill.target_service.api import create_api
        from faultdrill.target_service.config import TargetSettings
        from faultdrill.target_service.metrics import TargetMetrics
        from faultdrill.target_service.replica import Replica

        settings_ = TargetSettings(model_registry=registry_dir, device="cpu", feature_store_url=None,
                                   max_rows_per_request=MAX_ROWS, misconfigurations=[])  # fmt: skip
        self.replica = Replica(settings_, TargetMetrics(CollectorRegistry(), model=settings_.model))
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(asyncio.to_thread(self.replica.load, self.loop))
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_api(self.replica)),
                                        base_url="http://target")  # fmt: skip

    def post(self, body: bytes, headers: dict[bytes, bytes] | None = None) -> httpx.Response:
        return self.loop.run_until_complete(self.client.post(URL, content=body, headers=headers or {}))

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        if self.replica.loaded is not None:
            self.loop.run_until_complete(self.replica.loaded.engine.stop(1.0))
            self.replica.loaded.device.close()
        self.loop.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    from faultdrill.target_service.registry import ModelRegistry

    registry_dir = tmp_path_factory.mktemp("registry")
    ModelRegistry(registry_dir).ensure_defaults()
    s = Served(registry_dir)
    assert s.replica.loaded is not None and s.replica.loaded.input_width == WIDTH
    yield s
    s.close()


def _client_error(resp: httpx.Response) -> str:
    """A 4xx answer in the OIP v2 shape ``{"error": "…"}``: its message."""
    assert 400 <= resp.status_code < 500, (resp.status_code, resp.text[:500])
    doc = resp.json()
    assert isinstance(doc, dict) and isinstance(doc.get("error"), str) and doc["error"], resp.text[:500]
    return str(doc["error"])


def _never_500(resp: httpx.Response) -> None:
    assert resp.status_code < 500, (resp.status_code, resp.text[:500])
    if resp.status_code != 200:
        _client_error(resp)


# -- strategies ----------------------------------------------------------------------------------------------
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**80), 2**80) | st.floats() | st.text(max_size=10),
    lambda c: st.lists(c, max_size=5) | st.dictionaries(st.text(max_size=8) | st.sampled_from(
        ["inputs", "name", "shape", "datatype", "data", "parameters", "id", "timeout_ms", "entity_id"]), c,
        max_size=5),
    max_leaves=30,
)  # fmt: skip
STRICT_JSON = st.recursive(  # what json.dumps writes as strict JSON (no NaN/Infinity literals)
    st.none() | st.booleans() | st.integers(-(2**60), 2**60) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=15,
)  # fmt: skip
VALUES = st.floats(-1e6, 1e6, allow_nan=False, width=32) | st.integers(-1000, 1000)


@st.composite
def requests(draw: st.DrawFn) -> tuple[dict[str, Any], bool]:
    """An OIP v2 infer request, each part valid or broken in a known way: (document, is it valid)."""
    rows = draw(st.integers(1, 3))
    valid = True

    def part(good: Any, bad: st.SearchStrategy[Any]) -> Any:
        nonlocal valid
        if draw(st.integers(0, 5)):  # mostly valid, so that whole valid requests come up often
            return good
        valid = False
        return draw(bad.filter(lambda v: json.dumps(v) != json.dumps(good)))  # broken for sure

    data = draw(st.lists(VALUES, min_size=rows * WIDTH, max_size=rows * WIDTH))
    if draw(st.booleans()):
        data = [data[r * WIDTH:(r + 1) * WIDTH] for r in range(rows)]  # row-major nested, as OIP allows
    tensor = {
        "name": part("input", st.sampled_from(["inputs", "", "INPUT"]) | JSON),
        "shape": part([rows, WIDTH], st.sampled_from([[rows], [rows, WIDTH, 1], [0, WIDTH], [-1, WIDTH],
                                                      [rows, WIDTH + 1], [10**12, WIDTH], [2**70, WIDTH],
                                                      [True, WIDTH], [rows, "64"], [float(rows), WIDTH]]) | JSON),
        "datatype": part("FP32", st.sampled_from(["FP16", "fp32", "INT64", "BYTES", ""]) | JSON),
        "data": part(data, st.sampled_from([
            data[:-1], [*data, 0.0], [], "1,2,3", [str(v) for v in data], [True] * (rows * WIDTH),
            [None] * (rows * WIDTH), [{}] * (rows * WIDTH), [1e39] * (rows * WIDTH), [math.nan] * (rows * WIDTH),
            [math.inf] * (rows * WIDTH), [[[v]] for v in data][:-1]]) | JSON),
    }  # fmt: skip
    doc: dict[str, Any] = {"inputs": part([tensor], st.sampled_from([[], [tensor, tensor], tensor, [[tensor]]]))}
    if draw(st.booleans()):
        doc["parameters"] = part({"entity_id": "user-1", "timeout_ms": 5000},
                                 st.sampled_from([{"entity_id": ""}, {"entity_id": 5}, {"entity_id": "x" * 200},
                                                  {"timeout_ms": 0}, {"timeout_ms": -1}, {"timeout_ms": "5"},
                                                  {"timeout_ms": True}]))  # fmt: skip
    if draw(st.booleans()):
        doc["id"] = draw(STRICT_JSON)  # any id: only a string is echoed back
    for key in draw(st.lists(st.text(max_size=6), max_size=2)):  # unknown top-level keys are ignored
        if key not in ("inputs", "parameters", "id"):
            doc[key] = draw(STRICT_JSON)
    return doc, valid


CONTENT_TYPES = st.sampled_from([None, b"application/json", b"text/plain", b"application/octet-stream",
                                 b"multipart/form-data; boundary=x", b"application/json; charset=latin-1", b""])


def _headers(content_type: bytes | None) -> dict[bytes, bytes]:
    return {} if content_type is None else {b"content-type": content_type}


# -- properties -----------------------------------------------------------------------------------------------
@settings(FUZZ, max_examples=150)
@given(request=requests(), content_type=CONTENT_TYPES)
def test_requests_valid_get_200_and_broken_get_a_4xx(served: Served, request: tuple[dict[str, Any], bool],
                                                     content_type: bytes | None) -> None:  # fmt: skip
    doc, valid = request
    resp = served.post(json.dumps(doc, allow_nan=True).encode(), _headers(content_type))
    if valid:
        assert resp.status_code == 200, (resp.status_code, resp.text[:500])
        out = resp.json()["outputs"][0]
        rows = doc["inputs"][0]["shape"][0]
        assert out["shape"] == [rows, 10] and len(out["data"]) == rows * 10
        assert all(math.isfinite(p) for p in out["data"])
    else:
        _client_error(resp)


@settings(FUZZ, max_examples=100)
@given(doc=JSON, content_type=CONTENT_TYPES)
def test_any_json_document_is_never_a_500(served: Served, doc: Any, content_type: bytes | None) -> None:
    body = json.dumps(doc, allow_nan=True).encode()
    _client_error(served.post(body, _headers(content_type)))  # no random document is a valid request


@settings(FUZZ, max_examples=80)
@given(body=st.binary(max_size=200) | st.text(max_size=50).map(str.encode), content_type=CONTENT_TYPES)
def test_any_bytes_are_never_a_500(served: Served, body: bytes, content_type: bytes | None) -> None:
    _client_error(served.post(body, _headers(content_type)))


@settings(FUZZ, max_examples=60)
@given(value=st.binary(max_size=40).filter(lambda b: b"\r" not in b and b"\n" not in b and b"\0" not in b))
def test_any_timeout_header_is_never_a_500(served: Served, value: bytes) -> None:
    body = orjson.dumps({"inputs": [{"name": "input", "shape": [1, WIDTH], "datatype": "FP32", "data": [0.5] * WIDTH}]})
    resp = served.post(body, {b"x-request-timeout-ms": value})
    if resp.status_code == 504:  # a number of milliseconds short enough to expire while queued: the client's choice
        assert value.strip().replace(b".", b"", 1).isdigit(), value
        return
    _never_500(resp)


# -- the cases the fuzzers found, and the big ones ----------------------------------------------------------
VALID = {"inputs": [{"name": "input", "shape": [1, WIDTH], "datatype": "FP32", "data": [0.25] * WIDTH}]}


def _with(**tensor: Any) -> bytes:
    return json.dumps({"inputs": [{**VALID["inputs"][0], **tensor}]}, allow_nan=True).encode()


@pytest.mark.parametrize(("body", "headers", "status", "message"), [
    # was a 500: a non-ASCII digit passed str.isdigit() and then float() failed
    (orjson.dumps(VALID), {b"x-request-timeout-ms": b"\xb2"}, 400, "x-request-timeout-ms must be a number"),
    (orjson.dumps(VALID), {b"x-request-timeout-ms": b"soon"}, 400, "x-request-timeout-ms must be a number"),
    # numbers only: numpy would have read these as 1.5 and 1.0
    (_with(data=["1.5"] * WIDTH), {}, 400, "input data must contain only numbers"),
    (_with(data=[True] * WIDTH), {}, 400, "input data must contain only numbers"),
    (_with(data=[2**70] * WIDTH), {}, 200, None),  # a JSON number past 64 bits is still a number (read as float)
    (_with(data=[1e39] * WIDTH), {}, 400, "finite numbers"),
    (_with(data=[math.nan] * WIDTH), {}, 400, "malformed JSON"),  # NaN is not JSON
    (_with(shape=[10**12, WIDTH]), {}, 413, "rows in one request"),
    (_with(shape=[2**70, WIDTH]), {}, 400, "not supported"),
    (_with(data=[[[[[0.25]]]] for _ in range(WIDTH)]), {}, 200, None),  # any row-major nesting flattens
    (_with(data="[" * 100_000), {}, 400, "data must be a list of numbers"),
    (b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", {}, 400, "malformed JSON"),  # recursion limit
    (b"\xff\xfe" * 100, {b"content-type": b"application/json"}, 400, "malformed JSON"),
    (b"x" * ((1 << 20) + 1), {}, 413, "exceeds the"),
])  # fmt: skip
def test_known_hostile_requests(served: Served, body: bytes, headers: dict[bytes, bytes], status: int,
                                message: str | None) -> None:  # fmt: skip
    resp = served.post(body, headers)
    assert resp.status_code == status, (resp.status_code, resp.text[:500])
    if message is not None:
        assert message in _client_error(resp)
