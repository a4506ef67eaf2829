"""Shared helpers for the fault tests (imported by path-independent name)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from faultdrill import faults

REPO_ROOT = Path(faults.__file__).resolve().parent.parent


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def start_python(code: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code],
        env=child_env(),
        stdout=subprocess.PIPE,
        text=True,
    )


def wait_for_line(proc: subprocess.Popen[str], expected: str, timeout: float = 60.0) -> str:  # a loaded CI box
    """Read lines until one starts with ``expected`` (bounded by count and time)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    for _ in range(100):
        if time.monotonic() > deadline:
            break
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith(expected):
            return line.strip()
    raise AssertionError(f"child never printed {expected!r} (rc={proc.poll()})")
