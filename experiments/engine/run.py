"""``faultdrill run``: the stages of one experiment, in order, and nothing else.

load spec → plan (``experiments.engine.plan``: fault configs parsed once, the system) → platform up →
preflight → alerting up (Prometheus, Alertmanager, webhook receiver, alert watcher; ``--no-alerts``
skips it) → load on → steady state →
faults on schedule (continuous steady-state and ``halt_if`` checks) → recovery →
rollback everything → stop everything → evaluate → journal.

Faults are always rolled back — on success, failure, exception, Ctrl-C and SIGTERM (the
signals set a flag the loop obeys; rollback happens in ``finally``) — and after a crash by
the dead-man watchdog or ``faultdrill rollback --pending`` (every injection is in the ledger
under the default state directory before it takes effect).

Exit codes: 0 every expectation held, 1 one failed, 2 bad input, 3 halted or interrupted.

Example::

    result = run_experiment(Path("experiments/catalog/smoke.yaml"), out=Path("runs"))
    result.exit_code, result.run_dir / "journal.json"
"""

from __future__ import annotations

import difflib
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, get_args

from rich.console import Console
from rich.table import Table

from faultdrill.experiments.chaostoolkit.steps import CtkSteps
from faultdrill.experiments.engine.liveview import LiveView
from faultdrill.experiments.engine.plan import Plan, build_plan
from faultdrill.experiments.engine.runbook_hook import RunbookLauncher, RunbookTriggers
from faultdrill.experiments.engine.runlinks import update_links
from faultdrill.experiments.engine.runtime import RunParts, SharedSystem
from faultdrill.experiments.engine.stages import RateStages
from faultdrill.experiments.expect import needed_after_end
from faultdrill.experiments.expect.judge import Verdict, check_halt, describe, evaluate, mttd_mttr, not_evaluated
from faultdrill.experiments.expect.stats import SteadyCriteria, request_stats
from faultdrill.experiments.host.process import ServiceError
from faultdrill.experiments.journal import Journal
from faultdrill.experiments.journal.timeline import Timeline
from faultdrill.experiments.observe.traces import TraceSummary, collect_traces
from faultdrill.experiments.spec.experiment import Experiment, Misconfig
from faultdrill.experiments.spec.loader import load_experiment
from faultdrill.faults.errors import ConfigError, FaultdrillError, PreflightError
from faultdrill.faults.registry import FaultRegistry

ReportWriter = Callable[[Path, Path], Mapping[str, Path]]
"""``(journal path, run directory) → {format: file written}``: ``reports.write_all``, handed in by the caller."""

__all__ = ["ReportWriter", "RunResult", "run_experiment", "run_plan", "stop_on_signals", "with_misconfigurations"]

STEADY_TIMEOUT_S = 60.0
SETTLE_S = 2.0


@dataclass(frozen=True)
class RunResult:
    exit_code: int
    run_dir: Path | None
    journal: Journal | None
    verdicts: list[Verdict]


def _alerting_line(spec: Experiment, path: Path, enabled: bool) -> str:
    from faultdrill.experiments.spec.rules import alert_rules, rules_path

    if not enabled:
        return "alerting: off (no Prometheus or Alertmanager; alert expectations are refused)"
    a = spec.alerting
    rules = rules_path(a.rules, spec_file=path, service_rules=spec.service_rules())
    extra = spec.platform_rules()
    also = f" and {len(alert_rules(extra))} Kubernetes-level ones from {extra}" if extra else ""
    return (f"alerting: Prometheus + Alertmanager on loopback, {len(alert_rules(rules))} alert rules from {rules}"
            f"{also}, "
            f"durations ÷ {a.speedup:g} (time scale {1 / a.speedup:.4g}), scrape/eval {float(a.scrape_interval):g}s/"
            f"{float(a.evaluation_interval):g}s; receivers pager, chat, ticket → faultdrill's webhook")


@contextmanager
def stop_on_signals(stop: threading.Event, why: list[str]) -> Iterator[None]:
    """SIGINT/SIGTERM ask the run to stop (``stop`` set, the reason appended to ``why``); it then rolls back and
    tears down in order. Off the main thread (no signal handlers there) it does nothing."""

    def handler(sig: int, frame: FrameType | None) -> None:
        why.append(f"interrupted by {signal.Signals(sig).name}")
        stop.set()

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _steady(timeline: Timeline, criteria: SteadyCriteria, now: float) -> bool:
    stats = request_stats(timeline.requests(start=now - criteria.window_s, end=now))
    return criteria.met(stats.total, stats.ok, stats.latencies)


def _settle_time(spec: Experiment) -> float:
    """How long after the last fault ends expectations may still need events (each kind says how long
    after its fault it does: ``experiments.expect``)."""
    durations = {f.id: float(f.duration) for f in spec.faults} | {
        st.id: float(st.ramp) + float(st.hold) for st in spec.load.rate_stages}  # windows too (during: spike)
    longest = max((needed_after_end(e, durations) for e in spec.expect), default=0.0)
    return min(60.0, max(longest, float(spec.steady_state.window)) + SETTLE_S)


def with_misconfigurations(spec: Experiment, names: tuple[str, ...]) -> Experiment:
    """``spec`` with its target's profiles replaced by ``names`` (``--misconfig``); an unknown name is a
    ConfigError with the known ones and a did-you-mean, raised before anything starts."""
    if not names:
        return spec
    known = list(get_args(Misconfig))
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            raise ConfigError(f"unknown misconfiguration '{name}'", field="--misconfig", expected="one of "
                              + ", ".join(known), suggestion=close[0] if close else None)  # fmt: skip
    target = spec.target.model_copy(update={"misconfigurations": list(dict.fromkeys(names))})
    return spec.model_copy(update={"target": target})


def run_experiment(
    path: Path, *, out: Path, registry: FaultRegistry | None = None, misconfigurations: tuple[str, ...] = (),
    dry_run: bool = False, console: Console | None = None, plain: bool | None = None, no_alerts: bool = False,
    rules: Path | None = None, runbooks: RunbookLauncher | None = None, reports: ReportWriter | None = None,
) -> RunResult:  # fmt: skip
    """Run the experiment at ``path``; a bad spec raises ConfigError (exit 2) before anything starts.

    ``no_alerts`` runs without Prometheus and Alertmanager; a spec with alert expectations is
    then refused (ConfigError). Missing binaries are a PreflightError naming the install step.
    ``rules`` replaces the spec's alert rules file (a candidate rule change, or a deliberately
    broken one to prove the experiment notices); every alert the spec expects must be in it.
    """
    console = console or Console()
    registry = registry or FaultRegistry.installed()
    spec = with_misconfigurations(load_experiment(path, registry), misconfigurations)
    if rules is not None:
        spec = _with_rules(spec, rules)
    plan = build_plan(spec, registry, source=path)
    alerting = spec.alerting.enabled and not no_alerts
    if no_alerts and (needing := spec.alert_expectations()):
        i = needing[0]
        raise ConfigError(f"--no-alerts, but expectation {i + 1} ({describe(spec.expect[i])}) needs Prometheus and "
                          f"Alertmanager", file=str(path), field=f"expect[{i}]",
                          suggestion="run without --no-alerts (make setup installs both)")  # fmt: skip
    if alerting:
        from faultdrill.experiments.alerting.stack import Binaries

        Binaries().resolve()  # missing binaries: a clear error before anything starts
    if dry_run:
        for line in [*plan.lines(), _alerting_line(spec, path, alerting)]:
            console.print(line, highlight=False)
        console.print("[bold]dry run:[/] nothing was started and nothing was changed")
        return RunResult(0, None, None, [])

    result = run_plan(plan, out=out, console=console, plain=plain, alerting=alerting, runbooks=runbooks,
                      reports=reports)  # fmt: skip
    if result.run_dir is not None:
        for link in update_links(out, result.run_dir, spec.metadata.name):
            console.print(f"{link.name} → {result.run_dir.name}", highlight=False)
    return result


def run_plan(
    plan: Plan, *, out: Path, console: Console, plain: bool | None = None, alerting: bool = True,
    runbooks: RunbookLauncher | None = None, shared: SharedSystem | None = None,
    stop: threading.Event | None = None, guided: bool = False, run_dir: Path | None = None,
    reports: ReportWriter | None = None,
) -> RunResult:  # fmt: skip
    """The stages of one validated experiment. With ``shared`` (a game day's scenario) the platform,
    alerting and timeline are the game day's: they are used, not started or stopped, and the
    journal keeps the scenario's slice of the timeline. With ``stop`` the caller owns the signals."""
    spec, path = plan.spec, plan.source
    timeline = shared.timeline if shared is not None else Timeline()
    begin = timeline.now() if shared is not None else 0.0
    parts = RunParts(plan, timeline, out, shared=shared, run_dir=run_dir)
    own_signals = stop is None
    stop, why = stop or threading.Event(), list[str]()
    outcome, reason = "failed", ""
    verdicts: list[Verdict] = []
    journal = Journal.new(spec.model_dump(mode="json", by_alias=True), parts.environment_stub())
    scheduler, triggers, ctk = None, None, None
    signals = stop_on_signals(stop, why) if own_signals else nullcontext()
    with signals, LiveView(timeline, title=spec.metadata.name, console=console, plain=plain) as view:
        try:
            timeline.add("phase", "run", phase="setup")
            parts.platform_up()
            journal.environment = parts.environment()
            scheduler = parts.scheduler()
            parts.preflight(scheduler)
            if alerting:
                journal.alerting = parts.alerts_up(path)
                journal.environment = _with_alerting(journal.environment, journal.alerting)
                if shared is None:
                    view.note(f"alerting up: first samples after {journal.alerting['first_sample_s']:.1f} s, "
                              f"rules time-scaled ÷ {journal.alerting['speedup']:g}")  # fmt: skip
            else:
                journal.alerting = {"enabled": False}
            triggers = parts.runbook_triggers(path, runbooks, guided=guided)
            ctk = CtkSteps(spec, path, timeline, parts.run_dir)
            if (said := parts.load_up(_total_time(spec))) is not None:
                view.note(said)
            criteria = SteadyCriteria.of(spec.steady_state)
            steady_at = _wait_steady(timeline, criteria, stop, since=begin)
            if steady_at is None:
                raise _Halt(why[-1] if why else f"steady state ({criteria.describe()}) not reached in "
                            f"{STEADY_TIMEOUT_S:g} s: nothing was injected")  # fmt: skip
            timeline.add("phase", "run", t=steady_at, phase="steady")
            view.note(f"steady state reached at {steady_at - begin:.1f} s ({criteria.describe()})")
            scheduler.start(steady_at)
            stages = RateStages(timeline, parts.stages)
            stages.start(steady_at, parts.load)
            _drive(spec, timeline, scheduler, stop, why, view, triggers, ctk, steady_at, stages)
            outcome = "passed"
        except _Halt as halt:
            outcome, reason = "halted", str(halt)
            view.note(f"HALTED: {reason}")
        except PreflightError as exc:
            outcome, reason = "error", str(exc)
            view.note(f"preflight failed, nothing injected: {exc}")
        except (ServiceError, FaultdrillError) as exc:
            # The platform did not come up, or a fault could not be driven: abort, roll back,
            # and say why in the journal — never a traceback.
            outcome, reason = "halted", f"{type(exc).__name__}: {exc}"
            view.note(f"ABORTED: {reason}")
        except Exception as exc:  # a bug of ours: still roll back, stop, and keep the evidence
            outcome, reason = "halted", f"internal error: {type(exc).__name__}: {exc}"
            (parts.run_dir / "error.log").write_text(traceback.format_exc())
            view.note(f"ABORTED: {reason} (traceback in {parts.run_dir / 'error.log'})")
        finally:
            timeline.add("phase", "run", phase="teardown")
            if triggers is not None:
                triggers.stop()  # runbooks first: their commands are killed before faults are undone
            if ctk is not None:
                ctk.join()
            if scheduler is not None:
                for fid in scheduler.rollback_all():
                    view.note(f"rolled back {fid}")
            parts.close()
    seen = timeline.slice(begin) if shared is not None else timeline
    if outcome == "halted" and not _injected(seen):
        # Aborted before any fault took effect: there is nothing to judge, so a wall of ✘ "never
        # happened" would blame the system for the run's own failure. Each says why instead.
        verdicts = [not_evaluated(e, reason, steady_state=spec.steady_state) for e in spec.expect]
    elif outcome != "error":
        verdicts = [evaluate(e, seen, steady_state=spec.steady_state) for e in spec.expect]
        verdicts += ctk.verdicts if ctk is not None else []
        if outcome == "passed" and not all(v.passed for v in verdicts):
            outcome = "failed"
    times = mttd_mttr(seen, steady_state=spec.steady_state)
    faults = {fid: {**_rebased(info, begin), **times.get(fid, {})}
              for fid, info in (scheduler.summary() if scheduler else {}).items()}  # fmt: skip
    journal.finish(seen, verdicts=[v.model_dump(mode="json") for v in verdicts], outcome=outcome,  # type: ignore[arg-type]
                   faults=faults, reason=reason)  # fmt: skip
    journal.load = parts.load_summary()
    journal.traces = _traces(parts, seen)
    path_written = journal.write(parts.run_dir)
    _print_summary(console, journal, verdicts, path_written)
    _write_reports(console, path_written, parts.run_dir, reports)
    return RunResult(journal.exit_code or 0, parts.run_dir, journal, verdicts)


class _Halt(Exception):
    pass


def _injected(timeline: Timeline) -> bool:
    """Whether any fault (or embedded Chaos Toolkit action) started on this timeline."""
    return any(e.get("event") == "start" for e in timeline.select("fault"))


def _traces(parts: RunParts, seen: Timeline) -> TraceSummary | None:
    """Example traces per window from the platform's span files (None: the platform writes none)."""
    trace_dir = getattr(getattr(parts.platform, "stack", None), "trace_dir", None)
    if not isinstance(trace_dir, Path):
        return None
    try:
        return collect_traces(trace_dir, seen, run_dir=parts.run_dir)
    except Exception as exc:  # the traces illustrate a run; they never change its outcome
        return TraceSummary(note=f"traces not read: {type(exc).__name__}: {exc}")


def _with_rules(spec: Experiment, rules: Path) -> Experiment:
    """The spec with another rules file; alerts it expects must exist there (ConfigError otherwise)."""
    from faultdrill.experiments.spec.rules import alert_rules

    path = rules.resolve()
    known = alert_rules(path)
    for i, x in enumerate(spec.expect):
        for name in [getattr(x, "alert", None), *(getattr(x, "allow", None) or [])]:
            if isinstance(name, str) and name not in known:
                raise ConfigError(f"--rules {rules}: no alert named '{name}', which expect[{i}] needs",
                                  file=str(path), field="groups",
                                  expected="the alerts the experiment expects")  # fmt: skip
    alerting = spec.alerting.model_copy(update={"rules": str(path)})
    return spec.model_copy(update={"alerting": alerting})


def _with_alerting(env: Any, info: dict[str, Any]) -> Any:
    """The environment with the alert rules' time scale and a plain note on what it means."""
    speedup = float(info["speedup"])
    note = (f"alert rules and Alertmanager timers time-scaled: production durations ÷ {speedup:g} (a production "
            f"'for: 5m' waited {300 / speedup:g} s here); thresholds unchanged" if speedup != 1 else
            "alert rules at production durations (time scale 1)")  # fmt: skip
    return env.model_copy(update={"time_scale": 1.0 / speedup, "notes": [*env.notes, note]})


def _total_time(spec: Experiment) -> float:
    """Upper bound of the whole run, for the load generator's own time limit."""
    ends = [float(f.at or 0) + float(f.duration) for f in spec.faults] + [st.end_s for st in spec.load.rate_stages]
    chained = sum(float(f.duration) for f in spec.faults if f.after is not None)
    embedded = 120.0 * len(spec.chaostoolkit)  # a Chaos Toolkit experiment's length is its own
    return STEADY_TIMEOUT_S + max(ends, default=0.0) + chained + _settle_time(spec) + embedded + 30.0


def _rebased(info: dict[str, Any], begin: float) -> dict[str, Any]:
    """A fault summary with its times relative to the scenario's start (a game day's shared timeline)."""
    if not begin:
        return info
    return {k: (v - begin if isinstance(v, float) and k in ("start_s", "end_s") else v) for k, v in info.items()}


def _wait_steady(timeline: Timeline, criteria: SteadyCriteria, stop: threading.Event,
                 since: float = 0.0) -> float | None:  # fmt: skip
    """The time steady state was confirmed (its criteria held over one full window of this run's load)."""
    deadline = time.monotonic() + STEADY_TIMEOUT_S
    first = next(iter(timeline.requests(start=since)), None)
    while not stop.is_set() and time.monotonic() < deadline:
        now = timeline.now()
        first = first or next(iter(timeline.requests(start=since)), None)
        if first is not None and now - first.t >= criteria.window_s and _steady(timeline, criteria, now):
            return now
        time.sleep(0.2)
    return None


def _drive(spec: Experiment, timeline: Timeline, scheduler: Any, stop: threading.Event, why: list[str],
           view: LiveView, triggers: RunbookTriggers | None = None, ctk: CtkSteps | None = None,
           steady_at: float = 0.0, stages: RateStages | None = None) -> None:  # fmt: skip
    """Faults and load stages on schedule; halt conditions every second; then wait for recovery."""
    next_halt_check = 0.0
    settle = _settle_time(spec)
    recovering_since: float | None = None
    states: dict[str, str] = {}
    criteria = SteadyCriteria.of(spec.steady_state)
    steady = True
    while True:
        if stop.is_set():
            raise _Halt(why[-1] if why else "stopped")
        now = timeline.now()
        scheduler.tick(now)
        if stages is not None:
            stages.tick(now)
        if triggers is not None:
            triggers.tick(now, scheduler.faults)
        if ctk is not None:
            ctk.tick(now, steady_at)
        for f in scheduler.faults:
            if states.get(f.id) != f.state:
                states[f.id] = f.state
                if f.state != "pending":
                    view.note(f"fault {f.id} ({f.spec.type} on {f.spec.target}): {f.state} at {now:.1f} s"
                              + (f" — {f.error}" if f.error else ""))  # fmt: skip
        if now >= next_halt_check:
            next_halt_check = now + 1.0
            # Steady state is watched continuously, not only before and after: every change is
            # an event (metric "steady_state" 1/0) and a line in the live view.
            holds = _steady(timeline, criteria, now)
            if holds != steady:
                steady = holds
                timeline.add("metric", "run", name="steady_state", value=1.0 if holds else 0.0)
                view.note(f"steady state {'regained' if holds else 'lost'} at {now:.1f} s ({criteria.describe()})")
            for condition in spec.halt_if:
                if reason := check_halt(condition, timeline, now):
                    raise _Halt(f"halt_if {condition.slo}: {reason}")
        if scheduler.done() and not (ctk is not None and ctk.pending()) and not (stages is not None and
                                                                                 stages.pending()):
            if recovering_since is None:
                recovering_since = now
                timeline.add("phase", "run", phase="recover")
                view.note(f"all faults{' and load stages' if stages and stages.stages else ''} ended at {now:.1f} s; "
                          f"watching recovery for {settle:.0f} s")  # fmt: skip
            elif now - recovering_since >= settle:
                return
        time.sleep(0.05)


def _write_reports(console: Console, journal_path: Path, run_dir: Path, reports: ReportWriter | None) -> None:
    """HTML, Markdown and JUnit next to the journal, by the writer the caller handed in (the engine never
    imports the renderers: they sit above it); a rendering failure never changes the run's outcome."""
    if reports is None:
        console.print(f"reports: not rendered here; faultdrill report {run_dir} renders them", highlight=False)
        return
    try:
        written = reports(journal_path, run_dir)
    except Exception as exc:  # the journal is the record; reports can be re-rendered from it
        (run_dir / "report-error.log").write_text(traceback.format_exc())
        console.print(f"reports not written ({type(exc).__name__}: {exc}); re-render with: faultdrill report "
                      f"{run_dir}", highlight=False)  # fmt: skip
        return
    console.print("reports: " + ", ".join(str(p) for p in written.values()), highlight=False)


def _print_summary(console: Console, journal: Journal, verdicts: list[Verdict], path: Path) -> None:
    if journal.reason:  # why the run stopped comes first: it explains everything below
        console.print(f"reason: {journal.reason}", highlight=False, markup=False, soft_wrap=True)
    table = Table(title=f"{journal.name}: {journal.outcome} (exit {journal.exit_code})")
    for header in ("", "expectation", "observed"):
        table.add_column(header, overflow="fold")  # wrapped, never cut with "…"
    for v in verdicts:
        mark = "[green]✔[/]" if v.passed else "[red]✘[/]" if v.evaluated else "[yellow]–[/]"
        table.add_row(mark, v.name, v.observed)
    console.print(table)
    skipped = [v for v in verdicts if not v.evaluated]
    if skipped:
        console.print(f"NOT EVALUATED: {len(skipped)} expectation(s) — the run aborted before any fault was injected",
                      highlight=False, markup=False)  # fmt: skip
    for v in verdicts:
        if v.evaluated and not v.passed:  # one unwrapped line each: what CI logs and people grep for
            console.print(f"FAILED: {v.name} — expected {v.expected}; observed {v.observed}", soft_wrap=True,
                          highlight=False, markup=False)  # fmt: skip
    for fid, info in journal.faults.items():
        mttd, mttr, first = info.get("mttd_s"), info.get("mttr_s"), info.get("first_signal_s")
        page = f" ({info.get('detected_by')} → {info.get('receiver')})" if mttd is not None else ""
        console.print(f"fault {fid} ({info.get('type')}): MTTD {'-' if mttd is None else f'{mttd:.2f} s'}{page}, "
                      f"first signal {'-' if first is None else f'{first:.2f} s'}, "
                      f"MTTR {'-' if mttr is None else f'{mttr:.2f} s'}"
                      + (" [emulated]" if info.get("emulated") else ""), highlight=False)  # fmt: skip
    console.print(f"environment: device {journal.environment.device_label}; journal: {path}", highlight=False)
