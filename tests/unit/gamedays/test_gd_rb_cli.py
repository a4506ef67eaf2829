"""``faultdrill runbook check`` and ``run`` (standalone, against a tiny server on 127.0.0.1)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from typer.testing import CliRunner

from faultdrill.cli import app
from faultdrill.faults.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]
runner = CliRunner()

SMALL = """# Small drill

## Steps

### 1. Look
```sh
echo "checking $REPLICA"
```
```expect
output contains "checking replica-0"
probe readiness $REPLICA is true
http GET $TARGET/v2/health/live status 200
```

### 2. Breathe
```faultdrill
wait 100ms
```
"""


@pytest.fixture()
def server_url(serve_http: Callable[[type], str]) -> str:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path.startswith("/v2/health/") else 404)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass

    return serve_http(Handler)


def test_check_passes_on_the_shipped_directory_and_fails_with_located_errors(tmp_path: Path) -> None:
    result = runner.invoke(app, ["runbook", "check", str(ROOT / "gamedays" / "runbooks")])
    shipped = [p for p in (ROOT / "gamedays" / "runbooks").glob("*.md") if p.name != "README.md"]
    assert len(shipped) >= 15
    assert result.exit_code == 0 and f"ok: {len(shipped)} runbook(s)" in result.output, result.output
    broken = ROOT / "tests" / "fixtures" / "broken_runbooks"
    result = runner.invoke(app, ["runbook", "check", str(broken / "unknown_action.md"), str(broken / "no_title.md")])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert [line.split(": ", 2)[1] for line in lines] == [f"{broken / 'no_title.md'}:1",
                                                          f"{broken / 'unknown_action.md'}:8"]  # fmt: skip
    assert "(did you mean 'restart'?)" in result.output and "2 problems in 2 runbook(s)" in result.output


def test_check_on_the_standalone_platform_flags_platform_actions() -> None:
    result = runner.invoke(app, ["runbook", "check", "--platform", "standalone",
                                 str(ROOT / "gamedays" / "runbooks" / "tls-certificate.md")])  # fmt: skip
    assert result.exit_code == 0  # renew-certificate needs the topology, not a platform
    for name in ("target-down.md", "gpu-memory.md"):  # gpu-memory drains and restarts the replica
        result = runner.invoke(app, ["runbook", "check", "--platform", "standalone",
                                     str(ROOT / "gamedays" / "runbooks" / name)])  # fmt: skip
        assert result.exit_code == 2 and "action 'restart' is not supported on platform 'standalone'" in result.output


def test_run_standalone_passes_and_writes_its_result(tmp_path: Path, server_url: str) -> None:
    rb = tmp_path / "small.md"
    rb.write_text(SMALL)
    out = tmp_path / "runs"
    result = runner.invoke(app, ["runbook", "run", str(rb), "--var", "REPLICA=replica-0", "--replica",
                                 f"replica-0={server_url}", "--target", server_url, "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "PASSED" in result.output
    [path] = out.glob("runbook-small-*/runbook.json")
    doc = json.loads(path.read_text())
    assert doc["outcome"] == "passed" and [s["status"] for s in doc["steps"]] == ["done", "done"]
    assert doc["variables"]["REPLICA_URL"] == server_url and doc["variables"]["TARGET"] == server_url
    assert [e["attrs"]["status"] for e in doc["timeline"]] == ["started", "done", "started", "done"]


def test_run_exits_1_at_the_failing_step(tmp_path: Path, server_url: str) -> None:
    rb = tmp_path / "small.md"
    rb.write_text(SMALL.replace("is true", "is false"))
    args = ["--var", "REPLICA=replica-0", "--replica", f"replica-0={server_url}", "--target", server_url]
    result = runner.invoke(app, ["runbook", "run", str(rb), *args, "--out", str(tmp_path)])
    assert result.exit_code == 1 and "FAILED at step 1 (Look)" in result.output


def test_run_refuses_platform_actions_before_running_anything(tmp_path: Path) -> None:
    rb = tmp_path / "restart.md"
    flag = tmp_path / "ran"
    rb.write_text(f"# R\n\n## Steps\n\n### 1. Touch\n```sh\ntouch {flag}\n```\n\n"
                  "### 2. Restart\n```faultdrill\nrestart $REPLICA\n```\n")
    result = runner.invoke(app, ["runbook", "run", str(rb), "--out", str(tmp_path)])
    assert isinstance(result.exception, ConfigError)
    assert str(result.exception).startswith(f"{rb}:12: steps[2].command: 'restart' needs a platform")
    assert not flag.exists() and not list(tmp_path.glob("runbook-*"))


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    rb = tmp_path / "restart.md"
    rb.write_text("# R\n\n## Steps\n\n### 1. Restart\n```faultdrill\nrestart $REPLICA\n```\n")
    done = subprocess.run([sys.executable, "-m", "faultdrill", "runbook", "run", str(rb), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)  # fmt: skip
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "needs a platform" in done.stderr and "Traceback" not in done.stderr
    result = runner.invoke(app, ["runbook", "run", str(rb), "--var", "NOEQUALS"])
    assert isinstance(result.exception, ConfigError) and "expected NAME=VALUE" in str(result.exception)
