"""Memory cgroups for real: a child over its limit is OOM-killed and counted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from faultdrill.faults.cgroups import OWNER_DIR, MemoryCgroup, detect_memory_controller
from faultdrill.faults.errors import BlastRadiusError

CONTROLLER = detect_memory_controller()
needs_cgroup = pytest.mark.skipif(
    CONTROLLER is None or os.geteuid() != 0,
    reason="needs root and a cgroup memory controller (v1 memory or v2 'memory')",
)


def test_detect_on_fake_trees(tmp_path: Path) -> None:
    assert detect_memory_controller(tmp_path) is None
    (tmp_path / "cgroup.controllers").write_text("cpu io memory pids\n")
    found = detect_memory_controller(tmp_path)
    assert found is not None and found.version == 2 and found.root == tmp_path
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    found = detect_memory_controller(tmp_path)
    assert found is not None and found.version == 1


def test_names_cannot_escape_the_owner_dir(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("memory")
    controller = detect_memory_controller(tmp_path)
    assert controller is not None
    for bad in ("../system.slice", "a/b", ""):
        with pytest.raises(BlastRadiusError):
            MemoryCgroup(controller, bad)
    assert MemoryCgroup(controller, "ok-1").path == tmp_path / OWNER_DIR / "ok-1"


@needs_cgroup
def test_child_over_limit_is_oom_killed() -> None:
    assert CONTROLLER is not None
    cg = MemoryCgroup.create(CONTROLLER, f"test-{uuid.uuid4().hex[:8]}")
    try:
        cg.set_limit(100 * 2**20)
        assert cg.limit() == 100 * 2**20
        assert cg.oom_kills() == 0
        hog = "b = bytearray(300 * 2**20)\nfor i in range(0, len(b), 4096): b[i] = 1\n"
        proc = subprocess.Popen([sys.executable, "-c", hog], preexec_fn=cg.preexec())
        assert proc.wait(timeout=60) == -signal.SIGKILL
        assert cg.oom_kills() >= 1
        assert cg.pids() == []
    finally:
        cg.remove()
    assert not cg.path.exists()
    cg.remove()  # idempotent


@needs_cgroup
def test_usage_is_charged_and_remove_kills_leftovers() -> None:
    assert CONTROLLER is not None
    cg = MemoryCgroup.create(CONTROLLER, f"test-{uuid.uuid4().hex[:8]}")
    try:
        assert cg.limit() is None
        code = "import time\nb = bytearray(20 * 2**20)\nprint('ok', flush=True)\ntime.sleep(60)"
        proc = subprocess.Popen(
            [sys.executable, "-c", code], preexec_fn=cg.preexec(), stdout=subprocess.PIPE
        )
        assert proc.stdout is not None and proc.stdout.readline() == b"ok\n"
        assert cg.pids() == [proc.pid]
        assert cg.usage() >= 20 * 2**20
    finally:
        cg.remove()
    assert proc.wait(timeout=10) == -signal.SIGKILL
    assert not cg.path.exists()
