"""Benchmark of the experiment engine: smoke wall time, observer overhead, probe resolution.

Prints figures; asserts nothing. Three parts:

* **smoke**: wall time and exit code of ``faultdrill run experiments/catalog/smoke.yaml
  --plain`` in a subprocess, start-up included (aim: <= 90 s on the 2-core CI machine);
* **overhead**: throughput of the target through the local platform's service endpoint (the python one in
  faultdrill's process, then Envoy out of process: ``--endpoints``)
  (``benchmarks.loadgen.run_load``, 16 connections, POST ``/v2/models/digits/infer``) with
  every observer on — the platform's probes, breaker poller and restart watcher, plus a
  :class:`~experiments.observe.scraper.MetricsScraper` — against all of them off (the platform's
  observer group stopped; the endpoint and the replica keep running), alternating
  on/off/on/off (aim: <= 2 % loss). The load generator runs in its own process, as the
  engine's load does, so it does not share this process's GIL with the endpoint;
* **resolution**: how late the probe sampler's ``probe`` readiness-false event is after the
  replica's readiness actually turned (first 503 of a tight 5 ms direct poll), over 5 rounds
  of device-memory exhaustion through the admin API (expected: about the 0.1 s probe period).

Run as root: ``.venv/bin/python benchmarks/engine_bench.py`` (``--skip-smoke`` and friends
to run one part).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Literal, cast
from urllib.parse import urlsplit

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from faultdrill.experiments.journal.timeline import Timeline  # noqa: E402
from faultdrill.experiments.observe.observers import ObserverContext  # noqa: E402
from faultdrill.experiments.observe.scraper import MetricsScraper  # noqa: E402
from faultdrill.experiments.platforms.local.platform import LocalPlatform  # noqa: E402

INFER_PATH = "/v2/models/digits/infer"
BODY = json.dumps(
    {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [i / 64 for i in range(64)]}]}
).encode()
LOAD_SCRIPT = (
    "import json, sys\n"
    "from benchmarks.loadgen import run_load\n"
    "host, port, path, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])\n"
    "body = sys.stdin.buffer.read()\n"
    "print(json.dumps(run_load(host, port, path, body, concurrency=16, seconds=seconds)))\n"
)


# -- (a) smoke wall time ---------------------------------------------------------------------
def bench_smoke(timeout_s: float) -> None:
    with tempfile.TemporaryDirectory(prefix="fd-bench-smoke-") as tmp:
        env = {**os.environ, "FAULTDRILL_STATE_DIR": str(Path(tmp) / "state")}
        argv = [str(ROOT / ".venv" / "bin" / "faultdrill"), "run", str(ROOT / "experiments/catalog/smoke.yaml"),
                "--plain", "--out", str(Path(tmp) / "runs")]  # fmt: skip
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
            code: int | str = proc.returncode
            tail = proc.stdout.strip().splitlines()[-3:]
        except subprocess.TimeoutExpired:
            code, tail = f"timeout after {timeout_s:.0f}s", []
        wall = time.perf_counter() - t0
    print("== smoke experiment (faultdrill run experiments/catalog/smoke.yaml --plain)")
    print(f"   exit code {code}, wall {wall:.1f} s (aim <= 90 s incl. start-up)")
    for line in tail:
        print(f"   | {line}")


# -- (b) observer overhead -------------------------------------------------------------------
def _load(url: str, seconds: float) -> dict[str, float]:
    parts = urlsplit(url)
    proc = subprocess.run(
        [sys.executable, "-c", LOAD_SCRIPT, parts.hostname or "127.0.0.1", str(parts.port), INFER_PATH, str(seconds)],
        input=BODY, cwd=ROOT, capture_output=True, timeout=seconds + 60,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed: {proc.stderr.decode(errors='replace')[-500:]}")
    stats: dict[str, float] = json.loads(proc.stdout)
    return stats


def _wait_all_ready(platform: LocalPlatform, want: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while len(platform.ready_replicas()) < want:
        if time.monotonic() > deadline:
            raise RuntimeError(f"replicas not ready again after {timeout_s:.0f}s: {platform.ready_replicas()}")
        time.sleep(0.02)


def bench_overhead(workdir: Path, seconds: float, rounds: int, endpoint: str = "python") -> None:
    print(f"== observer overhead (throughput through the {endpoint} service endpoint, 16 connections)")
    kind = cast(Literal["python", "envoy"], endpoint)
    with LocalPlatform(workdir / endpoint, replicas=1, timeline=Timeline(), endpoint=kind) as platform:
        ctx = ObserverContext(platform.timeline, topology=platform.topology)
        _load(platform.service_url, 1.0)  # warm-up: JIT-free, but caches, allocator and connections settle
        on: list[float] = []
        off: list[float] = []
        observing = True  # the platform starts with its observers running
        for i in range(2 * rounds):
            want_on = i % 2 == 0
            scraper: MetricsScraper | None = None
            if want_on and not observing:
                platform._observers.start(ctx)  # probes re-pass startup/readiness: wait for them
                _wait_all_ready(platform, 1)
                observing = True
            elif not want_on and observing:
                platform._observers.stop()  # the endpoint keeps the last readiness it was told
                observing = False
            if want_on:
                scraper = MetricsScraper(period_s=1.0)
                scraper.start(ctx)
            try:
                stats = _load(platform.service_url, seconds)
            finally:
                if scraper is not None:
                    scraper.stop()
            (on if want_on else off).append(stats["rps"])
            print(f"   {'on ' if want_on else 'off'}: {stats['rps']:8.1f} req/s  p50 {stats['p50_ms']:.2f} ms  "
                  f"p95 {stats['p95_ms']:.2f} ms  errors {stats['errors']:.0f}")  # fmt: skip
        if not observing:
            platform._observers.start(ctx)  # close() stops them again, as it would in a run
    mean_on, mean_off = statistics.fmean(on), statistics.fmean(off)
    ratio = mean_on / mean_off
    print(f"   mean on {mean_on:.1f} req/s, off {mean_off:.1f} req/s, on/off {ratio:.3f} "
          f"({(1 - ratio) * 100:+.1f} % loss; aim <= 2 %)")  # fmt: skip


def _wait_ready_again(platform: LocalPlatform, name: str, since: float, timeout_s: float = 30.0) -> None:
    """Until the platform saw ``name`` turn ready after ``since`` (so a round never starts unready)."""
    tl = platform.timeline
    for _ in range(int(timeout_s / 0.02)):
        back = [e for e in tl.select("process", source=name) if e.t >= since and e.get("event") in ("ready", "unready")]
        if back and back[-1].get("event") == "ready" and platform.ready_replicas():
            return
        time.sleep(0.02)
    raise RuntimeError(f"{name} not ready again after {timeout_s:.0f}s")


# -- (c) probe timestamp resolution -------------------------------------------------------------
def _first_503(url: str, stop: threading.Event, found: list[float], limit_s: float) -> None:
    with httpx.Client(timeout=1.0) as client:
        for _ in range(int(limit_s / 0.005)):
            if stop.is_set():
                return
            try:
                if client.get(url).status_code == 503:
                    found.append(time.time())
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.005)


def bench_resolution(workdir: Path, rounds: int) -> None:
    print("== probe timestamp resolution (first 503 of a 5 ms direct poll -> probe readiness=false event)")
    lags: list[float] = []
    with LocalPlatform(workdir, replicas=1, timeline=Timeline()) as platform:
        tl = platform.timeline
        handle = platform.handle("replica-0")
        assert handle.url is not None and handle.admin_url is not None
        auth = {"Authorization": f"Bearer {handle.admin_token()}"}
        with httpx.Client(timeout=10.0) as client:
            for i in range(rounds):
                t_round = tl.now()
                stop, found = threading.Event(), cast(list[float], [])
                poller = threading.Thread(target=_first_503, args=(f"{handle.url}/v2/health/ready", stop, found, 20.0),
                                          daemon=True)  # fmt: skip
                poller.start()
                try:
                    client.post(f"{handle.admin_url}/admin/device-memory/hold", json={"leave_free_mib": 0},
                                headers=auth).raise_for_status()  # fmt: skip
                    for _ in range(4):
                        client.post(f"{handle.url}{INFER_PATH}", content=BODY,
                                    headers={"content-type": "application/json"})  # fmt: skip
                    event = None
                    for _ in range(400):  # bounded: 20 s
                        event = next((e for e in tl.select("probe", source="replica-0")
                                      if e.t >= t_round and e.get("probe") == "readiness" and e.get("value") is False),
                                     None)  # fmt: skip
                        if event is not None and found:
                            break
                        time.sleep(0.05)
                finally:
                    stop.set()
                    poller.join(5)
                    client.post(f"{handle.admin_url}/admin/device-memory/release", json={}, headers=auth)
                if event is None or not found:
                    print(f"   round {i + 1}: no transition seen (poll 503: {bool(found)}, probe event: {event})")
                else:
                    lag = (tl.start_wall + event.t) - found[0]
                    lags.append(lag)
                    print(f"   round {i + 1}: lag {lag * 1000:7.1f} ms")
                _wait_ready_again(platform, "replica-0", since=t_round)
    if lags:
        print(f"   lag min {min(lags) * 1000:.1f} ms, median {statistics.median(lags) * 1000:.1f} ms, "
              f"max {max(lags) * 1000:.1f} ms over {len(lags)} rounds (probe period 100 ms)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-smoke", action="store_true")
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--skip-resolution", action="store_true")
    parser.add_argument("--seconds", type=float, default=5.0, help="load duration of each overhead run")
    parser.add_argument("--rounds", type=int, default=2, help="on/off pairs of the overhead part")
    parser.add_argument("--endpoints", default="python,envoy", help="service endpoints the overhead part measures")
    parser.add_argument("--transitions", type=int, default=5, help="rounds of the resolution part")
    parser.add_argument("--smoke-timeout", type=float, default=300.0)
    args = parser.parse_args()
    if not args.skip_smoke:
        bench_smoke(args.smoke_timeout)
    with tempfile.TemporaryDirectory(prefix="fd-bench-engine-") as tmp:
        if not args.skip_overhead:
            for endpoint in args.endpoints.split(","):  # side by side: the proxy in this process, and out of it
                bench_overhead(Path(tmp) / "overhead", args.seconds, args.rounds, endpoint)
        if not args.skip_resolution:
            bench_resolution(Path(tmp) / "resolution", args.transitions)


if __name__ == "__main__":
    main()
