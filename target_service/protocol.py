"""Open Inference Protocol v2 request parsing and response building.

Every malformed request becomes a :class:`ProtocolError` carrying the HTTP status (400 or
413) and a message that says what was expected; nothing here can raise anything else for
bad input, so the server never answers 500 to a client mistake.

Example::

    >>> req = parse_infer_request(
    ...     b'{"inputs":[{"name":"input","shape":[1,2],"datatype":"FP32","data":[0.5,1]}]}',
    ...     input_name="input", width=2, max_rows=8)
    >>> req.rows.shape
    (1, 2)
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

__all__ = ["InferRequest", "ProtocolError", "build_infer_response", "parse_infer_request", "parse_timeout_header"]


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


def _flatten(data: Any) -> list[Any]:
    # OIP allows row-major nested lists as well as a flat list.
    if not isinstance(data, list):
        raise ProtocolError(400, "inputs[0].data must be a list of numbers")
    if data and isinstance(data[0], list):
        flat: list[Any] = []
        stack = [data]
        while stack:
            item = stack.pop()
            for element in reversed(item) if isinstance(item, list) else ():
                if isinstance(element, list):
                    stack.append(element)
                else:
                    flat.append(element)
        flat.reverse()
        return flat
    return data


def parse_infer_request(
    body: bytes, *, input_name: str, width: int, max_rows: int
) -> InferRequest:
    """Validate an OIP v2 infer body for a model with one FP32 input ``[-1, width]``."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(400, f"malformed JSON: {exc}") from None
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
    flat = _flatten(tensor.get("data"))
    if len(flat) != shape[0] * width:
        raise ProtocolError(
            400, f"input data has {len(flat)} values; shape {shape} needs {shape[0] * width}"
        )
    try:  # numbers only: numpy would read "1.5" and true as numbers, and give up on ints past 64 bits
        values = np.asarray(flat)
        if values.dtype.kind not in "iuf":
            raise TypeError(values.dtype)
        with np.errstate(over="ignore"):  # a value past float32's range becomes inf, refused below
            rows = values.astype(np.float32).reshape(shape[0], width)
    except (TypeError, ValueError, OverflowError):
        raise ProtocolError(400, "input data must contain only numbers") from None
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
    )


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
    doc: dict[str, Any] = {
        "model_name": model,
        "model_version": version,
        "outputs": [
            {
                "name": output_name,
                "shape": [n, k],
                "datatype": "FP32",
                "data": probabilities.reshape(-1),  # orjson serialises numpy natively
            }
        ],
        "parameters": parameters,
    }
    if request_id is not None:
        doc["id"] = request_id
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
