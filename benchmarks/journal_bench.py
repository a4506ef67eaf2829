"""Benchmark of the journal's size against the request rate: what a run writes per minute.

Requests are aggregated at the source (``target_service/loadkit.py``: per 100 ms of send time and per endpoint,
client, version and replica, counts by status and an HDR histogram of latency; failures kept raw up to a bound),
so a journal should grow with a run's duration, not with its request count (issue 18's aim: <= 1 MB per minute
at any rate). For a one-minute run at 100, 1,000 and 5,000 requests per second — the synthetic run of
``benchmarks/report_bench.py`` (probes at 10 Hz on 2 replicas, 10 metrics per replica per second, 6 faults, 4 %
of requests failing during faults), answered by 2 replicas in turn — this prints, side by side in one run:

* **one event per request** (journal version 1, as before): bytes of ``journal.json``;
* **aggregated**: the same requests through the real aggregator (``loadkit.aggregate_file``, in a subprocess as
  Locust runs it), read back as ``requests`` events (``event_of_line``): bytes, gzipped, events, and the ratio
  to the aim; plus the time the report takes to read the aggregated journal's requests (``RunView.of``).

Nothing is asserted: it measures where the journal stands. Run: ``.venv/bin/python benchmarks/journal_bench.py``.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report_bench import synthesize  # noqa: E402
from faultdrill.experiments.journal import Journal  # noqa: E402
from faultdrill.experiments.observe.load import event_of_line  # noqa: E402
from faultdrill.reports.model import RunView  # noqa: E402

RATES = (100, 1_000, 5_000)
AIM_BYTES_PER_MIN = 1_000_000
START = 1_700_000_000.0


def aggregated(journal: Journal, tmp: Path) -> Journal:
    """``journal`` with its request events replaced by what the real aggregator writes for them."""
    raw, buckets = tmp / "raw.jsonl", tmp / "buckets.jsonl"
    with raw.open("w") as out:
        for i, e in enumerate(x for x in journal.events if x.kind == "request"):
            out.write(json.dumps({**e.attrs, "t": START + e.t, "replica": f"replica-{i % 2}"}) + "\n")
    code = "import sys; from target_service.loadkit import aggregate_file as a; a(sys.argv[1], sys.argv[2])"
    subprocess.run([sys.executable, "-c", code, str(raw), str(buckets)], cwd=ROOT / "faultdrill", check=True)
    events = [e for line in buckets.read_text().splitlines() if (e := event_of_line(line, START)) is not None]
    others = [e for e in journal.events if e.kind != "request"]
    return journal.model_copy(update={"events": sorted(others + events, key=lambda e: e.t), "version": 2})


def _request_bytes(journal: Journal) -> int:
    """What the journal's lines for its requests weigh (``Journal.write`` puts each event on a line of its own)."""
    return sum(len(e.model_dump_json()) + 2 for e in journal.events if e.kind in ("request", "requests"))


def main() -> int:
    print("journal size per minute of run, by request rate: one event per request vs aggregated at the source")
    print("(requests MB: the journal's lines for its requests; the aim is about them: the run's probes, metrics and")
    print(" alerts do not grow with the rate. Load runs 45 s of the minute, answered by 2 replicas in turn.)")
    print(f"{'req/s':>6} {'per-request: journal MB':>24} {'requests MB':>12} | {'aggregated: journal MB':>23} "
          f"{'requests MB':>12} {'gzip MB':>8} {'buckets':>7} {'x the aim':>9} {'smaller by':>11} {'report s':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for rps in RATES:
            journal = synthesize(1.0, rps=rps)
            before = journal.write(Path(tmp) / f"{rps}-per-request").stat().st_size
            per_request = _request_bytes(journal)
            agg = aggregated(journal, Path(tmp))
            path = agg.write(Path(tmp) / f"{rps}-aggregated")
            size = path.stat().st_size
            zipped = len(gzip.compress(path.read_bytes(), compresslevel=6))
            started = time.perf_counter()
            RunView.of(agg)
            read_s = time.perf_counter() - started
            mine = _request_bytes(agg)
            buckets = sum(e.kind == "requests" for e in agg.events)
            print(f"{rps:>6,} {before / 1e6:>24.2f} {per_request / 1e6:>12.2f} | {size / 1e6:>23.2f} "
                  f"{mine / 1e6:>12.2f} {zipped / 1e6:>8.2f} {buckets:>7,} "
                  f"{mine / AIM_BYTES_PER_MIN:>9.2f} {per_request / mine:>10.1f}x {read_s:>9.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
