"""The executor: automated runs (pass, stop at the failing step and name its check), timeline
events, guided answers (scripted), halts that leave no process behind, secrets never shown."""

from __future__ import annotations

import io
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from rich.console import Console

from faultdrill.experiments.journal.timeline import Timeline
from faultdrill.faults.topology import ServiceHandle, Topology
from faultdrill.gamedays.actions import RecordingSupervisor
from faultdrill.gamedays.runbook import Runbook, parse_runbook_text
from faultdrill.gamedays.runbook_run import RunbookEnv, bind_variables, run_runbook, write_result


@pytest.fixture()
def replica_url(serve_http: Callable[[type], str]) -> str:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.path in ("/v2/health/ready", "/v2/health/live")
            body = json.dumps({"ready": ok, "reason": "ready" if ok else "no route"}).encode()
            self.send_response(200 if ok else 404)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    return serve_http(Handler)


def _rb(body: str, name: str = "drill") -> Runbook:
    rb, errors = parse_runbook_text(f"# Drill\n\n## Steps\n\n{body}", file=f"{name}.md")
    assert errors == [] and rb is not None, errors
    return rb


def _env(url: str, *, timeline: Timeline | None = None, sup: RecordingSupervisor | None = None,
         shell_timeout_s: float = 10.0, token_file: Path | None = None) -> RunbookEnv:  # fmt: skip
    topo = Topology(services={
        "replica-0": ServiceHandle(name="replica-0", role="replica", url=url, admin_token_file=token_file),
        "service": ServiceHandle(name="service", role="other", url=url),
    })  # fmt: skip
    return RunbookEnv(supervisor=sup, topology=lambda: topo, variables={"REPLICA": "replica-0"},
                      timeline=timeline, shell_timeout_s=shell_timeout_s)  # fmt: skip


PASSING = """### 1. Look
```sh
echo "hello $REPLICA at $REPLICA_URL"
```
```expect
output contains "hello replica-0"
probe readiness $REPLICA is true
```

### 2. Restart it
```faultdrill
restart $REPLICA
```
```expect
http GET $TARGET/v2/health/live status 200
```

### 3. Tell the channel
"""


def test_an_automated_run_passes_and_records_every_step(replica_url: str) -> None:
    timeline = Timeline()
    sup = RecordingSupervisor(Topology(services={"replica-0": ServiceHandle(name="replica-0", role="replica")}))
    result = run_runbook(_rb(PASSING), _env(replica_url, timeline=timeline, sup=sup))
    assert result.passed and result.failed_step is None and result.exit_code == 0 and result.outcome == "passed"
    assert [(s.index, s.status) for s in result.steps] == [(1, "done"), (2, "done"), (3, "done")]
    assert result.steps[0].output.strip() == f"hello replica-0 at {replica_url}"
    assert result.steps[1].output == "restarted replica-0"
    assert sup.calls == [("restart", "replica-0", None)]
    events = [(e.source, e.attrs["step"], e.attrs["status"]) for e in timeline.select("runbook")]
    assert events == [("drill", 1, "started"), ("drill", 1, "done"), ("drill", 2, "started"), ("drill", 2, "done"),
                      ("drill", 3, "started"), ("drill", 3, "done")]  # fmt: skip
    done = timeline.select("runbook", status="done")[0]
    assert done.attrs["title"] == "Look" and done.attrs["duration_s"] >= 0 and done.attrs["check"] is None
    step = result.steps[0]
    assert step.ended_t >= step.started_t and step.duration_s == pytest.approx(step.ended_t - step.started_t, abs=2e-3)


def test_a_failing_check_stops_the_run_at_its_step_and_names_the_check(replica_url: str) -> None:
    timeline = Timeline()
    body = PASSING.replace("probe readiness $REPLICA is true", "probe readiness $REPLICA is false")
    result = run_runbook(_rb(body), _env(replica_url, timeline=timeline, sup=RecordingSupervisor()))
    assert not result.passed and result.exit_code == 1 and result.outcome == "failed"
    assert result.failed_step is result.steps[0]
    assert result.failed_step.failed_check == "probe readiness $REPLICA is false"
    assert "readiness of replica-0 is true" in result.failed_step.note
    assert [s.status for s in result.steps] == ["failed", "skipped", "skipped"]
    assert result.steps[1].note == "step 1 failed"
    failed = timeline.select("runbook", status="failed")
    assert len(failed) == 1 and failed[0].attrs["check"] == "probe readiness $REPLICA is false"
    assert [e.attrs["step"] for e in timeline.select("runbook", status="skipped")] == [2, 3]


def test_a_command_that_fails_fails_its_step(replica_url: str) -> None:
    result = run_runbook(_rb("### 1. Break\n```sh\necho broken >&2; exit 3\n```\n"), _env(replica_url))
    step = result.steps[0]
    assert step.status == "failed" and step.note == "command exited 3" and "broken" in step.output


def test_a_platform_action_without_a_platform_fails_with_the_reason(replica_url: str) -> None:
    result = run_runbook(_rb(PASSING), _env(replica_url, sup=None))
    step = result.failed_step
    assert step is not None and step.index == 2 and "needs a platform" in step.note


def test_an_unbound_variable_fails_the_step_before_running_anything(replica_url: str, tmp_path: Path) -> None:
    flag = tmp_path / "ran"
    result = run_runbook(_rb(f'### 1. Query\n```sh\ntouch {flag}; curl "$PROM"\n```\n'), _env(replica_url))
    assert result.steps[0].status == "failed" and "variable $PROM is not bound" in result.steps[0].note
    assert not flag.exists()


def test_variables_come_from_the_topology_and_the_caller_wins(replica_url: str) -> None:
    env = _env(replica_url)
    got = bind_variables(env)
    assert got["REPLICA_URL"] == replica_url and got["TARGET"] == replica_url and got["NS"] == "faultdrill"
    env = RunbookEnv(supervisor=None, topology=env.topology, variables={"REPLICA": "replica-0", "NS": "prod"},
                     prometheus_url="http://127.0.0.1:9090")  # fmt: skip
    got = bind_variables(env)
    assert got["NS"] == "prod" and got["PROM"] == "http://127.0.0.1:9090"


def test_a_shell_timeout_fails_the_step_and_kills_the_command(replica_url: str, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    body = f"### 1. Hang\n```sh\nsleep 30 & echo $! > {pid_file}; wait\n```\n"
    start = time.monotonic()
    result = run_runbook(_rb(body), _env(replica_url, shell_timeout_s=0.5))
    assert time.monotonic() - start < 5
    assert result.steps[0].status == "failed" and "timed out after 0.5s" in result.steps[0].note
    _assert_gone(int(pid_file.read_text()))


def test_what_a_command_leaves_running_is_killed_with_its_group(replica_url: str, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    result = run_runbook(_rb(f"### 1. Leak\n```sh\nsleep 30 & echo $! > {pid_file}\n```\n"), _env(replica_url))
    assert result.passed
    _assert_gone(int(pid_file.read_text()))


def test_the_stop_event_halts_promptly_and_leaves_nothing_behind(replica_url: str, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    timeline = Timeline()
    body = f"### 1. Long\n```sh\nsleep 30 & echo $! > {pid_file}; wait\n```\n\n### 2. After\n```sh\necho after\n```\n"
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    start = time.monotonic()
    result = run_runbook(_rb(body), _env(replica_url, timeline=timeline), stop=stop)
    assert time.monotonic() - start < 4
    assert result.halted and not result.passed and result.exit_code == 3 and result.outcome == "halted"
    assert [s.status for s in result.steps] == ["halted", "skipped"] and result.failed_step is None
    assert [e.attrs["status"] for e in timeline.select("runbook")] == ["started", "halted", "skipped"]
    _assert_gone(int(pid_file.read_text()))


def _assert_gone(pid: int) -> None:
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        with open(f"/proc/{pid}/stat") as fh:  # a zombie waiting for init to reap it is gone too
            if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                return
        time.sleep(0.02)
    raise AssertionError(f"process {pid} is still running")


def test_tokens_never_show_in_outputs_or_notes(replica_url: str, tmp_path: Path) -> None:
    token_file = tmp_path / "admin.token"
    token_file.write_text("s3cr3t-admin-token\n")
    body = (f'### 1. Leak it\n```sh\ncat {token_file}; echo "Authorization: Bearer abc123"; '
            'echo \'{"token": "xyz789"}\'; exit 1\n```\n')  # fmt: skip
    result = run_runbook(_rb(body), _env(replica_url, token_file=token_file))
    text = json.dumps(result.to_jsonable())
    assert "s3cr3t-admin-token" not in text and "abc123" not in text and "xyz789" not in text
    assert "Bearer ***" in result.steps[0].output


def test_long_output_is_cut_to_its_tail(replica_url: str) -> None:
    result = run_runbook(_rb("### 1. Talk\n```sh\nseq 1 5000\n```\n"), _env(replica_url))
    out = result.steps[0].output
    assert out.startswith("… (") and "characters cut" in out and out.rstrip().endswith("5000") and len(out) < 4100


def test_write_result_records_steps_variables_and_timeline(replica_url: str, tmp_path: Path) -> None:
    timeline = Timeline()
    env = _env(replica_url, timeline=timeline, sup=RecordingSupervisor(
        Topology(services={"replica-0": ServiceHandle(name="replica-0", role="replica")})))
    result = run_runbook(_rb(PASSING), env)
    path = write_result(result, tmp_path / "runs", timeline=timeline, variables=bind_variables(env))
    doc = json.loads(path.read_text())
    assert path.name == "runbook.json" and path.parent.name.startswith("runbook-drill-")
    assert doc["kind"] == "runbook" and doc["outcome"] == "passed" and doc["mode"] == "automated"
    assert [s["status"] for s in doc["steps"]] == ["done"] * 3 and doc["variables"]["REPLICA"] == "replica-0"
    assert len(doc["timeline"]) == 6 and doc["timeline"][0]["kind"] == "runbook"


# -- guided, with scripted answers (the real terminal is tests/integration/test_gd_rb_guided.py) --
def _guided(rb: Runbook, env: RunbookEnv, answers: list[str], **kw: object) -> tuple[object, str]:
    feed = iter(answers)
    out = io.StringIO()
    console = Console(file=out, width=160, force_terminal=False, color_system=None)
    result = run_runbook(rb, env, guided=True, console=console, input_fn=lambda _p: next(feed), **kw)  # type: ignore[arg-type]
    return result, out.getvalue()


def test_guided_run_done_note_skip_and_failed(replica_url: str) -> None:
    timeline = Timeline()
    sup = RecordingSupervisor(Topology(services={"replica-0": ServiceHandle(name="replica-0", role="replica")}))
    answers = ["r", "n", "looked fine", "d", "s", "n", "told #incidents", "f"]
    result, shown = _guided(_rb(PASSING), _env(replica_url, timeline=timeline, sup=sup), answers)
    assert [s.status for s in result.steps] == ["done", "skipped", "failed"]  # type: ignore[attr-defined]
    one, two, three = result.steps  # type: ignore[attr-defined]
    assert one.note == "looked fine" and "hello replica-0" in one.output
    assert two.note == "" and sup.calls == []  # skipped: the restart never ran
    assert three.note == "told #incidents" and three.failed_check is None
    assert not result.passed and result.mode == "guided"  # type: ignore[attr-defined]
    assert "step 1/3 · Look" in shown and "Expected:" in shown and "probe readiness $REPLICA is true" in shown
    assert "command succeeded" in shown
    assert [e.attrs["status"] for e in timeline.select("runbook")] == [
        "started", "done", "started", "skipped", "started", "failed"]


def test_guided_done_still_runs_the_checks_and_says_when_they_fail(replica_url: str) -> None:
    body = PASSING.replace("probe readiness $REPLICA is true", "probe readiness $REPLICA is false")
    result, shown = _guided(_rb(body), _env(replica_url, sup=RecordingSupervisor()), ["d", "h"])
    one, two, three = result.steps  # type: ignore[attr-defined]
    # the first check that fails is named: "output contains" had nothing to look at (not run here)
    assert one.status == "failed" and one.failed_check == 'output contains "hello replica-0"'
    assert "the step's command was not run" in one.note
    assert "a check failed" in shown
    assert (two.status, three.status) == ("halted", "skipped") and result.halted  # type: ignore[attr-defined]


def test_guided_unknown_answers_are_asked_again_and_ctrl_c_halts(replica_url: str) -> None:
    def answers(_prompt: str, it: Iterator[str] = iter(["x", "r"])) -> str:
        try:
            return next(it)
        except StopIteration:
            raise KeyboardInterrupt from None

    out = io.StringIO()
    result = run_runbook(_rb("### 1. Talk\n\nJust talk.\n"), _env(replica_url), guided=True,
                         console=Console(file=out, width=120), input_fn=answers)  # fmt: skip
    assert result.halted and result.steps[0].status == "halted" and result.steps[0].note == "interrupted"
    assert "unknown answer 'x'" in out.getvalue() and "nothing to run in this step" in out.getvalue()


def test_guided_times_each_step(replica_url: str) -> None:
    def slow(_prompt: str, it: Iterator[str] = iter(["d", "d"])) -> str:
        time.sleep(0.3)
        return next(it)

    rb = _rb("### 1. One\n\nfirst\n\n### 2. Two\n\nsecond\n")
    result = run_runbook(rb, _env(replica_url), guided=True, console=Console(file=io.StringIO()), input_fn=slow)
    assert [s.status for s in result.steps] == ["done", "done"] and result.passed
    assert all(0.25 < s.duration_s < 2 for s in result.steps)
    assert result.steps[1].started_t >= result.steps[0].ended_t


def test_a_console_must_be_a_rich_console(replica_url: str) -> None:
    with pytest.raises(TypeError, match="rich Console"):
        run_runbook(_rb(PASSING), _env(replica_url), console=object())
