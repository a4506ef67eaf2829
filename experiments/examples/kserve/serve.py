"""KServe's ModelServer (kserve 0.21) serving the digits model as a custom ``kserve.Model``, bound to loopback.

Run from the KServe venv (``make server-kserve``)::

    .faultdrill/servers/kserve/venv/bin/python experiments/examples/kserve/serve.py \
        --http_port 8080 --model_dir experiments/examples/kserve/models [--features_url http://127.0.0.1:9400]

What it is: the real ``kserve.ModelServer`` (uvicorn + FastAPI, the V1 and Open Inference Protocol v2 REST
endpoints, ``/metrics`` on the HTTP port), started the way KServe's own custom-predictor examples start it, with
a model that loads ``<model_dir>/digits/model.joblib`` (written by ``experiments/examples/train_digits.py``)
before the server starts. A model that fails to load stops the process (exit 1) before any port opens,
as in a KServe pod.

Why this file and not ``python -m kserve…``: KServe 0.21 has no option for the listen address. The REST
server's uvicorn config is built with ``host="0.0.0.0"`` in ``kserve/protocol/rest/server.py`` and the gRPC
server listens on ``[::]:<port>`` in ``kserve/protocol/grpc/server.py`` (the pod's network namespace is the
boundary in Kubernetes). On a shared host a drill must not open a model server to the network, so this
launcher (1) sets the REST server's uvicorn ``config.host`` to 127.0.0.1 (``KSERVE_BIND_ADDRESS`` overrides)
through a subclass swapped in where ``kserve.model_server`` looks it up — one attribute, before the socket is
bound — and (2) serves without gRPC (``enable_grpc=False``), whose address is a local variable of
``GRPCServer.start`` and cannot be changed without copying that method; the drills use REST only.

The dependency (optional): with ``--features_url`` (or ``FEATURES_URL``), each request first asks the feature
service for the pixel scale (``GET <url>/features/digits`` → ``{"scale": 16.0}``), with a 250 ms timeout and a
fallback to the built-in scale when it fails — the way a custom predictor usually calls a feature store: a
timeout and a default, no circuit breaker. Fallbacks are counted in ``digits_feature_fallbacks_total``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer, model_server
from kserve.protocol.rest.server import RESTServer
from prometheus_client import Counter

BIND_ADDRESS = os.environ.get("KSERVE_BIND_ADDRESS", "127.0.0.1")
DEFAULT_SCALE = 16.0
FEATURE_TIMEOUT_S = 0.25
FALLBACKS = Counter("digits_feature_fallbacks",
                    "Requests served with the built-in pixel scale (the feature service failed)", ["reason"])


class _LoopbackRESTServer(RESTServer):
    """KServe's REST server with the listen address set (0.21 hard-codes 0.0.0.0)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config.host = BIND_ADDRESS


model_server.RESTServer = _LoopbackRESTServer  # ModelServer.start builds its REST server from this name


class DigitsModel(Model):
    """The digits MLP behind the Open Inference Protocol: input ``input`` FP32 [-1, 64], output ``predict`` INT64."""

    def __init__(self, name: str, model_dir: Path, features_url: str | None) -> None:
        super().__init__(name)
        self.model_dir = model_dir
        self.features_url = features_url.rstrip("/") if features_url else None
        self.client = httpx.AsyncClient(timeout=FEATURE_TIMEOUT_S) if self.features_url else None
        self.model: Any = None

    def load(self) -> bool:
        self.model = joblib.load(self.model_dir / self.name / "model.joblib")  # a corrupt file raises: exit 1
        self.ready = True
        return self.ready

    def get_input_types(self) -> list[dict[str, Any]]:
        return [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]

    def get_output_types(self) -> list[dict[str, Any]]:
        return [{"name": "predict", "datatype": "INT64", "shape": [-1, 1]}]

    async def _scale(self) -> float:
        if self.client is None:
            return DEFAULT_SCALE
        try:
            answer = await self.client.get(f"{self.features_url}/features/digits")
            answer.raise_for_status()
            return float(answer.json()["scale"])
        except httpx.TimeoutException:
            FALLBACKS.labels(reason="timeout").inc()
        except (httpx.HTTPError, ValueError, KeyError):
            FALLBACKS.labels(reason="error").inc()
        return DEFAULT_SCALE

    async def predict(self, payload: InferRequest, headers: dict[str, str] | None = None) -> InferResponse:
        pixels = payload.inputs[0].as_numpy().astype(np.float64).reshape(-1, 64)
        scale = await self._scale()
        classes = self.model.predict(pixels * (DEFAULT_SCALE / scale)).astype(np.int64).reshape(-1, 1)
        output = InferOutput(name="predict", shape=list(classes.shape), datatype="INT64")
        output.set_data_from_numpy(classes, binary_data=False)
        return InferResponse(model_name=self.name, infer_outputs=[output], response_id=payload.id or str(uuid.uuid4()))


def main() -> None:
    parser = argparse.ArgumentParser(parents=[model_server.parser])
    parser.add_argument("--model_dir", type=Path, required=True,
                        help="the repository: <model_dir>/<model_name>/model.joblib")
    parser.add_argument("--features_url", default=os.environ.get("FEATURES_URL"),
                        help="the feature service (optional)")
    args, _ = parser.parse_known_args()
    name = args.model_name if args.model_name != "model" else "digits"
    model = DigitsModel(name, args.model_dir, args.features_url)
    try:
        model.load()
    except Exception as exc:  # what a KServe pod does: log the failure and exit, to be restarted
        logging.getLogger("digits").error("model load failed: %s: %s", type(exc).__name__, exc)
        sys.exit(1)
    ModelServer(http_port=args.http_port, enable_grpc=False, workers=1).start([model])


if __name__ == "__main__":
    main()
