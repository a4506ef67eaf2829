"""Benchmark of the journal's size against the request rate: what a run writes per minute.

Every request is one ``request`` event in ``journal.json`` today (issue 18 asks for requests aggregated at the
source, so the journal grows with duration, not with request count: aim <= 1 MB per minute at any rate). This
prints, for a one-minute run at 100, 1,000 and 5,000 requests per second — the same synthetic run as
``benchmarks/report_bench.py`` (probes at 10 Hz on 2 replicas, 10 metrics per replica per second, 6 faults) with
only the request rate changed — the bytes of ``journal.json`` as a run writes it, gzipped, per request, and the
ratio to the 1 MB-per-minute aim. Nothing is asserted: it measures where the journal stands.

Run: ``.venv/bin/python benchmarks/journal_bench.py``.
"""

from __future__ import annotations

import gzip
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report_bench import synthesize  # noqa: E402

RATES = (100, 1_000, 5_000)
AIM_BYTES_PER_MIN = 1_000_000


def main() -> int:
    print("journal size per minute of run, by request rate (one request = one event today)")
    print(f"{'req/s':>6} {'events':>9} {'journal MB/min':>15} {'gzip MB/min':>12} {'bytes/request':>14} "
          f"{'write s':>8} {'x the aim':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for rps in RATES:
            journal = synthesize(1.0, rps=rps)
            started = time.perf_counter()
            path = journal.write(Path(tmp) / str(rps))
            took = time.perf_counter() - started
            size = path.stat().st_size
            zipped = len(gzip.compress(path.read_bytes(), compresslevel=6))
            base = synthesize(1.0, rps=0.001).write(Path(tmp) / f"{rps}-none").stat().st_size  # all but requests
            events = len(journal.events)
            print(f"{rps:>6,} {events:>9,} {size / 1e6:>15.2f} {zipped / 1e6:>12.2f} "
                  f"{(size - base) / max(1, rps * 60):>14.0f} {took:>8.2f} {size / AIM_BYTES_PER_MIN:>9.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
