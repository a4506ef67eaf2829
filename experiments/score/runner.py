"""Run a suite: every experiment on the unmodified system (the baseline), then on each variant, one run at a
time (a run uses the machine's cores and ports), each in its own run directory under ``out``; ``score.json``
and ``score.md`` are rewritten after every run, so an interrupted or killed score leaves its partial matrix.

Ctrl-C and SIGTERM stop the score: the run in flight halts and rolls back as every run does (it is handed the
score's stop flag), the runs not started are left out, and the partial matrix is written (exit 3).

Example::

    result = run_suite(suite, out=Path("runs/score/x"), console=Console())
    result.detection_rate, result.gaps, result.exit_code()
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from rich.console import Console

from faultdrill.experiments.engine.plan import Plan
from faultdrill.experiments.engine.run import ReportWriter, run_plan, stop_on_signals
from faultdrill.experiments.engine.runbook_hook import RunbookLauncher
from faultdrill.experiments.score.matrix import (
    Baseline,
    Cell,
    Judged,
    ScoreResult,
    VariantRow,
    judge_journal,
    summarize,
)
from faultdrill.experiments.score.render import print_score, score_markdown
from faultdrill.experiments.score.suite import Suite

__all__ = ["run_suite", "write_score"]


def write_score(result: ScoreResult, out: Path) -> tuple[Path, Path]:
    """``score.json`` and ``score.md`` in ``out``, each replaced whole (never half-written)."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (("score.json", result.model_dump_json(indent=2)), ("score.md", score_markdown(result))):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, out / name)
        written.append(out / name)
    return written[0], written[1]


def run_suite(suite: Suite, *, out: Path, console: Console, plain: bool | None = None,
              runbooks: RunbookLauncher | None = None, reports: ReportWriter | None = None,
              stop: threading.Event | None = None) -> ScoreResult:  # fmt: skip
    """Baselines, then each variant × experiment in order (``first_catch``: a variant stops at its first damage
    catch); the matrix summarised and written to ``out``."""
    out = out.absolute()
    out.mkdir(parents=True, exist_ok=True)
    stop = stop or threading.Event()
    result = ScoreResult(name=suite.name, started_at=time.time(), threshold=suite.threshold,
                         first_catch=suite.first_catch, experiments=[e.label for e in suite.entries],
                         variants=[VariantRow(name=v.name, changes=v.changes(), description=v.description)
                                   for v in suite.variants])  # fmt: skip
    total, seq = suite.run_count(), 0

    def one(plan: Plan, who: str, label: str) -> tuple[Judged, str | None, float, int | None]:
        nonlocal seq
        seq += 1
        console.rule(f"score {seq}/{total}: {who} × {label}", style="bold")
        began = time.monotonic()
        run = run_plan(plan, out=out, console=console, plain=plain, alerting=plan.spec.alerting.enabled,
                       runbooks=runbooks, stop=stop, run_dir=out / f"{seq:03d}-{who}--{label}".replace("#", "-"),
                       reports=reports)  # fmt: skip
        seconds = round(time.monotonic() - began, 1)
        judged = Judged(outcome="interrupted", reason="interrupted by a signal") if stop.is_set() else (
            judge_journal(run.journal) if run.journal is not None else Judged(outcome="halted", reason="no journal"))
        return judged, str(run.run_dir) if run.run_dir else None, seconds, run.exit_code

    # SIGINT/SIGTERM set ``stop``: the run in flight halts and rolls back, no further run starts.
    with stop_on_signals(stop, []):
        for e in suite.entries:
            if stop.is_set():
                break
            judged, run_dir, seconds, code = one(e.baseline, "baseline", e.label)
            result.baselines.append(Baseline(**judged.model_dump(), experiment=e.label, file=str(e.path),
                                             run_dir=run_dir, seconds=seconds, exit_code=code))  # fmt: skip
            write_score(summarize(result), out)
        usable = {b.experiment for b in result.baselines if b.usable}
        for v in suite.variants:
            caught = False
            for e in suite.entries:
                if stop.is_set():
                    break
                if e.label not in usable:
                    result.cells.append(Cell(outcome="baseline_failed", variant=v.name, experiment=e.label,
                                             reason="failed on the unmodified system: it cannot judge a variant"))
                    continue
                if (why := e.inapplicable.get(v.name)) is not None:
                    result.cells.append(Cell(outcome="not_applicable", variant=v.name, experiment=e.label, reason=why))
                    continue
                if caught and suite.first_catch:
                    result.cells.append(Cell(outcome="skipped", variant=v.name, experiment=e.label,
                                             reason="--first-catch: already caught"))  # fmt: skip
                    continue
                judged, run_dir, seconds, code = one(e.variants[v.name], v.name, e.label)
                caught = caught or judged.outcome == "caught"
                result.cells.append(Cell(**judged.model_dump(), variant=v.name, experiment=e.label, run_dir=run_dir,
                                         seconds=seconds, exit_code=code))  # fmt: skip
                write_score(summarize(result), out)
    result.complete = not stop.is_set()
    result.ended_at = time.time()
    final = summarize(result)
    console.rule("detection score", style="bold")
    print_score(console, final)
    json_path, md_path = write_score(final, out)
    console.print(f"score: {json_path}, {md_path}", highlight=False)
    return final
