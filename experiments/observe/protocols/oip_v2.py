"""Open Inference Protocol v2: infer requests, generated from the model's metadata or read from a file,
as JSON or with the binary tensor data extension, and every answer checked against the metadata.

``GET /v2/models/{model}`` gives each input's name, datatype and shape; with ``inputs: generated``
the client waits for it (a failed or malformed metadata answer is a failed request, retried at most
once a second) and makes 16 request bodies: each ``-1`` dimension as 1, values of the datatype
(floats in [0, 1), integers in [0, 10), booleans, short strings), from a fixed seed so runs send
the same requests. With a file the metadata is optional: asked until the server answers it, and
used for the checks when it does.

An answer is wrong when it is not OIP v2 JSON (or a binary body whose framing does not hold), has
no outputs, an output whose data does not fill its shape or holds a non-finite number, or — with
metadata — lacks an output the model declares, or has another datatype or a shape the declared
one (``-1``: any size) rules out. With ``binary: true`` the inputs are binary and the outputs are
asked as binary too (``binary_data_output``), so both directions of the extension are exercised.
The framing is the bundled target's own ``target_service.binary_data`` (checked against the
official Triton client in its tests).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import numpy as np

from faultdrill.experiments.observe.protocols.base import (
    OK,
    STATUS_FAILED,
    Call,
    Outcome,
    ProtocolClient,
    json_answer,
    server_error,
)
from faultdrill.experiments.spec.load import OipV2Protocol
from faultdrill.target_service.answers import KNOWN_EVERY, KnownAnswers, check_outputs
from faultdrill.target_service.binary_data import (
    BYTES,
    DATATYPES,
    HEADER,
    BinaryDataError,
    binary_data_size,
    decode_tensor,
    encode_tensor,
    frame,
    split_body,
)

__all__ = ["OipV2Client", "TensorMeta", "answer_outputs", "check_answer", "generated_request", "parse_metadata"]

_GENERATED = 16
_SEED = 20240917
_RETRY_S = 1.0


@dataclass(frozen=True)
class TensorMeta:
    """One input or output of the model's metadata (``shape``: -1 for any size)."""

    name: str
    datatype: str
    shape: tuple[int, ...]


def parse_metadata(doc: Any) -> tuple[list[TensorMeta], list[TensorMeta]] | str:
    """``(inputs, outputs)`` of a metadata answer, or why it is not OIP v2 model metadata."""
    if not isinstance(doc, dict):
        return "the model metadata is not a JSON object"
    found: list[list[TensorMeta]] = []
    for key in ("inputs", "outputs"):
        tensors = doc.get(key, [])
        if not isinstance(tensors, list):
            return f"the model metadata's {key} is not a list"
        metas = []
        for i, t in enumerate(tensors):
            shape = t.get("shape") if isinstance(t, dict) else None
            if not (isinstance(t, dict) and isinstance(t.get("name"), str) and isinstance(t.get("datatype"), str)
                    and isinstance(shape, list) and all(isinstance(d, int) and d >= -1 for d in shape)):  # fmt: skip
                return f"the model metadata's {key}[{i}] is not a tensor {{name, datatype, shape}}"
            metas.append(TensorMeta(t["name"], t["datatype"], tuple(shape)))
        found.append(metas)
    if not found[0]:
        return "the model metadata lists no inputs"
    return found[0], found[1]


def _values(rng: random.Random, datatype: str, count: int) -> list[Any]:
    if datatype in ("FP16", "FP32", "FP64", "BF16"):
        return [round(rng.random(), 6) for _ in range(count)]
    if datatype == "BOOL":
        return [rng.random() < 0.5 for _ in range(count)]
    if datatype == BYTES:
        return [f"faultdrill-{rng.randrange(16**6):06x}" for _ in range(count)]
    return [rng.randrange(10) for _ in range(count)]  # every integer type holds 0..9


def generated_request(inputs: list[TensorMeta], rng: random.Random) -> dict[str, Any]:
    """A request of each input: -1 dimensions as 1, values of its datatype."""
    tensors = []
    for meta in inputs:
        shape = [1 if d == -1 else d for d in meta.shape]
        tensors.append({"name": meta.name, "shape": shape, "datatype": meta.datatype,
                        "data": _values(rng, meta.datatype, math.prod(shape))})  # fmt: skip
    return {"inputs": tensors}


def _flat(data: list[Any]) -> list[Any]:
    out, stack = [], [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def encode(request: dict[str, Any], binary: bool) -> tuple[bytes, dict[str, str]]:
    """The body and headers of ``request``: JSON, or binary inputs (and binary outputs asked for)."""
    if not binary:
        return json.dumps(request, separators=(",", ":")).encode(), {"Content-Type": "application/json"}
    header, tensors = {**request, "inputs": []}, []
    for tensor in request["inputs"]:
        values = _flat(tensor["data"])
        array = np.array(values, dtype=object if tensor["datatype"] == BYTES else None)
        raw = encode_tensor(array, tensor["datatype"])
        header["inputs"].append({k: v for k, v in tensor.items() if k != "data"}
                                | {"parameters": {**tensor.get("parameters", {}), "binary_data_size": len(raw)}})
        tensors.append(raw)
    header["parameters"] = {**request.get("parameters", {}), "binary_data_output": True}
    body, length = frame(json.dumps(header, separators=(",", ":")).encode(), tensors)
    return body, {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(length)}


def _tensor_problem(out: Any, i: int, tail: memoryview, offset: int) -> tuple[str | None, int]:
    """(why ``outputs[i]`` is wrong or None, bytes of binary data it used)."""
    label = f"outputs[{i}]"
    if not isinstance(out, dict) or not isinstance(out.get("name"), str):
        return f"{label} is not a tensor with a name", 0
    datatype, shape, label = out.get("datatype"), out.get("shape"), f"output {out['name']!r}"
    if datatype != BYTES and datatype not in DATATYPES:
        return f"{label} has datatype {datatype!r}, not an OIP v2 datatype", 0
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):  # fmt: skip
        return f"{label} has shape {shape!r}, not a list of sizes", 0
    try:
        size = binary_data_size(out, label)
        if size is not None:
            if size > len(tail) - offset:
                return f"{label}: binary_data_size {size} but {len(tail) - offset} bytes follow", size
            array = decode_tensor(tail[offset:offset + size], datatype, shape, label)
            return (_finite(array, label) if datatype in ("FP16", "FP32", "FP64", "BF16") else None), size
    except BinaryDataError as exc:
        return str(exc), 0
    data = out.get("data")
    if not isinstance(data, list):
        return f"{label} has no data", 0
    values = _flat(data)
    if len(values) != math.prod(shape):
        return f"{label} has {len(values)} elements for shape {shape} ({math.prod(shape)})", 0
    if datatype == BYTES:
        ok = all(isinstance(v, str) for v in values)
    elif datatype == "BOOL":
        ok = all(isinstance(v, bool) or v in (0, 1) for v in values)
    else:
        ok = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    if not ok:
        return f"{label} holds an element that is not {datatype}", 0
    return (_finite(np.asarray(values, dtype=np.float64), label) if datatype.startswith(("FP", "BF")) else None), 0


def _finite(array: np.ndarray, label: str) -> str | None:
    bad = ~np.isfinite(array.astype(np.float64, copy=False))
    if bad.any():
        index = int(np.flatnonzero(bad.reshape(-1))[0])
        return f"{label} holds {array.reshape(-1)[index]} at element {index} (not a finite number)"
    return None


def _metadata_problem(outputs: list[dict[str, Any]], declared: list[TensorMeta]) -> str | None:
    by_name = {o["name"]: o for o in outputs}
    for meta in declared:
        out = by_name.get(meta.name)
        if out is None:
            return f"output {meta.name!r} of the model's metadata is missing"
        if out["datatype"] != meta.datatype:
            return f"output {meta.name!r} is {out['datatype']}, the metadata says {meta.datatype}"
        shape = out["shape"]
        if len(shape) != len(meta.shape) or any(d != -1 and d != s for d, s in zip(meta.shape, shape, strict=True)):
            return f"output {meta.name!r} has shape {shape}, the metadata allows {list(meta.shape)}"
    return None


def check_answer(headers: Mapping[str, str], body: bytes, declared: list[TensorMeta] | None) -> Outcome:
    """Judge an infer answer (2xx) as OIP v2, against the declared outputs when there are any."""
    try:
        head, tail = split_body(body, headers[HEADER]) if HEADER in headers else (memoryview(body), memoryview(b""))
    except BinaryDataError as exc:
        return Outcome.wrong(f"binary answer: {exc}")
    doc, why = json_answer(head)
    if why is not None or not isinstance(doc, dict):
        return Outcome.wrong(why or "the answer is not a JSON object")
    if (error := server_error(doc)) is not None:
        return Outcome.wrong(error)
    outputs = doc.get("outputs")
    if not isinstance(outputs, list) or not outputs:
        return Outcome.wrong("no outputs in the answer")
    offset = 0
    for i, out in enumerate(outputs):
        problem, used = _tensor_problem(out, i, tail, offset)
        if problem is not None:
            return Outcome.wrong(problem)
        offset += used
    if offset != len(tail):
        return Outcome.wrong(f"{len(tail) - offset} bytes after the outputs' binary data")
    problem = _metadata_problem(outputs, declared) if declared else None
    return Outcome.wrong(problem) if problem else OK


def answer_outputs(headers: Mapping[str, str], body: bytes) -> list[dict[str, Any]]:
    """The outputs of an answer :func:`check_answer` passed, each with its ``data`` as a flat list (binary data
    decoded)."""
    head, tail = split_body(body, headers[HEADER]) if HEADER in headers else (memoryview(body), memoryview(b""))
    outputs, offset, found = json.loads(bytes(head))["outputs"], 0, []
    for out in outputs:
        size = binary_data_size(out, str(out.get("name")))
        if size is not None:
            data = decode_tensor(tail[offset:offset + size], out["datatype"], out["shape"]).reshape(-1).tolist()
            offset += size
        else:
            data = _flat(out["data"])
        found.append({**out, "data": data})
    return found


class OipV2Client(ProtocolClient):
    """``POST /v2/models/{model}[/versions/{v}]/infer``; metadata from ``GET /v2/models/{model}``."""

    def __init__(self, spec: OipV2Protocol, payloads: list[dict[str, Any]] | None,
                 known: KnownAnswers | None = None) -> None:  # fmt: skip
        self.spec = spec
        # Known answers: every KNOWN_EVERY-th call sends one of them, in turn (target_service/answers.py).
        self._known = [(encode(e.request(), spec.binary), e) for e in known.answers] if known else []
        self.meta_path = f"/v2/models/{quote(spec.model, safe='')}"
        version = f"/versions/{quote(spec.version, safe='')}" if spec.version else ""
        self.path = f"{self.meta_path}{version}/infer"
        self.outputs: list[TensorMeta] | None = None
        self._bodies = [encode(p, spec.binary) for p in payloads] if payloads else []
        self._wants_meta, self._asked_at = True, -math.inf
        self.ready = bool(self._bodies)  # generated inputs wait for the metadata

    def setup_call(self, now: float) -> Call | None:
        if not self._wants_meta or now - self._asked_at < _RETRY_S:
            return None
        self._asked_at = now
        return Call("GET", self.meta_path, name=self.meta_path)

    def set_up(self, status: int, headers: Mapping[str, str], body: bytes) -> Outcome:
        if not 200 <= status < 300:
            if self.ready and 400 <= status < 500:  # a file's requests need no metadata: stop asking
                self._wants_meta = False
            return STATUS_FAILED
        doc, why = json_answer(body)
        parsed = parse_metadata(doc) if why is None else why
        if isinstance(parsed, str):
            return Outcome.wrong(parsed)
        inputs, self.outputs = parsed
        if not self._bodies:
            rng = random.Random(_SEED)
            self._bodies = [encode(generated_request(inputs, rng), self.spec.binary) for _ in range(_GENERATED)]
        self._wants_meta, self.ready = False, True
        return OK

    def call(self, index: int) -> Call:
        if self._known and index % KNOWN_EVERY == 0:
            (body, headers), expected = self._known[(index // KNOWN_EVERY) % len(self._known)]
            return Call("POST", self.path, body, headers, self.path, expected=expected)
        body, headers = self._bodies[index % len(self._bodies)]
        return Call("POST", self.path, body, headers, self.path)

    def check(self, status: int, headers: Mapping[str, str], body: bytes) -> Outcome:
        if not 200 <= status < 300:
            return STATUS_FAILED
        return check_answer(headers, body, self.outputs)

    def judge_of(self, call: Call) -> Callable[[int, Mapping[str, str], bytes], Outcome]:
        expected = call.expected
        if expected is None:
            return self.check

        def judge(status: int, headers: Mapping[str, str], body: bytes) -> Outcome:
            outcome = self.check(status, headers, body)
            if not outcome.ok:
                return outcome
            why = check_outputs(answer_outputs(headers, body), None, expected)
            return Outcome.wrong(f"known answer: {why}") if why is not None else outcome

        return judge
