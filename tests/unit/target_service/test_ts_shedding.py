"""Load shedding at the API: a full queue answers at once, before the body is read, with 503 (or 429) and
``Retry-After``; the misconfiguration profiles break it the way ``experiments/catalog/overload.yaml`` catches.

The bundled target runs in process (a replica with the real digits model on the CPU, its app driven through
``httpx.ASGITransport`` on the loop its engine runs on); the inference worker is frozen so the queue fills.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

URL = "/v2/models/digits/infer"
BODY = json.dumps({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}]})


class Served:
    def __init__(self, registry_dir: Path, **settings: Any) -> None:
        from prometheus_client import CollectorRegistry

        from faultdrill.target_service.api import create_api
        from faultdrill.target_service.config import TargetSettings
        from faultdrill.target_service.metrics import TargetMetrics
        from faultdrill.target_service.replica import Replica

        s = TargetSettings(model_registry=registry_dir, device="cpu", feature_store_url=None, max_queue_size=1,
                           **settings)  # fmt: skip
        self.registry = CollectorRegistry()
        self.replica = Replica(s, TargetMetrics(self.registry, model=s.model))
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(asyncio.to_thread(self.replica.load, self.loop))
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_api(self.replica)),
                                        base_url="http://target")  # fmt: skip

    @property
    def engine(self) -> Any:
        assert self.replica.loaded is not None
        return self.replica.loaded.engine

    def overloaded(self, body: str = BODY, **headers: str) -> tuple[httpx.Response, list[httpx.Response]]:
        """One request sent while another waits in the (one-deep) queue of a frozen worker; then both answers."""

        async def go() -> tuple[httpx.Response, list[httpx.Response]]:
            self.engine.freeze(5.0)
            waiting = asyncio.create_task(self.client.post(URL, content=BODY))
            while self.engine.queue_depth < 1:
                await asyncio.sleep(0.005)
            answer = await self.client.post(URL, content=body, headers=headers)
            self.engine.unfreeze()
            return answer, [await waiting]

        return self.loop.run_until_complete(go())

    def failures(self, reason: str) -> float:
        return self.registry.get_sample_value("inference_failures_total", {"model": "digits", "reason": reason}) or 0

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.run_until_complete(self.engine.stop(1.0))
        assert self.replica.loaded is not None
        self.replica.loaded.device.close()
        self.loop.close()


@pytest.fixture(scope="module")
def registry_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from faultdrill.target_service.registry import ModelRegistry

    path = tmp_path_factory.mktemp("registry")
    ModelRegistry(path).ensure_defaults()
    return path


@pytest.fixture
def serve(registry_dir: Path) -> Iterator[Any]:
    made: list[Served] = []

    def make(**settings: Any) -> Served:
        made.append(Served(registry_dir, **settings))
        return made[-1]

    yield make
    for s in made:
        s.close()


def test_a_full_queue_sheds_at_once_with_retry_after_before_reading_the_body(serve: Any) -> None:
    served = serve(retry_after_s=2)
    shed, [waited] = served.overloaded(body="not even JSON")  # refused before the body is read: no 400
    assert shed.status_code == 503 and shed.headers["retry-after"] == "2"
    assert "queue is full" in shed.json()["error"] and waited.status_code == 200
    assert served.failures("shed") == 1 and served.failures("bad_request") == 0


def test_the_shed_status_may_be_429(serve: Any) -> None:
    shed, _ = serve(shed_status=429).overloaded()
    assert shed.status_code == 429 and shed.headers["retry-after"] == "1"


def test_shed_as_server_error_answers_500_without_retry_after(serve: Any) -> None:
    served = serve(misconfigurations=["shed_as_server_error"])
    shed, [waited] = served.overloaded()
    assert shed.status_code == 500 and "retry-after" not in shed.headers and waited.status_code == 200
    assert served.failures("internal") == 1 and served.failures("shed") == 0


def test_unbounded_queue_never_sheds_the_request_waits_its_deadline(serve: Any) -> None:
    served = serve(misconfigurations=["unbounded_queue"])
    started = time.monotonic()
    late, [waited] = served.overloaded(**{"x-request-timeout-ms": "300"})
    assert late.status_code == 504 and time.monotonic() - started >= 0.3  # waited all of its deadline
    assert waited.status_code == 200 and served.failures("shed") == 0 and served.failures("timeout") == 1
