"""Guided mode through a real terminal: ``python -m faultdrill runbook run --guided`` on a pty,
driven by keys as a person would type them, against a tiny HTTP server on 127.0.0.1; halts
(``h`` and Ctrl-C) in the middle of a running command leave no process behind."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import pty
import re
import select
import signal
import sys
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")
PROMPT = "[r]un  [d]one  [f]ailed  [s]kip  [n]ote  [h]alt >"

DRILL = """# Guided drill

## Steps

### 1. Look at the replica
```sh
curl -sS "$REPLICA_URL/v2/health/ready"
```
```expect
output contains "ready"
probe readiness replica-0 is true
```

### 2. Tell the incident channel

Post the summary.

### 3. Optional cleanup
```sh
echo cleanup
```

### 4. Verify the service
```expect
http GET $TARGET/v2/health/live status 200
```
"""

LONG = """# Long drill

## Steps

### 1. Wait for the batch job
```sh
echo started; sleep 30
```

### 2. Afterwards
```sh
echo after
```
"""


@pytest.fixture()
def server_url(serve_http: Callable[[type], str]) -> str:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.path.startswith("/v2/health/")
            body = json.dumps({"ready": ok, "reason": "ready"}).encode()
            self.send_response(200 if ok else 404)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    return serve_http(Handler)


class Terminal:
    """``faultdrill runbook run --guided`` in a child process whose terminal is a pty we hold."""

    def __init__(self, runbook: Path, url: str, out: Path) -> None:
        argv = [sys.executable, "-m", "faultdrill", "runbook", "run", str(runbook), "--guided",
                "--var", "REPLICA=replica-0", "--replica", f"replica-0={url}", "--target", url, "--out", str(out)]
        env = {**os.environ, "COLUMNS": "160", "LINES": "50", "TERM": "xterm", "PYTHONUNBUFFERED": "1"}
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: its stdin/stdout/stderr are the pty's terminal side
            os.chdir(ROOT)
            os.execve(sys.executable, argv, env)
        self.seen = ""
        self.cursor = 0
        self.status: int | None = None

    def expect(self, text: str, timeout_s: float = 10.0) -> str:
        """Read until ``text`` shows up after the previous match; everything read so far."""
        deadline = time.monotonic() + timeout_s
        while (found := self.seen.find(text, self.cursor)) < 0:
            left = deadline - time.monotonic()
            assert left > 0, f"{text!r} not seen; the terminal shows:\n{self.seen[-3000:]}"
            ready, _, _ = select.select([self.fd], [], [], min(left, 0.2))
            if ready:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:  # the child closed the terminal
                    chunk = b""
                assert chunk, f"terminal closed before {text!r}:\n{self.seen[-3000:]}"
                self.seen += _ANSI.sub("", chunk.decode(errors="replace"))
        self.cursor = found + len(text)
        return self.seen

    def type(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    def wait(self, timeout_s: float = 15.0) -> int:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with_data, _, _ = select.select([self.fd], [], [], 0.1)
            if with_data:
                with contextlib.suppress(OSError):
                    self.seen += _ANSI.sub("", os.read(self.fd, 65536).decode(errors="replace"))
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
                return self.status
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        raise AssertionError(f"the guided run did not end; the terminal shows:\n{self.seen[-3000:]}")

    def close(self) -> None:
        if self.status is None and psutil.pid_exists(self.pid):
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        os.close(self.fd)


def _result(out: Path) -> dict[str, object]:
    [path] = out.glob("runbook-*/runbook.json")
    doc: dict[str, object] = json.loads(path.read_text())
    return doc


def test_a_person_runs_notes_skips_and_finishes_a_runbook(tmp_path: Path, server_url: str) -> None:
    runbook = tmp_path / "drill.md"
    runbook.write_text(DRILL)
    term = Terminal(runbook, server_url, tmp_path / "runs")
    try:
        term.expect("step 1/4 · Look at the replica")
        screen = term.expect(PROMPT, timeout_s=20)
        assert 'curl -sS "$REPLICA_URL/v2/health/ready"' in screen and "Expected:" in screen
        assert "probe readiness replica-0 is true" in screen
        term.type("r\n")
        screen = term.expect("command succeeded")
        assert '"ready": true' in screen  # the command's output, shown to the person
        term.expect(PROMPT)
        term.type("n\n")
        term.expect("note: ")
        term.type("replica looked healthy\n")
        term.expect(PROMPT)
        term.type("d\n")
        screen = term.expect("step 2/4 · Tell the incident channel")
        assert "✓ output contains" in screen and "✓ probe readiness replica-0 is true" in screen
        term.expect(PROMPT)
        time.sleep(0.4)  # the person takes a moment: the step's duration shows it
        term.type("n\n")
        term.expect("note: ")
        term.type("posted in #incidents\n")
        term.expect(PROMPT)
        term.type("d\n")
        term.expect("step 3/4 · Optional cleanup")
        term.expect(PROMPT)
        term.type("s\n")
        term.expect("step 4/4 · Verify the service")
        term.expect(PROMPT)
        term.type("d\n")
        assert term.wait() == 0, term.seen[-2000:]
    finally:
        term.close()
    assert "PASSED" in term.seen and "result:" in term.seen
    doc = _result(tmp_path / "runs")
    steps = doc["steps"]
    assert isinstance(steps, list)
    assert doc["mode"] == "guided" and doc["outcome"] == "passed"
    assert [s["status"] for s in steps] == ["done", "done", "skipped", "done"]
    assert [s["note"] for s in steps] == ["replica looked healthy", "posted in #incidents", "", ""]
    assert '"ready": true' in steps[0]["output"]
    assert steps[1]["duration_s"] >= 0.4 and all(s["duration_s"] > 0 for s in steps)
    assert all(b["started_t"] >= a["ended_t"] for a, b in itertools.pairwise(steps))
    timeline = doc["timeline"]
    assert isinstance(timeline, list)
    statuses = [(e["attrs"]["step"], e["attrs"]["status"]) for e in timeline]
    assert statuses == [(1, "started"), (1, "done"), (2, "started"), (2, "done"), (3, "started"), (3, "skipped"),
                        (4, "started"), (4, "done")]  # fmt: skip


@pytest.mark.parametrize("how", ["h", "ctrl-c"])
def test_a_halt_in_the_middle_of_a_command_leaves_nothing_behind(tmp_path: Path, server_url: str, how: str) -> None:
    runbook = tmp_path / "long.md"
    runbook.write_text(LONG)
    term = Terminal(runbook, server_url, tmp_path / "runs")
    try:
        term.expect(PROMPT, timeout_s=20)
        term.type("r\n")
        term.expect("running…")
        sleepers: list[psutil.Process] = []
        for _ in range(100):  # the command's process tree: sh and its sleep
            sleepers = [p for p in psutil.Process(term.pid).children(recursive=True) if p.name() == "sleep"]
            if sleepers:
                break
            time.sleep(0.05)
        assert sleepers, "the step's sleep never started"
        start = time.monotonic()
        term.type("h\n" if how == "h" else "\x03")  # Ctrl-C: the terminal sends SIGINT to the foreground group
        assert term.wait() == 3, term.seen[-2000:]
        assert time.monotonic() - start < 5
    finally:
        term.close()
    _gone, alive = psutil.wait_procs(sleepers, timeout=3)
    assert not alive, f"left behind: {alive}"
    assert "HALTED at step 1 (Wait for the batch job)" in term.seen
    doc = _result(tmp_path / "runs")
    steps = doc["steps"]
    assert isinstance(steps, list)
    assert doc["outcome"] == "halted" and doc["exit_code"] == 3
    assert [s["status"] for s in steps] == ["halted", "skipped"]
    assert steps[0]["note"] == ("halted while the command ran" if how == "h" else "interrupted")
