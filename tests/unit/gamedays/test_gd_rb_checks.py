"""Outcome checks against real HTTP servers on 127.0.0.1: a tiny replica (health routes) and a
fake Prometheus HTTP API returning canned query results (the real one is exercised elsewhere)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from faultdrill.faults.topology import ServiceHandle, Topology
from faultdrill.gamedays.checks import CheckContext, CheckSyntaxError, parse_check, run_check, substitute

Answer = Callable[[str, dict[str, list[str]]], tuple[int, object]]


class Server:
    """A ThreadingHTTPServer on a free loopback port whose answers come from ``answer(path, query)``."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                outer.requests.append(self.path)
                status, doc = outer.answer(url.path, parse_qs(url.query))
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture()
def replica() -> Iterator[Server]:
    state = {"ready": True}

    def answer(path: str, _q: dict[str, list[str]]) -> tuple[int, object]:
        if path == "/v2/health/ready":
            return (200 if state["ready"] else 503), {"ready": state["ready"], "reason": "ready"}
        if path == "/v2/health/live":
            return 200, {"live": True}
        return 404, {"error": "no route"}

    server = Server(answer)
    server.state = state  # type: ignore[attr-defined]
    yield server
    server.close()


def _vector(*samples: tuple[dict[str, str], float]) -> dict[str, object]:
    result = [{"metric": labels, "value": [time.time(), str(value)]} for labels, value in samples]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


@pytest.fixture()
def prometheus() -> Iterator[Server]:
    """Canned answers per query; ``script[query]`` is a list consumed one answer per request."""
    script: dict[str, list[dict[str, object]]] = {}

    def answer(path: str, q: dict[str, list[str]]) -> tuple[int, object]:
        if path != "/api/v1/query":
            return 404, {"status": "error"}
        query = q["query"][0]
        if query == "bad(":
            return 400, {"status": "error", "errorType": "bad_data", "error": "parse error"}
        answers = script.get(query) or [_vector()]
        return 200, answers.pop(0) if len(answers) > 1 else answers[0]

    server = Server(answer)
    server.script = script  # type: ignore[attr-defined]
    yield server
    server.close()


def _ctx(**kw: object) -> CheckContext:
    base: dict[str, object] = {"variables": {"REPLICA": "replica-0"}}
    base.update(kw)
    return CheckContext(**base)  # type: ignore[arg-type]


def test_probe_by_topology_name_and_by_url(replica: Server) -> None:
    topo = Topology(services={"replica-0": ServiceHandle(name="replica-0", role="replica", url=replica.url)})
    ctx = _ctx(topology=lambda: topo)
    got = run_check(parse_check("probe readiness $REPLICA is true"), ctx)
    assert got.passed and "readiness of replica-0 is true" in got.detail
    assert replica.requests[-1] == "/v2/health/ready"
    assert run_check(parse_check(f"probe liveness {replica.url} is true"), ctx).passed
    assert replica.requests[-1] == "/v2/health/live"
    replica.state["ready"] = False  # type: ignore[attr-defined]
    got = run_check(parse_check("probe readiness replica-0 is true"), ctx)
    assert not got.passed and "is false (503" in got.detail and got.attempts == 1


def test_probe_of_an_unknown_replica_or_a_dead_port_is_false(replica: Server) -> None:
    topo = Topology(services={"replica-0": ServiceHandle(name="replica-0", role="replica", url=replica.url)})
    got = run_check(parse_check("probe readiness replica-9 is true"), _ctx(topology=lambda: topo))
    assert not got.passed and "unknown target 'replica-9'" in got.detail
    dead = "http://127.0.0.1:9"  # discard port: nothing listens
    assert run_check(parse_check(f"probe readiness {dead} is false"), _ctx()).passed
    assert not run_check(parse_check(f"probe readiness {dead} is true"), _ctx()).passed


def test_within_polls_until_it_passes(replica: Server) -> None:
    replica.state["ready"] = False  # type: ignore[attr-defined]
    threading.Timer(0.4, lambda: replica.state.update(ready=True)).start()  # type: ignore[attr-defined]
    got = run_check(parse_check(f"probe readiness {replica.url} is true within 5s"), _ctx())
    assert got.passed and got.attempts > 1 and 0.3 < got.elapsed_s < 3


def test_within_gives_up_at_its_deadline_and_says_so(replica: Server) -> None:
    start = time.monotonic()
    got = run_check(parse_check(f"probe readiness {replica.url} is false within 600ms"), _ctx())
    assert not got.passed and "still so after" in got.detail
    assert 0.5 < time.monotonic() - start < 2.0


def test_a_stop_event_ends_polling_early(replica: Server) -> None:
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    start = time.monotonic()
    got = run_check(parse_check(f"probe readiness {replica.url} is false within 30s"), _ctx(stop=stop))
    assert not got.passed and "(stopped)" in got.detail and time.monotonic() - start < 3


def test_metric_check_compares_every_sample(prometheus: Server) -> None:
    q = 'max(gpu_memory_used_bytes{pod="replica-0"})'
    prometheus.script[q] = [_vector(({"pod": "replica-0"}, 0.95))]  # type: ignore[attr-defined]
    ctx = _ctx(prometheus_url=prometheus.url)
    assert run_check(parse_check('metric max(gpu_memory_used_bytes{pod="$REPLICA"}) > 0.9'), ctx).passed
    got = run_check(parse_check('metric max(gpu_memory_used_bytes{pod="$REPLICA"}) < 0.9'), ctx)
    assert not got.passed and 'pod="replica-0"} 0.95' in got.detail and "expected < 0.9" in got.detail
    prometheus.script["up"] = [_vector(({"pod": "a"}, 1), ({"pod": "b"}, 0))]  # type: ignore[attr-defined]
    got = run_check(parse_check("metric up == 1"), ctx)
    assert not got.passed and 'pod="b"' in got.detail and 'pod="a"' not in got.detail


def test_metric_check_fails_on_no_sample_on_errors_and_without_prometheus(prometheus: Server) -> None:
    ctx = _ctx(prometheus_url=prometheus.url)
    got = run_check(parse_check("metric absent_series > 0"), ctx)
    assert not got.passed and "returned no sample" in got.detail
    got = run_check(parse_check("metric bad( > 0"), ctx)
    assert not got.passed and "Prometheus query failed" in got.detail
    got = run_check(parse_check("metric up > 0"), _ctx())
    assert not got.passed and "needs Prometheus" in got.detail
    got = run_check(parse_check("metric up > 0"), _ctx(prometheus_url="http://127.0.0.1:9"))
    assert not got.passed and "Prometheus query failed" in got.detail


def test_metric_check_reads_a_scalar(prometheus: Server) -> None:
    prometheus.script["scalar(up)"] = [  # type: ignore[attr-defined]
        {"status": "success", "data": {"resultType": "scalar", "result": [time.time(), "3"]}}]
    assert run_check(parse_check("metric scalar(up) == 3"), _ctx(prometheus_url=prometheus.url)).passed


def test_metric_within_sees_the_value_change(prometheus: Server) -> None:
    q = "max(circuit_breaker_state)"
    prometheus.script[q] = [_vector(({}, 1)), _vector(({}, 1)), _vector(({}, 0))]  # type: ignore[attr-defined]
    got = run_check(parse_check(f"metric {q} == 0 within 3s"), _ctx(prometheus_url=prometheus.url))
    assert got.passed and got.attempts == 3


def test_alert_firing_and_resolved_from_the_alerts_series(prometheus: Server) -> None:
    selector = 'ALERTS{alertname="InferenceCUDAOOM",pod="replica-0"}'
    prometheus.script[selector] = [  # type: ignore[attr-defined]
        _vector(({"alertname": "InferenceCUDAOOM", "alertstate": "firing", "pod": "replica-0"}, 1))]
    ctx = _ctx(prometheus_url=prometheus.url)
    assert run_check(parse_check('alert InferenceCUDAOOM{pod="$REPLICA"} firing'), ctx).passed
    got = run_check(parse_check('alert InferenceCUDAOOM{pod="$REPLICA"} resolved'), ctx)
    assert not got.passed and "is firing" in got.detail
    pending = 'ALERTS{alertname="InferenceGPUMemoryPressure"}'
    prometheus.script[pending] = [_vector(({"alertstate": "pending"}, 1))]  # type: ignore[attr-defined]
    assert not run_check(parse_check("alert InferenceGPUMemoryPressure firing"), ctx).passed
    assert not run_check(parse_check("alert InferenceGPUMemoryPressure resolved"), ctx).passed
    got = run_check(parse_check("alert InferenceTargetDown resolved"), ctx)
    assert got.passed and "is inactive" in got.detail


def test_output_contains_and_matches() -> None:
    ctx = _ctx(output='{"ready": true}\nsecond line 42\n')
    assert run_check(parse_check('output contains "\\"ready\\": true"'), ctx).passed
    assert run_check(parse_check('output matches "^second line \\\\d+$"'), ctx).passed
    assert not run_check(parse_check('output contains "false"'), ctx).passed
    got = run_check(parse_check('output contains "x"'), _ctx())
    assert not got.passed and "not run through faultdrill" in got.detail


def test_http_check_status(replica: Server) -> None:
    ctx = _ctx(variables={"TARGET": replica.url})
    assert run_check(parse_check("http GET $TARGET/v2/health/live status 200"), ctx).passed
    got = run_check(parse_check("http GET $TARGET/nowhere status 200"), ctx)
    assert not got.passed and "answered 404" in got.detail
    assert run_check(parse_check("http post $TARGET/nowhere status 404"), ctx).passed


def test_unbound_variables_fail_the_check_with_a_hint() -> None:
    got = run_check(parse_check("http GET $FS/healthz status 200"), _ctx())
    assert not got.passed and "variable $FS is not bound" in got.detail
    assert substitute("${REPLICA}-x $REPLICA", {"REPLICA": "r"}) == "r-x r"


@pytest.mark.parametrize(("line", "message", "suggestion"), [
    ("probes readiness x is true", "unknown check 'probes'", "probe"),
    ("probe readyness x is true", "the probe must be one of readiness, liveness", "readiness"),
    ("probe readiness x is maybe", "the probe's value must be one of true, false", None),
    ("probe readiness x is true within", "'within' needs a duration", None),
    ("probe readiness x is true within 2h", "'within' is at most 1h", None),
    ("metric up", "expected 'metric <PromQL> <op> <number>", None),
    ("metric up > many", "'many' is not a number", None),
    ("alert Foo fring", "the alert state must be one of firing, resolved", "firing"),
    ("output has \"x\"", "the output test must be one of contains, matches", None),
    ("output contains x", "the text in double quotes", None),
    ("http FETCH http://x status 200", "the HTTP method must be one of", "PATCH"),
    ("http GET http://x 200", "expected 'http <METHOD> <url> status <code>", None),
])  # fmt: skip
def test_malformed_checks_say_what_is_wrong(line: str, message: str, suggestion: str | None) -> None:
    with pytest.raises(CheckSyntaxError) as info:
        parse_check(line)
    assert message in str(info.value)
    assert info.value.suggestion == suggestion


def test_metric_parsing_keeps_comparisons_inside_the_query() -> None:
    check = parse_check("metric max(a / (b > 0)) >= 0.5 within 1m")
    assert check.query == "max(a / (b > 0))" and check.op == ">=" and check.threshold == 0.5  # type: ignore[union-attr]
    assert check.within_s == 60
