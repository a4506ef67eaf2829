"""Traces for real: a target replica and the feature store (separate processes, TLS, the fault proxy
between them) write span files; one request is one trace across both processes."""

from __future__ import annotations

import ssl
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from faultdrill.experiments.platforms.local.stack import LocalStack
from faultdrill.target_service.traceexport import read_span_file
from faultdrill.target_service.tracing import FEATURE_STORE_SERVICE, TARGET_SERVICE

pytestmark = pytest.mark.slow  # three processes and a restart: ~10 s on an idle 2-core machine

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
Record = dict[str, Any]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(tmp_path_factory.mktemp("tracestack"), replicas=1, trace_sample_ratio=1.0) as st:
        yield st


def _spans(stack: LocalStack) -> list[Record]:
    return [r for f in sorted(stack.trace_dir.glob("*.jsonl")) for r in read_span_file(f)]


def _wait_for(stack: LocalStack, found: Callable[[list[Record]], bool], timeout_s: float = 6.0) -> list[Record]:
    """Spans are exported in batches every 0.5 s: poll the files until ``found`` holds."""
    deadline = time.monotonic() + timeout_s
    while True:
        spans = _spans(stack)
        if found(spans) or time.monotonic() > deadline:
            return spans
        time.sleep(0.1)


def _infer(stack: LocalStack, entity: str, **headers: str) -> httpx.Response:
    url = stack.topology().get("replica-0").url
    body = {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 64}],
            "parameters": {"entity_id": entity}}  # fmt: skip
    return httpx.post(f"{url}/v2/models/digits/infer", json=body, headers=headers, timeout=10)


def _trace(spans: list[Record], trace_id: str) -> dict[str, Record]:
    return {f"{s['service']}:{s['kind']}:{s['name']}": s for s in spans if s["trace_id"] == trace_id}


def test_one_request_is_one_trace_across_target_and_feature_store(stack: LocalStack):
    entity = f"user-{uuid.uuid4().hex[:8]}"  # never fetched before: the replica calls the store
    response = _infer(stack, entity, traceparent=f"00-{TRACE_ID}-{CALLER_SPAN}-01", **{"x-request-id": entity})
    assert response.status_code == 200
    # both processes export on their own schedule: wait for the whole trace (5 spans)
    spans = _wait_for(stack, lambda s: len(_trace(s, TRACE_ID)) == 5)
    tr = _trace(spans, TRACE_ID)
    root = tr[f"{TARGET_SERVICE}:SERVER:POST /v2/models/{{name}}/infer"]
    client = tr[f"{TARGET_SERVICE}:CLIENT:GET /v1/features/{{entity}}"]
    store = tr[f"{FEATURE_STORE_SERVICE}:SERVER:GET /v1/features/{{entity}}"]
    wait, forward = tr[f"{TARGET_SERVICE}:INTERNAL:queue.wait"], tr[f"{TARGET_SERVICE}:INTERNAL:model.forward"]
    # the caller's traceparent was extracted: the request span is its child
    assert root["parent_id"] == CALLER_SPAN and root["remote_parent"] is True
    assert client["parent_id"] == root["span_id"] and wait["parent_id"] == root["span_id"]
    assert forward["parent_id"] == root["span_id"]
    # and the target injected its own: the store's span (another process) is the client span's child
    assert store["parent_id"] == client["span_id"] and store["remote_parent"] is True
    assert store["instance"] == "feature-store" and root["instance"] == "replica-0"
    a = root["attributes"]
    assert (a["http.response.status_code"], a["faultdrill.replica"], a["faultdrill.rows"]) == (200, "replica-0", 1)
    assert a["faultdrill.request_id"] == entity and a["faultdrill.feature_source"] == "fresh"
    assert root["status"] == "UNSET" and store["attributes"]["http.response.status_code"] == 200
    # child spans sit inside the request, in order: queue wait ends when the forward starts
    assert root["start_ns"] <= client["start_ns"] <= store["start_ns"] <= store["end_ns"] <= root["end_ns"]
    assert wait["end_ns"] == forward["start_ns"] and forward["end_ns"] <= root["end_ns"]
    # a batch of one (nothing else was queued) is its request's forward: no batch span, no link
    assert forward["attributes"]["faultdrill.batch.size"] == 1 and forward["links"] == []


def test_a_failed_request_and_a_failing_dependency_are_errors(stack: LocalStack):
    # 504: a deadline that has passed before the request is queued
    rid = f"late-{uuid.uuid4().hex[:8]}"
    assert _infer(stack, "default", **{"x-request-timeout-ms": "0.001", "x-request-id": rid}).status_code == 504
    # the store failing every call (its chaos lever): the replica falls back, 200 degraded
    store = stack.topology().get("feature-store")
    assert store.admin_token_file is not None
    auth = {"authorization": f"Bearer {store.admin_token_file.read_text().strip()}"}
    tls = ssl.create_default_context(cafile=str(store.ca_file))
    httpx.post(f"{store.admin_url}/admin/faults", json={"error_rate": 1.0}, headers=auth, verify=tls).raise_for_status()
    try:
        entity = f"user-{uuid.uuid4().hex[:8]}"
        response = _infer(stack, entity, **{"x-request-id": entity})
        assert response.status_code == 200 and response.json()["parameters"]["degraded"] is True
        # four more failures open the breaker (threshold 5); the next call is rejected without a call
        more = [f"user-{uuid.uuid4().hex[:8]}" for _ in range(5)]
        for other in more:
            assert _infer(stack, other, **{"x-request-id": other}).status_code == 200
    finally:
        httpx.delete(f"{store.admin_url}/admin/faults", headers=auth, verify=tls).raise_for_status()

    def request(spans: list[Record], request_id: str) -> Record | None:
        return next((s for s in spans if s["attributes"].get("faultdrill.request_id") == request_id), None)

    spans = _wait_for(stack, lambda s: request(s, rid) is not None and (r := request(s, entity)) is not None
                      and any(x["service"] == FEATURE_STORE_SERVICE and x["trace_id"] == r["trace_id"] for x in s))
    late = request(spans, rid)
    assert late is not None and late["status"] == "ERROR"
    assert (late["attributes"]["http.response.status_code"], late["attributes"]["error.type"]) == (504, "504")
    degraded = request(spans, entity)
    assert degraded is not None and degraded["status"] == "UNSET"
    assert [e["name"] for e in degraded["events"]] == ["feature.fallback"]
    assert degraded["events"][0]["attributes"] == {"source": "default", "error": "http 503"}
    tr = _trace(spans, degraded["trace_id"])
    client = tr[f"{TARGET_SERVICE}:CLIENT:GET /v1/features/{{entity}}"]
    served = tr[f"{FEATURE_STORE_SERVICE}:SERVER:GET /v1/features/{{entity}}"]
    assert client["status"] == "ERROR" and client["attributes"]["http.response.status_code"] == 503
    assert served["status"] == "ERROR" and served["events"][0]["name"] == "fault.injected"
    spans = _wait_for(stack, lambda s: request(s, more[-1]) is not None)
    opened = request(spans, more[3])  # the fifth failure in a row: the breaker opens (an event of the request)
    assert opened is not None
    transition = next(e for e in opened["events"] if e["name"] == "breaker.transition")
    assert (transition["attributes"]["from"], transition["attributes"]["to"]) == ("closed", "open")
    rejected = request(spans, more[4])
    assert rejected is not None
    assert [e["name"] for e in rejected["events"]] == ["breaker.rejected", "feature.fallback"]
    assert rejected["events"][1]["attributes"]["error"].startswith("breaker open")
    assert not any(s["service"] == FEATURE_STORE_SERVICE and s["trace_id"] == rejected["trace_id"] for s in spans)


def test_trace_files_are_in_the_stacks_workdir(stack: LocalStack):
    files = {p.name for p in stack.trace_dir.glob("*.jsonl")}
    assert files == {"replica-0.jsonl", "feature-store.jsonl"}
    assert Path(stack.workdir) in stack.trace_dir.parents


def test_sample_ratio_zero_exports_nothing(stack: LocalStack):
    # Last in this module: the replica keeps ratio 0 until the stack stops (a restart costs seconds).
    stack.restart("replica-0", env={"FAULTDRILL_TRACE_SAMPLE_RATIO": "0"})
    time.sleep(0.6)  # spans of requests before the restart are all exported by now (every 0.5 s)
    before = len(_spans(stack))
    sent = [f"user-{uuid.uuid4().hex[:8]}" for _ in range(5)]
    for entity in sent:  # new entities: the store is called each time, with an unsampled traceparent
        assert _infer(stack, entity, **{"x-request-id": entity}).status_code == 200
    time.sleep(1.5)  # three export periods
    after = _spans(stack)
    assert len(after) == before
    assert not any(s["attributes"].get("faultdrill.request_id") in sent for s in after)
