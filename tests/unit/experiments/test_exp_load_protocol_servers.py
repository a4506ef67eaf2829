"""``load.protocol`` against real servers: the bundled target (OIP v2 JSON and binary, plain HTTP), litserve's
OpenAI spec serving a tiny token-streaming model, and a minimal KServe V1 server; Locust runs driven by
``load.py`` put every request, right or wrong, on the timeline."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest

from faultdrill.experiments.expect.stats import judge_slo, request_stats
from faultdrill.experiments.host.process import ServiceProcess, free_port
from faultdrill.experiments.journal.timeline import Event, Timeline
from faultdrill.experiments.observe.load import LoadGenerator, LoadSummary
from faultdrill.experiments.observe.protocols import Call, Outcome, ProtocolClient, Runtime, client_of
from faultdrill.experiments.observe.protocols.oip_v2 import TensorMeta
from faultdrill.experiments.spec.load import HttpProtocol, KServeV1Protocol, LoadProtocol, OipV2Protocol, OpenAIProtocol
from faultdrill.target_service.binary_data import HEADER

SERVER = Path(__file__).with_name("openai_tokens_server.py")


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The bundled target (``python -m faultdrill.target_service serve``, digits on the CPU), as the target's own
    tests serve it (``tests/unit/target_service/conftest.py``)."""
    from faultdrill.target_service.registry import ModelRegistry

    root = tmp_path_factory.mktemp("protocol-target")
    ModelRegistry(root / "registry").ensure_defaults()
    port = free_port()
    env = {"FAULTDRILL_PORT": str(port), "FAULTDRILL_MODEL_REGISTRY": str(root / "registry"),
           "FAULTDRILL_DEVICE": "cpu"}  # fmt: skip
    svc = ServiceProcess("target", [sys.executable, "-m", "faultdrill.target_service", "serve"], env=env,
                         log_path=root / "target.log")  # fmt: skip
    svc.start()
    try:
        svc.wait_http(f"http://127.0.0.1:{port}/v2/health/ready", 60)
        yield f"http://127.0.0.1:{port}"
    finally:
        svc.stop()


@pytest.fixture(scope="module")
def openai_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """litserve's OpenAI spec with a deterministic token-streaming model (``openai_tokens_server.py``)."""
    port, log = free_port(), tmp_path_factory.mktemp("litserve") / "litserve.log"
    svc = ServiceProcess("litserve", [sys.executable, str(SERVER), str(port)], log_path=log)
    svc.start()
    try:
        svc.wait_http(f"http://127.0.0.1:{port}/health", 60)
        yield f"http://127.0.0.1:{port}"
    finally:
        svc.stop()
        with contextlib.suppress(ProcessLookupError, PermissionError):  # its worker and API processes
            os.killpg(svc.pid, signal.SIGKILL)


def _exchange(url: str, client: ProtocolClient, call: Call) -> tuple[httpx.Response, Outcome]:
    answer = httpx.request(call.method, url + call.path, content=call.body, headers=dict(call.headers), timeout=10)
    headers = {k.lower(): v for k, v in answer.headers.items()}
    judged = client.set_up if call.method == "GET" and call.path.startswith("/v2/models/") else client.check
    return answer, judged(answer.status_code, headers, answer.content)


def _ready(url: str, protocol: LoadProtocol, base_dir: Path = Path.cwd()) -> ProtocolClient:
    from faultdrill.experiments.observe.protocols import prepare

    client = client_of(prepare(protocol, base_dir))
    if (setup := client.setup_call(0.0)) is not None:
        assert _exchange(url, client, setup)[1].ok
    assert client.ready
    return client


# -- each protocol's requests and judgements against real servers, one request at a time -------
@pytest.mark.parametrize("binary", [False, True])
def test_oip_v2_generated_from_the_targets_metadata(target: str, binary: bool) -> None:
    client = _ready(target, OipV2Protocol(kind="oip_v2", model="digits", binary=binary))
    assert getattr(client, "outputs") == [TensorMeta("probabilities", "FP32", (-1, 10))]  # noqa: B009
    for i in range(3):
        answer, outcome = _exchange(target, client, client.call(i))
        assert answer.status_code == 200 and outcome.ok, (answer.content[:300], outcome)
    # Binary both ways: the inputs went as raw bytes, the outputs came back as raw bytes.
    assert (answer.headers["content-type"] == "application/octet-stream") is binary
    assert (HEADER in answer.headers) is binary
    # The same real answer, judged against metadata that declares another shape, is a wrong answer.
    setattr(client, "outputs", [TensorMeta("probabilities", "FP32", (-1, 11))])  # noqa: B010
    wrong = client.check(200, {k.lower(): v for k, v in answer.headers.items()}, answer.content)
    assert not wrong.ok and wrong.reason == "output 'probabilities' has shape [1, 10], the metadata allows [-1, 11]"


def test_oip_v2_inputs_from_a_file_in_binary(target: str, tmp_path: Path) -> None:
    rows = [{"inputs": [{"name": "input", "shape": [2, 64], "datatype": "FP32", "data": [[k / 64] * 64, [0.5] * 64]}]}
            for k in range(3)]  # fmt: skip
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    client = _ready(target, OipV2Protocol.model_validate({"kind": "oip_v2", "model": "digits", "binary": True,
                                                          "inputs": {"file": "rows.json"}}), tmp_path)  # fmt: skip
    for i in range(3):
        answer, outcome = _exchange(target, client, client.call(i))
        assert outcome.ok, (answer.status_code, answer.content[:300])
    unknown = client_of(Runtime(protocol=OipV2Protocol(kind="oip_v2", model="nope")))
    answer, outcome = _exchange(target, unknown, unknown.setup_call(0.0) or Call("GET", "/"))
    assert answer.status_code == 404 and not outcome.ok and outcome.reason is None  # the status: Locust's own error


def test_plain_http_against_the_target(target: str) -> None:
    ready = _ready(target, HttpProtocol.model_validate({"kind": "http", "method": "GET", "path": "/v2/health/ready",
                                                        "success": {"json_path": "$.ready"}}))  # fmt: skip
    assert _exchange(target, ready, ready.call(0))[1].ok
    body = {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [0.25] * 64}]}
    infer = {"kind": "http", "path": "/v2/models/digits/infer", "body": body}
    found = _ready(target, HttpProtocol.model_validate({**infer, "success": {"json_path": "$.outputs[0].data[9]"}}))
    assert _exchange(target, found, found.call(0))[1].ok
    past = _ready(target, HttpProtocol.model_validate({**infer, "success": {"json_path": "$.outputs[0].data[10]"}}))
    assert _exchange(target, past, past.call(0))[1] == Outcome(False, "no value at $.outputs[0].data[10]")


def test_kserve_v1_is_not_served_by_the_target(target: str, tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("[[0.5, 0.5]]")
    client = _ready(target, KServeV1Protocol(kind="kserve_v1", model="digits", instances_file="x.json"), tmp_path)
    answer, outcome = _exchange(target, client, client.call(0))
    assert answer.status_code == 404 and outcome == Outcome(False)  # /v2 only: the test below has a V1 server


def test_a_whole_chat_completion_from_litserve(openai_server: str) -> None:
    client = _ready(openai_server, OpenAIProtocol(kind="openai", model="tiny", prompt="hi", max_tokens=3))
    answer, outcome = _exchange(openai_server, client, client.call(0))
    assert outcome.ok and answer.json()["choices"][0]["message"]["content"] == "t0 t1 t2 "


# -- Locust runs driven by load.py: every request on the timeline ------------------------------
def _run(url: str, workdir: Path, protocol: LoadProtocol, *, users: int = 2, run_time: int = 2,
         base_dir: Path | None = None) -> tuple[LoadSummary, list[Event]]:  # fmt: skip
    tl = Timeline()
    gen = LoadGenerator(url, tl, workdir, users=users, run_time=run_time, protocol=protocol, base_dir=base_dir)
    gen.start()
    try:
        assert gen.wait(timeout_s=gen.run_time_s + 90), "locust did not finish within its bound"
    finally:
        summary = gen.stop()
    events = tl.select("requests", source="load")
    # Locust exits 1 when any request failed (its --exit-code-on-error), 0 otherwise.
    expected_exit = (1,) if summary.failures else (0,)
    assert summary.exact and summary.exit_codes == expected_exit, (workdir / "locust.log").read_text()[-2000:]
    assert summary.events == request_stats(events).total == summary.requests  # every request counted once
    return summary, events


def _samples(events: list[Event]) -> list[dict[str, Any]]:
    """The requests the buckets kept raw (up to 3 failures per line, the first ok one of each second)."""
    return [s for e in events for s in e.attrs.get("samples", [])]


@pytest.mark.slow
def test_locust_in_oip_v2_binary_against_the_target(target: str, tmp_path: Path) -> None:
    summary, events = _run(target, tmp_path, OipV2Protocol(kind="oip_v2", model="digits", binary=True))
    assert summary.requests > 100 and summary.failures == 0
    names = Counter[str]()
    for e in events:
        names[e.attrs["name"]] += e.attrs["count"]
    assert set(names) == {"/v2/models/digits", "/v2/models/digits/infer"}
    assert names["/v2/models/digits"] == 1  # the metadata, once per Locust process, then only infers
    assert all(e.attrs["statuses"] == {"200": e.attrs["count"]} == {"200": e.attrs["ok"]} for e in events)
    assert "ttft" not in events[-1].attrs and 0 < events[0].t < events[-1].t
    assert json.loads((tmp_path / "load-protocol.json").read_text())["protocol"]["binary"] is True


@pytest.mark.slow
def test_locust_in_plain_http_with_a_404_success_rule(target: str, tmp_path: Path) -> None:
    protocol = HttpProtocol.model_validate({"kind": "http", "method": "GET", "path": "/v2/models/absent",
                                            "success": {"status": [404], "json_path": "$.error"}})  # fmt: skip
    summary, events = _run(target, tmp_path, protocol, users=1)
    assert summary.requests > 20 and summary.failures == 0
    assert all(e.attrs["statuses"] == {"404": e.attrs["count"]} == {"404": e.attrs["ok"]} for e in events)


@pytest.mark.slow
def test_locust_streams_from_litserve_with_ttft_and_itl(openai_server: str, tmp_path: Path) -> None:
    protocol = OpenAIProtocol(kind="openai", model="tiny", prompt="hi", max_tokens=5, stream=True)
    summary, events = _run(openai_server, tmp_path, protocol)
    assert summary.requests >= 4 and summary.failures == 0
    stats = request_stats(events)
    assert stats.ttfts.count == stats.itls.count == stats.total
    assert {e.attrs["name"] for e in events} == {"/v1/chat/completions"}
    assert _samples(events)  # the first ok request of each second, kept raw
    for s in _samples(events):
        # One token every 30 ms: the first after ~30 ms (+ queueing), then ~30 ms apart; the latency is the
        # whole stream's (5 tokens), never just the time to the headers.
        assert s["ok"] and 0.025 <= s["ttft_s"] < s["latency_s"] and 0.025 <= s["itl_s"] <= 0.09, s
        assert s["latency_s"] >= s["ttft_s"] + 4 * 0.025
    assert (stats.ttfts.quantile(0.0) or 0) >= 0.025 and (stats.itls.quantile(1.0) or 1) <= 0.09 * 1.01
    span = (0.0, events[-1].t)
    assert judge_slo("latency_itl_p95", events, "in the run", span, at_least=None, at_most=0.1).passed
    assert not judge_slo("latency_ttft_p95", events, "in the run", span, at_least=None, at_most=0.01).passed


@pytest.mark.slow
def test_locust_counts_an_error_mid_stream_as_a_wrong_answer(openai_server: str, tmp_path: Path) -> None:
    protocol = OpenAIProtocol(kind="openai", model="tiny", prompt="please fail", max_tokens=5, stream=True)
    summary, events = _run(openai_server, tmp_path, protocol, users=1)
    assert summary.requests > 0 and summary.failures == summary.requests
    failures = request_stats(events).failures
    assert len(failures) == summary.requests  # a few a second: every one kept raw
    for e in failures:  # HTTP 200, two tokens, then litserve's error event: a failed request with the reason
        assert not e.attrs["ok"] and e.attrs["status"] == 200 and e.attrs["ttft_s"] > 0
        assert e.attrs["error"].startswith("WrongAnswer: the stream carried an error: {\"error\"")


def _kserve_handler(answers: list[Callable[[int], Any]]) -> type[BaseHTTPRequestHandler]:
    class KServeV1(BaseHTTPRequestHandler):
        """``/v1/models/iris:predict``: a right answer, then a NaN, then too few predictions, in turn."""

        protocol_version = "HTTP/1.1"
        served = 0

        def do_POST(self) -> None:
            instances = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["instances"]
            ok = self.path == "/v1/models/iris:predict"
            doc = answers[KServeV1.served % len(answers)](len(instances)) if ok else {"error": "no such model"}
            KServeV1.served += 1
            body = json.dumps(doc).encode()  # json.dumps writes NaN, as Python servers do
            self.send_response(200 if ok else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    return KServeV1


@pytest.mark.slow
def test_locust_in_kserve_v1_judges_every_answer(serve_http: Callable[..., str], tmp_path: Path) -> None:
    answers: list[Callable[[int], Any]] = [
        lambda n: {"predictions": [[0.9, 0.1]] * n},
        lambda n: {"predictions": [[float("nan"), 0.1]] * n},
        lambda n: {"predictions": [[0.9, 0.1]] * (n - 1)},
    ]
    url = serve_http(_kserve_handler(answers))
    (tmp_path / "iris.json").write_text(json.dumps({"instances": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]}))
    protocol = KServeV1Protocol(kind="kserve_v1", model="iris", instances_file="iris.json")
    summary, events = _run(url, tmp_path / "load", protocol, users=1, base_dir=tmp_path)
    errors = {k for e in events for k in e.attrs.get("errors", {})}
    assert errors == {"WrongAnswer: predictions[0][0] is nan (not a finite number)",
                      "WrongAnswer: 1 predictions for 2 instances"}  # fmt: skip
    assert all(e.attrs["statuses"] == {"200": e.attrs["count"]} for e in events)
    stats = request_stats(events)
    assert summary.failures == stats.failed and summary.requests >= 9 and stats.ok
    assert stats.failures and {e.attrs["error"] for e in stats.failures} <= errors
    assert {e.attrs["name"] for e in events} == {"/v1/models/iris:predict"}


@pytest.mark.slow
def test_locust_in_oip_v2_with_known_answers_counts_wrong_ones(target: str, tmp_path: Path) -> None:
    from faultdrill.target_service.models import digits_known_answers, train_digits

    doc = digits_known_answers(train_digits(seed=0)[0])  # the target's digits v1 (trained deterministically)
    (tmp_path / "ka.json").write_text(json.dumps(doc))
    protocol = OipV2Protocol(kind="oip_v2", model="digits", binary=True, known_answers={"file": "ka.json"})
    summary, events = _run(target, tmp_path / "right", protocol, base_dir=tmp_path)
    assert summary.requests > 100 and summary.failures == 0 and request_stats(events).wrong == 0
    for answer in doc["answers"]:  # told other classes: every 4th infer (the known ones) is a wrong answer
        answer["class"] = (answer["class"] + 3) % 10
    (tmp_path / "ka.json").write_text(json.dumps(doc))
    summary, events = _run(target, tmp_path / "other", protocol, base_dir=tmp_path)
    stats = request_stats(events)
    assert stats.wrong == stats.failed == summary.failures and 0.2 < stats.wrong / stats.total < 0.3
    assert all(e.attrs["statuses"] == {"200": e.attrs["count"]} for e in events)  # HTTP 200, wrong all the same
    assert all(f.attrs["error"].startswith("WrongAnswer: known answer: class ") for f in stats.failures)
