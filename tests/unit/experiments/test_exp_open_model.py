"""Open-model load (``load.rate``): a stall shows in the tail with scheduled arrivals and hides with closed users.

A real stdlib server answers in 20 ms and freezes for 1.5 s at a known moment; real Locust sends to it, once as
two closed-loop users and once at a fixed arrival rate (two users as arrival processes). Closed users stop
sending while they wait, so the frozen second and a half costs them two slow requests among hundreds (coordinated
omission: the p90 stays ~20 ms); scheduled arrivals keep coming, each timed from its scheduled moment, so every one
due during the stall waits and the p90 shows it. The open run sends what its rate says, whatever the answers.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from faultdrill.experiments.journal.timeline import Timeline
from faultdrill.experiments.observe.load import LoadGenerator
from faultdrill.experiments.spec.load import HttpProtocol
from faultdrill.experiments.spec.loader import load_experiment_text
from faultdrill.faults.errors import ConfigError
from faultdrill.faults.registry import FaultRegistry

pytestmark = pytest.mark.slow

SERVICE_S = 0.02
STALL_AT_S, STALL_S = 2.5, 1.5
RUN_S = 7


def _stalling(frozen: threading.Event) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # http.server's name
            while frozen.is_set():
                time.sleep(0.005)
            time.sleep(SERVICE_S)
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *_: object) -> None:
            pass

    return Handler


def _latencies(url: str, frozen: threading.Event, tmp_path: Path, rate: float | None) -> tuple[list[float], int]:
    """(latencies of the answered requests, all requests) of one run with a stall (``frozen``) in its middle."""
    timeline = Timeline()
    gen = LoadGenerator(url, timeline, tmp_path, users=2, run_time=RUN_S, rate=rate,
                        protocol=HttpProtocol(kind="http", method="GET", path="/"))  # fmt: skip
    gen.start()
    try:
        assert gen.wait_first_request(60)
        time.sleep(STALL_AT_S)
        frozen.set()
        time.sleep(STALL_S)
        frozen.clear()
        assert gen.wait(timeout_s=RUN_S + 60)
    finally:
        frozen.clear()
        gen.stop()
    requests = timeline.select("request")
    return [float(e.attrs["latency_s"]) for e in requests if e.attrs.get("ok")], len(requests)


def _p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1]


def test_a_stall_shows_with_scheduled_arrivals_and_hides_with_closed_users(
    tmp_path: Path, serve_http: Callable[[type[BaseHTTPRequestHandler]], str]
) -> None:  # fmt: skip
    frozen_closed, frozen_open = threading.Event(), threading.Event()
    closed_url, open_url = serve_http(_stalling(frozen_closed)), serve_http(_stalling(frozen_open))
    closed, closed_n = _latencies(closed_url, frozen_closed, tmp_path / "closed", rate=None)
    opened, open_n = _latencies(open_url, frozen_open, tmp_path / "open", rate=40.0)
    print(f"\nclosed: {closed_n} requests, p90 {_p90(closed) * 1000:.0f} ms, max {max(closed):.2f} s; "
          f"open (40/s): {open_n} requests, p90 {_p90(opened) * 1000:.0f} ms, max {max(opened):.2f} s")
    assert max(closed) >= 1.0  # the two users' stuck requests…
    assert _p90(closed) < 0.2  # …are lost in the crowd: the tail says nothing
    assert _p90(opened) >= 0.3  # every arrival due in the stall waited, timed from when it was due
    assert 0.75 * 40 * (RUN_S - 2) <= open_n <= 1.25 * 40 * RUN_S  # the rate, whatever the answers did


def test_a_rate_is_steady_and_has_no_think_time() -> None:
    registry = FaultRegistry.installed()
    head = "apiVersion: faultdrill/v1\nkind: Experiment\nmetadata: {name: x}\n"
    assert load_experiment_text(head + "load: {rate: 200, users: 4}\n", file="x.yaml", registry=registry).load.rate
    for bad, words in (("load: {rate: 200, shape: {type: ramp, over: 5s}}", "the shape"),
                       ("load: {rate: 200, think_time: 1s}", "think_time"), ("load: {rate: 0}", "rate")):
        with pytest.raises(ConfigError, match=words):
            load_experiment_text(head + bad + "\n", file="x.yaml", registry=registry)
