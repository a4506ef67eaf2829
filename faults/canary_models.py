"""The bad model versions of ``bad_canary`` and the direct measurement of a replica's answers.

Kept apart from ``faults/canary.py`` because it needs torch and the target's registry (imported
only when a bad version is really built) while the fault's contract does not.

Example::

    publish_bad_version(registry, "digits", "2", "bad-ab12", "low_confidence", logit_scale=0.15)
    measure_replica("http://127.0.0.1:8001", "digits")  # {'version': 'bad-ab12', 'confidence': 0.41, …}
"""

from __future__ import annotations

import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

__all__ = ["build_bad_model", "measure_replica", "publish_bad_version"]


def build_bad_model(model: Any, arch: dict[str, Any], kind: str, *, width: int = 262_144,
                    logit_scale: float = 0.15) -> tuple[Any, dict[str, Any]]:  # fmt: skip
    """``(bad model, its arch)`` built from a loaded ``model`` (see ``faults/canary.py`` for the kinds)."""
    import torch
    from torch import nn

    from faultdrill.target_service.models import DigitsNet

    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if kind == "slow":
        first, last = linears[0], linears[-1]
        hidden = first.out_features
        wide = DigitsNet(hidden=max(width, hidden))
        with torch.no_grad():
            for p in wide.parameters():
                p.zero_()
            w1, w2 = wide.net[0], wide.net[2]
            assert isinstance(w1, nn.Linear) and isinstance(w2, nn.Linear)
            w1.weight[:hidden].copy_(first.weight)
            w1.bias[:hidden].copy_(first.bias)
            w2.weight[:, :hidden].copy_(last.weight)
            w2.bias.copy_(last.bias)
        return wide, {**arch, "hidden": max(width, hidden)}
    with torch.no_grad():
        last = linears[-1]
        if kind == "low_confidence":
            last.weight.mul_(logit_scale)
            last.bias.mul_(logit_scale)
        elif kind == "erroring":
            last.bias.fill_(float("nan"))
        else:
            raise ValueError(f"unknown bad canary kind {kind!r}")
    return model, dict(arch)


def publish_bad_version(registry: Path, model_name: str, from_version: str, version: str, kind: str, *,
                        width: int = 262_144, logit_scale: float = 0.15) -> str:  # fmt: skip
    """Publish the bad ``version`` of ``model_name`` built from ``from_version``; its sha256."""
    import torch

    from faultdrill.target_service.registry import ModelRegistry

    reg = ModelRegistry(registry)
    loaded = reg.load(model_name, from_version, torch.device("cpu"))
    bad, arch = build_bad_model(loaded.model, loaded.manifest.arch, kind, width=width, logit_scale=logit_scale)
    metrics = {**loaded.manifest.metrics, "bad_canary": 1.0}
    # A bad build of the same model answers to the same known answers (and fails them: target_service/answers.py).
    known = reg.known_answers(model_name, from_version)
    answers = json.loads(known.read_text()) if known is not None else None
    return reg.publish(model_name, bad, arch, metrics, version=version, known_answers=answers).sha256


def measure_replica(url: str | None, model: str, requests: int = 20, timeout_s: float = 5.0) -> dict[str, Any]:
    """Send ``requests`` real inferences straight to a replica: version, latency, confidence, non-finite share."""
    if url is None:
        return {"error": "no url"}
    from faultdrill.target_service.models import example_inputs

    rows = example_inputs(requests, seed=7)
    latencies: list[float] = []
    tops: list[float] = []
    nonfinite = failed = 0
    version = None
    with httpx.Client(timeout=timeout_s) as client:
        for row in rows:
            body = {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": row.tolist()}]}
            t0 = time.monotonic()
            try:
                r = client.post(f"{url}/v2/models/{model}/infer", json=body)
            except httpx.HTTPError:
                failed += 1
                continue
            latencies.append(time.monotonic() - t0)
            if r.status_code != 200:
                failed += 1
                continue
            doc = r.json()
            version = str(doc.get("model_version"))
            data = doc["outputs"][0]["data"]
            if any(v is None or not math.isfinite(v) for v in data):
                nonfinite += 1
            else:
                tops.append(max(data))
    answered = max(1, requests - failed)
    return {"version": version, "requests": requests, "failed": failed,
            "nonfinite": round(nonfinite / answered, 3),
            "confidence": round(statistics.fmean(tops), 4) if tops else None,
            "latency_p50_s": round(statistics.median(latencies), 6) if latencies else None}  # fmt: skip
