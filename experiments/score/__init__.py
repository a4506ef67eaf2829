"""The detection score (``faultdrill score``): what a resilience suite catches.

A suite of experiments is run on the unmodified system and on deliberately broken variants of it; the matrix
says, per variant and experiment, whether a *damage* expectation failed (caught), only a *mechanism* one
(switch only) or none (missed), and the detection rate is the share of variants caught on damage
(``docs/score.md``). Not to be confused with ``reports.score``, one run's resilience score.

Modules: ``spec`` (the score file and variants), ``variants`` (a variant applied to an experiment),
``suite`` (everything loaded and planned before anything runs), ``matrix`` (judging runs; the rate and gaps:
pure), ``render`` (terminal table and Markdown), ``runner`` (the runs, in order, and the files).

Example::

    suite = suite_from_args([Path("experiments/catalog/model_load_failure.yaml")], ["readiness_ignores_model"])
    result = run_suite(suite, out=Path("runs/score/x"), console=Console())
    result.detection_rate, result.gaps, result.exit_code()
"""

from faultdrill.experiments.score.matrix import ScoreResult, judge, judge_journal, summarize
from faultdrill.experiments.score.runner import run_suite, write_score
from faultdrill.experiments.score.spec import ScoreSpec, Variant
from faultdrill.experiments.score.suite import Suite, is_score_file, load_suite, suite_from_args

__all__ = ["ScoreResult", "ScoreSpec", "Suite", "Variant", "is_score_file", "judge", "judge_journal", "load_suite",
           "run_suite", "suite_from_args", "summarize", "write_score"]
