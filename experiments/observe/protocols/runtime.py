"""A protocol as the Locust processes get it: the spec's model with its files already read and checked.

:func:`prepare` runs in the run's own process when the load is built: it reads the payload file a
protocol names (``inputs: {file: …}``, ``instances_file``), relative to ``base_dir``, within
:data:`MAX_PAYLOAD_BYTES`, and checks its shape, so a missing file, bad JSON or a tensor whose data
does not fill its shape is a located :class:`~faults.errors.ConfigError` (file, line, column, the
path inside the file; exit 2) before any Locust process starts. The result, :class:`Runtime`, is
written to the run's load directory as JSON and read back by every Locust process
(:meth:`Runtime.read`), which builds its client with :func:`client_of`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from faultdrill.experiments.observe.protocols.base import ProtocolClient
from faultdrill.experiments.spec.load import InputsFile, KServeV1Protocol, LoadProtocol, OipV2Protocol
from faultdrill.faults.errors import ConfigError
from faultdrill.faults.inputlimits import json_depth_error, read_bytes
from faultdrill.target_service.answers import FORMAT as KNOWN_FORMAT
from faultdrill.target_service.answers import KnownAnswerError
from faultdrill.target_service.answers import parse as parse_known_answers
from faultdrill.target_service.binary_data import BYTES, DATATYPES

__all__ = ["MAX_PAYLOAD_BYTES", "Runtime", "client_of", "prepare"]

MAX_PAYLOAD_BYTES = 64 << 20
"""A payload file (request bodies) may be larger than a spec (``faults.inputlimits.MAX_TEXT_BYTES``):
tensors are big; every Locust process holds it in memory once."""


class Runtime(BaseModel):
    """``protocol`` and, for a protocol with a payload file, the request documents read from it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    protocol: LoadProtocol
    payloads: list[dict[str, Any]] | None = None
    known_answers: dict[str, Any] | None = None
    """``oip_v2``'s ``known_answers`` file, read and checked (``target_service/answers.py``'s format)."""

    @classmethod
    def read(cls, path: str | Path) -> Runtime:
        return cls.model_validate_json(Path(path).read_bytes())


def prepare(protocol: LoadProtocol, base_dir: Path) -> Runtime:
    """Read and check ``protocol``'s payload file, if it has one (relative paths: from ``base_dir``)."""
    if isinstance(protocol, OipV2Protocol):
        payloads = known = None
        if isinstance(protocol.inputs, InputsFile):
            path, field = base_dir / protocol.inputs.file, "load.protocol.inputs.file"
            payloads = _oip_requests(_read_json(path, field), str(path))
        if protocol.known_answers is not None:
            path = base_dir / protocol.known_answers.file
            known = _read_json(path, "load.protocol.known_answers.file")
            try:
                parse_known_answers(known)
            except KnownAnswerError as exc:
                raise _bad(str(path), exc.where, exc.message, f"a known-answer set ({KNOWN_FORMAT})") from None
        return Runtime(protocol=protocol, payloads=payloads, known_answers=known)
    if isinstance(protocol, KServeV1Protocol):
        path, field = base_dir / protocol.instances_file, "load.protocol.instances_file"
        return Runtime(protocol=protocol, payloads=[_kserve_request(_read_json(path, field), str(path))])
    return Runtime(protocol=protocol)


def client_of(runtime: Runtime) -> ProtocolClient:
    """The client for ``runtime``'s protocol (imported here: a Locust process loads only its own)."""
    protocol = runtime.protocol
    if protocol.kind == "oip_v2":
        from faultdrill.experiments.observe.protocols.oip_v2 import OipV2Client

        known = parse_known_answers(runtime.known_answers) if runtime.known_answers is not None else None
        return OipV2Client(protocol, runtime.payloads, known)
    if protocol.kind == "openai":
        from faultdrill.experiments.observe.protocols.openai import OpenAIClient

        return OpenAIClient(protocol)
    from faultdrill.experiments.observe.protocols.plain import HttpClient, KServeV1Client

    if protocol.kind == "kserve_v1":
        return KServeV1Client(protocol, (runtime.payloads or [{}])[0])
    return HttpClient(protocol)


def _read_json(path: Path, field: str) -> Any:
    try:
        raw = read_bytes(path, limit=MAX_PAYLOAD_BYTES, what="payload file")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}", field=field,
                          expected="a JSON file (relative paths: from the experiment's directory)") from None
    try:
        return json.loads(raw)
    except RecursionError:
        raise json_depth_error(raw, str(path), "a JSON payload") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"not JSON: {exc.msg}", file=str(path), line=exc.lineno, column=exc.colno,
                          expected="a JSON payload") from None  # fmt: skip
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 JSON ({exc.reason})", file=str(path), expected="a JSON payload") from None


def _bad(file: str, where: str, message: str, expected: str) -> ConfigError:
    return ConfigError(message, file=file, field=where or None, expected=expected)


def _oip_requests(doc: Any, file: str) -> list[dict[str, Any]]:
    """``{"inputs": [...]}`` or a non-empty list of them; each input's data fills its shape."""
    requests, prefix = ([doc], "") if isinstance(doc, dict) else (doc, "*")
    if not isinstance(requests, list) or not requests:
        raise _bad(file, "", "the file holds no request", 'an OIP v2 request {"inputs": [...]} or a list of them')
    for i, request in enumerate(requests):
        at = f"[{i}]" if prefix else ""
        inputs = request.get("inputs") if isinstance(request, dict) else None
        if not isinstance(inputs, list) or not inputs:
            raise _bad(file, f"{at}.inputs".lstrip("."), "no inputs", "a non-empty list of OIP v2 input tensors")
        for j, tensor in enumerate(inputs):
            _check_tensor(tensor, file, f"{at}.inputs[{j}]".lstrip("."))
    return requests


def _check_tensor(tensor: Any, file: str, at: str) -> None:
    expected = "an input tensor {name, shape, datatype, data}"
    if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
        raise _bad(file, at, "an input needs a name", expected)
    datatype, shape = tensor.get("datatype"), tensor.get("shape")
    if datatype != BYTES and datatype not in DATATYPES:
        raise _bad(file, f"{at}.datatype", f"{datatype!r} is not an OIP v2 datatype",
                   "one of " + ", ".join([*DATATYPES, BYTES]))  # fmt: skip
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):  # fmt: skip
        raise _bad(file, f"{at}.shape", f"shape {shape!r} is not a list of sizes", "non-negative integers")
    count = flat_count(tensor.get("data"))
    if count is None:
        raise _bad(file, f"{at}.data", "no data (or data that is not a list)", "the tensor's elements as a list")
    if count != math.prod(shape):
        raise _bad(file, f"{at}.data", f"{count} elements do not fill shape {shape} ({math.prod(shape)})",
                   "as many elements as the shape holds")  # fmt: skip


def flat_count(data: Any) -> int | None:
    """Elements of a (possibly nested) JSON list; None when ``data`` is not a list."""
    if not isinstance(data, list):
        return None
    count, stack = 0, [data]
    while stack:
        node = stack.pop()
        for item in node:
            if isinstance(item, list):
                stack.append(item)
            else:
                count += 1
    return count


def _kserve_request(doc: Any, file: str) -> dict[str, Any]:
    request = {"instances": doc} if isinstance(doc, list) else doc
    if not isinstance(request, dict) or not isinstance(request.get("instances"), list) or not request["instances"]:
        raise _bad(file, "instances", "no instances", 'a JSON list of instances, or {"instances": [...]}')
    return request
