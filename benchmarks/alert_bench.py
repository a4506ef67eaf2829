"""Benchmark: time from fault to page in the CI profile (real Prometheus, Alertmanager, faults).

Runs catalog experiments with ``faultdrill run --plain`` (each in a subprocess, as a user would)
and reads the journals. Per fault it prints:

* ``first signal`` — fault start → first symptom (probe, breaker, failed request);
* ``fired`` — fault start → the alert the experiment expects turning *firing* in Prometheus;
* ``MTTD`` — fault start → the first firing notification at a receiver (and which alert);
* ``prod-equivalent`` — MTTD × speedup: the same chain at production durations (an upper bound:
  scrape and evaluation intervals do not scale, so the real figure is a little lower);
* the Prometheus first-sample wait of the run (start-up cost of alerting).

Ratios printed: MTTD / first signal (how much later the page comes than the first symptom).
Asserts nothing. Run as root: ``.venv/bin/python benchmarks/alert_bench.py [--repeat 2]``
(``make bench-alerts``); ~1 minute per experiment.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ["cert_expiry", "gpu_memory_exhaustion", "network_partition", "oom_kill"]


def _run(name: str, out: Path) -> tuple[int, dict, float]:
    env = {**os.environ, "FAULTDRILL_STATE_DIR": str(out / "state"), "CI": "true"}
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "faultdrill", "run", f"experiments/catalog/{name}.yaml",
                           "--out", str(out / name), "--plain"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    wall = time.monotonic() - t0
    journal = json.loads(sorted((out / name).glob("*/journal.json"))[-1].read_text())
    return done.returncode, journal, wall


def _fired(journal: dict) -> float | None:
    for v in journal["verdicts"]:
        if v["name"].startswith("alert ") and "fired_s" in v.get("measured", {}):
            return v["measured"]["fired_s"]
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--experiments", default=",".join(DEFAULT))
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="fd-alert-bench-") as tmp:
        for rep in range(args.repeat):
            for name in args.experiments.split(","):
                code, journal, wall = _run(name, Path(tmp) / f"r{rep}")
                speedup = journal["alerting"].get("speedup", 1.0)
                for fid, f in journal["faults"].items():
                    rows.append({"experiment": name, "fault": fid, "exit": code, "wall_s": wall,
                                 "first_signal_s": f.get("first_signal_s"), "fired_s": _fired(journal),
                                 "mttd_s": f.get("mttd_s"), "alert": f.get("detected_by"),
                                 "receiver": f.get("receiver"), "speedup": speedup,
                                 "first_sample_s": journal["alerting"].get("first_sample_s")})  # fmt: skip
    print(f"{'experiment':24} {'exit':>4} {'signal':>7} {'fired':>6} {'MTTD':>6} {'prod-eq':>8} {'1st smp':>7}  page")

    def f(x: float | None, w: int = 6) -> str:
        return f"{x:{w}.2f}" if isinstance(x, int | float) else " " * (w - 1) + "-"

    for r in rows:
        prod = r["mttd_s"] * r["speedup"] if r["mttd_s"] is not None else None
        print(f"{r['experiment']:24} {r['exit']:>4} {f(r['first_signal_s'], 7)} {f(r['fired_s'])} {f(r['mttd_s'])} "
              f"{f(prod, 8)} {f(r['first_sample_s'], 7)}  {r['alert']} → {r['receiver']}")  # fmt: skip
    mttd = [r["mttd_s"] for r in rows if r["mttd_s"] is not None]
    if mttd:
        print(f"\nMTTD (fault → notification), CI profile ÷{rows[0]['speedup']:g}: "
              f"median {statistics.median(mttd):.2f} s, max {max(mttd):.2f} s over {len(mttd)} faults")  # fmt: skip
    ratios = [r["mttd_s"] / r["first_signal_s"] for r in rows if r["mttd_s"] and r["first_signal_s"]]
    if ratios:
        print(f"ratio MTTD / first signal: median {statistics.median(ratios):.1f}×")
    samples = [r["first_sample_s"] for r in rows if r["first_sample_s"] is not None]
    if samples:
        print(f"Prometheus first sample after start: median {statistics.median(samples):.2f} s")


if __name__ == "__main__":
    main()
