"""Plain Chaos Toolkit experiments inside a faultdrill run (the spec's ``chaostoolkit:`` list).

Each step starts ``at`` after steady state on its own thread (chaostoolkit-lib, through
``experiments.chaostoolkit.embed``), puts its activities on the run's timeline, keeps its journal in the
run directory (``chaostoolkit-<n>/chaostoolkit-journal.json``) and ends as one verdict
(``chaostoolkit <title>``: passed when it completed and its hypothesis held). The run waits for
running steps before it judges; chaostoolkit-lib is an optional extra (``faultdrill[chaostoolkit]``),
checked before anything starts.

Example::

    steps = CtkSteps(spec, spec_file, timeline, run_dir)   # validates every file (ConfigError)
    steps.tick(now, steady_at); ...; steps.join(); steps.verdicts
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from faultdrill.experiments.journal.timeline import Timeline
from faultdrill.experiments.spec.experiment import Experiment
from faultdrill.faults.errors import ConfigError

__all__ = ["CtkSteps"]


class CtkSteps:
    """The spec's Chaos Toolkit steps for one run; see the module docstring."""

    def __init__(self, spec: Experiment, spec_file: Path | str | None, timeline: Timeline, run_dir: Path) -> None:
        self.timeline, self.run_dir = timeline, run_dir
        base = Path(spec_file).resolve().parent if spec_file else Path.cwd()
        self.steps = [(i, step, (base / step.file) if not Path(step.file).is_absolute() else Path(step.file))
                      for i, step in enumerate(spec.chaostoolkit)]  # fmt: skip
        self.verdicts: list[Any] = []
        self._threads: dict[int, threading.Thread] = {}
        self._lock = threading.Lock()
        if not self.steps:
            return
        try:
            from faultdrill.experiments.chaostoolkit.embed import check_ctk
        except ImportError:  # pragma: no cover - the extra is part of the dev install
            raise ConfigError("this experiment embeds Chaos Toolkit experiments: install faultdrill[chaostoolkit]",
                              field="chaostoolkit") from None  # fmt: skip
        for i, _, path in self.steps:
            try:
                check_ctk(path)
            except ConfigError as exc:
                raise ConfigError(f"chaostoolkit[{i}]: {exc}", file=exc.file, field=f"chaostoolkit[{i}].file") from None

    def tick(self, now: float, steady_at: float) -> None:
        """Start every step whose time has come."""
        for i, step, path in self.steps:
            if i not in self._threads and now >= steady_at + float(step.at):
                thread = threading.Thread(target=self._run, args=(i, step, path), name=f"chaostoolkit-{i}", daemon=True)
                self._threads[i] = thread
                thread.start()

    def _run(self, i: int, step: Any, path: Path) -> None:
        from faultdrill.experiments.chaostoolkit.embed import run_ctk
        from faultdrill.experiments.expect.judge import Verdict

        try:
            configuration = dict(step.vars)
            verdict = run_ctk(path, self.timeline, out=self.run_dir / f"chaostoolkit-{i}",
                              experiment_vars=(configuration, {}) if configuration else None)  # fmt: skip
        except Exception as exc:  # a broken embedded experiment is a failed verdict, never a dead run
            verdict = Verdict(name=f"chaostoolkit {path.name}", passed=False, expected="the experiment completes",
                              observed=f"it could not run: {type(exc).__name__}: {exc}")  # fmt: skip
        with self._lock:
            self.verdicts.append(verdict)

    def pending(self) -> bool:
        """True while a step has not started or is still running."""
        return len(self._threads) < len(self.steps) or any(t.is_alive() for t in self._threads.values())

    def join(self, timeout_s: float = 120.0) -> None:
        for thread in self._threads.values():
            thread.join(timeout_s)
        for i, _, path in self.steps:
            if i not in self._threads:  # never started (the run halted first)
                from faultdrill.experiments.expect.judge import Verdict

                self.verdicts.append(Verdict(name=f"chaostoolkit {path.name}", passed=False, expected="the experiment "
                                             "runs", observed="the run ended before it started"))  # fmt: skip
