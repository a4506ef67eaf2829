"""Known answers: fixed OIP v2 requests with the outputs a correct model gives them, and the load's answer check.

A **known-answer set** (``known_answers.json``, format ``faultdrill.known_answers/1``) is published next to a model
version (``target_service/registry.py``; the bundled ``digits`` gets one when it is trained) and may be written by
hand for any OIP v2 server (``load.protocol: {kind: oip_v2, …, known_answers: {file: ka.json}}``)::

    {"format": "faultdrill.known_answers/1", "model": "digits", "version": "1",
     "tolerance": {"atol": 0.2, "rtol": 0.0},
     "answers": [
       {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [0.0, 0.31, …]}],
        "class": 7,
        "outputs": [{"name": "probabilities", "shape": [1, 10], "data": [0.0001, …, 0.9987, …]}]},
       …]}

Each answer holds the request's ``inputs`` (OIP v2 input tensors, sent as they are), and what a correct answer
holds: ``class`` (the argmax of the first expected output's last axis: an int for one row, a list for several)
and/or ``outputs`` (expected tensors by name: the answer's tensor of that name must have that ``shape`` and every
value within ``atol + rtol × |expected|`` of ``data``). ``tolerance`` (default ``{atol: 0, rtol: 0.001}``; a key
left out of a given one is 0) may also be given per answer. ``model`` and
``version`` say what the set was made from (informative). An answer missing, of another shape, non-finite, of
another class or out of tolerance is a **wrong answer**.

:func:`check_outputs` is the bundled load's check of one answer (``target_service/locustfile.py``): plain Python
on the parsed body, no numpy: ~2.7 µs with its orjson parse, ~5 µs for a known answer (``docs/load.md``). This
module imports nothing of the framework (the target stays load-testable alone); the framework's ``oip_v2``
protocol reuses :func:`parse` and :func:`check_outputs`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

__all__ = ["FORMAT", "KNOWN_ANSWERS_FILE", "KNOWN_EVERY", "Expected", "KnownAnswerError", "KnownAnswers",
           "check_outputs", "parse", "read"]  # fmt: skip

FORMAT = "faultdrill.known_answers/1"
KNOWN_ANSWERS_FILE = "known_answers.json"
KNOWN_EVERY = 4
"""With known answers, the loads (bundled and ``oip_v2``) send one of them every ``KNOWN_EVERY``-th request, in turn."""
_DATATYPES = frozenset({"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16",
                        "FP32", "FP64", "BF16", "BYTES"})  # fmt: skip


class KnownAnswerError(ValueError):
    """A known-answer file that does not hold: ``where`` is the path inside it (``answers[3].outputs[0].data``)."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}" if where else message)
        self.where, self.message = where, message


@dataclass(frozen=True)
class Expected:
    """What one known request must be answered with."""

    inputs: tuple[dict[str, Any], ...]
    cls: tuple[int, ...] | None
    """The argmax per row of the first expected output (or of the answer's first output), or None."""
    outputs: tuple[tuple[str, tuple[int, ...], tuple[float, ...] | None], ...]
    """(name, shape, flat data or None) of each expected output."""
    atol: float
    rtol: float

    def request(self) -> dict[str, Any]:
        return {"inputs": list(self.inputs)}


@dataclass(frozen=True)
class KnownAnswers:
    model: str | None
    version: str | None
    answers: tuple[Expected, ...]


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _flat(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    out: list[Any] = []
    for item in data:
        out.extend(_flat(item) if isinstance(item, list) else [item])
    return out


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in value):  # fmt: skip
        raise KnownAnswerError(where, f"{value!r} is not a list of sizes")
    return tuple(value)


def _tolerance(value: Any, where: str, default: tuple[float, float]) -> tuple[float, float]:
    if value is None:
        return default
    if not isinstance(value, dict) or set(value) - {"atol", "rtol"}:
        raise KnownAnswerError(where, "expected {atol: number, rtol: number} (either may be left out)")
    got = []
    for key in ("atol", "rtol"):  # one left out of a given tolerance is 0
        v = value.get(key, 0.0)
        if not _number(v) or v < 0:
            raise KnownAnswerError(f"{where}.{key}", f"{v!r} is not a number >= 0")
        got.append(float(v))
    return got[0], got[1]


def _input(t: Any, where: str) -> dict[str, Any]:
    if not isinstance(t, dict) or not isinstance(t.get("name"), str) or not t["name"]:
        raise KnownAnswerError(where, "is not an input tensor {name, shape, datatype, data}")
    shape = _shape(t.get("shape"), f"{where}.shape")
    if t.get("datatype") not in _DATATYPES:
        raise KnownAnswerError(f"{where}.datatype", f"{t.get('datatype')!r} is not an OIP v2 datatype")
    data = t.get("data")
    if not isinstance(data, list):
        raise KnownAnswerError(f"{where}.data", "is missing or not a list")
    if len(_flat(data)) != math.prod(shape):
        raise KnownAnswerError(f"{where}.data", f"{len(_flat(data))} elements do not fill shape {list(shape)}")
    return t


def _answer(a: Any, where: str, default: tuple[float, float]) -> Expected:
    if not isinstance(a, dict):
        raise KnownAnswerError(where, "is not an object {inputs, class, outputs}")
    if unknown := sorted(set(a) - {"inputs", "class", "outputs", "tolerance"}):
        raise KnownAnswerError(f"{where}.{unknown[0]}", "unknown field (expected inputs, class, outputs, tolerance)")
    inputs = a.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise KnownAnswerError(f"{where}.inputs", "is missing or empty: the request's OIP v2 input tensors")
    tensors = tuple(_input(t, f"{where}.inputs[{i}]") for i, t in enumerate(inputs))
    cls, raw = a.get("class"), a.get("class")
    if raw is not None:
        cls = [raw] if isinstance(raw, int) else raw
        if not isinstance(cls, list) or not cls or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0
                                                          for c in cls):  # fmt: skip
            raise KnownAnswerError(f"{where}.class", f"{raw!r} is not a class index (or a list of one per row)")
    outputs = []
    for i, o in enumerate(a.get("outputs") or ()):
        at = f"{where}.outputs[{i}]"
        if not isinstance(o, dict) or not isinstance(o.get("name"), str) or not o["name"]:
            raise KnownAnswerError(at, "is not an expected output {name, shape, data}")
        shape = _shape(o.get("shape"), f"{at}.shape")
        data = o.get("data")
        if data is not None:
            flat = _flat(data)
            if not all(_number(v) for v in flat):
                raise KnownAnswerError(f"{at}.data", "holds a value that is not a finite number")
            if len(flat) != math.prod(shape):
                raise KnownAnswerError(f"{at}.data", f"{len(flat)} elements do not fill shape {list(shape)}")
        outputs.append((o["name"], shape, None if data is None else tuple(float(v) for v in _flat(data))))
    if not isinstance(a.get("outputs", []), list):
        raise KnownAnswerError(f"{where}.outputs", "is not a list")
    if cls is None and not outputs:
        raise KnownAnswerError(where, "expects nothing: give class, outputs or both")
    atol, rtol = _tolerance(a.get("tolerance"), f"{where}.tolerance", default)
    return Expected(tensors, None if cls is None else tuple(cls), tuple(outputs), atol, rtol)


def parse(doc: Any) -> KnownAnswers:
    """A known-answer document (parsed JSON) checked; :class:`KnownAnswerError` says where it is wrong."""
    if not isinstance(doc, dict):
        raise KnownAnswerError("", f"a known-answer set is a JSON object with format {FORMAT!r} and answers")
    if doc.get("format", FORMAT) != FORMAT:
        raise KnownAnswerError("format", f"{doc.get('format')!r}: this faultdrill reads {FORMAT!r}")
    if unknown := sorted(set(doc) - {"format", "model", "version", "tolerance", "answers"}):
        raise KnownAnswerError(unknown[0], "unknown field (expected format, model, version, tolerance, answers)")
    default = _tolerance(doc.get("tolerance"), "tolerance", (0.0, 1e-3))
    answers = doc.get("answers")
    if not isinstance(answers, list) or not answers:
        raise KnownAnswerError("answers", "is missing or empty")
    found = tuple(_answer(a, f"answers[{i}]", default) for i, a in enumerate(answers))
    model, version = doc.get("model"), doc.get("version")
    return KnownAnswers(None if model is None else str(model), None if version is None else str(version), found)


def read(path: str) -> KnownAnswers:
    """The known-answer file at ``path`` (errors name the file and the place in it)."""
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read())
    except OSError as exc:
        raise KnownAnswerError("", f"{path}: cannot read it: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise KnownAnswerError("", f"{path}: not JSON: {exc}") from None
    try:
        return parse(doc)
    except KnownAnswerError as exc:
        raise KnownAnswerError(exc.where, f"{path}: {exc.where + ': ' if exc.where else ''}{exc.message}") from None


def _not_finite(label: str, data: list[Any]) -> str | None:
    for i, v in enumerate(data):
        if (v.__class__ is not float and v.__class__ is not int) or not -math.inf < v < math.inf:
            what = "not a number" if v.__class__ not in (float, int) else "not a finite number"
            return f"{label} holds {v!r} at element {i} ({what})"
    return None


def check_outputs(outputs: Any, shapes: dict[str, tuple[int, ...]] | None, expected: Expected | None) -> str | None:
    """Why the ``outputs`` of an OIP v2 JSON answer are wrong, or None. Every output: data that fills its shape,
    numbers only, all finite; ``shapes``: the shape each named output must have; ``expected``: a known answer."""
    if not isinstance(outputs, list) or not outputs:
        return "no outputs in the answer"
    by_name: dict[str, tuple[tuple[int, ...], list[Any]]] = {}
    for i, out in enumerate(outputs):
        if not isinstance(out, dict):
            return f"outputs[{i}] is not a tensor"
        name, shape, data = out.get("name"), out.get("shape"), out.get("data")
        label = f"output {name!r}"
        if not isinstance(shape, list) or not isinstance(data, list):
            return f"{label} has no shape or no data"
        size = 1
        for d in shape:
            size *= d if isinstance(d, int) else -1
        if size != len(data):
            return f"{label} has {len(data)} elements for shape {shape}"
        if shapes is not None and name in shapes and tuple(shape) != shapes[name]:
            return f"{label} has shape {shape}, expected {list(shapes[name])}"
        if (why := _not_finite(label, data)) is not None:
            return why
        by_name[str(name)] = (tuple(shape), data)
    if expected is None:
        return None
    for name, shape, _ in expected.outputs:
        got = by_name.get(name)
        if got is None:
            return f"output {name!r} is missing"
        if got[0] != shape:
            return f"output {name!r} has shape {list(got[0])}, expected {list(shape)}"
    if expected.cls is not None:
        name = expected.outputs[0][0] if expected.outputs else str(outputs[0].get("name"))
        shape, data = by_name.get(name, ((), []))
        width = shape[-1] if shape and shape[-1] else 0
        rows = [data[r * width : (r + 1) * width] for r in range(len(data) // width)] if width else []
        classes = tuple(row.index(max(row)) for row in rows)
        if classes != expected.cls:
            shown = classes[0] if len(classes) == 1 else list(classes)
            want = expected.cls[0] if len(expected.cls) == 1 else list(expected.cls)
            return f"class {shown} (argmax of output {name!r}), expected {want}"
    atol, rtol = expected.atol, expected.rtol
    for name, _, values in expected.outputs:
        if values is not None:
            for i, (v, x) in enumerate(zip(by_name[name][1], values, strict=True)):
                if abs(v - x) > atol + rtol * abs(x):
                    return f"output {name!r}[{i}] is {v:.6g}, expected {x:.6g} ± {atol + rtol * abs(x):.3g}"
    return None
