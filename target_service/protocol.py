"""Open Inference Protocol v2 request parsing and response building.

Every malformed request becomes a :class:`ProtocolError` carrying the HTTP status (400 or
413) and a message that says what was expected; nothing here can raise anything else for
bad input, so the server never answers 500 to a client mistake.

Inputs come as JSON ``data`` or, with the binary tensor data extension, as raw bytes after the
JSON header (``header_length``: the ``Inference-Header-Content-Length`` header; the framing is
``binary_data.py``); the answer is all JSON unless the request asks for its output as binary
(``outputs[].parameters.binary_data``, or ``parameters.binary_data_output``), as Triton does.

Example::

    >>> req = parse_infer_request(
    ...     b'{"inputs":[{"name":"input","shape":[1,2],"datatype":"FP32","data":[0.5,1]}]}',
    ...     input_name="input", width=2, max_rows=8, output_name="probabilities")
    >>> req.rows.shape, req.binary_output
    ((1, 2), False)
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from .binary_data import BinaryDataError, encode_tensor, frame, read_binary_inputs, split_body

__all__ = [
    "InferRequest",
    "ProtocolError",
    "build_binary_infer_response",
    "build_infer_response",
    "decode_content",
    "parse_infer_request",
    "parse_timeout_header",
]


class ProtocolError(Exception):
    """A client error: ``status`` (400, 404, 413) and a message for ``{"error": …}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class InferRequest:
    rows: np.ndarray  # float32 [n, width]
    request_id: str | None
    entity: str
    timeout_s: float | None
    binary_output: bool = False  # answer with the output as binary tensor data (the extension)


def _flatten(data: Any) -> list[Any]:
    # OIP allows row-major nested lists as well as a flat list.
    if not isinstance(data, list):
        raise ProtocolError(400, "inputs[0].data must be a list of numbers")
    if data and isinstance(data[0], list):
        # Depth first, in order, without recursion (one iterator per open list). It used to pop a
        # stack of lists, which gave the rows back in reverse: row 0's answer was the last row's.
        flat: list[Any] = []
        stack = [iter(data)]
        while stack:
            for element in stack[-1]:
                if isinstance(element, list):
                    stack.append(iter(element))
                    break
                flat.append(element)
            else:
                stack.pop()
        return flat
    return data


def parse_infer_request(
    body: bytes,
    *,
    input_name: str,
    width: int,
    max_rows: int,
    output_name: str = "probabilities",
    header_length: str | None = None,
) -> InferRequest:
    """Validate an OIP v2 infer body for a model with one FP32 input ``[-1, width]`` and one output
    ``output_name``; ``header_length``: the ``Inference-Header-Content-Length`` header, if sent."""
    header: bytes | memoryview = body
    tail: bytes | memoryview = b""
    if header_length is not None:
        try:
            header, tail = split_body(body, header_length)
        except BinaryDataError as exc:
            raise ProtocolError(400, str(exc)) from None
    try:
        doc = orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        where = f" in the first {len(header)} bytes (Inference-Header-Content-Length)" if header_length else ""
        raise ProtocolError(400, f"malformed JSON{where}: {exc}") from None
    if not isinstance(doc, dict):
        raise ProtocolError(400, "request body must be a JSON object with an 'inputs' list")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise ProtocolError(400, f"'inputs' must be a list with exactly one tensor '{input_name}'")
    tensor = inputs[0]
    if tensor.get("name") != input_name:
        raise ProtocolError(
            400, f"unknown input {tensor.get('name')!r}: this model expects {input_name!r}"
        )
    if tensor.get("datatype") != "FP32":
        raise ProtocolError(
            400, f"input datatype {tensor.get('datatype')!r} not supported: expected 'FP32'"
        )
    shape = tensor.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) != 2
        or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
        or shape[1] != width
        or shape[0] < 1
    ):
        raise ProtocolError(400, f"input shape {shape!r} not supported: expected [n, {width}]")
    if shape[0] > max_rows:
        raise ProtocolError(413, f"{shape[0]} rows in one request; at most {max_rows} allowed")
    binary = _binary_input(inputs, tail, framed=header_length is not None)
    if binary is not None:
        rows = binary.astype(np.float32).reshape(shape[0], width)  # a copy in native order, off the body
    else:
        rows = _json_rows(tensor.get("data"), shape, width)
    # One float64 reduction: NaN and infinity propagate, and no float32 sum can overflow it.
    if not math.isfinite(float(rows.sum(dtype=np.float64))):
        raise ProtocolError(400, "input data must be finite numbers (no NaN or infinity)")
    raw_params = doc.get("parameters")
    params: dict[str, Any] = raw_params if isinstance(raw_params, dict) else {}
    entity = params.get("entity_id", "default")
    if not isinstance(entity, str) or not entity or len(entity) > 128:
        raise ProtocolError(400, "parameters.entity_id must be a non-empty string (<= 128)")
    timeout = params.get("timeout_ms")
    timeout_s: float | None = None
    if timeout is not None:
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
            raise ProtocolError(400, "parameters.timeout_ms must be a positive number")
        timeout_s = float(timeout) / 1000.0
    request_id = doc.get("id")
    return InferRequest(
        rows=rows,
        request_id=request_id if isinstance(request_id, str) else None,
        entity=entity,
        timeout_s=timeout_s if timeout_s is None or math.isfinite(timeout_s) else None,
        binary_output=_binary_output(doc.get("outputs"), params, output_name),
    )


def _json_rows(data: Any, shape: list[int], width: int) -> np.ndarray:
    flat = _flatten(data)
    if len(flat) != shape[0] * width:
        raise ProtocolError(
            400, f"input data has {len(flat)} values; shape {shape} needs {shape[0] * width}"
        )
    try:  # numbers only: numpy would read "1.5" and true as numbers, and give up on ints past 64 bits
        values = np.asarray(flat)
        if values.dtype.kind not in "iuf":
            raise TypeError(values.dtype)
        with np.errstate(over="ignore"):  # a value past float32's range becomes inf, refused below
            return values.astype(np.float32).reshape(shape[0], width)
    except (TypeError, ValueError, OverflowError):
        raise ProtocolError(400, "input data must contain only numbers") from None


def _binary_input(inputs: list[Any], tail: bytes | memoryview, *, framed: bool) -> np.ndarray | None:
    """The (one) input's binary tensor, or None when it came as JSON ``data`` (no bytes may follow then)."""
    params = inputs[0].get("parameters")
    if not framed and isinstance(params, dict) and "binary_data_size" in params:
        raise ProtocolError(400, f"input {inputs[0].get('name')!r} has parameters.binary_data_size but the "
                                 "request has no Inference-Header-Content-Length header: binary tensor data "
                                 "follows a JSON header of that many bytes")  # fmt: skip
    if not framed:
        return None
    try:
        return read_binary_inputs(inputs, tail)[0]
    except BinaryDataError as exc:
        raise ProtocolError(400, str(exc)) from None


def _binary_output(outputs: Any, params: dict[str, Any], output_name: str) -> bool:
    """Whether the request asks for its output as binary data (the output's own choice wins)."""
    binary = params.get("binary_data_output", False)
    if not isinstance(binary, bool):
        raise ProtocolError(400, "parameters.binary_data_output must be true or false")
    if outputs is None:
        return binary
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise ProtocolError(400, f"'outputs' must be a list of objects like {{\"name\": {output_name!r}}}")
    for out in outputs:
        if out.get("name") != output_name:
            raise ProtocolError(400, f"unknown output {out.get('name')!r}: this model's output is {output_name!r}")
        out_params = out.get("parameters", {})
        if not isinstance(out_params, dict):
            raise ProtocolError(400, f"outputs[{output_name!r}].parameters must be an object")
        if "classification" in out_params:
            raise ProtocolError(400, "the classification extension is not supported: ask for the output itself "
                                     "(its probabilities) and take the top classes from it")  # fmt: skip
        wanted = out_params.get("binary_data", binary)
        if not isinstance(wanted, bool):
            raise ProtocolError(400, f"outputs[{output_name!r}].parameters.binary_data must be true or false")
        binary = wanted
    return binary


_TIMEOUT_HEADER = re.compile(r"\d+(?:\.\d*)?|\.\d+", re.ASCII)


def parse_timeout_header(value: str | None) -> float | None:
    """``x-request-timeout-ms`` in seconds (None: not sent, or too large to matter); anything but a
    non-negative decimal number of milliseconds is a 400."""
    if not value:  # not sent (or sent empty, as before: no timeout of its own)
        return None
    if not _TIMEOUT_HEADER.fullmatch(value):
        shown = value if len(value) <= 32 else value[:31] + "…"
        raise ProtocolError(400, f"x-request-timeout-ms must be a number of milliseconds, got {shown!r}")
    timeout_s = float(value) / 1000.0
    return timeout_s if math.isfinite(timeout_s) else None


def _response_doc(
    model: str, version: str, output: dict[str, Any], request_id: str | None, parameters: dict[str, Any]
) -> dict[str, Any]:
    doc: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": [output], "parameters": parameters}
    if request_id is not None:
        doc["id"] = request_id
    return doc


def build_infer_response(
    *,
    model: str,
    version: str,
    output_name: str,
    probabilities: np.ndarray,
    request_id: str | None,
    parameters: dict[str, Any],
) -> bytes:
    """Serialise an OIP v2 infer response (probabilities as a flat row-major list)."""
    n, k = probabilities.shape
    output = {
        "name": output_name,
        "shape": [n, k],
        "datatype": "FP32",
        "data": probabilities.reshape(-1),  # orjson serialises numpy natively
    }
    doc = _response_doc(model, version, output, request_id, parameters)
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)


def build_binary_infer_response(
    *,
    model: str,
    version: str,
    output_name: str,
    probabilities: np.ndarray,
    request_id: str | None,
    parameters: dict[str, Any],
) -> tuple[bytes, int]:
    """The same response with the output as binary tensor data: ``(body, JSON header length)``."""
    n, k = probabilities.shape
    raw = encode_tensor(probabilities, "FP32")
    output = {"name": output_name, "shape": [n, k], "datatype": "FP32", "parameters": {"binary_data_size": len(raw)}}
    header = orjson.dumps(_response_doc(model, version, output, request_id, parameters))
    return frame(header, [raw])


_ENCODINGS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def decode_content(body: bytes, encoding: str | None, limit: int) -> bytes:
    """``body`` without its ``Content-Encoding`` (gzip or deflate, as Triton's clients compress
    requests), at most ``limit`` bytes once decompressed (413 past it)."""
    coding = (encoding or "").strip().lower()
    if coding in ("", "identity"):
        return body
    wbits = _ENCODINGS.get(coding)
    if wbits is None:
        raise ProtocolError(400, f"Content-Encoding {coding[:32]!r} not supported: gzip, deflate or identity")
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, limit + 1)  # never more than the limit in memory
    except zlib.error as exc:
        raise ProtocolError(400, f"request body is not valid {coding} data: {exc}") from None
    if len(out) > limit:
        raise ProtocolError(413, f"request body exceeds the {limit}-byte limit once decompressed")
    if not inflater.eof or inflater.unused_data:
        raise ProtocolError(400, f"request body is not one complete {coding} stream")
    return out
