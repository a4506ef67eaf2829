"""The co-tenant of ``oom_kill`` mode ``pressure``: allocate in a replica's memory cgroup until the kernel kills.

Run as a script, never imported by the package (``python -I -S faults/memhog.py``: stdlib only, so it starts in
~20 ms and charges the cgroup ~10 MB before it allocates on purpose)::

    python -I -S memhog.py --cgroup /sys/fs/cgroup/memory/faultdrill/<name> --rate-mib-s 200 --max-mib 2048 \\
        --deadline <unix time>

The parent has already put it in the cgroup (before exec: every page it touches is charged there) and raised
the replica's own processes' ``oom_score_adj`` to 1000, so when the cgroup reaches its limit the kernel's OOM
killer chooses among the replica's processes: the replica is really OOM-killed, by the kernel, at its real limit.
Pages are written (``bytearray * n``), not only reserved, so they are charged. It frees everything and exits
as soon as the cgroup's ``oom_kill`` counter rises (the kill happened), at ``--max-mib``, or at the deadline (a
run that died cannot leave it behind: the fault's dead-man deadline is its own). Why by hand: a few lines of
stdlib; ``stress-ng`` (Debian) cannot watch a cgroup's counter to stop the moment the kernel has struck, so it
would keep the replica's restarted process from starting.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

CHUNK = 8 * 1024 * 1024


def oom_kills(cgroup: Path) -> int:
    """The cgroup's ``oom_kill`` count (v1 ``memory.oom_control``, v2 ``memory.events``)."""
    for name in ("memory.oom_control", "memory.events"):
        try:
            text = (cgroup / name).read_text()
        except OSError:
            continue
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cgroup", type=Path, required=True)
    parser.add_argument("--rate-mib-s", type=float, required=True)
    parser.add_argument("--max-mib", type=float, required=True)
    parser.add_argument("--deadline", type=float, required=True)
    args = parser.parse_args()
    before = oom_kills(args.cgroup)
    held: list[bytearray] = []
    started = time.monotonic()
    step_s = CHUNK / (args.rate_mib_s * 1024 * 1024)
    while time.time() < args.deadline:
        if oom_kills(args.cgroup) > before:
            return 0  # the kernel struck: free it all (exit) so the replica's next start has its memory
        if len(held) * CHUNK < args.max_mib * 1024 * 1024:
            held.append(bytearray(b"\x01") * CHUNK)
        # Paced: the n-th chunk at n * step after the start, whatever the allocation took.
        time.sleep(max(0.0, started + len(held) * step_s - time.monotonic()) or 0.01)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
