"""``faultdrill gameday run PLAN``: every scenario of a plan on one system, with people or not.

One platform and one alerting stack (Prometheus, Alertmanager, receivers) serve the whole day;
each scenario runs through the engine (``experiments.engine.run.run_spec``) on that shared system and
its timeline, and keeps its own journal and reports (the scenario's slice of the day). Between
scenarios a pause lets the system recover and the scribe write notes (guided: Enter continues).
A halt — SIGINT/SIGTERM, or ``h`` + Enter in the terminal — stops the scenario in progress
(runbooks halted, faults rolled back), skips the rest, and tears everything down.

Output: ``<out>/gameday-<name>-<stamp>/`` with one directory per scenario, ``gameday.json`` (the
plan, roles, outcome per scenario, notes), ``gameday.html`` and ``gameday.md`` (reports'
game-day renderers), every scenario recorded in the history database. Exit code: 0 all passed,
1 one failed, 3 halted (2 for a bad plan, before anything starts).

Example::

    result = run_gameday(Path("gamedays/plans/smoke.yaml"), out=Path("runs"))
    result.exit_code, result.directory / "gameday.html"
"""

from __future__ import annotations

import dataclasses
import json
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console

from faultdrill.experiments.engine.plan import build_plan
from faultdrill.experiments.engine.run import RunResult, run_plan, with_misconfigurations
from faultdrill.experiments.engine.runlinks import update_links
from faultdrill.experiments.engine.runtime import RunParts, SharedSystem
from faultdrill.experiments.journal.timeline import Timeline
from faultdrill.faults.registry import FaultRegistry
from faultdrill.gamedays.launch import GamedayLauncher
from faultdrill.gamedays.plan import LoadedPlan, load_plan
from faultdrill.reports import write_all

__all__ = ["GameDayResult", "run_gameday"]


@dataclass
class GameDayResult:
    exit_code: int
    directory: Path
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    halted: str = ""


@contextmanager
def _halts(stop: threading.Event, why: list[str], keys: bool) -> Iterator[None]:
    """SIGINT/SIGTERM, and ``h`` + Enter on an interactive terminal, set ``stop``."""

    def handler(sig: int, frame: FrameType | None) -> None:
        why.append(f"interrupted by {signal.Signals(sig).name}")
        stop.set()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    done = threading.Event()

    def watch_keys() -> None:
        while not done.is_set() and not stop.is_set():
            ready, _, _ = select.select([sys.stdin], [], [], 0.2)
            if ready and sys.stdin.readline().strip().lower() in ("h", "halt"):
                why.append("halted from the terminal (h)")
                stop.set()

    watcher = threading.Thread(target=watch_keys, name="gameday-halt-key", daemon=True) if keys else None
    if watcher is not None:
        watcher.start()
    try:
        yield
    finally:
        done.set()
        for s, h in previous.items():
            signal.signal(s, h)


def _pause(seconds: float, stop: threading.Event, guided: bool, ask: Callable[[str], str], notes: list[str],
           console: Console, upcoming: str) -> None:  # fmt: skip
    if guided:
        console.print(f"[bold]pause[/] before {upcoming}: notes for the scribe, then Enter (h + Enter halts)")
        answer = ask("note> ").strip()
        if answer.lower() in ("h", "halt"):
            stop.set()
        elif answer:
            notes.append(answer)
        return
    console.print(f"pause {seconds:g} s before {upcoming} (recovery)", highlight=False)
    stop.wait(seconds)


def run_gameday(plan_path: Path, *, out: Path, guided: bool = False, console: Console | None = None,
                plain: bool | None = None, registry: FaultRegistry | None = None, no_alerts: bool = False,
                ask: Callable[[str], str] = input,
                misconfigurations: tuple[str, ...] = ()) -> GameDayResult:  # fmt: skip
    """Run a plan; a bad plan raises ConfigError (exit 2) before anything starts.

    ``misconfigurations`` replace the system's profiles in every scenario (the game day's negative control)."""
    console = console or Console()
    registry = registry or FaultRegistry.installed()
    loaded = load_plan(plan_path, registry)
    plan = loaded.plan
    # Each scenario's Plan now, before anything starts: a bad param stops the game day before its platform is up.
    scenarios = [(n, build_plan(with_misconfigurations(s, misconfigurations), registry, source=b))
                 for n, s, b in loaded.scenarios]  # fmt: skip
    alerting = plan.system.alerting.enabled and not no_alerts
    if alerting:
        from faultdrill.experiments.alerting.stack import Binaries

        Binaries().resolve()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    directory = (out / f"gameday-{plan.metadata.name}-{stamp}").absolute()  # once: see RunParts.run_dir
    directory.mkdir(parents=True, exist_ok=True)
    stop, why, notes = threading.Event(), list[str](), list[str]()
    timeline = Timeline()
    first = scenarios[0][1]
    # One platform for every scenario: a private model registry if any scenario writes it (a canary, a corrupt file).
    writes = any(s.system.private_models for _, s in scenarios)
    first = dataclasses.replace(first, system=first.system.model_copy(update={"private_models": writes}))
    system = RunParts(first, timeline, directory, run_dir=directory / "system")
    results: list[tuple[str, RunResult | None]] = []
    started = time.time()
    console.print(f"[bold]{plan.metadata.title}[/] — {plan.metadata.objective}")
    console.print(f"commander {plan.roles.commander.name}, scribe {plan.roles.scribe.name}; "
                  f"{len(scenarios)} scenarios; halt: Ctrl-C" + ("" if guided else " or h + Enter"),
                  highlight=False)  # fmt: skip
    with _halts(stop, why, keys=not guided and sys.stdin.isatty()):
        try:
            system.platform_up()
            if alerting:
                system.alerts_up(plan_path)
            assert system.platform is not None
            shared = SharedSystem(system.platform, timeline, system.alerting)
            for i, (name, scenario) in enumerate(scenarios):
                if stop.is_set():
                    results.append((name, None))
                    continue
                if i:
                    _pause(float(plan.pause), stop, guided, ask, notes, console, name)
                    if stop.is_set():
                        results.append((name, None))
                        continue
                console.rule(f"scenario {i + 1}/{len(scenarios)}: {name}")
                result = run_plan(scenario, out=directory, console=console, plain=plain, alerting=alerting,
                                  runbooks=GamedayLauncher(console=console), shared=shared, stop=stop, guided=guided,
                                  run_dir=directory / f"{i + 1:02d}-{name}", reports=write_all)  # fmt: skip
                results.append((name, result))
        finally:
            system.close()
    return _finish(loaded, directory, results, notes, why, started, console)


def _finish(loaded: LoadedPlan, directory: Path, results: list[tuple[str, RunResult | None]], notes: list[str],
            why: list[str], started: float, console: Console) -> GameDayResult:  # fmt: skip
    plan = loaded.plan
    outcomes: list[dict[str, Any]] = [{"scenario": name, "outcome": r.journal.outcome if r and r.journal else "skipped",
                 "exit_code": r.exit_code if r else None, "run_dir": str(r.run_dir) if r and r.run_dir else None}
                for name, r in results]  # fmt: skip
    halted = why[-1] if why else next((f"scenario {o['scenario']} halted" for o in outcomes
                                       if o["outcome"] == "halted"), "")  # fmt: skip
    code = 3 if halted else (1 if any(o["outcome"] != "passed" for o in outcomes) else 0)
    doc = {"plan": str(loaded.path), "name": plan.metadata.name, "title": plan.metadata.title,
           "objective": plan.metadata.objective, "roles": plan.roles.model_dump(mode="json"),
           "communication": plan.communication, "started_at": started, "ended_at": time.time(),
           "outcome": {0: "passed", 1: "failed", 3: "halted"}[code], "exit_code": code, "halted": halted,
           "scenarios": outcomes, "notes": notes, "adjustments": loaded.notes}  # fmt: skip
    (directory / "gameday.json").write_text(json.dumps(doc, indent=1))
    journals = [Path(o["run_dir"]) / "journal.json" for o in outcomes if o["run_dir"]]
    _reports(directory, [j for j in journals if j.exists()], plan.metadata.title, console)
    _history(journals, plan.metadata.name, console)
    for o in outcomes:
        console.print(f"  {o['scenario']}: {o['outcome']}", highlight=False)
    update_links(directory.parent, directory, f"gameday-{plan.metadata.name}")  # runs/latest-gameday-smoke
    console.print(f"game day {doc['outcome']} (exit {code}){': ' + halted if halted else ''}; "
                  f"report: {directory / 'gameday.html'}", highlight=False)  # fmt: skip
    return GameDayResult(code, directory, outcomes, halted)


def _reports(directory: Path, journals: list[Path], title: str, console: Console) -> None:
    try:
        from faultdrill.reports import RunView, load_journal
        from faultdrill.reports.gameday import render_gameday, render_gameday_markdown

        views = [RunView.of(load_journal(j)) for j in journals]
        (directory / "gameday.html").write_text(render_gameday(views, title=title))
        (directory / "gameday.md").write_text(render_gameday_markdown(views, title=title))
    except Exception as exc:  # the journals are the record; the report can be re-rendered
        console.print(f"game-day report not written ({type(exc).__name__}: {exc}); re-render with "
                      f"faultdrill report --gameday", highlight=False)  # fmt: skip


def _history(journals: list[Path], gameday: str, console: Console) -> None:
    try:
        from faultdrill.experiments.journal import Journal
        from faultdrill.gamedays.history import History, default_history_path

        db = History(default_history_path())
        for j in journals:
            if j.exists():
                journal = Journal.read(j)
                db.record_run(journal, j.parent, gameday=gameday, scenario=journal.name)
    except Exception as exc:
        console.print(f"history not recorded ({type(exc).__name__}: {exc})", highlight=False)
