"""With CI=true a tool `make setup` installs is required: its tests fail when it is missing, never skip
(tests/conftest.py's ``tools`` marker and ``require_tools`` fixture)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

PROBE = '''
import pytest

@pytest.mark.tools("wrk", "promtool")
def test_marked():
    pass

def test_fixture(require_tools):
    require_tools("redis-server")
'''


def _run(tmp_path: Path, ci: bool) -> subprocess.CompletedProcess[str]:
    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_probe.py").write_text(PROBE)
    (tmp_path / "bin").mkdir(exist_ok=True)  # a PATH with python only: no tool make setup installs is on it
    (tmp_path / "bin" / "python").symlink_to(sys.executable) if not (tmp_path / "bin" / "python").exists() else None
    env = {k: v for k, v in os.environ.items() if k != "CI"} | {"PATH": str(tmp_path / "bin")}
    if ci:
        env["CI"] = "true"
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", "-q", "-c", "/dev/null",
                           "--rootdir", str(tmp_path), str(tmp_path)], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)  # fmt: skip


def test_missing_tool_skips_on_a_developer_machine(tmp_path: Path) -> None:
    done = _run(tmp_path, ci=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 skipped" in done.stdout, done.stdout
    assert "not installed: wrk (Debian package wrk), promtool (Debian package prometheus)" in done.stdout


def test_missing_tool_fails_with_ci_true(tmp_path: Path) -> None:
    done = _run(tmp_path, ci=True)
    assert done.returncode == 1, done.stdout + done.stderr
    # a marked test fails in setup (pytest says "error"), the fixture's in its call ("failed"): neither passes
    assert "1 failed, 1 error" in done.stdout and "skipped" not in done.stdout, done.stdout
    assert "redis-server (Debian package redis-server)" in done.stdout
    assert "CI=true: make setup installs it, so it is required here" in done.stdout


def test_unknown_tool_name_is_a_test_bug() -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        import conftest  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    with pytest.raises(ValueError, match="not a tool make setup installs"):
        conftest.missing_tools("no-such-tool")
