"""Runbooks attached to faults, launched by the run when their trigger happens.

The runbook engine lives in ``gamedays`` (above the engine in the import order), so the run
gets it injected as a :class:`RunbookLauncher`; ``faultdrill run`` and ``faultdrill gameday run``
pass the real one. :class:`RunbookTriggers` watches the run: a fault whose runbook has no
``on_alert`` launches it as soon as the fault is active; with ``on_alert`` the runbook waits for
that alert to fire (a ``firing`` alert event, about the fault's target when the alert has a
``pod`` label) after the fault started — as an on-call engineer would meet it. Each launch is
a ``runbook`` event ``launched`` (attrs ``fault``, ``trigger``, ``undo_actions``: the runbook actions that
are the fault's own undo, ``Fault.undo_actions_of``, which the runbook judge refuses to credit). At teardown
every runbook still running is halted (its commands killed) before faults are rolled back.

Example::

    triggers = RunbookTriggers(spec, spec_path, launcher, context)
    triggers.tick(now, scheduler.faults)   # every loop turn
    triggers.stop()                        # teardown: halt and join
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from faultdrill.experiments.journal.timeline import Timeline
from faultdrill.experiments.spec.experiment import Experiment, RunbookRef
from faultdrill.faults.errors import ConfigError
from faultdrill.faults.topology import Supervisor, Topology

__all__ = ["LaunchContext", "RunbookLauncher", "RunbookTriggers", "Running"]


@dataclass(frozen=True)
class LaunchContext:
    """What a runbook may act on and where its steps are recorded."""

    timeline: Timeline
    topology: Callable[[], Topology]
    supervisor: Supervisor | None
    service_url: str | None = None
    prometheus_url: str | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    """The runbooks' own halt (set at teardown); never the run's stop, which may be a game day's."""


class Running(Protocol):
    """A launched runbook: it runs on its own thread until done or stopped."""

    def join(self, timeout_s: float) -> bool: ...


class RunbookLauncher(Protocol):
    """Starts a runbook file with bound variables (``gamedays.launch.GamedayLauncher``)."""

    def check(self, path: Path) -> None:
        """Raise ConfigError when the file is not a runbook (at plan time, before anything starts)."""

    def launch(self, path: Path, *, name: str, variables: dict[str, str], guided: bool,
               context: LaunchContext) -> Running: ...  # fmt: skip


def runbook_path(ref: RunbookRef, spec_file: Path | str | None) -> Path:
    path = Path(ref.file).expanduser()
    if not path.is_absolute() and spec_file is not None:
        for base in (Path(spec_file).resolve().parent, Path.cwd()):
            if (base / path).exists():
                return base / path
        return Path(spec_file).resolve().parent / path
    return path


class RunbookTriggers:
    """Launch each fault's runbook once, on its trigger; see the module docstring."""

    def __init__(self, spec: Experiment, spec_file: Path | str | None, launcher: RunbookLauncher | None,
                 context: LaunchContext, *, guided: bool = False) -> None:  # fmt: skip
        self.spec, self.launcher, self.context, self.guided = spec, launcher, context, guided
        self.system = spec.system()
        self.refs = {f.id: f for f in spec.faults if f.runbook is not None}
        self.paths = {fid: runbook_path(f.runbook, spec_file) for fid, f in self.refs.items() if f.runbook}
        self.running: dict[str, Running] = {}
        if self.refs and launcher is None:
            raise ConfigError("this experiment attaches runbooks to faults, and this caller has no runbook engine",
                              field="faults[].runbook", suggestion="run it with `faultdrill run`")  # fmt: skip
        for path in self.paths.values():
            if launcher is not None:
                launcher.check(path)

    def tick(self, now: float, faults: Sequence[Any]) -> None:
        """Launch the runbooks whose trigger happened (faults: the scheduler's, with ``id``, ``state``)."""
        for f in faults:
            spec = self.refs.get(f.id)
            if spec is None or spec.runbook is None or f.id in self.running or f.state not in ("active", "ending"):
                continue
            started = self.context.timeline.first("fault", source=f.id, event="start")
            if started is None:
                continue
            trigger = "fault start"
            if spec.runbook.on_alert:
                fired = [e for e in self.context.timeline.select("alert", source=spec.runbook.on_alert,
                                                                 start=started.t)
                         if e.get("state") == "firing" and (e.get("labels") or {}).get("pod", spec.target)
                         in (spec.target, None)]  # an alert about another pod is not this fault's page
                if not fired:
                    continue
                trigger = f"alert {spec.runbook.on_alert} firing"
            plugin, config = getattr(f, "fault", None), getattr(f, "config", None)
            undo = tuple(plugin.undo_actions_of(config)) if plugin is not None and config is not None else ()
            self._launch(f.id, spec, trigger, undo)

    def _launch(self, fid: str, spec: Any, trigger: str, undo_actions: tuple[str, ...] = ()) -> None:
        assert self.launcher is not None and spec.runbook is not None
        path = self.paths[fid]
        variables = {"FAULT": fid}
        if spec.target:
            variables["SERVICE"] = spec.target
            if self.system.role_of(spec.target) == "replica":
                variables["REPLICA"] = spec.target
        if self.context.service_url:
            variables["TARGET"] = self.context.service_url
        if self.context.prometheus_url:
            variables["PROM"] = self.context.prometheus_url
        variables.update(spec.runbook.vars)
        self.context.timeline.add("runbook", path.stem, status="launched", fault=fid, trigger=trigger,
                                  file=str(path), undo_actions=list(undo_actions))  # fmt: skip
        self.running[fid] = self.launcher.launch(path, name=path.stem, variables=variables,
                                                 guided=self.guided or spec.runbook.guided, context=self.context)

    def busy(self) -> bool:
        """True while a launched runbook is still running."""
        return any(not r.join(0.0) for r in self.running.values())

    def stop(self, timeout_s: float = 15.0) -> None:
        """Halt every runbook still running and wait for it (bounded)."""
        self.context.stop.set()
        for r in self.running.values():
            r.join(timeout_s)
