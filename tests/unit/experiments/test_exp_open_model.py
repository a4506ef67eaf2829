"""Open-model load (``load.rate``): a stall shows in the tail with scheduled arrivals and hides with closed users.

A real stdlib server answers in 20 ms and freezes for 1.5 s at a known moment; real Locust sends to it, once as
two closed-loop users and once at a fixed arrival rate (two users as arrival processes). Closed users stop
sending while they wait, so the frozen second and a half costs them two slow requests among hundreds (coordinated
omission: the p90 stays ~20 ms); scheduled arrivals keep coming, each timed from its scheduled moment, so every one
due during the stall waits and the p90 shows it. The open run sends what its rate says, whatever the answers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from faultdrill.experiments.engine.plan import build_plan
from faultdrill.experiments.engine.runtime import RunParts
from faultdrill.experiments.expect.stats import RequestStats, request_stats
from faultdrill.experiments.journal.timeline import Timeline
from faultdrill.experiments.observe.load import LoadGenerator, LoadShape
from faultdrill.experiments.platforms.fake import FakeLoad, FakePlatform
from faultdrill.experiments.spec.experiment import LoadSpec, RateShare
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


def _latencies(url: str, frozen: threading.Event, tmp_path: Path, rate: float | None) -> tuple[RequestStats, int]:
    """(the requests' stats, how many) of one run with a stall (``frozen``) in its middle."""
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
    stats = request_stats(timeline.requests())
    return stats, stats.total


def _p90(stats: RequestStats) -> float:
    return stats.latency(0.9) or 0.0


def _max(stats: RequestStats) -> float:
    return stats.latency(1.0) or 0.0


def test_a_stall_shows_with_scheduled_arrivals_and_hides_with_closed_users(
    tmp_path: Path, serve_http: Callable[[type[BaseHTTPRequestHandler]], str]
) -> None:  # fmt: skip
    frozen_closed, frozen_open = threading.Event(), threading.Event()
    closed_url, open_url = serve_http(_stalling(frozen_closed)), serve_http(_stalling(frozen_open))
    closed, closed_n = _latencies(closed_url, frozen_closed, tmp_path / "closed", rate=None)
    opened, open_n = _latencies(open_url, frozen_open, tmp_path / "open", rate=40.0)
    print(f"\nclosed: {closed_n} requests, p90 {_p90(closed) * 1000:.0f} ms, max {_max(closed):.2f} s; "
          f"open (40/s): {open_n} requests, p90 {_p90(opened) * 1000:.0f} ms, max {_max(opened):.2f} s")
    assert _max(closed) >= 1.0  # the two users' stuck requests…
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


def test_a_rate_may_be_a_share_of_the_probed_capacity() -> None:
    registry = FaultRegistry.installed()
    head = "apiVersion: faultdrill/v1\nkind: Experiment\nmetadata: {name: x}\n"
    spec = load_experiment_text(head + "load: {rate: 70%, capacity_probe: {users: 16, for: 3s}}\n", file="x.yaml",
                                registry=registry)  # fmt: skip
    assert isinstance(spec.load.rate, RateShare) and spec.load.rate.percent == 70 and str(spec.load.rate) == "70%"
    assert spec.load.capacity_probe.users == 16 and float(spec.load.capacity_probe.for_) == 3.0
    assert float(load_experiment_text(head + "load: {rate: 50%}\n", file="x.yaml",
                                      registry=registry).load.capacity_probe.for_) == 5.0  # fmt: skip
    for bad in ("load: {rate: lots%}", "load: {rate: 0%}", "load: {rate: 600%}", "load: {rate: '70 %%'}"):
        with pytest.raises(ConfigError) as err:
            load_experiment_text(head + bad + "\n", file="x.yaml", registry=registry)
        assert err.value.field is not None and "rate" in err.value.field and err.value.line == 4, bad
    # unresolved, a share never reaches Locust as a number
    with pytest.raises(ValueError, match="capacity probe resolves it"):
        LoadGenerator.of_spec("http://127.0.0.1:1", Timeline(), Path("unused"), spec.load, shape=LoadShape(),
                              run_time=1.0, model="digits")  # fmt: skip


def test_the_capacity_probe_sets_the_rate_from_what_the_service_answered(
    tmp_path: Path, serve_http: Callable[[type[BaseHTTPRequestHandler]], str]
) -> None:  # fmt: skip
    """``rate: 50%``: real closed-loop Locust users against a server answering in 20 ms (one at a time: ~50/s at
    most), off the run's timeline; the run's load is then asked for half of what was measured, and both are on the
    timeline."""
    url = serve_http(_stalling(threading.Event()))  # never frozen: 20 ms per answer

    class Served(FakePlatform):
        asked: LoadSpec | None = None

        @property
        def service_url(self) -> str:
            return url

        def load_generator(self, load: LoadSpec, **kwargs: Any) -> FakeLoad:
            self.asked = load
            return super().load_generator(load, **kwargs)

    text = ("apiVersion: faultdrill/v1\nkind: Experiment\nmetadata: {name: probe}\n"
            "load: {rate: 50%, users: 2, capacity_probe: {users: 4, for: 3s}, "
            "protocol: {kind: http, method: GET, path: /}}\n")  # fmt: skip
    spec = load_experiment_text(text, file="probe.yaml")
    timeline = Timeline()
    parts = RunParts(build_plan(spec, FaultRegistry.installed(), source="probe.yaml"), timeline, tmp_path,
                     run_dir=tmp_path / "run")  # fmt: skip
    parts.platform = platform = Served()
    platform.up()
    said = parts.load_up(total_s=5.0)
    parts.close()
    [capacity] = [e.attrs for e in timeline.select("metric") if e.attrs["name"] == "load_capacity_rps"]
    [rate] = [e.attrs for e in timeline.select("metric") if e.attrs["name"] == "load_rate_rps"]
    # the server takes ~20 ms per answer, and ThreadingHTTPServer runs several at once: tens per second
    assert 20 <= capacity["value"] <= 1000 and capacity["labels"]["users"] == "4"
    assert rate["value"] == pytest.approx(capacity["value"] / 2, abs=0.1) and rate["labels"]["share"] == "50%"
    assert platform.asked is not None and platform.asked.rate == rate["value"]
    assert said is not None and said.startswith("capacity probe: ") and "load at 50% = " in said
    assert not timeline.requests()  # the probe's requests stay off the run's timeline


def test_a_probe_without_an_ok_answer_stops_the_run_with_a_located_error(tmp_path: Path) -> None:
    text = ("apiVersion: faultdrill/v1\nkind: Experiment\nmetadata: {name: probe}\n"
            "load: {rate: 50%, capacity_probe: {users: 2, for: 2s}, protocol: {kind: http, method: GET, path: /}}\n")
    parts = RunParts(build_plan(load_experiment_text(text, file="p.yaml"), FaultRegistry.installed(), source="p.yaml"),
                     Timeline(), tmp_path, run_dir=tmp_path / "run")  # fmt: skip
    parts.platform = FakePlatform()  # its service URL refuses every connection
    parts.platform.up()
    with pytest.raises(ConfigError, match="capacity probe got no ok answer") as err:
        parts.load_up(total_s=5.0)
    assert err.value.field == "load.rate"
    parts.close()
