"""Benchmark of tracing's cost on the hot path: served req/s with spans written to a file vs off.

One target replica (the default ``digits`` model) is started per mode and loaded by ``wrk``
(``benchmarks/loadgen.py`` where wrk is missing) at each concurrency; the modes alternate in
``--rounds`` rounds so drift on a shared machine hits them alike, and the medians are printed
side by side with their ratio (no timed assertions: only ratios taken together mean something).

Modes:

* **off**        no trace file, no endpoint (the instrumentation is one ``is_recording()`` check);
* **file 1.0**   every request traced (request, queue wait, forward spans + one per batch) into a
                 JSON-lines file through the SDK's BatchSpanProcessor;
* **file 0.1**   a tenth of the requests traced (``FAULTDRILL_TRACE_SAMPLE_RATIO=0.1``).

Also printed: bytes of span file per traced request. The feature store is left out (its client
span costs what the request span costs); ``faultdrill run`` traces it too.

Run: ``.venv/bin/python benchmarks/trace_bench.py [--seconds 3] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.target_bench import LUA, body_file, start_target, wrk  # noqa: E402

MODES: dict[str, dict[str, str]] = {
    "off": {},
    "file 1.0": {"FAULTDRILL_TRACE_SAMPLE_RATIO": "1.0"},
    "file 0.1": {"FAULTDRILL_TRACE_SAMPLE_RATIO": "0.1"},
}


def measure(registry: Path, workdir: Path, mode: str, concurrencies: list[int], seconds: float,
            round_no: int) -> dict[int, dict[str, float]]:  # fmt: skip
    env = dict(MODES[mode])
    trace_file = workdir / f"spans-{mode.replace(' ', '-')}-{round_no}.jsonl"
    if mode != "off":
        env["FAULTDRILL_TRACE_FILE"] = str(trace_file)
    svc, port, _ = start_target(registry, workdir, "digits", env)
    lua = workdir / "post.lua"
    lua.write_text(LUA)
    body = body_file(workdir)
    url = f"http://127.0.0.1:{port}/v2/models/digits/infer"
    out: dict[int, dict[str, float]] = {}
    try:
        wrk(url, body, lua, 8, 1.0)  # warm-up
        for c in concurrencies:
            out[c] = wrk(url, body, lua, c, seconds)
    finally:
        svc.stop(15)
    if trace_file.exists():
        lines = trace_file.read_bytes().count(b"\n")
        out[0] = {"bytes": float(trace_file.stat().st_size), "spans": float(lines)}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="wrk duration per point")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per mode")
    parser.add_argument("--concurrency", default="8,32")
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    loadgen = "wrk (1 thread)" if shutil.which("wrk") else "benchmarks/loadgen.py (wrk not installed)"
    from faultdrill.target_service.registry import ModelRegistry

    results: dict[str, list[dict[int, dict[str, float]]]] = {m: [] for m in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        registry = workdir / "registry"
        ModelRegistry(registry).ensure_defaults()
        print(f"faultdrill tracing benchmark — load: {loadgen}, {args.seconds:g}s per point, {args.rounds} rounds, "
              "modes alternate; medians")  # fmt: skip
        for r in range(args.rounds):
            for mode in MODES:
                results[mode].append(measure(registry, workdir, mode, concurrencies, args.seconds, r))
    print(f"{'concurrency':>11} | " + " | ".join(f"{m:>24}" for m in MODES) + " | on/off (1.0) | on/off (0.1)")
    for c in concurrencies:
        rps = {m: statistics.median(x[c]["rps"] for x in results[m]) for m in MODES}
        p95 = {m: statistics.median(x[c]["p95_ms"] for x in results[m]) for m in MODES}
        cells = " | ".join(f"{rps[m]:>9.0f} req/s p95 {p95[m]:>5.1f} ms" for m in MODES)
        print(f"{c:>11} | {cells} | {rps['file 1.0'] / rps['off']:>12.2f} | {rps['file 0.1'] / rps['off']:>12.2f}")
    for mode in ("file 1.0", "file 0.1"):
        runs = [x for x in results[mode] if 0 in x]
        total = sum(sum(x[c]["rps"] * args.seconds for c in concurrencies) for x in runs)
        spans = sum(x[0]["spans"] for x in runs)
        size = sum(x[0]["bytes"] for x in runs)
        if spans:
            print(f"{mode}: {spans / max(total, 1):.2f} spans per request served, {size / spans:.0f} bytes per span, "
                  f"{size / max(total, 1) / 1024:.2f} KiB of span file per request served")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
