"""Benchmark of the reports: render time and size per format for a 10-minute run.

Synthesizes a realistic 10-minute journal — ~150 requests/s (≈ 90,000 request events),
readiness and liveness probes at 10 Hz on 2 replicas, 10 metrics per replica every second,
6 faults with breaker flaps, restarts, alerts, notifications and runbook steps — writes it
as ``journal.json``, then times reading it, building the view, and rendering each format
(best of ``--repeat``). Prints a table and the HTML/Markdown ratios; asserts nothing.

Run: ``.venv/bin/python benchmarks/report_bench.py [--minutes 10] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from faultdrill.experiments.journal import Journal, collect_environment  # noqa: E402
from faultdrill.experiments.journal.timeline import Event  # noqa: E402

RPS, PROBE_HZ, REPLICAS, METRICS = 150, 10, 2, 10
FAULTS = [("hog", "gpu_memory_exhaustion", "replica-0"), ("part", "network_partition", "feature-store"),
          ("cert", "cert_expiry", "feature-store"), ("oom", "oom_kill", "replica-1"),
          ("outage", "dependency_outage", "feature-store"), ("bad", "model_load_failure", "replica-1")]  # fmt: skip


def synthesize(minutes: float, seed: int = 7, rps: float = RPS) -> Journal:
    rnd = random.Random(seed)
    end = minutes * 60.0
    windows = [(60.0 + i * (end - 120.0) / len(FAULTS), 30.0) for i in range(len(FAULTS))]
    in_fault = lambda t: any(s <= t <= s + d for s, d in windows)  # noqa: E731
    ev: list[Event] = [Event(t=0.0, kind="phase", source="run", attrs={"phase": "setup"}),
                       Event(t=20.0, kind="phase", source="run", attrs={"phase": "steady"})]  # fmt: skip
    t = 15.0
    while t < end:
        bad = in_fault(t) and rnd.random() < 0.04
        lat = rnd.lognormvariate(-2.9, 0.35) * (2.5 if in_fault(t) else 1.0)
        ev.append(Event(t=t, kind="request", source="load", attrs={"ok": not bad, "status": 503 if bad else 200,
                                                                   "latency_s": round(lat, 6), "name": "/infer",
                                                                   "error": None}))  # fmt: skip
        t += rnd.expovariate(rps)
    for r in range(REPLICAS):
        name = f"replica-{r}"
        for k in range(int(end * PROBE_HZ)):
            pt = k / PROBE_HZ
            down = r == 0 and in_fault(pt) and pt % 40 < 20
            ready = {"probe": "readiness", "value": not down, "status": 503 if down else 200, "latency_s": 0.003}
            ev.append(Event(t=pt, kind="probe", source=name, attrs=ready))
            ev.append(Event(t=pt + 0.01, kind="probe", source=name, attrs={"probe": "liveness", "value": True,
                                                                           "status": 200, "latency_s": 0.002}))
        for s in range(int(end)):
            for m in range(METRICS):
                ev.append(Event(t=s + 0.5, kind="metric", source=name, attrs={"name": f"metric_{m}",
                                                                              "value": rnd.random(), "labels": {}}))
        ev.append(Event(t=10.0, kind="breaker", source=name, attrs={"state": "closed"}))
    for i, ((fid, ftype, target), (s, d)) in enumerate(zip(FAULTS, windows, strict=True)):
        ev += [Event(t=s, kind="fault", source=fid, attrs={"event": "start", "fault": ftype, "target": target,
                                                           "mode": "default", "emulated": ftype.startswith("gpu")}),
               Event(t=s + d, kind="fault", source=fid, attrs={"event": "end", "fault": ftype})]  # fmt: skip
        for k in range(10):  # a flapping breaker
            ev.append(Event(t=s + 1 + k, kind="breaker", source=f"replica-{i % 2}",
                            attrs={"state": ("open", "half-open")[k % 2]}))  # fmt: skip
        ev.append(Event(t=s + 11, kind="breaker", source=f"replica-{i % 2}", attrs={"state": "closed"}))
        ev += [Event(t=s + 2, kind="alert", source=f"Alert{fid.title()}", attrs={"state": "pending", "labels": {}}),
               Event(t=s + 5, kind="alert", source=f"Alert{fid.title()}", attrs={"state": "firing",
                                                                                 "labels": {"severity": "page"}}),
               Event(t=s + 6, kind="notification", source="oncall", attrs={"alert": f"Alert{fid.title()}",
                                                                           "status": "firing"}),
               Event(t=s + d + 5, kind="alert", source=f"Alert{fid.title()}", attrs={"state": "resolved"}),
               Event(t=s + 8, kind="runbook", source="runbook.md", attrs={"step": f"mitigate {fid}", "status": "done",
                                                                          "note": "by hand"}),
               Event(t=s + 3, kind="process", source="replica-1", attrs={"event": "exit", "reason": "OOMKilled"}),
               Event(t=s + 4, kind="process", source="replica-1", attrs={"event": "restart", "reason": "OOMKilled"})]
    ev.append(Event(t=end, kind="phase", source="run", attrs={"phase": "teardown"}))
    env = collect_environment(device="cpu", emulated=True, notes=["synthetic benchmark journal"])
    spec = {"apiVersion": "faultdrill/v1", "kind": "Experiment", "metadata": {"name": "bench-10min"},
            "steady_state": {"window": 5.0, "slo": {"availability": 0.99, "latency_p95": 0.5}}}  # fmt: skip
    journal = Journal.new(spec, env)
    faults = {fid: {"type": ft, "target": tg, "start_s": s, "end_s": s + d, "mttd_s": 1.0, "mttr_s": 4.0}
              for (fid, ft, tg), (s, d) in zip(FAULTS, windows, strict=True)}  # fmt: skip
    verdicts = [{"name": f"expectation {i}", "passed": i % 4 != 0, "expected": f"thing {i}", "observed": f"saw {i}",
                 "window": [60.0 * i, 60.0 * i + 5]} for i in range(8)]  # fmt: skip
    return journal.model_copy(update={"events": sorted(ev, key=lambda e: e.t), "faults": faults,
                                      "verdicts": verdicts, "outcome": "failed", "exit_code": 1,
                                      "ended_at": journal.started_at + end})  # fmt: skip


def best(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from faultdrill.reports import RunView, load_journal, render

    journal = synthesize(args.minutes)
    counts: dict[str, int] = {}
    for e in journal.events:
        counts[e.kind] = counts.get(e.kind, 0) + 1
    with tempfile.TemporaryDirectory() as tmp:
        path = journal.write(Path(tmp))
        size = path.stat().st_size
        print(f"journal: {args.minutes:g} min, {len(journal.events):,} events "
              f"({', '.join(f'{k} {n:,}' for k, n in sorted(counts.items()))}), {size / 1e6:.1f} MB")  # fmt: skip
        t_read, loaded = best(lambda: load_journal(path), args.repeat)
    t_view, view = best(lambda: RunView.of(loaded), args.repeat)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    render(view, "html")  # type: ignore[arg-type]
    first_html = time.perf_counter() - t0
    print(f"\n{'step':<22}{'ms':>10}{'size':>12}")
    print(f"{'read + validate':<22}{t_read * 1e3:>10.1f}{size / 1e3:>10.0f} kB")
    print(f"{'build view':<22}{t_view * 1e3:>10.1f}")
    rows = {}
    for fmt in ("html", "md", "junit", "json"):
        t, text = best(lambda fmt=fmt: render(view, fmt), args.repeat)  # type: ignore[arg-type]
        rows[fmt] = (t, len(str(text).encode()))
        print(f"{'render ' + fmt:<22}{t * 1e3:>10.1f}{rows[fmt][1] / 1e3:>10.1f} kB")
    print(f"{'first html (cold)':<22}{first_html * 1e3:>10.1f}   (imports matplotlib and Jinja2, loads fonts)")
    total = t_read + t_view + sum(t for t, _ in rows.values())
    print(f"{'all (read→4 formats)':<22}{total * 1e3:>10.1f}")
    (th, sh), (tm, sm) = rows["html"], rows["md"]
    print(f"\nhtml/markdown: time {th / tm:.0f}×, size {sh / sm:.0f}×")


if __name__ == "__main__":
    main()
