"""KServe V1 and plain HTTP: one request repeated, judged by its protocol or by the spec's own rule.

KServe V1 (TensorFlow Serving's REST shape): ``POST /v1/models/{model}:predict`` with the file's
``{"instances": [...]}``; an answer is right when it is a JSON object with a ``predictions`` list of
one prediction per instance and no non-finite number anywhere in it.

``http``: the method, path, headers and body of the spec. An answer is right when its status is
one of ``success.status`` and, with ``success.json_path``, its body is JSON with a non-null value
there. A 2xx outside ``success.status`` is a wrong answer; any other status is left to Locust.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from faultdrill.experiments.observe.protocols.base import (
    OK,
    STATUS_FAILED,
    Call,
    Outcome,
    ProtocolClient,
    finite_problem,
    json_answer,
    server_error,
    value_at,
)
from faultdrill.experiments.spec.load import HttpProtocol, KServeV1Protocol, json_path_parts

__all__ = ["HttpClient", "KServeV1Client", "check_predictions"]


def check_predictions(doc: Any, instances: int) -> Outcome:
    """Judge a KServe V1 answer to ``instances`` instances."""
    if (error := server_error(doc)) is not None:
        return Outcome.wrong(error)
    predictions = doc.get("predictions") if isinstance(doc, dict) else None
    if not isinstance(predictions, list) or not predictions:
        return Outcome.wrong("no predictions in the answer")
    if len(predictions) != instances:
        return Outcome.wrong(f"{len(predictions)} predictions for {instances} instances")
    problem = finite_problem(predictions, "predictions")
    return Outcome.wrong(problem) if problem else OK


class KServeV1Client(ProtocolClient):
    """``POST /v1/models/{model}:predict`` with the payload file's request."""

    def __init__(self, spec: KServeV1Protocol, request: dict[str, Any]) -> None:
        self.path = f"/v1/models/{quote(spec.model, safe='')}:predict"
        self.instances = len(request.get("instances") or [])
        body = json.dumps(request, separators=(",", ":")).encode()
        self._call = Call("POST", self.path, body, {"Content-Type": "application/json"}, self.path)

    def call(self, index: int) -> Call:
        return self._call

    def check(self, status: int, headers: Mapping[str, str], body: bytes) -> Outcome:
        if not 200 <= status < 300:
            return STATUS_FAILED
        doc, why = json_answer(body)
        return Outcome.wrong(why) if why is not None else check_predictions(doc, self.instances)


class HttpClient(ProtocolClient):
    """The spec's request, as it is; success by status and an optional JSON path."""

    def __init__(self, spec: HttpProtocol) -> None:
        self.spec = spec
        headers = dict(spec.headers)
        if spec.body is None or isinstance(spec.body, str):
            body = None if spec.body is None else spec.body.encode()
        else:
            body = json.dumps(spec.body, separators=(",", ":")).encode()
            if not any(k.lower() == "content-type" for k in headers):
                headers["Content-Type"] = "application/json"
        self.json_path = None if spec.success.json_path is None else json_path_parts(spec.success.json_path)
        self._call = Call(spec.method, spec.path, body, headers, spec.path.split("?", 1)[0])

    def call(self, index: int) -> Call:
        return self._call

    def check(self, status: int, headers: Mapping[str, str], body: bytes) -> Outcome:
        if status not in self.spec.success.status:
            if 200 <= status < 300:
                return Outcome.wrong(f"HTTP {status} is not a success status ({_statuses(self.spec)})")
            return STATUS_FAILED
        if self.json_path is None:
            return OK
        doc, why = json_answer(body)
        if why is not None:
            return Outcome.wrong(why)
        found, value = value_at(doc, self.json_path)
        return OK if found and value is not None else Outcome.wrong(f"no value at {self.spec.success.json_path}")


def _statuses(spec: HttpProtocol) -> str:
    return ", ".join(str(s) for s in spec.success.status)
