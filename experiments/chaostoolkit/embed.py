"""A plain Chaos Toolkit experiment inside a faultdrill run: run through chaostoolkit-lib, judged as one verdict.

:func:`run_ctk` loads and validates the experiment (JSON or YAML; an invalid one is a
``ConfigError`` — :func:`check_ctk` does that alone, for plan time), runs it with
``chaoslib.experiment.run_experiment``, keeps its journal (``chaostoolkit-journal.json`` in
``out``) and puts every activity on the faultdrill timeline:

============  ====================  ================================================================
CTK run       timeline event        attrs
============  ====================  ================================================================
action        ``fault`` start, then ``event`` start → end (succeeded) | error (failed); ``fault``
(method,      end/error, source     "chaostoolkit", ``mode`` "action", ``target`` module:func,
rollbacks)    ``ctk:<name>``        ``phase`` (method | rollback), ``status``, ``duration_s``, ``output``
probe         ``probe``, source     ``probe`` "chaostoolkit", ``value`` (succeeded and, in the
              ``ctk:<name>``        hypothesis, within tolerance), ``phase`` (hypothesis-before |
                                    method | hypothesis-after | rollback), ``status``, ``output``
============  ====================  ================================================================

A CTK action has no duration of its own: its ``fault`` span is the activity's execution.
The ``probe`` value ``chaostoolkit`` keeps these events out of the readiness/liveness
assertions and MTTD. The verdict is named ``chaostoolkit <title>``; it passes when the
journal's status is ``completed`` and the hypothesis did not deviate.

chaoslib imports ``requests``; Locust must never be imported in the same process (the
engine runs it as a subprocess, so this is safe inside a run).

Example::

    verdict = run_ctk(Path("experiments/chaostoolkit/examples/gpu_memory_exhaustion.json"), timeline, out=run_dir)
    verdict.passed, verdict.observed
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from faultdrill.experiments.expect.judge import Verdict
from faultdrill.experiments.journal.timeline import Timeline
from faultdrill.faults.errors import ConfigError

__all__ = ["JOURNAL_NAME", "check_ctk", "run_ctk"]

JOURNAL_NAME = "chaostoolkit-journal.json"
_OUTPUT_CHARS = 200
_MAX_EVIDENCE = 10


def check_ctk(path: Path, *, settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Load and validate a Chaos Toolkit experiment; a ConfigError naming the file says what is wrong."""
    from chaoslib.exceptions import ChaosException
    from chaoslib.experiment import ensure_experiment_is_valid
    from chaoslib.loader import load_experiment

    try:
        found = path.is_file()
    except OSError:  # a name the OS refuses (too long)
        found = False
    if not found:
        raise ConfigError("no such Chaos Toolkit experiment file", file=str(path))
    _read_bounded(path)
    try:
        experiment: dict[str, Any] = load_experiment(str(path), dict(settings or {}))
        ensure_experiment_is_valid(experiment)
    except ChaosException as exc:
        raise ConfigError(f"invalid Chaos Toolkit experiment: {' '.join(str(exc).split())}", file=str(path)) from None
    except (AttributeError, TypeError, KeyError, ValueError) as exc:  # chaoslib's checks assume the shapes they check
        raise ConfigError(f"invalid Chaos Toolkit experiment: {type(exc).__name__}: {' '.join(str(exc).split())}",
                          file=str(path)) from None  # fmt: skip
    return experiment


def _read_bounded(path: Path) -> None:
    """Parse the file within faultdrill's input limits (size, nesting, YAML nodes) before chaoslib reads it,
    which it does without any: every problem here is a located ConfigError."""
    import json

    from faultdrill.faults.inputlimits import json_depth_error, load_yaml, read_text

    file, what = str(path), "invalid Chaos Toolkit experiment"
    try:
        text = read_text(path, what="Chaos Toolkit experiment")
    except OSError as exc:
        raise ConfigError(f"cannot read the Chaos Toolkit experiment: {exc.strerror or exc}", file=file) from None
    if path.suffix == ".json":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{what}: {exc.msg}", file=file, line=exc.lineno, column=exc.colno) from None
        except RecursionError:
            raise json_depth_error(text, file, "a Chaos Toolkit experiment") from None
    elif path.suffix in (".yaml", ".yml"):
        doc = load_yaml(text, file, prefix=f"{what}: invalid YAML")
    else:
        return  # chaoslib names the extensions it reads
    if not isinstance(doc, dict):
        shown = "empty" if doc is None else f"a {type(doc).__name__}"
        raise ConfigError(f"{what}: the document is {shown}, not a mapping", file=file,
                          expected="a mapping with title, description, method")  # fmt: skip


def run_ctk(path: Path, timeline: Timeline, *, settings: Mapping[str, Any] | None = None, out: Path | None = None,
            experiment_vars: tuple[dict[str, Any], dict[str, Any]] | None = None) -> Verdict:  # fmt: skip
    """Run the Chaos Toolkit experiment at ``path``; its activities go on ``timeline``, its journal into ``out``."""
    import json

    experiment = check_ctk(path, settings=settings)
    title = str(experiment.get("title") or path.stem)
    handler = _TimelineHandler(timeline)
    start = timeline.now()
    journal = _run(experiment, dict(settings or {}), experiment_vars, handler)
    end = timeline.now()
    written = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        written = out / JOURNAL_NAME
        written.write_text(json.dumps(journal, indent=2, ensure_ascii=False, default=str))
    return judge(title, experiment, journal, window=(start, end), journal_path=written)


def _run(experiment: dict[str, Any], settings: dict[str, Any], experiment_vars: Any, handler: Any) -> dict[str, Any]:
    from chaoslib.experiment import run_experiment
    from chaoslib.run import Runner
    from chaoslib.types import Strategy

    if threading.current_thread() is threading.main_thread():
        journal: dict[str, Any] = run_experiment(experiment, settings=settings, experiment_vars=experiment_vars,
                                                 event_handlers=[handler])  # fmt: skip
        return journal

    class _ThreadRunner(Runner):
        # chaoslib's run installs signal handlers, which only the main thread may do; elsewhere
        # the embedding run owns the signals (its own stop flag ends the experiment).
        def run(self, experiment: Any, settings: Any = None, experiment_vars: Any = None, journal: Any = None) -> Any:
            self.configure(experiment, settings, experiment_vars)
            return self._run(self.strategy, self.schedule, experiment, journal, self.config, self.secrets,
                             self.settings, self.event_registry)  # fmt: skip

    with _ThreadRunner(Strategy.DEFAULT) as runner:
        runner.register_event_handler(handler)
        result: dict[str, Any] = runner.run(experiment, settings, experiment_vars=experiment_vars)
        return result


def _short(value: Any) -> str:
    if isinstance(value, dict) and "status" in value and "headers" in value:
        return f"HTTP {value['status']}"  # an http provider's response: its status is what matters
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= _OUTPUT_CHARS else text[: _OUTPUT_CHARS - 1] + "…"


def _target(activity: Mapping[str, Any]) -> str:
    p = activity.get("provider") or {}
    if p.get("type") == "python":
        return f"{p.get('module')}:{p.get('func')}"
    if p.get("type") == "http":
        return f"{str(p.get('method', 'GET')).upper()} {p.get('url')}"
    if p.get("type") == "process":
        return f"process {p.get('path')}"
    return str(p.get("type") or activity.get("ref") or "?")


class _TimelineHandler:
    """chaoslib run events → timeline events (see the module docstring). Duck-typed ``RunEventHandler``."""

    def __init__(self, timeline: Timeline) -> None:
        self.timeline = timeline
        self.phase = "setup"

    def __getattr__(self, name: str) -> Any:  # every other RunEventHandler callback: nothing to record
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *args, **kwargs: None

    def _t(self, iso: str | None) -> float | None:
        if not iso:
            return None
        return max(0.0, datetime.fromisoformat(iso).timestamp() - self.timeline.start_wall)

    def start_hypothesis_before(self, experiment: Any) -> None:
        self.phase = "hypothesis-before"

    def start_method(self, experiment: Any) -> None:
        self.phase = "method"

    def start_hypothesis_after(self, experiment: Any) -> None:
        self.phase = "hypothesis-after"

    def start_rollbacks(self, experiment: Any) -> None:
        self.phase = "rollback"

    def hypothesis_before_completed(self, experiment: Any, state: Any, journal: Any) -> None:
        self._hypothesis(state)

    def hypothesis_after_completed(self, experiment: Any, state: Any, journal: Any) -> None:
        self._hypothesis(state)

    def start_activity(self, activity: Mapping[str, Any]) -> None:
        if activity.get("type") == "action":
            self.timeline.add("fault", f"ctk:{activity.get('name')}", event="start", fault="chaostoolkit",
                              mode="action", target=_target(activity), phase=self.phase)  # fmt: skip

    def activity_completed(self, activity: Mapping[str, Any], run: Mapping[str, Any]) -> None:
        ok = run.get("status") == "succeeded"
        common = {"status": run.get("status"), "output": _short(run.get("output")), "phase": self.phase,
                  "duration_s": run.get("duration")}  # fmt: skip
        if activity.get("type") == "action":
            self.timeline.add("fault", f"ctk:{activity.get('name')}", t=self._t(run.get("end")),
                              event="end" if ok else "error", fault="chaostoolkit", **common)  # fmt: skip
        elif not self.phase.startswith("hypothesis"):  # hypothesis probes wait for their tolerance
            self.timeline.add("probe", f"ctk:{activity.get('name')}", t=self._t(run.get("end")),
                              probe="chaostoolkit", value=ok, **common)  # fmt: skip

    def _hypothesis(self, state: Mapping[str, Any] | None) -> None:
        for run in (state or {}).get("probes", []):
            activity = run.get("activity", {})
            ok = run.get("status") == "succeeded" and bool(run.get("tolerance_met"))
            self.timeline.add("probe", f"ctk:{activity.get('name')}", t=self._t(run.get("end")),
                              probe="chaostoolkit", value=ok, status=run.get("status"), phase=self.phase,
                              output=_short(run.get("output")), tolerance=_short(activity.get("tolerance")),
                              duration_s=run.get("duration"))  # fmt: skip


def judge(title: str, experiment: Mapping[str, Any], journal: Mapping[str, Any], *,
          window: tuple[float, float] | None = None, journal_path: Path | None = None) -> Verdict:  # fmt: skip
    """The verdict of one Chaos Toolkit journal: passed = status completed and not deviated."""
    status, deviated = str(journal.get("status")), bool(journal.get("deviated"))
    hypothesis = (experiment.get("steady-state-hypothesis") or {}).get("title")
    expected = (f"Chaos Toolkit experiment '{title}' completes"
                + (f" and its steady-state hypothesis ('{hypothesis}') holds before and after the method"
                   if hypothesis else ""))  # fmt: skip
    problems: list[str] = []
    evidence: list[dict[str, Any]] = []
    probes = 0
    for when, state in (journal.get("steady_states") or {}).items():
        for run in (state or {}).get("probes", []) if isinstance(state, dict) else []:
            probes += 1
            if not run.get("tolerance_met"):
                name = run.get("activity", {}).get("name")
                tolerance = run.get("activity", {}).get("tolerance")
                problems.append(f"probe '{name}' {when} the method returned {_short(run.get('output'))} "
                                f"(tolerance {_short(tolerance)}; status {run.get('status')})")  # fmt: skip
                evidence.append({"phase": f"hypothesis-{when}", "activity": name, "status": run.get("status"),
                                 "output": _short(run.get("output")), "tolerance": _short(tolerance)})  # fmt: skip
    runs = [*(journal.get("run") or []), *(journal.get("rollbacks") or [])]
    for run in runs:
        if run.get("status") != "succeeded":
            name = run.get("activity", {}).get("name")
            error = (run.get("exception") or ["failed"])[-1].strip()
            problems.append(f"{run.get('activity', {}).get('type', 'activity')} '{name}' {run.get('status')}: {error}")
            evidence.append({"activity": name, "status": run.get("status"), "error": _short(error)})
    where = f"; journal {journal_path}" if journal_path else ""
    if status == "completed" and not deviated:
        observed = (f"completed, steady state held ({probes} hypothesis probe run(s) within tolerance), "
                    f"{len(runs)} activities succeeded{where}")  # fmt: skip
    else:
        shown = "; ".join(problems[:3]) or "no activity failed"
        observed = f"status {status}{', deviated' if deviated else ''}: {shown}{where}"
    failed_runs = sum(1 for r in runs if r.get("status") != "succeeded")
    return Verdict(name=f"chaostoolkit {title}", passed=status == "completed" and not deviated, expected=expected,
                   observed=observed, evidence=evidence[:_MAX_EVIDENCE], window=window,
                   measured={"activities": len(runs), "failed_activities": failed_runs,
                             "probes_out_of_tolerance": sum(1 for e in evidence if "tolerance" in e),
                             "duration_s": journal.get("duration")})  # fmt: skip
