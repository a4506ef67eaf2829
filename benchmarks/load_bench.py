"""Benchmark of the load generator: what Locust sustains here against wrk, and a stall seen or hidden.

Measured side by side in one run, against one bundled-target replica on its own port (POST
``/v2/models/digits/infer``, the rows the catalog's load sends):

* **closed loop**: ``wrk`` (one thread) and faultdrill's Locust (``LoadGenerator``: one process, then a master and 2
  workers) at 8 and 32 connections/users: requests per second, and Locust's ratio to wrk;
* **open model**: ``load.rate`` arrivals at rising rates (8 users, then 2 workers): the rate reached against the rate
  asked (requests sent on schedule / seconds), and arrivals refused over the in-flight cap (``NotSent``); the highest
  rate held within 2 % is what the generator sustains here;
* **a stall at a known time**: the replica is stopped (SIGSTOP) for 1 s in the middle of a 6 s run, once under 8
  closed-loop users and once under open-model arrivals at half the closed-loop rate: p50, p99 and max of the ok
  requests, as the run's expectations would read them (``request_stats`` over the aggregated buckets). Closed users
  stop sending while stuck, so the stall is a handful of slow requests among thousands (coordinated omission);
  scheduled arrivals keep coming, each timed from when it was due, so p99 shows it.

Prints figures and ratios; asserts nothing. Run: ``.venv/bin/python benchmarks/load_bench.py [--seconds 4]``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.target_bench import LUA, body_file, start_target, wrk  # noqa: E402
from faultdrill.experiments.expect.stats import RequestStats, request_stats  # noqa: E402
from faultdrill.experiments.journal.timeline import Timeline  # noqa: E402
from faultdrill.experiments.observe.load import LoadGenerator  # noqa: E402

PATH = "/v2/models/digits/infer"


def locust(url: str, workdir: Path, seconds: float, *, users: int, workers: int = 0, rate: float | None = None,
           stall: tuple[int, float, float] | None = None) -> tuple[RequestStats, float, int]:  # fmt: skip
    """(stats of the steady part, its seconds, arrivals refused) of one Locust run; ``stall``: (pid, at, for)."""
    tl = Timeline()
    gen = LoadGenerator(url, tl, workdir, users=users, spawn_rate=float(users), workers=workers, run_time=seconds + 1,
                        rate=rate)  # fmt: skip
    with gen:
        if not gen.wait_first_request(90):
            raise RuntimeError(f"Locust sent nothing: {(workdir / 'locust.log').read_text()[-1000:]}")
        if stall is not None:
            pid, at, hold = stall
            time.sleep(at)
            os.kill(pid, signal.SIGSTOP)
            threading.Timer(hold, os.kill, (pid, signal.SIGCONT)).start()
        gen.wait(timeout_s=seconds + 60)
    reqs = tl.requests()
    start = reqs[0].t + 1.0  # users spawned, connections open
    end = max(e.t + float(e.attrs.get("span_s", 0.0)) for e in reqs)
    kept = [e for e in reqs if e.t >= start]
    stats = request_stats(kept)
    refused = sum(n for e in kept for msg, n in e.attrs.get("errors", {}).items() if msg.startswith("NotSent"))
    return stats, end - start, refused


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per point")
    args = parser.parse_args()
    from faultdrill.target_service.registry import ModelRegistry

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        registry = workdir / "registry"
        ModelRegistry(registry).ensure_defaults()
        lua = workdir / "post.lua"
        lua.write_text(LUA)
        body = body_file(workdir)
        print(f"faultdrill load-generator benchmark — {psutil.cpu_count()} CPUs, one replica, {args.seconds:g} s per "
              f"point")
        replica, port, _ = start_target(registry, workdir, "digits", {})
        url = f"http://127.0.0.1:{port}"
        n = 0

        def run_dir() -> Path:
            nonlocal n
            n += 1
            return workdir / f"locust-{n}"

        try:
            print("\n== closed loop: wrk vs Locust (req/s)")
            print(f"{'conc':>4} {'wrk':>9} {'locust 1 process':>17} {'ratio':>6} {'locust 2 workers':>17} {'ratio':>6}")
            closed: dict[int, float] = {}
            for c in (8, 32):
                w = wrk(url + PATH, body, lua, c, args.seconds)["rps"]
                one, secs, _ = locust(url, run_dir(), args.seconds, users=c)
                two, secs2, _ = locust(url, run_dir(), args.seconds, users=c, workers=2)
                closed[c] = one.total / secs
                print(f"{c:>4} {w:>9,.0f} {one.total / secs:>17,.0f} {one.total / secs / w:>6.2f} "
                      f"{two.total / secs2:>17,.0f} {two.total / secs2 / w:>6.2f}")
            print("\n== open model: rate reached vs asked (8 users; 2 workers)")
            print(f"{'asked':>7} {'1 process':>10} {'ratio':>6} {'refused':>8} {'p99 ms':>7} | {'2 workers':>10} "
                  f"{'ratio':>6} {'refused':>8} {'p99 ms':>7}")
            for asked in (500, 1000, 2000, 3000):
                row = f"{asked:>7,}"
                for workers in (0, 2):
                    st, secs, refused = locust(url, run_dir(), args.seconds, users=8, workers=workers,
                                               rate=float(asked))  # fmt: skip
                    reached = st.total / secs
                    row += (f" {reached:>10,.0f} {reached / asked:>6.2f} {refused:>8,} "
                            f"{(st.latency(0.99) or 0) * 1000:>7.1f}" + (" |" if workers == 0 else ""))
                print(row)
            print("\n== a 1 s stall (SIGSTOP of the replica) 3 s into a 6 s run: seen or hidden")
            half = round(closed[8] / 2, -1)
            for label, rate in (("closed loop, 8 users", None), (f"open model, {half:,.0f}/s", half)):
                st, secs, _ = locust(url, run_dir(), 6.0, users=8, rate=rate, stall=(replica.pid, 3.0, 1.0))
                print(f"  {label:24} {st.total:>7,} requests  p50 {(st.latency(0.5) or 0) * 1000:7.1f} ms  "
                      f"p99 {(st.latency(0.99) or 0) * 1000:7.1f} ms  max {(st.latency(1.0) or 0) * 1000:7.1f} ms")
        finally:
            os.kill(replica.pid, signal.SIGCONT)
            replica.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
