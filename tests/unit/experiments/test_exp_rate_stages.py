"""``load.rate_stages``: an open-model rate that spikes and ramps, timed from steady state.

The schedule's arithmetic is ``target_service/loadkit.py``'s (``RateSchedule``, read by each user's ``Pacer``),
run in a subprocess as the locustfiles import it (Locust monkey-patches on import). The spec checks are located;
the run marks each stage on the timeline so windows name it like a fault; and real Locust follows a schedule
written while it runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from faultdrill.experiments.engine.stages import RateStages, ResolvedStage
from faultdrill.experiments.expect.windows import resolve_moment
from faultdrill.experiments.journal.timeline import Timeline
from faultdrill.experiments.observe.load import LoadGenerator
from faultdrill.experiments.spec.experiment import RateShare
from faultdrill.experiments.spec.load import HttpProtocol
from faultdrill.experiments.spec.loader import load_experiment_text
from faultdrill.experiments.timespec import Moment
from faultdrill.faults.errors import ConfigError
from faultdrill.faults.registry import FaultRegistry

ROOT = Path(__file__).resolve().parents[3]
HEAD = "apiVersion: faultdrill/v1\nkind: Experiment\nmetadata: {name: x}\n"

_SCHEDULE = r"""
import json, sys
from target_service.loadkit import Pacer, RateSchedule, RateStage

s = RateSchedule(10.0, t0=100.0, stages=(RateStage(1.0, 0.0, 1.0, 30.0), RateStage(3.0, 2.0, 1.0, 30.0)))
rates = {str(t): s.rate_at(100.0 + t) for t in (-5.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 4.5, 5.5, 6.0, 9.0)}
arrivals, t = [], 100.0
while t < 108.0:
    arrivals.append(t - 100.0)
    t = s.next_after(t)
def count(a, b):
    return sum(1 for x in arrivals if a <= x < b)
counts = {"base": count(0, 1), "spike": count(1, 2), "ramp": count(3, 5), "held": count(5, 6), "after": count(6, 8)}
path = sys.argv[1]
p = Pacer(10.0, schedule_file=path)
before = p.schedule.rate_at(1e12)
json.dump({"t0": 5.0, "stages": [{"at_s": 0, "ramp_s": 0, "hold_s": 1e12, "rate": 40.0}]}, open(path, "w"))
p.poll()
torn = path + ".torn"
open(torn, "w").write('{"t0": 5.0, "stages": [')
print(json.dumps({"rates": rates, "counts": counts, "before": before, "after": p.schedule.rate_at(10.0),
                  "unstarted": RateSchedule(7.0).rate_at(1e12), "torn": RateSchedule.read(torn, 3.0).rate_at(9.0),
                  "absent": RateSchedule.read(path + ".none", 3.0).t0}))
"""


def test_the_schedule_steps_ramps_and_comes_back_to_the_base_rate(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", _SCHEDULE, str(tmp_path / "schedule.json")], capture_output=True,
                         text=True, check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    got = json.loads(out.stdout.strip().splitlines()[-1])
    rates = got["rates"]
    assert rates["-5.0"] == rates["0.5"] == 10.0  # before t0 and before the first stage: the base rate
    assert rates["1.0"] == rates["1.5"] == 30.0 and rates["2.0"] == 10.0  # a step, held 1 s, then back
    assert rates["3.0"] == 10.0 and rates["4.0"] == pytest.approx(20.0) and rates["4.5"] == pytest.approx(25.0)
    assert rates["5.5"] == 30.0 and rates["6.0"] == rates["9.0"] == 10.0  # the ramp's hold, then back
    # Arrivals follow the rate: 10/s, 30 in the spike's second, ~40 over the 10→30 ramp, 30 held, 10/s after.
    counts = got["counts"]
    expected = {"base": 10, "spike": 30, "ramp": 40, "held": 30, "after": 20}
    assert all(abs(counts[k] - n) <= 1 for k, n in expected.items()), counts  # ±1: the edges' float sums
    assert got["before"] == 10.0 and got["after"] == 40.0  # the pacer takes a new schedule file when it changes
    assert got["unstarted"] == 7.0 and got["torn"] == 3.0 and got["absent"] is None  # the base rate meanwhile


def _load(text: str) -> object:
    return load_experiment_text(HEAD + text, file="x.yaml", registry=FaultRegistry.installed())


def test_stages_are_checked_and_located() -> None:
    spec = _load("load:\n  rate: 50%\n  rate_stages:\n    - {id: spike, at: 5s, rate: 300%, hold: 8s}\n"
                 "    - {id: ramp, at: 20s, rate: 400, ramp: 10s, hold: 5s}\n"
                 "expect:\n  - {slo: latency_p95, at_most: 300ms, during: spike}\n"
                 "  - {recovers: steady_state, within: 10s, after: ramp.end}\n")  # fmt: skip
    stages = spec.load.rate_stages  # type: ignore[attr-defined]
    assert [s.id for s in stages] == ["spike", "ramp"] and stages[0].rate == RateShare(percent=300)
    assert stages[1].rate == 400 and stages[1].end_s == 35.0
    bad = {
        "load: {rate: 100, rate_stages: [{id: a, at: 5s, rate: 300, hold: 8s}, {id: b, at: 10s, rate: 300, hold: 1s}]}":
            ("before stage 'a' ends", "load.rate_stages", 4),
        "load: {rate_stages: [{id: a, at: 5s, rate: 300, hold: 8s}]}": ("give load.rate", "load", 4),
        "load: {rate: 100, rate_stages: [{id: a, at: 5s, rate: 600%, hold: 8s}]}": ("at most 500%", "rate", 4),
        "load: {rate: 100, rate_stages: [{id: a, at: 5s, rate: 300}]}": ("hold", "hold", 4),
        "load: {rate: 100, rate_stages: [{id: a, at: 1s, rate: 3, hold: 1s}, {id: a, at: 3s, rate: 3, hold: 1s}]}":
            ("listed twice", "rate_stages", 4),
        "load:\n  rate: 100\n  rate_stages: [{id: steady, at: 1s, rate: 3, hold: 1s}]": ("reserved", "id", 6),
        "load: {rate: 100, rate_stages: [{id: a, at: 1s, rate: 3, hold: 1s}]}\nexpect:\n"
        "  - {slo: availability, at_least: 0.9, during: b}": ("no fault with id 'b'", "during", 6),
        "load: {rate: 100, rate_stages: [{id: a, at: 1s, rate: 3, hold: 1s}]}\nfaults:\n"
        "  - {id: f, type: oom_kill, target: replica-0, after: a.end}": ("no fault with id 'a'", "after", 6),
    }  # fmt: skip
    for text, (words, field, line) in bad.items():
        with pytest.raises(ConfigError, match=words) as err:
            _load(text + "\n")
        assert err.value.field is not None and field in err.value.field, (text, err.value.field)
        assert err.value.line == line, (text, err.value.line)
    assert float(_load("load: {rate: 500%}\n").load.rate.percent) == 500  # type: ignore[attr-defined]


def test_the_run_marks_each_stage_and_windows_name_it() -> None:
    tl = Timeline(clock=lambda: 0.0)
    written: list[tuple[float, list[tuple[float, float, float, float]]]] = []

    class Load:
        def schedule_rates(self, t0: float, stages: list[tuple[float, float, float, float]]) -> None:
            written.append((t0, stages))

    stages = RateStages(tl, [ResolvedStage("spike", 5.0, 0.0, 8.0, 900.0), ResolvedStage("ramp", 20.0, 10.0, 5.0, 600)])
    assert not stages.pending()  # not started
    stages.start(steady_at=2.0, load=Load())
    [(t0, sent)] = written
    assert sent == [(5.0, 0.0, 8.0, 900.0), (20.0, 10.0, 5.0, 600)] and abs(t0 - (time.time() - (0.0 - 2.0))) < 1
    for now in (6.0, 7.0, 15.0, 22.0, 36.9):
        stages.tick(now)
    assert stages.pending() and resolve_moment(Moment.model_validate("ramp.end"), tl) is None
    stages.tick(37.0)
    assert not stages.pending() and stages.planned_end() == 35.0
    assert resolve_moment(Moment.model_validate("spike.start"), tl) == 7.0
    assert resolve_moment(Moment.model_validate("spike.end+2s"), tl) == 17.0
    assert resolve_moment(Moment.model_validate("ramp.start"), tl) == 22.0
    assert resolve_moment(Moment.model_validate("ramp.end"), tl) == 37.0
    assert len(tl.select("phase", source="load")) == 4 and not tl.select("phase", source="run")


def _answering() -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # http.server's name
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *_: object) -> None:
            pass

    return Handler


@pytest.mark.slow
def test_real_locust_follows_a_spike_written_while_it_runs(
    tmp_path: Path, serve_http: Callable[[type[BaseHTTPRequestHandler]], str]
) -> None:  # fmt: skip
    url = serve_http(_answering())
    timeline = Timeline()
    gen = LoadGenerator(url, timeline, tmp_path, users=2, run_time=7, rate=30.0,
                        protocol=HttpProtocol(kind="http", method="GET", path="/"))  # fmt: skip
    gen.start()
    try:
        assert gen.wait_first_request(60)
        time.sleep(1.0)
        steady = timeline.now()
        gen.schedule_rates(time.time(), [(1.5, 0.0, 2.0, 120.0)])  # 4x for 2 s, 1.5 s from now
        threading.Event().wait(5.0)
    finally:
        gen.stop()

    def rate(a: float, b: float) -> float:
        reqs = timeline.requests(start=steady + a, end=steady + b)
        return sum(int(e.get("count") or 1) for e in reqs) / (b - a)

    base, spike, after = rate(-0.9, 1.4), rate(1.6, 3.4), rate(3.6, 4.9)
    print(f"\nbase {base:.0f}/s, spike {spike:.0f}/s, after {after:.0f}/s")
    assert 20 <= base <= 40 and 95 <= spike <= 145 and 20 <= after <= 40
