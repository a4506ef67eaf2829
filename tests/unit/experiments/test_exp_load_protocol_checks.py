"""What makes an answer right, per protocol: the judgements of ``experiments.observe.protocols`` on answers
built by hand (the same judgements meet real servers in ``test_exp_load_protocol_servers.py``)."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from faultdrill.experiments.observe.protocols import Runtime, client_of
from faultdrill.experiments.observe.protocols.base import finite_problem, value_at
from faultdrill.experiments.observe.protocols.oip_v2 import (
    TensorMeta,
    check_answer,
    encode,
    generated_request,
    parse_metadata,
)
from faultdrill.experiments.observe.protocols.openai import SseReader, check_completion
from faultdrill.experiments.observe.protocols.plain import check_predictions
from faultdrill.experiments.spec.load import HttpProtocol, OipV2Protocol, OpenAIProtocol
from faultdrill.target_service.binary_data import read_binary_inputs, split_body

PROBS = [{"name": "probabilities", "datatype": "FP32", "shape": [1, 3], "data": [0.1, 0.2, 0.7]}]
DECLARED = [TensorMeta("probabilities", "FP32", (-1, 3))]
JSON = {"content-type": "application/json"}


def _answer(outputs: object, **extra: object) -> bytes:
    return json.dumps({"model_name": "m", "outputs": outputs, **extra}).encode()


# -- OIP v2 ------------------------------------------------------------------------------------
def test_a_good_oip_answer_is_ok_with_or_without_metadata() -> None:
    assert check_answer(JSON, _answer(PROBS), None).ok
    assert check_answer(JSON, _answer(PROBS), DECLARED).ok
    nested = [{**PROBS[0], "shape": [1, 3], "data": [[0.1, 0.2, 0.7]]}]
    assert check_answer(JSON, _answer(nested), DECLARED).ok


@pytest.mark.parametrize("body, reason", [
    (b"<html>oops</html>", "the answer is not JSON"),
    (b"[1, 2]", "the answer is not a JSON object"),
    (_answer([]), "no outputs in the answer"),
    (json.dumps({"model_name": "m"}).encode(), "no outputs in the answer"),
    (json.dumps({"error": "model exploded"}).encode(), "the server answered an error: model exploded"),
    (_answer([{**PROBS[0], "data": [0.1, float("nan"), 0.7]}]),
     "output 'probabilities' holds nan at element 1 (not a finite number)"),
    (_answer([{**PROBS[0], "data": [0.1, float("inf"), 0.7]}]), "holds inf at element 1"),
    (_answer([{**PROBS[0], "data": [0.1, None, 0.7]}]), "output 'probabilities' holds an element that is not FP32"),
    (_answer([{**PROBS[0], "data": [0.1, 0.2]}]), "output 'probabilities' has 2 elements for shape [1, 3] (3)"),
    (_answer([{**PROBS[0], "shape": [3]}]), "output 'probabilities' has shape [3], the metadata allows [-1, 3]"),
    (_answer([{**PROBS[0], "shape": [1, 1, 3]}]), "has shape [1, 1, 3], the metadata allows [-1, 3]"),
    (_answer([{**PROBS[0], "datatype": "FP64"}]), "output 'probabilities' is FP64, the metadata says FP32"),
    (_answer([{**PROBS[0], "name": "logits"}]), "output 'probabilities' of the model's metadata is missing"),
    (_answer([{**PROBS[0], "datatype": "FLOAT"}]), "has datatype 'FLOAT', not an OIP v2 datatype"),
    (_answer([{"datatype": "FP32"}]), "outputs[0] is not a tensor with a name"),
])  # fmt: skip
def test_a_malformed_oip_answer_is_a_failure_with_a_reason(body: bytes, reason: str) -> None:
    outcome = check_answer(JSON, body, DECLARED)
    assert not outcome.ok and outcome.reason is not None and reason in outcome.reason


def test_binary_oip_answers_are_decoded_and_checked() -> None:
    def framed(values: list[float], size: int | None = None, extra: bytes = b"") -> tuple[dict[str, str], bytes]:
        raw = np.asarray(values, dtype="<f4").tobytes()
        out = [{"name": "probabilities", "datatype": "FP32", "shape": [1, 3],
                "parameters": {"binary_data_size": len(raw) if size is None else size}}]  # fmt: skip
        head = _answer(out)
        return {"inference-header-content-length": str(len(head))}, head + raw + extra

    assert check_answer(*framed([0.1, 0.2, 0.7]), DECLARED).ok
    nan = check_answer(*framed([0.1, math.nan, 0.7]), DECLARED)
    assert not nan.ok and "holds nan at element 1" in str(nan.reason)
    short = check_answer(*framed([0.1, 0.2, 0.7], size=8), DECLARED)
    assert not short.ok and "binary_data_size is 8 bytes but shape [1, 3] of FP32 needs 12" in str(short.reason)
    extra = check_answer(*framed([0.1, 0.2, 0.7], extra=b"\0\0"), DECLARED)
    assert not extra.ok and extra.reason == "2 bytes after the outputs' binary data"
    _, body = framed([0.1, 0.2, 0.7])
    broken = check_answer({"inference-header-content-length": str(len(body) + 1)}, body, DECLARED)
    assert not broken.ok and str(broken.reason).startswith("binary answer: Inference-Header-Content-Length is")


def test_generated_requests_follow_the_metadata_in_json_and_binary() -> None:
    meta = {"name": "m", "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]},
                                    {"name": "ids", "datatype": "INT64", "shape": [2]},
                                    {"name": "flag", "datatype": "BOOL", "shape": [-1]},
                                    {"name": "text", "datatype": "BYTES", "shape": [-1, 2]}],
            "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 1]}]}  # fmt: skip
    parsed = parse_metadata(meta)
    assert not isinstance(parsed, str)
    inputs, outputs = parsed
    assert outputs == [TensorMeta("y", "FP32", (-1, 1))]
    request = generated_request(inputs, random.Random(1))
    assert [(t["name"], t["shape"], len(t["data"])) for t in request["inputs"]] == [
        ("x", [1, 4], 4), ("ids", [2], 2), ("flag", [1], 1), ("text", [1, 2], 2)]
    assert all(0 <= v < 1 for v in request["inputs"][0]["data"])
    assert all(0 <= v < 10 for v in request["inputs"][1]["data"])
    body, headers = encode(request, binary=True)
    assert headers["Content-Type"] == "application/octet-stream"
    head, tail = split_body(body, headers["Inference-Header-Content-Length"])
    header = json.loads(bytes(head))
    assert header["parameters"] == {"binary_data_output": True}
    arrays = read_binary_inputs(header["inputs"], tail)  # the target's own reader takes them
    assert np.allclose(arrays[0], np.asarray(request["inputs"][0]["data"], dtype=np.float32).reshape(1, 4))
    assert arrays[1].tolist() == request["inputs"][1]["data"] and arrays[3].reshape(-1).tolist() == [
        s.encode() for s in request["inputs"][3]["data"]]
    assert json.loads(encode(request, binary=False)[0]) == request


@pytest.mark.parametrize("meta, reason", [
    ([], "the model metadata is not a JSON object"),
    ({"inputs": []}, "the model metadata lists no inputs"),
    ({"inputs": [{"name": "x", "datatype": "FP32"}]}, "the model metadata's inputs[0] is not a tensor"),
    ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}], "outputs": {}}, "outputs is not a list"),
])  # fmt: skip
def test_malformed_metadata_is_refused(meta: object, reason: str) -> None:
    assert reason in str(parse_metadata(meta))


def test_a_generated_client_waits_for_metadata_and_retries_once_a_second() -> None:
    client = client_of(Runtime(protocol=OipV2Protocol(kind="oip_v2", model="digits")))
    assert not client.ready
    first = client.setup_call(100.0)
    assert first is not None and (first.method, first.path) == ("GET", "/v2/models/digits")
    assert client.setup_call(100.5) is None  # asked half a second ago
    failed = client.set_up(503, JSON, b'{"error": "loading"}')
    assert not failed.ok and failed.reason is None and not client.ready  # the status speaks (Locust's error)
    assert client.setup_call(101.0) is not None
    wrong = client.set_up(200, JSON, b'{"inputs": "x"}')
    assert not wrong.ok and "inputs is not a list" in str(wrong.reason) and not client.ready
    meta = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}], "outputs": []}
    assert client.set_up(200, JSON, json.dumps(meta).encode()).ok and client.ready
    assert client.setup_call(200.0) is None  # never again
    bodies = {client.call(i).body for i in range(40)}
    assert len(bodies) == 16  # a pool of generated requests, cycled


# -- OpenAI ------------------------------------------------------------------------------------
def _chunk(text: str | None, api: str = "chat") -> bytes:
    choice = {"delta": {"content": text}} if api == "chat" else {"text": text}
    return b"data: " + json.dumps({"object": "chunk", "choices": [choice]}).encode() + b"\n"


def _feed(lines: list[tuple[bytes, float]], content_type: str = "text/event-stream; charset=utf-8", api: str = "chat",
          end: float = 1.0, leftover: bytes = b""):  # type: ignore[no-untyped-def]  # fmt: skip
    reader = SseReader(api, content_type)
    for raw, t in lines:
        reader.line(raw, t)
    return reader.end(end, leftover)


def test_a_stream_gives_ttft_and_mean_itl() -> None:
    lines = [(b": keep-alive\n", 0.01), (_chunk(None), 0.05), (b"\n", 0.05),  # role-only first chunk: no token
             (_chunk("Hel"), 0.20), (b"\r\n", 0.20), (_chunk("lo"), 0.25), (b"\n", 0.25),
             (_chunk(" you"), 0.40), (b"\n", 0.40),
             (b'data: {"choices": [], "usage": {"completion_tokens": 3}}\n', 0.41), (b"\n", 0.41),
             (b"data: [DONE]\n", 0.42), (b"\n", 0.42)]  # fmt: skip
    outcome = _feed(lines)
    assert outcome.ok and outcome.reason is None
    assert outcome.ttft_s == pytest.approx(0.20) and outcome.itl_s == pytest.approx(0.10)
    completions = _feed([(_chunk("a", "completions"), 0.3), (b"\n", 0.3), (b"data: [DONE]\n\n", 0.4)],
                        api="completions")
    assert completions.ok and completions.ttft_s == pytest.approx(0.3) and completions.itl_s is None


@pytest.mark.parametrize("lines, content_type, leftover, reason", [
    ([(_chunk("a"), 0.1), (b"\n", 0.1)], "text/event-stream", b"", "the stream ended without data: [DONE]"),
    ([(b"data: [DONE]\n\n", 0.1)], "text/event-stream", b"", "no chunks in the stream"),
    ([(_chunk(""), 0.1), (b"\n", 0.1), (b"data: [DONE]\n\n", 0.1)], "text/event-stream", b"",
     "no tokens in the stream"),
    ([(b"data: {\"object\": \"chunk\"}\n\n", 0.1)], "text/event-stream", b"", "a chunk without choices"),
    ([(b"data: {not json\n\n", 0.1)], "text/event-stream", b"", "a chunk is not JSON"),
    ([(_chunk("a"), 0.1), (b"\n", 0.1)], "text/event-stream", b'data: {"error": {"message": "Internal"}}',
     "the stream carried an error"),  # litserve's last line, without its blank line
    ([(b"event: error\ndata: {\"message\": \"overloaded\"}\n\n", 0.1)], "text/event-stream", b"",
     "the stream carried an error"),
    ([(b'{"choices": []}', 0.1)], "application/json", b"", "the answer is application/json, not text/event-stream"),
])  # fmt: skip
def test_a_wrong_stream_is_a_failure_with_a_reason(lines: list[tuple[bytes, float]], content_type: str,
                                                   leftover: bytes, reason: str) -> None:  # fmt: skip
    split = [(part + b"\n", t) for raw, t in lines for part in raw.rstrip(b"\n").split(b"\n")] + (
        [(b"\n", 0.1)] if lines and lines[-1][0].endswith(b"\n\n") else [])  # fmt: skip
    outcome = _feed(split, content_type, leftover=leftover)
    assert not outcome.ok and outcome.reason is not None and outcome.reason.startswith(reason), outcome


@pytest.mark.parametrize("api, doc, reason", [
    ("chat", {"choices": [{"message": {"role": "assistant", "content": "hi"}}]}, None),
    ("chat", {"choices": [{"message": {"role": "assistant", "content": None, "tool_calls": []}}]}, None),
    ("completions", {"choices": [{"text": "hi"}]}, None),
    ("chat", {"choices": []}, "no choices in the answer"),
    ("chat", {"id": "x"}, "no choices in the answer"),
    ("chat", {"choices": [{"text": "hi"}]}, "choices[0] has no message with content"),
    ("completions", {"choices": [{"message": {"content": "hi"}}]}, "choices[0] has no text"),
    ("chat", {"error": {"message": "context too long"}}, "the server answered an error: context too long"),
])  # fmt: skip
def test_whole_completions(api: str, doc: object, reason: str | None) -> None:
    outcome = check_completion(api, doc)
    assert outcome.ok is (reason is None) and outcome.reason == reason


def test_the_openai_request() -> None:
    stream = client_of(Runtime(protocol=OpenAIProtocol(kind="openai", model="m", prompt="hi", stream=True))).call(0)
    assert (stream.path, stream.stream, stream.headers["Accept"]) == ("/v1/chat/completions", True, "text/event-stream")
    assert json.loads(stream.body or b"") == {"model": "m", "max_tokens": 16, "stream": True,
                                               "messages": [{"role": "user", "content": "hi"}]}  # fmt: skip
    spec = OpenAIProtocol(kind="openai", api="completions", model="m", prompt="once", max_tokens=4)
    whole = client_of(Runtime(protocol=spec))
    assert json.loads(whole.call(0).body or b"") == {"model": "m", "max_tokens": 4, "stream": False, "prompt": "once"}
    assert not whole.check(200, JSON, b"not json").ok and whole.check(200, JSON, b'{"choices": [{"text": ""}]}').ok
    assert whole.check(503, JSON, b"{}").reason is None  # a failed status is Locust's to report


# -- KServe V1, plain HTTP, shared helpers -------------------------------------------------------
@pytest.mark.parametrize("doc, reason", [
    ({"predictions": [1, 0]}, None),
    ({"predictions": [[0.1, 0.9], {"label": "a", "score": 0.5}]}, None),
    ({"predictions": []}, "no predictions in the answer"),
    ({"outputs": [1, 0]}, "no predictions in the answer"),
    ({"predictions": [1]}, "1 predictions for 2 instances"),
    ({"predictions": [[0.1, float("nan")], 1]}, "predictions[0][1] is nan (not a finite number)"),
    ({"predictions": [{"score": float("-inf")}, 1]}, "predictions[0].score is -inf (not a finite number)"),
    ({"error": "no such model"}, "the server answered an error: no such model"),
])  # fmt: skip
def test_kserve_predictions(doc: object, reason: str | None) -> None:
    outcome = check_predictions(doc, 2)
    assert outcome.ok is (reason is None) and outcome.reason == reason


def test_http_success_rule() -> None:
    spec = HttpProtocol.model_validate({"kind": "http", "path": "/p", "success": {"status": [200, 404],
                                                                                  "json_path": "$.a[0]"}})  # fmt: skip
    client = client_of(Runtime(protocol=spec))
    assert client.check(200, JSON, b'{"a": [1]}').ok and client.check(404, JSON, b'{"a": [0]}').ok
    assert client.check(200, JSON, b'{"a": []}').reason == "no value at $.a[0]"
    assert client.check(200, JSON, b'{"a": [null]}').reason == "no value at $.a[0]"
    assert client.check(200, JSON, b"a").reason is not None and "not JSON" in str(client.check(200, JSON, b"a").reason)
    assert client.check(201, JSON, b'{"a": [1]}').reason == "HTTP 201 is not a success status (200, 404)"
    assert client.check(503, JSON, b"").reason is None and not client.check(503, JSON, b"").ok
    plain = client_of(Runtime(protocol=HttpProtocol(kind="http", path="/p")))
    assert plain.check(200, {}, b"anything").ok


def test_helpers() -> None:
    assert value_at({"a": [{"b": 0}]}, ("a", 0, "b")) == (True, 0)
    assert value_at({"a": []}, ("a", 0)) == (False, None) and value_at([1], ("a",)) == (False, None)
    assert finite_problem({"a": [1.0, {"b": [2, math.nan]}]}, "x") == "x.a[1].b[1] is nan (not a finite number)"
    assert finite_problem([1, "NaN", None, True], "x") is None
