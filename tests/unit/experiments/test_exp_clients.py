"""Load clients: ``load.clients`` in the spec, the client id on request events, SLO expectations
filtered by client (with located errors and did-you-mean), and the ``counter`` expectation."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from faultdrill.experiments import expect as ex
from faultdrill.experiments.expect.judge import evaluate
from faultdrill.experiments.journal.timeline import Timeline
from faultdrill.experiments.observe.load import LoadGenerator, _Tail
from faultdrill.experiments.spec.experiment import MISCONFIGURATIONS
from faultdrill.experiments.spec.loader import check_experiment_text, load_experiment
from faultdrill.faults.registry import FaultRegistry

REPO = Path(__file__).resolve().parents[3]
SPEC = """apiVersion: faultdrill/v1
kind: Experiment
metadata: {name: t}
load:
  clients: [{id: tenant-a}, {id: tenant-b, weight: 2}]
faults:
  - {id: flood, type: client_flood, target: replica-0, at: 2s, duration: 5s}
expect:
  - {slo: latency_p95, at_most: 300ms, during: flood, clients: [tenant-a, tenat-b]}
"""


@pytest.fixture(scope="module")
def registry() -> FaultRegistry:
    return FaultRegistry.installed()


def test_unknown_client_in_an_expectation_is_located_with_did_you_mean(registry: FaultRegistry) -> None:
    err = check_experiment_text(SPEC, file="exp.yaml", registry=registry)[0]
    assert (err.file, err.line, err.field, err.suggestion) == ("exp.yaml", 9, "expect[0].clients[1]", "tenant-b")
    assert "no load client 'tenat-b'" in str(err)


def test_client_lists_are_validated(registry: FaultRegistry) -> None:
    both = SPEC.replace("clients: [tenant-a, tenat-b]", "clients: [tenant-a], except_clients: [tenant-b]")
    assert "clients or except_clients" in str(check_experiment_text(both, registry=registry)[0])
    dupes = SPEC.replace("{id: tenant-b, weight: 2}", "{id: tenant-a}")
    assert "client id listed twice: tenant-a" in str(check_experiment_text(dupes, registry=registry)[0])
    bad_id = SPEC.replace("{id: tenant-b, weight: 2}", "{id: 'tenant b'}")
    err = check_experiment_text(bad_id, registry=registry)[0]
    assert (err.line, err.field) == (5, "load.clients[1].id")


def test_the_catalog_experiment_loads(registry: FaultRegistry) -> None:
    exp = load_experiment(REPO / "experiments" / "catalog" / "noisy_neighbour.yaml", registry=registry)
    assert [c.id for c in exp.load.clients] == ["tenant-a", "tenant-b"]
    assert exp.faults[0].type == "client_flood"
    assert "no_rate_limit" in MISCONFIGURATIONS


def _timeline() -> Timeline:
    tl = Timeline()
    tl.add("fault", "flood", t=1.0, event="start", fault="client_flood")
    for i in range(20):  # tenant-a fast; tenant-b slow; anonymous requests fail
        tl.add("request", "load", t=1.1 + i * 0.1, ok=True, status=200, latency_s=0.01, client="tenant-a")
        tl.add("request", "load", t=1.1 + i * 0.1, ok=True, status=200, latency_s=0.5, client="tenant-b")
        tl.add("request", "load", t=1.1 + i * 0.1, ok=False, status=429, latency_s=0.001)
    tl.add("fault", "flood", t=4.0, event="end", fault="client_flood")
    return tl


def test_slo_filtered_by_client() -> None:
    tl = _timeline()
    only_a = ex.SloOver(slo="latency_p95", at_most="100ms", during="flood", clients=["tenant-a"])
    verdict = evaluate(only_a, tl)
    assert verdict.passed and verdict.measured["requests"] == 20
    assert verdict.name == "latency p95 at most 100 ms during flood (clients tenant-a)"
    both = ex.SloOver(slo="latency_p95", at_most="100ms", during="flood", clients=["tenant-a", "tenant-b"])
    assert not evaluate(both, tl).passed
    others = ex.SloOver(slo="availability", at_least=0.99, during="flood", except_clients=["tenant-b"])
    verdict = evaluate(others, tl)
    assert not verdict.passed and verdict.measured["availability"] == 0.5  # the anonymous 429s count
    assert evaluate(ex.SloOver(slo="availability", at_least=0.99, during="flood",
                               clients=["tenant-a", "tenant-b"]), tl).passed  # fmt: skip


def test_counter_increase_handles_resets_and_missing_samples() -> None:
    tl = _timeline()
    for t, v in ((0.5, 10.0), (1.5, 30.0), (2.5, 5.0), (3.5, 25.0)):  # a restart between 1.5 and 2.5
        tl.add("metric", "replica-0", t=t, name="inference_failures_total", value=v,
               labels={"model": "digits", "reason": "rate_limited"})  # fmt: skip
        tl.add("metric", "replica-0", t=t, name="inference_failures_total", value=1.0,
               labels={"model": "digits", "reason": "shed"})  # fmt: skip
    x = ex.CounterIncrease(counter="inference_failures_total", labels={"reason": "rate_limited"}, at_least=40,
                           during="flood")  # fmt: skip
    verdict = evaluate(x, tl)
    assert verdict.passed and verdict.measured["increase"] == 45.0  # 20 + 5 (reset) + 20
    assert verdict.name == 'inference_failures_total{reason="rate_limited"} increases by at least 40 during flood'
    none = ex.CounterIncrease(counter="ratelimit_requests_total", at_most=0, during="flood")
    assert not evaluate(none, tl).passed and "is it scraped" in evaluate(none, tl).observed
    with pytest.raises(ValueError, match="at_least, at_most or both"):
        ex.CounterIncrease(counter="x_total", during="flood")


def test_request_events_carry_the_client_id(tmp_path: Path) -> None:
    tl = Timeline()
    gen = LoadGenerator("http://127.0.0.1:9", tl, tmp_path, clients=[("tenant-a", 1)])
    events = tmp_path / "load-events-0.jsonl"
    rows = [{"t": tl.start_wall + 0.5, "ok": True, "status": 200, "latency_s": 0.01, "name": "/x",
             "client": "tenant-a", "error": None},
            {"t": tl.start_wall + 0.6, "ok": True, "status": 200, "latency_s": 0.01, "name": "/x",
             "error": None}]  # fmt: skip
    events.write_text("".join(json.dumps(r) + "\n" for r in rows))
    gen._tail = _Tail([events])
    gen._drain()
    assert [e.get("client") for e in tl.select("request")] == ["tenant-a", None]


def test_locust_users_send_their_client_id_and_events_carry_it(
    tmp_path: Path, serve_http: Callable[[type[BaseHTTPRequestHandler]], str]
) -> None:
    seen: Counter[str] = Counter()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            with lock:
                seen[str(self.headers.get("x-client-id"))] += 1
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *_: object) -> None:
            pass

    tl = Timeline()
    gen = LoadGenerator(serve_http(Handler), tl, tmp_path, users=4, run_time=2, think_time_s=0.05,
                        clients=[("tenant-a", 1), ("tenant-b", 1)])  # fmt: skip
    with gen:
        gen.wait(timeout_s=60)
    by_client: Counter[str] = Counter()
    for e in tl.select("requests"):  # buckets are per client: their counts add up to what the server saw
        by_client[e.get("client")] += e.get("count")
    assert set(by_client) == {"tenant-a", "tenant-b"} and min(by_client.values()) > 5, by_client
    assert set(seen) == {"tenant-a", "tenant-b"}, seen  # 2 users each: weights 1:1
    assert by_client == seen
