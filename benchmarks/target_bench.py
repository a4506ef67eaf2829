"""Benchmark of the bundled target: served throughput and latency against its ceilings.

Prints figures and ratios measured side by side in one run (no timed assertions: the
machines are shared and noisy, so only ratios taken together mean something).

For the default (``digits``) and the ``heavy`` model, at concurrency 1, 8, 32, 64:

* **batched**    the server with dynamic batching (the default configuration);
* **unbatched**  the same server with ``max_batch_size=1``;
* **echo**       the same server answering the same payload without inference
                 (the HTTP/JSON path alone: parse, validate, serialise);
* **offline**    the model in-process, no HTTP, at its best batch size (rows/s).

roofline = min(echo at that concurrency, offline best); served/roofline is the aim
(>= 0.70 for digits); batched/unbatched at c=32 for heavy (aim >= 3x). Also: time from
process start to ready (aim <= 5 s on CPU) and resident memory of one replica.

Load comes from ``wrk`` (C, one thread; Debian package) so the load generator costs little
of the two cores; its Lua ``done`` hook prints exact percentiles as JSON. Where wrk is not
installed, ``benchmarks/loadgen.py`` (asyncio) stands in, and the header says so.

Run: ``make bench`` or ``.venv/bin/python benchmarks/target_bench.py [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from faultdrill.experiments.host.process import ServiceProcess, free_port  # noqa: E402

LUA = """
wrk.method = "POST"
local f = io.open(os.getenv("FD_BODY"), "r"); wrk.body = f:read("*a"); f:close()
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"errors":%d,"non2xx":%d,"p50":%d,"p95":%d,"p99":%d}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
"""
CONCURRENCIES = (1, 8, 32, 64)


def wrk(url: str, body_file: Path, lua: Path, concurrency: int, seconds: float) -> dict[str, float]:
    if shutil.which("wrk") is None:  # e.g. a GPU machine that can install nothing
        from urllib.parse import urlsplit

        from benchmarks.loadgen import run_load

        parts = urlsplit(url)
        return run_load(parts.hostname or "127.0.0.1", parts.port or 80, parts.path, body_file.read_bytes(),
                        concurrency=concurrency, seconds=seconds)  # fmt: skip
    out = subprocess.run(
        ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--timeout", "10s", "-s", str(lua), url],
        env={"FD_BODY": str(body_file), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
        check=True, timeout=seconds + 30,
    )  # fmt: skip
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    secs = doc["duration_us"] / 1e6
    return {
        "rps": doc["requests"] / secs,
        "p50_ms": doc["p50"] / 1000, "p95_ms": doc["p95"] / 1000, "p99_ms": doc["p99"] / 1000,
        "errors": doc["errors"] + doc["non2xx"],
    }  # fmt: skip


def start_target(registry: Path, workdir: Path, model: str, extra: dict[str, str]) -> tuple[ServiceProcess, int, float]:
    port = free_port()
    env = {"FAULTDRILL_PORT": str(port), "FAULTDRILL_MODEL_REGISTRY": str(registry),
           "FAULTDRILL_MODEL": model, "FAULTDRILL_ECHO_ENDPOINT": "true",
           "FAULTDRILL_MAX_QUEUE_SIZE": "1024", "FAULTDRILL_LOG_LEVEL": "warning", **extra}  # fmt: skip
    svc = ServiceProcess(f"target-{model}", [sys.executable, "-m", "faultdrill.target_service", "serve"], env=env,
                         log_path=workdir / f"target-{model}.log")  # fmt: skip
    svc.start()
    ready = svc.wait_http(f"http://127.0.0.1:{port}/v2/health/ready", 60)
    return svc, port, ready


def offline_ceiling(registry: Path, model: str, seconds: float) -> tuple[int, float, float]:
    """(best batch size, rows/s at it, batch-1 forward ms) with one torch thread, as served."""
    import torch

    from faultdrill.target_service.models import example_inputs
    from faultdrill.target_service.registry import ModelRegistry

    torch.set_num_threads(1)
    # The same device the served runs use (FAULTDRILL_DEVICE=cuda on a GPU machine).
    device = torch.device("cuda" if os.environ.get("FAULTDRILL_DEVICE") == "cuda" else "cpu")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    net = ModelRegistry(registry).load(model, "latest", device).model
    best = (1, 0.0)
    batch1_ms = 0.0
    with torch.inference_mode():
        for bs in (1, 2, 4, 8, 16, 32, 64):
            x = torch.from_numpy(example_inputs(bs)).to(device)
            for _ in range(20):
                net(x)
            sync()
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds / 7:
                net(x).cpu()  # served results come back to the host too
                n += 1
            sync()
            dt = (time.perf_counter() - t0) / n
            if bs == 1:
                batch1_ms = dt * 1000
            if bs / dt > best[1]:
                best = (bs, bs / dt)
    return best[0], best[1], batch1_ms


def body_file(workdir: Path) -> Path:
    from faultdrill.target_service.models import example_inputs

    row = example_inputs(1)[0].tolist()
    path = workdir / "body.json"
    path.write_text(json.dumps({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": row}]}))
    return path


def bench_model(model: str, registry: Path, workdir: Path, seconds: float) -> dict[str, object]:
    lua = workdir / "post.lua"
    lua.write_text(LUA)
    body = body_file(workdir)
    results: dict[str, dict[int, dict[str, float]]] = {}
    readies: list[float] = []
    rss = 0
    for config, extra in (("batched", {}), ("unbatched", {"FAULTDRILL_MAX_BATCH_SIZE": "1"})):
        svc, port, ready = start_target(registry, workdir, model, extra)
        readies.append(ready)
        try:
            url = f"http://127.0.0.1:{port}/v2/models/{model}/infer"
            results[config] = {c: wrk(url, body, lua, c, seconds) for c in CONCURRENCIES}
            if config == "batched":
                echo = f"http://127.0.0.1:{port}/v2/models/{model}/echo"
                results["echo"] = {c: wrk(echo, body, lua, c, seconds) for c in CONCURRENCIES}
                rss = psutil.Process(svc.pid).memory_info().rss
        finally:
            svc.stop()
    bs, offline_rps, batch1_ms = offline_ceiling(registry, model, seconds)
    return {"results": results, "offline": (bs, offline_rps), "batch1_ms": batch1_ms,
            "ready_s": readies, "rss": rss}  # fmt: skip


def report(model: str, r: dict[str, object]) -> None:
    results = r["results"]  # type: ignore[assignment]
    bs, offline = r["offline"]  # type: ignore[misc]
    device = os.environ.get("FAULTDRILL_DEVICE", "cpu")
    print(f"\n== model {model}: offline ceiling {offline:,.0f} rows/s at batch {bs} "
          f"(batch-1 forward {r['batch1_ms']:.3f} ms, 1 thread, {device})")  # fmt: skip
    print(f"{'config':10} {'conc':>4} {'req/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>6}")
    for config in ("batched", "unbatched", "echo"):
        for c, m in results[config].items():  # type: ignore[index]
            print(f"{config:10} {c:>4} {m['rps']:>9,.0f} {m['p50_ms']:>8.2f} {m['p95_ms']:>8.2f} "
                  f"{m['p99_ms']:>8.2f} {m['errors']:>6.0f}")  # fmt: skip
    print("ratios:")
    for c in CONCURRENCIES:
        roof = min(results["echo"][c]["rps"], offline)  # type: ignore[index]
        served = results["batched"][c]["rps"]  # type: ignore[index]
        unb = results["unbatched"][c]["rps"]  # type: ignore[index]
        print(f"  c={c:<3} roofline {roof:>8,.0f} req/s ({'echo' if roof < offline else 'offline'})  "
              f"served/roofline {served / roof:5.2f}   batched/unbatched {served / unb:5.2f}")
    print(f"ready after start: {', '.join(f'{s:.2f}s' for s in r['ready_s'])} "
          f"(median {statistics.median(r['ready_s']):.2f}s; aim <= 5 s)")  # type: ignore[arg-type]
    print(f"resident memory of one replica after load: {r['rss'] / 2**20:,.0f} MiB")  # type: ignore[operator]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="wrk duration per point")
    parser.add_argument("--quick", action="store_true", help="1 s per point")
    parser.add_argument("--models", default="digits,heavy")
    args = parser.parse_args()
    loadgen = "wrk (1 thread)" if shutil.which("wrk") else "benchmarks/loadgen.py (wrk not installed)"
    seconds = 1.0 if args.quick else args.seconds
    from faultdrill.target_service.registry import ModelRegistry

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        registry = workdir / "registry"
        ModelRegistry(registry).ensure_defaults()
        print(f"faultdrill target benchmark — {psutil.cpu_count()} CPUs, load: {loadgen}, {seconds:g}s per point")
        for model in args.models.split(","):
            report(model, bench_model(model, registry, workdir, seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
