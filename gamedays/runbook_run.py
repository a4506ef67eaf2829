"""Run a runbook: automated (every step executed and checked) or guided (a person in the loop).

**Automated**: each step's command runs (an ``sh`` script in its own process group with a
timeout, or a faultdrill action), then its checks; the first step that fails stops the run and
the later steps are ``skipped``. **Guided**: each step is shown (title, prose, command,
expected outcome) and the person answers ``r`` run it here (output shown), ``d`` done (the
checks still run and say if they fail), ``f`` failed, ``s`` skip, ``n`` add a note, ``h`` halt;
every step is timed. Ctrl-C, ``h`` or the ``stop`` event halt promptly (status ``halted``),
killing a running command's whole process group: nothing is left behind.

Each step is recorded on ``env.timeline`` as ``runbook`` events (source = the file's stem):
``started`` and then ``done`` | ``failed`` | ``skipped`` | ``halted`` with ``note``,
``duration_s`` and ``check`` (the failed check's text), ``command`` (``sh`` or ``faultdrill``, when the step has a
command) and ``action`` (its faultdrill action). Output never shows an admin token.

Example::

    env = RunbookEnv(supervisor=platform, topology=platform.topology, variables={"REPLICA": "replica-0"},
                     timeline=timeline, prometheus_url=stack.prometheus_url)
    result = run_runbook(parse_runbook(Path("gamedays/runbooks/gpu-memory.md")), env)
    result.passed, result.failed_step and result.failed_step.failed_check
"""

from __future__ import annotations

import builtins
import contextlib
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from rich.console import Console, Group
from rich.markdown import Markdown
from rich.markup import escape
from rich.panel import Panel
from rich.syntax import Syntax
from rich.text import Text

from faultdrill.experiments.journal.timeline import Timeline
from faultdrill.faults.topology import Supervisor, Topology
from faultdrill.gamedays.actions import ActionContext, parse_action, run_action
from faultdrill.gamedays.checks import CheckContext, UnboundVariable, run_check, substitute
from faultdrill.gamedays.runbook import VARIABLES, Runbook, Step, variables_in

__all__ = ["RunbookEnv", "RunbookResult", "StepResult", "bind_variables", "run_runbook", "write_result"]

Status = Literal["done", "failed", "skipped", "halted"]
MAX_OUTPUT = 4000
MAX_PROMPTS = 500
MAX_WAIT_S = 24 * 3600.0
KEYS = "[r]un  [d]one  [f]ailed  [s]kip  [n]ote  [h]alt"


@dataclass(frozen=True)
class RunbookEnv:
    """Where a runbook runs: the platform (None standalone), its topology, the bound variables.

    Example::

        RunbookEnv(supervisor=None, topology=lambda: Topology(), variables={"TARGET": "http://127.0.0.1:8000"})
    """

    supervisor: Supervisor | None
    topology: Callable[[], Topology]
    variables: dict[str, str]
    timeline: Timeline | None = None
    prometheus_url: str | None = None
    shell_timeout_s: float = 60.0


@dataclass
class StepResult:
    """One step's outcome; ``index`` is its number, times are seconds on the run's timeline."""

    index: int
    title: str
    status: Status
    started_t: float
    ended_t: float
    duration_s: float
    note: str = ""
    failed_check: str | None = None
    output: str = ""


@dataclass
class RunbookResult:
    """How a run went: ``failed_step`` is the first failed step (None when passed or only halted)."""

    passed: bool
    steps: list[StepResult]
    failed_step: StepResult | None
    runbook: str = ""
    title: str = ""
    mode: Literal["automated", "guided"] = "automated"
    halted: bool = False

    @property
    def outcome(self) -> str:
        return "halted" if self.halted else ("passed" if self.passed else "failed")

    @property
    def exit_code(self) -> int:
        """0 passed, 1 a step failed, 3 halted (the project's exit codes)."""
        return 3 if self.halted else (0 if self.passed else 1)

    def to_jsonable(self) -> dict[str, Any]:
        return {"kind": "runbook", "version": 1, "runbook": self.runbook, "name": Path(self.runbook).stem,
                "title": self.title, "mode": self.mode, "outcome": self.outcome, "passed": self.passed,
                "exit_code": self.exit_code, "failed_step": self.failed_step.index if self.failed_step else None,
                "steps": [asdict(s) for s in self.steps]}  # fmt: skip


def write_result(result: RunbookResult, out: Path, *, timeline: Timeline | None = None,
                 variables: dict[str, str] | None = None) -> Path:  # fmt: skip
    """Write ``<out>/runbook-<name>-<stamp>-<id>/runbook.json`` (result, variables, timeline); its path."""
    import json

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = Path(out) / f"runbook-{Path(result.runbook).stem}-{stamp}-{uuid.uuid4().hex[:6]}"
    run_dir.mkdir(parents=True, exist_ok=False)
    doc = result.to_jsonable()
    doc.update(written_at=datetime.now(UTC).isoformat(timespec="seconds"), variables=dict(variables or {}),
               timeline=timeline.to_jsonable() if timeline is not None else [])  # fmt: skip
    path = run_dir / "runbook.json"
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def bind_variables(env: RunbookEnv) -> dict[str, str]:
    """The runbook variables: derived from the topology, then ``env.variables`` (which win)."""
    try:
        topo = env.topology()
    except Exception:  # a platform that is not up yet still gets the caller's variables
        topo = Topology()
    out = {"NS": "faultdrill"}
    if env.prometheus_url:
        out["PROM"] = env.prometheus_url
    if (svc := topo.services.get("service")) is not None and svc.url:
        out["TARGET"] = svc.url
    for h in topo.by_role("feature_store")[:1]:
        out.update({"FS": h.url} if h.url else {})
    ca = next((h.ca_file for h in topo.services.values() if h.ca_file), None)
    if ca is not None:
        out["CA"] = str(ca)
    out.update(env.variables)
    replica = topo.services.get(out.get("REPLICA", ""))
    if replica is not None and replica.url:
        out.setdefault("REPLICA_URL", replica.url)
    return out


class _Lines:
    """Lines from a file descriptor with a timeout (select + os.read: no hidden buffering)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""

    def readline(self, timeout_s: float) -> str | None:
        if b"\n" not in self.buf:
            ready, _, _ = select.select([self.fd], [], [], timeout_s)
            if not ready:
                return None
            chunk = os.read(self.fd, 1024)
            if not chunk:
                raise EOFError
            self.buf += chunk
            if b"\n" not in self.buf:
                return None
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode(errors="replace")


@dataclass
class _Exec:
    ok: bool
    output: str
    note: str = ""
    halted: bool = False


@dataclass
class _Runner:
    runbook: Runbook
    env: RunbookEnv
    guided: bool
    console: Console | None
    stop: threading.Event
    input_fn: Callable[[str], str]
    variables: dict[str, str] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=list)
    t0: float = field(default_factory=time.monotonic)
    lines: _Lines | None = None

    # -- plumbing ----------------------------------------------------------------------
    def now(self) -> float:
        return self.env.timeline.now() if self.env.timeline is not None else time.monotonic() - self.t0

    def event(self, step: Step, status: str, **attrs: Any) -> None:
        if self.env.timeline is not None:
            cmd = step.command
            if cmd is not None:
                attrs["command"] = cmd.kind  # a step with none (checks only) changes nothing: it repairs nothing
                if cmd.kind == "faultdrill" and cmd.text.split():
                    attrs["action"] = cmd.text.split()[0]  # what the judge compares with the fault's own undo
            self.env.timeline.add("runbook", self.runbook.name, step=step.number, title=step.title, status=status,
                                  **attrs)  # fmt: skip

    def say(self, *items: Any, **kw: Any) -> None:
        if self.console is not None:
            self.console.print(*items, **kw)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        text = re.sub(r"(?i)(bearer\s+)\S+", r"\1***", text)
        text = re.sub(r"(?i)(token[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+", r"\1***", text)
        if len(text) > MAX_OUTPUT:
            text = f"… ({len(text) - MAX_OUTPUT} characters cut)\n" + text[-MAX_OUTPUT:]
        return text

    def finish(self, step: Step, status: Status, started: float, note: str = "", check: str | None = None,
               output: str = "") -> StepResult:  # fmt: skip
        ended = self.now()
        result = StepResult(step.number, step.title, status, round(started, 3), round(ended, 3),
                            round(ended - started, 3), note, check, output)  # fmt: skip
        self.event(step, status, note=note, duration_s=result.duration_s, check=check)
        return result

    # -- doing -------------------------------------------------------------------------
    def execute(self, step: Step, *, keys: bool) -> _Exec:
        cmd = step.command
        assert cmd is not None
        if cmd.kind == "faultdrill":
            try:
                action = parse_action(substitute(cmd.text, self.variables))
                text = run_action(action, ActionContext(self.env.supervisor, self.env.topology, self.stop,
                                                        self.variables))  # fmt: skip
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # a step that fails must not take the game day down with it
                message = self.redact(f"{type(exc).__name__}: {exc}" if not isinstance(exc, UnboundVariable)
                                      else str(exc))  # fmt: skip
                return _Exec(False, message, f"{cmd.text}: {message}", halted=self.stop.is_set())
            return _Exec(True, self.redact(text))
        missing = [v for v in dict.fromkeys(variables_in(cmd.text)) if v in VARIABLES and v not in self.variables]
        if missing:
            return _Exec(False, "", f"variable ${missing[0]} is not bound (pass --var {missing[0]}=…)")
        return self.shell(cmd.text, keys=keys)

    def shell(self, script: str, *, keys: bool) -> _Exec:
        env = {**os.environ, **self.variables}
        with tempfile.TemporaryFile() as out:
            proc = subprocess.Popen(["/bin/sh", "-c", script], stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, env=env, start_new_session=True)  # fmt: skip
            rc: int | None = None
            why = ""
            try:
                deadline = time.monotonic() + self.env.shell_timeout_s
                for _ in range(int(self.env.shell_timeout_s / 0.05) + 2):
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        rc = proc.wait(0.05)
                        break
                    if self.stop.is_set() or (keys and self.halt_key()):
                        why = "halted"
                        break
                    if time.monotonic() >= deadline:
                        why = f"timed out after {self.env.shell_timeout_s:g}s"
                        break
            finally:
                _kill_group(proc)  # whatever it left running in its group goes too
            out.seek(0)
            text = self.redact(out.read().decode(errors="replace"))
        if why == "halted":
            return _Exec(False, text, "halted while the command ran", halted=True)
        if why or rc is None:
            return _Exec(False, text, f"command {why or 'did not finish'}")
        return _Exec(rc == 0, text, "" if rc == 0 else f"command exited {rc}")

    def halt_key(self) -> bool:
        if self.lines is None:
            return False
        line = self.lines.readline(0)
        if line is not None and line.strip().lower().startswith("h"):
            return True
        if line is not None:
            self.say("[dim](running: type h and Enter to halt)[/dim]")
        return False

    def checks(self, step: Step, output: str | None) -> tuple[str, str] | None:
        """Run the step's checks in order; (failed check, why) for the first that fails, else None."""
        ctx = CheckContext(self.variables, self.env.topology, self.env.prometheus_url or self.variables.get("PROM"),
                           output, self.stop)  # fmt: skip
        for check in step.checks:
            outcome = run_check(check, ctx)
            self.say(f"  {'[green]✓[/green]' if outcome.passed else '[red]✗[/red]'} {escape(check.text)}"
                     f"[dim] — {escape(self.redact(outcome.detail))}[/dim]", highlight=False)  # fmt: skip
            if not outcome.passed:
                return check.text, self.redact(outcome.detail)
        return None

    # -- automated -----------------------------------------------------------------------
    def automated(self, step: Step) -> StepResult:
        started = self.now()
        self.event(step, "started")
        self.say(f"[bold]{step.number}. {escape(step.title)}[/bold]", highlight=False)
        output: str | None = None
        if step.command is not None:
            done = self.execute(step, keys=False)
            output = done.output
            if done.halted:
                return self.finish(step, "halted", started, done.note, output=done.output)
            if not done.ok:
                return self.finish(step, "failed", started, done.note, output=done.output)
        failed = self.checks(step, output)
        if self.stop.is_set():
            return self.finish(step, "halted", started, "halted", output=output or "")
        if failed is not None:
            return self.finish(step, "failed", started, failed[1], failed[0], output or "")
        return self.finish(step, "done", started, output=output or "")

    # -- guided --------------------------------------------------------------------------
    def ask(self, prompt: str) -> str | None:
        """A line from the person; None when ``stop`` is set first (bounded wait)."""
        self.say(prompt, end="", highlight=False, markup=False)
        if self.lines is None:
            return self.input_fn("")
        for _ in range(int(MAX_WAIT_S / 0.1)):
            if self.stop.is_set():
                return None
            line = self.lines.readline(0.1)
            if line is not None:
                return line
        return None

    def show(self, step: Step) -> None:
        parts: list[Any] = []
        if step.prose:
            parts.append(Markdown(step.prose))
        if step.command is not None:
            lang = "bash" if step.command.kind == "sh" else "text"
            parts.append(f"\n[bold]Command ({step.command.kind}):[/bold]")
            parts.append(Syntax(step.command.text, lang, theme="ansi_dark", word_wrap=True))
        if step.checks:
            parts.append("\n[bold]Expected:[/bold]")
            parts.extend(Text(f"  • {c.text}") for c in step.checks)
        total = len(self.runbook.steps)
        self.say(Panel(Group(*parts) if parts else "(no command: do it, then say done)",
                       title=Text(f"step {step.number}/{total} · {step.title}"), title_align="left"))  # fmt: skip

    def guided_step(self, step: Step) -> StepResult:
        started = self.now()
        self.event(step, "started")
        self.show(step)
        notes: list[str] = []
        output: str | None = None

        def note() -> str:
            return "; ".join(notes)

        for _ in range(MAX_PROMPTS):
            answer = self.ask(f"{KEYS} > ")
            if answer is None:
                return self.finish(step, "halted", started, note() or "halted", output=output or "")
            key = answer.strip().lower()[:1]
            if key == "r":
                if step.command is None:
                    self.say("nothing to run in this step: do it by hand, then say d (done)")
                    continue
                self.say("[dim]running… (type h and Enter to halt)[/dim]")
                done = self.execute(step, keys=True)
                output = done.output
                if done.halted:
                    return self.finish(step, "halted", started, "; ".join([*notes, done.note]), output=output)
                self.say(Panel(Text(output or "(no output)"), title="output", title_align="left"))
                self.say("[green]command succeeded[/green]" if done.ok else f"[red]{escape(done.note)}[/red]")
                if not done.ok:
                    notes.append(done.note)
            elif key == "n":
                text = self.ask("note: ")
                if text is None:
                    return self.finish(step, "halted", started, note() or "halted", output=output or "")
                if text.strip():
                    notes.append(text.strip())
            elif key == "d":
                failed = self.checks(step, output)
                if self.stop.is_set():
                    return self.finish(step, "halted", started, note() or "halted", output=output or "")
                if failed is not None:
                    self.say(f"[red]a check failed: {escape(failed[0])} — the step is marked failed[/red]",
                             highlight=False)  # fmt: skip
                    return self.finish(step, "failed", started, "; ".join([*notes, failed[1]]), failed[0],
                                       output or "")  # fmt: skip
                return self.finish(step, "done", started, note(), output=output or "")
            elif key == "f":
                return self.finish(step, "failed", started, note() or "marked failed", output=output or "")
            elif key == "s":
                return self.finish(step, "skipped", started, note(), output=output or "")
            elif key == "h":
                return self.finish(step, "halted", started, note() or "halted", output=output or "")
            else:
                self.say(f"unknown answer {escape(repr(answer.strip()))}: one of r d f s n h")
        return self.finish(step, "halted", started, "too many answers", output=output or "")


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the command's process group, SIGKILL what is left after a moment; reap it."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            break
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            proc.poll()  # reap the leader: a zombie still counts as a member of the group
            if not _group_alive(proc.pid):
                break
            time.sleep(0.02)
        if not _group_alive(proc.pid):
            break
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(1.0)


def _group_alive(pgid: int) -> bool:
    """Whether a process other than a zombie is still in group ``pgid`` (zombies wait for init to reap)."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            return True
    return False


def _token_values(topology: Callable[[], Topology]) -> list[str]:
    with contextlib.suppress(Exception):
        files = {h.admin_token_file for h in topology().services.values() if h.admin_token_file}
        values = []
        for f in files:
            with contextlib.suppress(OSError):
                if len(value := Path(f).read_text().strip()) >= 6:
                    values.append(value)
        return values
    return []


def run_runbook(runbook: Runbook, env: RunbookEnv, *, guided: bool = False, console: object | None = None,
                stop: threading.Event | None = None,
                input_fn: Callable[[str], str] = input) -> RunbookResult:  # fmt: skip
    """Run every step (see the module docstring); never raises for a failing step.

    ``console`` is a rich Console (None: silent when automated, a new Console when guided).
    """
    if console is not None and not isinstance(console, Console):
        raise TypeError(f"console must be a rich Console, got {type(console).__name__}")
    shown = console if console is not None else (Console() if guided else None)
    runner = _Runner(runbook, env, guided, shown, stop or threading.Event(), input_fn)
    runner.variables = bind_variables(env)
    runner.secrets = _token_values(env.topology)
    if guided and input_fn is builtins.input and sys.stdin is not None:
        with contextlib.suppress(AttributeError, OSError, ValueError):
            runner.lines = _Lines(sys.stdin.fileno())
    runner.say(f"[bold]{escape(runbook.title)}[/bold] ({escape(str(runbook.path))}) — "
               f"{'guided' if guided else 'automated'}",
               highlight=False)  # fmt: skip
    results: list[StepResult] = []
    stopped: StepResult | None = None
    for step in runbook.steps:
        if stopped is not None:
            t = runner.now()
            reason = "halted" if stopped.status == "halted" else f"step {stopped.index} failed"
            runner.event(step, "skipped", note=reason, duration_s=0.0, check=None)
            results.append(StepResult(step.number, step.title, "skipped", round(t, 3), round(t, 3), 0.0, reason))
            continue
        started = runner.now()
        try:
            if runner.stop.is_set():
                result = runner.finish(step, "halted", started, "halted before it started")
            else:
                result = runner.guided_step(step) if guided else runner.automated(step)
        except (KeyboardInterrupt, EOFError) as exc:
            result = runner.finish(step, "halted", started, "interrupted" if isinstance(exc, KeyboardInterrupt)
                                   else "input closed")  # fmt: skip
        results.append(result)
        mark = {"done": "[green]done[/green]", "failed": "[red]FAILED[/red]", "skipped": "[yellow]skipped[/yellow]",
                "halted": "[red]halted[/red]"}[result.status]  # fmt: skip
        extra = f" — {escape(result.note)}" if result.note and result.status != "done" else ""
        runner.say(f"  step {step.number}: {mark} ({result.duration_s:.1f}s){extra}", highlight=False)
        if result.status == "halted" or (result.status == "failed" and not guided):
            stopped = result
    failed = next((r for r in results if r.status == "failed"), None)
    halted = any(r.status == "halted" for r in results)
    return RunbookResult(passed=failed is None and not halted, steps=results, failed_step=failed,
                         runbook=str(runbook.path), title=runbook.title, mode="guided" if guided else "automated",
                         halted=halted)  # fmt: skip
