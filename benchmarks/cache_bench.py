"""Benchmark of the prediction cache: what a hit saves, what a miss costs, what an outage costs.

One target process per configuration, a real redis-server, ``wrk`` (or ``benchmarks/loadgen.py``)
repeating one request body, at a few concurrencies. Figures and ratios side by side, taken in
one run (no timed assertions: the machines are shared and noisy):

* **off**      no cache (the target's default);
* **hit**      cache on, every lookup a hit (the same input over and over);
* **miss**     cache on, every lookup a miss (wrk's Lua ``request`` hook changes the first
               input value on every request): GET + model + a background SET;
* **down**     cache on, Redis stopped: the breaker opens after a few refused connections and
               every lookup is a bypass (the model answers, no error);

ratios: hit/off (what a hit buys), miss/off (the cost of a cold cache), down/off (the cost
of the breaker + bypass when Redis is gone; aim: close to 1.0). Requests that failed are
counted in the table (the aim is 0 in every configuration). Without ``wrk`` (loadgen.py stands
in) the body never varies, so ``miss`` measures hits there: the header says which load ran.

Run: ``.venv/bin/python benchmarks/cache_bench.py [--quick] [--models digits,heavy]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.target_bench import LUA, body_file, start_target, wrk  # noqa: E402
from faultdrill.experiments.host.process import free_port  # noqa: E402
from faultdrill.experiments.platforms.local.redis import RedisServerConfig, wait_redis  # noqa: E402

CONCURRENCIES = (1, 8, 32)
# Every request distinct: the first input value becomes a counter (the shape stays [1, 64]).
DISTINCT = """
local counter = 0
request = function()
  counter = counter + 1
  local body = string.gsub(wrk.body, '"data": %[[^,]+,', '"data": [' .. counter .. '.25,', 1)
  return wrk.format(nil, nil, nil, body)
end
"""
CONFIGS = ("off", "hit", "miss", "down")


def bench(model: str, registry: Path, workdir: Path, seconds: float) -> dict[str, dict[int, dict[str, float]]]:
    lua = workdir / "post.lua"
    lua.write_text(LUA)
    distinct = workdir / "distinct.lua"
    distinct.write_text(LUA + DISTINCT)
    body = body_file(workdir)
    server = RedisServerConfig(workdir / "redis", max_memory_bytes=64 * 2**20)
    redis_proc = subprocess.Popen(server.write(), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    results: dict[str, dict[int, dict[str, float]]] = {}
    try:
        wait_redis(server.host, server.port, server.password_file, 10, alive=lambda: redis_proc.poll() is None)
        cache = {"FAULTDRILL_CACHE_URL": f"redis://127.0.0.1:{server.port}/0",
                 "FAULTDRILL_CACHE_PASSWORD_FILE": str(server.password_file)}  # fmt: skip
        extras = {
            "off": {},
            "hit": cache,
            "miss": cache,
            "down": cache,
        }
        for config in CONFIGS:
            if config == "down":  # a port nothing listens on, picked now: what replicas see of a stopped Redis
                extras[config] = {**cache, "FAULTDRILL_CACHE_URL": f"redis://127.0.0.1:{free_port()}/0"}
            svc, port, _ = start_target(registry, workdir, model, extras[config])
            try:
                url = f"http://127.0.0.1:{port}/v2/models/{model}/infer"
                script = distinct if config == "miss" else lua
                wrk(url, body, lua, 8, 1.0)  # warm-up (and the first miss, for "hit")
                results[config] = {c: wrk(url, body, script, c, seconds) for c in CONCURRENCIES}
            finally:
                svc.stop()
    finally:
        redis_proc.terminate()
        redis_proc.wait(10)
    return results


def report(model: str, results: dict[str, dict[int, dict[str, float]]]) -> None:
    print(f"\n== model {model}")
    print(f"{'config':7} {'conc':>4} {'req/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>6}")
    for config in CONFIGS:
        for c, m in results[config].items():
            print(f"{config:7} {c:>4} {m['rps']:>9,.0f} {m['p50_ms']:>8.2f} {m['p95_ms']:>8.2f} "
                  f"{m['p99_ms']:>8.2f} {m['errors']:>6.0f}")  # fmt: skip
    print("ratios (req/s; p95 in brackets):")
    for c in CONCURRENCIES:
        off = results["off"][c]
        parts = [f"{cfg}/off {results[cfg][c]['rps'] / off['rps']:5.2f} "
                 f"[{results[cfg][c]['p95_ms'] / max(off['p95_ms'], 1e-3):4.2f}]" for cfg in ("hit", "miss", "down")]
        print(f"  c={c:<3} " + "   ".join(parts))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="wrk duration per point")
    parser.add_argument("--quick", action="store_true", help="1 s per point")
    parser.add_argument("--models", default="digits,heavy")
    args = parser.parse_args()
    seconds = 1.0 if args.quick else args.seconds
    loadgen = "wrk (1 thread)" if shutil.which("wrk") else "benchmarks/loadgen.py (wrk not installed)"
    from faultdrill.target_service.registry import ModelRegistry

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        registry = workdir / "registry"
        ModelRegistry(registry).ensure_defaults()
        print(f"faultdrill prediction-cache benchmark — load: {loadgen}, {seconds:g}s per point, "
              f"redis-server {subprocess.run(['redis-server', '--version'], capture_output=True, text=True).stdout.split()[2]}")  # noqa: E501
        for model in args.models.split(","):
            before = os.getloadavg()[0]
            results = bench(model, registry, workdir, seconds)
            report(model, results)
            print(f"host load average (1 min) {before:.1f} before, {os.getloadavg()[0]:.1f} after, "
                  f"on {os.cpu_count()} CPUs: above the CPU count the figures are noise")
    return 0


if __name__ == "__main__":
    sys.exit(main())
