"""The GPU hog: fill a CUDA device from outside the target (or keep its SMs busy), until SIGTERM.

Allocates plain ``torch.empty(..., dtype=torch.uint8)`` chunks until only
``--leave-free-mib`` remain free (``torch.cuda.mem_get_info``) or ``--hold-mib`` are held,
prints one JSON line (``{"ready": true, ...}`` or ``{"ready": false, "error": ...}``), then
holds until SIGTERM/SIGINT or ``--deadline`` (wall-clock epoch seconds: the dead-man, so
an orphaned hog frees the GPU by itself) and frees everything.

With ``--compute N`` it is a co-tenant instead (``gpu_slowdown``'s ``co_tenant`` mode): it multiplies two
N×N float16 matrices back to back on the device, synchronising every few kernels so a stop is prompt, until
the same signals or deadline.

Example::

    python -m faultdrill.faults.gpu_hog --device cuda:0 --leave-free-mib 256 --deadline 1735000000 \\
        --pidfile /tmp/state/gpu_hog-ab12.pid --tag ab12
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

__all__ = ["main"]

MIB = 1024 * 1024
_CHUNK = 256 * MIB


def _say(doc: dict[str, Any]) -> None:
    print(json.dumps(doc), flush=True)


def _fill(torch: Any, device: Any, leave_free: int | None, hold: int | None) -> list[Any]:
    chunks: list[Any] = []
    held = 0
    for _ in range(1_000_000):  # bounded: at most ~256 TiB of 256 MiB chunks
        free, _total = torch.cuda.mem_get_info(device)
        want = (hold - held) if hold is not None else (free - (leave_free or 0))
        if want < MIB:
            break
        size = min(_CHUNK, want)
        try:
            chunks.append(torch.empty(size, dtype=torch.uint8, device=device))
        except torch.cuda.OutOfMemoryError:
            # The driver refused: the device is as full as it gets. The exception is
            # dropped here so that its frame does not keep the failed tensor alive.
            break
        held += size
    return chunks


def _compute(torch: Any, device: Any, n: int, deadline: float, stop: threading.Event) -> int:
    a = torch.randn(n, n, device=device, dtype=torch.float16)
    b = torch.randn(n, n, device=device, dtype=torch.float16)
    torch.cuda.synchronize(device)
    _say({"ready": True, "pid": os.getpid(), "compute": n, "device": str(device)})
    kernels = 0
    for _ in range(10**12):  # bounded by the deadline, checked every 8 kernels
        if stop.is_set() or time.time() >= deadline:
            break
        for _ in range(8):
            torch.mm(a, b)
        torch.cuda.synchronize(device)
        kernels += 8
    del a, b
    torch.cuda.empty_cache()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m faultdrill.faults.gpu_hog")
    parser.add_argument("--device", default="cuda:0")
    amount = parser.add_mutually_exclusive_group(required=True)
    amount.add_argument("--leave-free-mib", type=float)
    amount.add_argument("--hold-mib", type=float)
    amount.add_argument("--compute", type=int, metavar="N", help="saturate the SMs with N×N matmuls instead")
    parser.add_argument("--deadline", type=float, required=True, help="epoch seconds: exit then")
    parser.add_argument("--pidfile", type=Path)
    parser.add_argument("--tag", default="", help="injection id (shows in ps)")
    args = parser.parse_args(argv)

    stop = threading.Event()

    def on_signal(_sig: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if args.pidfile is not None:
        from faultdrill.faults.procid import process_start_ticks

        args.pidfile.write_text(f"{os.getpid()} {process_start_ticks(os.getpid())}\n")
    try:
        import torch

        if not torch.cuda.is_available():
            _say({"ready": False, "error": "torch.cuda.is_available() is False"})
            return 2
        device = torch.device(args.device)
        if args.compute is not None:
            return _compute(torch, device, args.compute, args.deadline, stop)
        leave = None if args.leave_free_mib is None else int(args.leave_free_mib * MIB)
        hold = None if args.hold_mib is None else int(args.hold_mib * MIB)
        chunks = _fill(torch, device, leave, hold)
        free, total = torch.cuda.mem_get_info(device)
        _say({"ready": True, "pid": os.getpid(), "held_bytes": sum(c.numel() for c in chunks),
              "free_bytes": int(free), "total_bytes": int(total), "device": str(device)})  # fmt: skip
        # Bounded wait: wakes at least every second to check the dead-man deadline.
        for _ in range(int(max(0.0, args.deadline - time.time())) + 2):
            if stop.wait(min(1.0, max(0.0, args.deadline - time.time()))) or time.time() >= args.deadline:
                break
        chunks.clear()
        torch.cuda.empty_cache()
        return 0
    finally:
        if args.pidfile is not None:
            args.pidfile.unlink(missing_ok=True)


if __name__ == "__main__":
    raise SystemExit(main())
