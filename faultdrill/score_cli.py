"""``faultdrill score``: the detection score of a resilience suite — which broken variants of the system its
experiments catch (``docs/score.md``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["score_command"]


def score_command(
    files: Annotated[
        list[Path],
        typer.Argument(help="Experiment YAML files, run in this order; or one score file (kind: Score).",
                       show_default=False),
    ],
    variant: Annotated[
        list[str] | None,
        typer.Option("--variant", help="A misconfiguration profile of the bundled target to score (repeatable)."),
    ] = None,
    all_profiles: Annotated[
        bool, typer.Option("--all-profiles", help="Every bundled profile (the default when no variant is given).")
    ] = False,
    threshold: Annotated[
        float | None,
        typer.Option("--threshold", min=0, max=100, help="Exit 1 below this detection rate, in percent (default 100)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Where score.json, score.md and the runs go (default runs/score/<time>)."),
    ] = None,
    first_catch: Annotated[
        bool, typer.Option("--first-catch", help="Stop a variant at its first damage catch (order matters).")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the runs, in order; run nothing.")] = False,
    plain: Annotated[bool, typer.Option("--plain", help="Plain line output instead of the live view.")] = False,
) -> None:
    """Run experiments on the unmodified system, then on each broken variant; print the detection matrix.

    A variant is caught when a damage expectation (SLO, requests, restarts, recovery, alerts, error budget, runbook)
    fails; failing only a mechanism one (probe, breaker, counter, canary) is "switch only".

    Exit codes: 0 detection rate at or above the threshold, 1 below it, 2 bad input, 3 interrupted.
    """
    from faultdrill.experiments.score import is_score_file, load_suite, run_suite, suite_from_args
    from faultdrill.faults.errors import ConfigError
    from faultdrill.output_cli import make_console

    console = make_console()
    if len(files) == 1 and is_score_file(files[0]):
        if variant or all_profiles:
            raise ConfigError("a score file declares its variants", file=str(files[0]), field="--variant",
                              expected="either a score file or experiments with --variant/--all-profiles")
        suite = load_suite(files[0], threshold=threshold, first_catch=first_catch or None)
    else:
        if (score := next((f for f in files if is_score_file(f)), None)) is not None:
            raise ConfigError("a score file is given alone", file=str(score), field="FILES",
                              expected="one score file, or experiment files")  # fmt: skip
        suite = suite_from_args(list(files), list(variant or ()), all_profiles=all_profiles,
                                threshold=100.0 if threshold is None else threshold, first_catch=first_catch)
    where = out if out is not None else Path("runs") / "score" / time.strftime("%Y%m%d-%H%M%S")
    if dry_run:
        for line in suite.lines(where):
            console.print(line, highlight=False, markup=False, soft_wrap=True)
        console.print("dry run: nothing was started and nothing was changed", highlight=False)
        raise typer.Exit(0)
    from faultdrill.gamedays.launch import GamedayLauncher

    result = run_suite(suite, out=where, console=console, plain=True if plain else None, runbooks=GamedayLauncher())
    raise typer.Exit(result.exit_code())
