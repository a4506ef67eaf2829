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
5. the GPU-marked tests (``pytest -m gpu``);
6. the serving benchmark on the GPU (``benchmarks/target_bench.py``, digits and heavy).

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
