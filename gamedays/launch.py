"""The runbook engine as the run's :class:`~experiments.engine.runbook_hook.RunbookLauncher`.

``faultdrill run`` and ``faultdrill gameday run`` hand this to the engine, which starts a
fault's runbook on its trigger; each runbook runs on its own thread (steps, checks and
commands from ``gamedays.runbook_run``), records its steps on the run's timeline, and is
halted — its commands killed — when the run tears down.

Example::

    run_experiment(path, out=Path("runs"), runbooks=GamedayLauncher())
"""

from __future__ import annotations

import threading
from pathlib import Path

from faultdrill.experiments.engine.runbook_hook import LaunchContext
from faultdrill.gamedays.runbook import parse_runbook
from faultdrill.gamedays.runbook_run import RunbookEnv, RunbookResult, run_runbook

__all__ = ["GamedayLauncher", "RunningRunbook"]


class RunningRunbook:
    """One runbook on its thread; ``result`` once it finished."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.result: RunbookResult | None = None
        self.error: str | None = None
        self._thread: threading.Thread | None = None

    def start(self, target: object) -> None:
        self._thread = threading.Thread(target=target, name=f"runbook-{self.name}", daemon=True)  # type: ignore[arg-type]
        self._thread.start()

    def join(self, timeout_s: float) -> bool:
        """True once the runbook has finished (waits at most ``timeout_s``)."""
        if self._thread is None:
            return True
        self._thread.join(timeout_s)
        return not self._thread.is_alive()


class GamedayLauncher:
    """Launch runbooks with ``gamedays.runbook_run`` (automated, or guided in this terminal)."""

    def __init__(self, *, console: object | None = None) -> None:
        self.console = console

    def check(self, path: Path) -> None:
        parse_runbook(path)  # a missing file or bad syntax: ConfigError with file:line, before anything starts

    def launch(self, path: Path, *, name: str, variables: dict[str, str], guided: bool,
               context: LaunchContext) -> RunningRunbook:  # fmt: skip
        runbook = parse_runbook(path)
        env = RunbookEnv(supervisor=context.supervisor, topology=context.topology, variables=dict(variables),
                         timeline=context.timeline, prometheus_url=context.prometheus_url)  # fmt: skip
        running = RunningRunbook(name)

        def body() -> None:
            try:
                running.result = run_runbook(runbook, env, guided=guided, console=self.console, stop=context.stop)
            except Exception as exc:  # a runbook engine failure is a failed step, never a dead run
                running.error = f"{type(exc).__name__}: {exc}"
                context.timeline.add("runbook", name, status="failed", step=0, title="(runbook engine)",
                                     check=running.error)  # fmt: skip

        running.start(body)
        return running
