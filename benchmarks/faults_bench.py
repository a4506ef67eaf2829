"""Benchmark of the fault library: how fast each fault takes effect and how fast it heals.

For every fault and mode, against the real bundled system (LocalStack: feature store in its
own network namespace, fault proxy on the replica→store edge, one replica in a memory
cgroup), it prints:

* **inject→verified**: from ``inject`` being called to ``verify`` confirming the effect
  (for timeout-type effects — drop, blackhole, hung — this includes the verify probe's own
  timeout, so the effect itself is present sooner);
* **rollback→healthy**: from ``undo`` being called to the target of the fault being healthy
  again (a CA-verified request to the feature store through the edge; the replica ready and
  answering inference). A poisoned GPU context (``gpu_sticky_error``, an Xid) is repaired by a new
  process: its figure includes that restart.

Aims: <= 100 ms for proxy, namespace, certificate and dependency faults; the OOM kill
observed <= 1 s after the limit is crossed. Also the fault proxy in pass-through against a
direct connection (aim: <= 0.3 ms added p50, >= 0.9 throughput at concurrency 32).

Run as root: ``make bench-faults`` or ``.venv/bin/python benchmarks/faults_bench.py``.
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.loadgen import run_load  # noqa: E402
from faultdrill.experiments.platforms.local.stack import LocalStack  # noqa: E402
from faultdrill.faults.base import FaultContext  # noqa: E402
from faultdrill.faults.proxy_control import spawn_proxy  # noqa: E402
from faultdrill.faults.registry import FaultRegistry  # noqa: E402

CASES: list[tuple[str, dict[str, object]]] = [
    ("network_degradation", {"target": "feature-store-proxy", "mode": "latency", "latency_ms": 100, "jitter_ms": 10}),
    ("network_degradation", {"target": "feature-store-proxy", "mode": "bandwidth", "bandwidth_bps": 2000}),
    ("network_degradation", {"target": "feature-store-proxy", "mode": "blackhole"}),
    ("network_degradation", {"target": "feature-store-proxy", "mode": "reset"}),
    ("network_degradation", {"target": "feature-store-proxy", "mode": "slow_close", "close_delay_ms": 300}),
    ("network_degradation", {"target": "feature-store-proxy", "mode": "refuse"}),
    ("network_degradation", {"target": "feature-store-proxy", "mode": "drop"}),
    ("network_partition", {"target": "feature-store", "action": "reject"}),
    ("network_partition", {"target": "feature-store", "action": "drop"}),
    ("dependency_outage", {"target": "feature-store", "mode": "errors", "error_rate": 1.0}),
    ("dependency_outage", {"target": "feature-store", "mode": "slow", "delay_ms": 300}),
    ("dependency_outage", {"target": "feature-store", "mode": "hung"}),
    ("dependency_outage", {"target": "feature-store", "mode": "refusing"}),
    ("dependency_outage", {"target": "feature-store", "mode": "killed"}),
    ("cert_expiry", {"target": "feature-store", "mode": "expired"}),
    ("cert_expiry", {"target": "feature-store", "mode": "not_yet_valid"}),
    ("cert_expiry", {"target": "feature-store", "mode": "wrong_ca"}),
    ("cert_expiry", {"target": "feature-store", "mode": "wrong_host"}),
    ("gpu_memory_exhaustion", {"target": "replica-0", "mode": "in_process", "leave_free_mib": 0}),
    ("gpu_sticky_error", {"target": "replica-0"}),
    ("gpu_slowdown", {"target": "replica-0", "mode": "in_process", "factor": 4}),
    ("gpu_wrong_output", {"target": "replica-0", "mode": "bitflip", "count": 64}),
    ("gpu_wrong_output", {"target": "replica-0", "mode": "scale", "factor": -1}),
    ("gpu_xid", {"target": "replica-0", "xid": 13}),
    ("gpu_xid", {"target": "replica-0", "xid": 79}),
    ("process_freeze", {"target": "replica-0", "mode": "sigstop"}),
    ("process_freeze", {"target": "replica-0", "mode": "worker"}),
    ("oom_kill", {"target": "replica-0", "mode": "limit"}),
    ("oom_kill", {"target": "replica-0", "mode": "leak", "rate_mib_s": 400}),
    ("process_kill", {"target": "replica-0", "mode": "sigkill"}),
    ("model_load_failure", {"target": "replica-0", "mode": "corrupt"}),
]


def _poll(check: Callable[[], bool], timeout_s: float, interval_s: float = 0.005) -> float | None:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        try:
            if check():
                return time.perf_counter() - t0
        except Exception:
            pass
        time.sleep(interval_s)
    return None


def _healthy(stack: LocalStack, fault: str) -> Callable[[], bool]:
    topo = stack.topology()
    if fault in ("network_degradation", "network_partition", "dependency_outage", "cert_expiry"):
        ca = ssl.create_default_context(cafile=str(stack.pki.ca.cert))
        proxy = topo.services["feature-store-proxy"]
        url = f"https://127.0.0.1:{proxy.port}/healthz"  # the edge the replicas use

        def store_ok() -> bool:
            with httpx.Client(verify=ca, timeout=0.5) as client:
                return client.get(url).status_code == 200

        return store_ok
    body = {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 64}]}

    def replica_ok() -> bool:
        url = stack.handle("replica-0").url
        return (httpx.get(f"{url}/v2/health/ready", timeout=0.5).status_code == 200
                and httpx.post(f"{url}/v2/models/digits/infer", json=body, timeout=0.5).status_code == 200)  # fmt: skip

    return replica_ok


def bench_faults(stack: LocalStack, state_dir: Path) -> list[tuple[str, str, float | None, float | None, str]]:
    registry = FaultRegistry.installed()
    rows = []
    for name, params in CASES:
        fault = registry.get(name)()
        config = fault.parse_config(params)
        ctx = FaultContext.create(state_dir, scope=stack.scope(), topology=stack.topology(), supervisor=stack)
        mode = str(params.get("mode") or params.get("action") or (f"xid {params['xid']}" if "xid" in params else "-"))
        problems = fault.preflight(config, ctx)
        if problems:
            rows.append((name, mode, None, None, "; ".join(p.message for p in problems)))
            continue
        t0 = time.perf_counter()
        injection = fault.inject(config, ctx)
        note = ""
        try:
            seen = _poll(lambda f=fault, i=injection, c=ctx: f.verify(i, c).effective, 30, 0.0)
            verified = None if seen is None else time.perf_counter() - t0
            note = fault.verify(injection, ctx).message[:70] if seen is None else ""
        finally:
            healthy = _healthy(stack, name)
            t1 = time.perf_counter()
            fault.undo(injection, ctx)
            if name == "oom_kill":
                # The fault restores the limit; bringing the killed replica back is the platform's
                # restart policy, included here (and noted) so the figure is time to healthy.
                stack.start("replica-0", wait=False)
                note = "incl. platform restart"
            back = _poll(healthy, 60)
            healed = None if back is None else time.perf_counter() - t1
        stack.start("replica-0")  # no-op when it runs
        rows.append((name, mode, verified, healed, note))
        print(f"  {name:22} {mode:14} inject→verified {_ms(verified):>9}  rollback→healthy {_ms(healed):>9}  {note}",
              flush=True)  # fmt: skip
    return rows


def _ms(v: float | None) -> str:
    return "—" if v is None else f"{v * 1000:,.1f} ms"


def bench_proxy(stack: LocalStack, workdir: Path, seconds: float) -> None:
    replica = stack.handle("replica-0")
    assert replica.port is not None
    proxy = spawn_proxy(("127.0.0.1", replica.port), token_file=workdir / "bench-proxy.token")
    try:
        print("\nfault proxy in pass-through (GET /v2/health/live on the replica):")
        for conc in (1, 32):
            direct = run_load("127.0.0.1", replica.port, "/v2/health/live", None, concurrency=conc, seconds=seconds)
            proxied = run_load("127.0.0.1", proxy.listen[1], "/v2/health/live", None, concurrency=conc,
                               seconds=seconds)  # fmt: skip
            print(f"  c={conc:<3} direct {direct['rps']:>8,.0f} req/s p50 {direct['p50_ms']:.3f} ms | "
                  f"proxied {proxied['rps']:>8,.0f} req/s p50 {proxied['p50_ms']:.3f} ms | "
                  f"added p50 {proxied['p50_ms'] - direct['p50_ms']:+.3f} ms, "
                  f"throughput ratio {proxied['rps'] / direct['rps']:.2f}")  # fmt: skip
    finally:
        proxy.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="load duration per proxy point")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("faults benchmark needs root (cgroups, namespaces, iptables)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        print("faultdrill faults benchmark — LocalStack: feature store in a namespace, proxy edge, 1 replica "
              "in a 700 MiB cgroup")  # fmt: skip
        with LocalStack(workdir / "stack", replicas=1, memory_limit_bytes=700 * 2**20,
                        feature_store_netns=True) as stack:  # fmt: skip
            bench_faults(stack, workdir / "state")
            bench_proxy(stack, workdir, args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
