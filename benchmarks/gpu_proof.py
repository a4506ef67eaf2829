"""Prove the real GPU path on a CUDA machine, in one command, and record what it saw.

What it does (each step prints PASS/FAIL with its measured figures, and everything lands in
``--out``, default ``docs/gpu/``):

1. environment: GPU name, driver, CUDA and torch versions (``nvidia-smi``, torch);
2. the target serves the ``heavy`` model on ``cuda``: ``/v2`` says ``cuda (real)``; NVML
   metrics (``gpu_utilization_ratio``, ``gpu_memory_used_bytes``/``total``) are real and
   utilisation rises under load;
3. ``gpu_memory_exhaustion`` ``in_process`` (the target's admin API holds real device memory
   with plain ``torch.empty`` allocations): inference gets 507 from a real
   ``torch.cuda.OutOfMemoryError``, readiness goes false after repeated OOMs, and recovers by
   itself when the memory is released;
4. ``gpu_memory_exhaustion`` ``external`` (a separate hog process) the same way;
5. ``gpu_wrong_output`` (bits flipped in the weights in GPU memory): answers wrong with HTTP 200, the
   known-answer compute check takes readiness away, the restore writes the weights back bit for bit;
6. ``gpu_slowdown`` ``co_tenant`` (a separate process multiplying matrices on the same GPU): the target's
   own forward-pass time and the load's throughput, with and without the co-tenant, side by side;
7. ``gpu_sticky_error`` (a real device-side assert: an out-of-bounds index poisons the CUDA context): every
   inference fails, the compute check makes readiness and liveness false; a new process is healthy;
8. the GPU-marked tests (``pytest -m gpu``);
9. the serving benchmark on the GPU (``benchmarks/target_bench.py``, digits and heavy).

Run on a GPU machine from the repository root (see ``docs/gpu/README.md`` for the wheels a
bare machine needs)::

    python3 benchmarks/gpu_proof.py --out docs/gpu
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.loadgen import run_load  # noqa: E402
from faultdrill.experiments.host.process import ServiceProcess, free_port  # noqa: E402


class Proof:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.results: list[dict[str, object]] = []

    def record(self, step: str, passed: bool, **figures: object) -> None:
        self.results.append({"step": step, "passed": passed, **figures})
        print(f"{'PASS' if passed else 'FAIL'} {step} {json.dumps(figures, default=str)}", flush=True)

    def save(self) -> None:
        (self.out / "gpu_proof.json").write_text(json.dumps(self.results, indent=2, default=str))


def environment() -> dict[str, object]:
    import torch

    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                         capture_output=True, text=True, check=False).stdout.strip()  # fmt: skip
    return {
        "gpu": smi, "torch": torch.__version__, "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(), "python": platform.python_version(),
        "command": " ".join(sys.argv),
    }  # fmt: skip


def start_target(workdir: Path, model: str, token: str) -> tuple[ServiceProcess, str, str]:
    from faultdrill.target_service.registry import ModelRegistry

    registry = workdir / "models"
    ModelRegistry(registry).ensure_defaults()
    port, admin = free_port(), free_port()
    env = {"FAULTDRILL_PORT": str(port), "FAULTDRILL_ADMIN_PORT": str(admin), "FAULTDRILL_ADMIN_TOKEN": token,
           "FAULTDRILL_MODEL_REGISTRY": str(registry), "FAULTDRILL_MODEL": model, "FAULTDRILL_DEVICE": "cuda",
           "FAULTDRILL_OOM_UNREADY_THRESHOLD": "2", "FAULTDRILL_MAX_BATCH_SIZE": "64"}  # fmt: skip
    svc = ServiceProcess("target", [sys.executable, "-m", "faultdrill.target_service", "serve"], env=env,
                         log_path=workdir / f"target-{model}.log")  # fmt: skip
    svc.start()
    svc.wait_http(f"http://127.0.0.1:{port}/v2/models/{model}", 120)
    return svc, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}"


def metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def prove_serving(proof: Proof, base: str, model: str) -> None:
    meta = httpx.get(f"{base}/v2").json()
    proof.record("device is real cuda", meta["device"]["label"] == "cuda (real)", device=meta["device"])
    idle = httpx.get(f"{base}/metrics").text
    body = json.dumps({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 64}]})
    port = int(base.rsplit(":", 1)[1])
    stats = run_load("127.0.0.1", port, f"/v2/models/{model}/infer", body.encode(), concurrency=64, seconds=5)
    busy = httpx.get(f"{base}/metrics").text
    util_idle, util_busy = metric(idle, "gpu_utilization_ratio"), metric(busy, "gpu_utilization_ratio")
    used, total = metric(busy, "gpu_memory_used_bytes"), metric(busy, "gpu_memory_total_bytes")
    proof.record("NVML metrics real, utilisation rises under load", bool(total and used and util_busy is not None),
                 utilization_idle=util_idle, utilization_busy=util_busy, memory_used=used, memory_total=total,
                 load_rps=round(stats["rps"]), p95_ms=round(stats["p95_ms"], 2))  # fmt: skip


def prove_oom(proof: Proof, base: str, admin: str, token: str, model: str, mode: str, workdir: Path) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    body = {"inputs": [{"name": "input", "shape": [64, 64], "datatype": "FP32", "data": [0.5] * 64 * 64}]}
    hog = None
    t0 = time.monotonic()
    if mode == "in_process":
        httpx.post(f"{admin}/admin/device-memory/hold", json={"leave_free_mib": 0}, headers=headers, timeout=60)
    else:
        hog = subprocess.Popen([sys.executable, "-m", "faultdrill.faults.gpu_hog", "--device", "cuda:0",
                                "--leave-free-mib", "0"], stdout=subprocess.PIPE, text=True, cwd=ROOT)  # fmt: skip
        assert hog.stdout is not None
        hog.stdout.readline()  # its JSON ready line
    codes = [httpx.post(f"{base}/v2/models/{model}/infer", json=body, timeout=30).status_code for _ in range(6)]
    ready = httpx.get(f"{base}/v2/health/ready").json()
    metrics = httpx.get(f"{base}/metrics").text
    if hog is not None:
        hog.terminate()
        hog.wait(30)
    else:
        httpx.post(f"{admin}/admin/device-memory/release", json={}, headers=headers, timeout=60)
    t1 = time.monotonic()
    recovered = None
    while time.monotonic() - t1 < 30:
        if httpx.get(f"{base}/v2/health/ready").status_code == 200:
            recovered = time.monotonic() - t1
            break
        time.sleep(0.05)
    proof.record(f"gpu_memory_exhaustion {mode}: 507, unready, self-recovery",
                 507 in codes and not ready["ready"] and recovered is not None,
                 codes=codes, readiness=ready, cuda_oom_total=metric(metrics, "inference_cuda_oom_total"),
                 oom_retries_total=metric(metrics, "inference_oom_retries_total"),
                 recovered_after_s=recovered, held_for_s=round(t1 - t0, 2))  # fmt: skip


def _until(check: object, timeout_s: float) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if check():  # type: ignore[operator]
            return round(time.monotonic() - t0, 3)
        time.sleep(0.02)
    return None


def prove_wrong_output(proof: Proof, base: str, admin: str, token: str, model: str) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    body = {"inputs": [{"name": "input", "shape": [8, 64], "datatype": "FP32", "data": [0.5] * 8 * 64}]}
    url = f"{base}/v2/models/{model}/infer"
    before = httpx.post(url, json=body, timeout=30).json()["outputs"][0]["data"]
    done = httpx.post(f"{admin}/admin/device/corrupt", json={"mode": "bitflip", "count": 64}, headers=headers,
                      timeout=30).json()  # fmt: skip
    t0 = time.monotonic()
    reply = httpx.post(url, json=body, timeout=30)
    after = reply.json()["outputs"][0]["data"] if reply.status_code == 200 else None
    changed = after is not None and after != before
    unready = _until(lambda: httpx.get(f"{base}/v2/health/ready").status_code == 503, 15)
    reason = httpx.get(f"{base}/v2/health/ready").json().get("reason")
    t1 = time.monotonic()
    restored = httpx.post(f"{admin}/admin/device/restore", json={}, headers=headers, timeout=30).json()
    ready = _until(lambda: httpx.get(f"{base}/v2/health/ready").status_code == 200, 15)
    again = httpx.post(url, json=body, timeout=30).json()["outputs"][0]["data"]
    proof.record("gpu_wrong_output: 200 and wrong, known answers take readiness, restored bit for bit",
                 reply.status_code == 200 and changed and unready is not None and restored.get("weights_intact") is True
                 and ready is not None and again == before,
                 corruption=done.get("corruption"), status=reply.status_code, inject_to_unready_s=unready,
                 reason=reason, restore_to_ready_s=ready, held_s=round(t1 - t0, 2))  # fmt: skip


def prove_slowdown(proof: Proof, base: str, model: str) -> None:
    body = json.dumps({"inputs": [{"name": "input", "shape": [32, 64], "datatype": "FP32",
                                   "data": [0.5] * 32 * 64}]}).encode()  # fmt: skip
    port = int(base.rsplit(":", 1)[1])

    def measure() -> dict[str, float]:
        m0 = httpx.get(f"{base}/metrics").text
        stats = run_load("127.0.0.1", port, f"/v2/models/{model}/infer", body, concurrency=32, seconds=5)
        m1 = httpx.get(f"{base}/metrics").text
        total = (metric(m1, "inference_compute_duration_seconds_sum") or 0) - (
            metric(m0, "inference_compute_duration_seconds_sum") or 0)  # fmt: skip
        count = (metric(m1, "inference_compute_duration_seconds_count") or 0) - (
            metric(m0, "inference_compute_duration_seconds_count") or 0)  # fmt: skip
        return {"rps": round(stats["rps"]), "p95_ms": round(stats["p95_ms"], 2),
                "forward_ms": round(1000 * total / count, 3) if count else float("nan")}  # fmt: skip

    alone = measure()
    hog = subprocess.Popen([sys.executable, "-m", "faultdrill.faults.gpu_hog", "--device", "cuda:0", "--compute",
                            "8192", "--deadline", str(time.time() + 120)], stdout=subprocess.PIPE, text=True,
                           cwd=ROOT)  # fmt: skip
    assert hog.stdout is not None
    line = hog.stdout.readline()
    shared = measure()
    hog.terminate()
    hog.wait(30)
    after = measure()
    ratio = round(shared["forward_ms"] / alone["forward_ms"], 2) if alone["forward_ms"] else None
    proof.record("gpu_slowdown co_tenant: a real co-tenant slows the forward pass, and it comes back",
                 '"ready": true' in line and shared["forward_ms"] > 1.2 * alone["forward_ms"]
                 and after["forward_ms"] < 1.2 * alone["forward_ms"],
                 alone=alone, with_co_tenant=shared, after=after, ratio=ratio)  # fmt: skip


def prove_sticky(proof: Proof, base: str, admin: str, token: str, model: str) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    body = {"inputs": [{"name": "input", "shape": [4, 64], "datatype": "FP32", "data": [0.5] * 4 * 64}]}
    t0 = time.monotonic()
    state = httpx.post(f"{admin}/admin/device/sticky-error", json={}, headers=headers, timeout=60).json()
    codes = [httpx.post(f"{base}/v2/models/{model}/infer", json=body, timeout=30).status_code for _ in range(4)]
    unready = _until(lambda: httpx.get(f"{base}/v2/health/ready").status_code == 503, 15)
    dead = _until(lambda: httpx.get(f"{base}/v2/health/live").status_code == 503, 15)
    reason = httpx.get(f"{base}/v2/health/ready").json().get("reason")
    proof.record("gpu_sticky_error: a real device-side assert poisons the context; deep probes see it",
                 all(c == 500 for c in codes) and unready is not None and dead is not None,
                 sticky_error=state.get("sticky_error"), codes=codes, inject_to_unready_s=unready,
                 inject_to_liveness_503_s=dead, reason=reason, held_s=round(time.monotonic() - t0, 2))  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "gpu")
    parser.add_argument("--skip-bench", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    proof = Proof(args.out)
    env = environment()
    proof.record("environment", bool(env["cuda_available"]), **env)
    workdir = args.out / "work"
    workdir.mkdir(exist_ok=True)
    token = secrets.token_urlsafe(16)
    svc, base, admin = start_target(workdir, "heavy", token)
    try:
        prove_serving(proof, base, "heavy")
        prove_oom(proof, base, admin, token, "heavy", "in_process", workdir)
        prove_oom(proof, base, admin, token, "heavy", "external", workdir)
        prove_wrong_output(proof, base, admin, token, "heavy")
        prove_slowdown(proof, base, "heavy")
        prove_sticky(proof, base, admin, token, "heavy")  # last: the process is poisoned for good
    finally:
        code = svc.stop()
        proof.record("target stopped on SIGTERM", code is not None, exit_code=code)
    t1 = time.monotonic()
    svc, base, admin = start_target(workdir, "heavy", token)  # the repair of a poisoned context: a new process
    try:
        ok = httpx.post(f"{base}/v2/models/heavy/infer", json={"inputs": [{"name": "input", "shape": [1, 64],
                        "datatype": "FP32", "data": [0.5] * 64}]}, timeout=30).status_code  # fmt: skip
        proof.record("gpu_sticky_error: a new process serves again", ok == 200, status=ok,
                     restart_to_serving_s=round(time.monotonic() - t1, 2))  # fmt: skip
    finally:
        code = svc.stop()
        proof.record("target drained on SIGTERM", code == 0, exit_code=code)
    tests = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "tests"],
                           capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    (args.out / "pytest_gpu.txt").write_text(tests.stdout + tests.stderr)
    proof.record("pytest -m gpu", tests.returncode == 0, tail=tests.stdout.strip().splitlines()[-1:])
    if not args.skip_bench:
        bench = subprocess.run([sys.executable, "benchmarks/target_bench.py"], capture_output=True, text=True,
                               cwd=ROOT, env={**os.environ, "FAULTDRILL_DEVICE": "cuda"})  # fmt: skip
        (args.out / "target_bench_gpu.txt").write_text(bench.stdout + bench.stderr)
        proof.record("serving benchmark on the GPU", bench.returncode == 0)
    proof.save()
    return 0 if all(r["passed"] for r in proof.results) else 1


if __name__ == "__main__":
    sys.exit(main())
