"""A detection score's suite, checked and planned before anything runs: every experiment loaded and planned on
the unmodified system and on each variant, from a score file (``kind: Score``) or from the command line.

Every problem is a located ``ConfigError`` (exit 2): an experiment's own errors keep its file and line; a
variant that does not fit an experiment is located at that variant in the score file (or names ``--variant``);
a missing experiment file or a glob matching nothing is located at its entry.

Example::

    suite = suite_from_args([Path("experiments/catalog/model_load_failure.yaml")], ["readiness_ignores_model"])
    print("\\n".join(suite.lines(Path("runs/score/x"))))     # what --dry-run prints
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from faultdrill.experiments.engine.plan import Plan, build_plan
from faultdrill.experiments.score.spec import ScoreSpec, Variant, bundled_profiles, resolve_experiments, unknown_profile
from faultdrill.experiments.score.variants import VariantProblem, apply_variant
from faultdrill.experiments.spec.loader import load_experiment, validate_document
from faultdrill.faults.errors import ConfigError
from faultdrill.faults.inputlimits import read_text
from faultdrill.faults.registry import FaultRegistry

__all__ = ["Entry", "Suite", "is_score_file", "load_suite", "suite_from_args"]

_KIND_SCORE = re.compile(r"^kind:\s*[\"']?Score[\"']?\s*(#.*)?$", re.M)
Locate = Callable[[int, VariantProblem, Path], ConfigError]
"""``(variant index, problem, experiment file) → ConfigError`` located where the variant was given."""


@dataclass(frozen=True)
class Entry:
    """One experiment of the suite: its label in the matrix, its file and its plan on each system."""

    label: str
    path: Path
    baseline: Plan
    variants: dict[str, Plan]
    """Variant name → the experiment's plan on that variant's system."""
    inapplicable: dict[str, str] = field(default_factory=dict)
    """Variant name → why it changes nothing on this experiment's system (not run: it would be the baseline)."""


@dataclass(frozen=True)
class Suite:
    """Everything a score runs, validated and planned; nothing started."""

    name: str
    entries: tuple[Entry, ...]
    variants: tuple[Variant, ...]
    threshold: float
    first_catch: bool

    def run_count(self) -> int:
        return len(self.entries) * (1 + len(self.variants)) - sum(len(e.inapplicable) for e in self.entries)

    def lines(self, out: Path) -> list[str]:
        """The plan, as ``--dry-run`` prints it: every run in order."""
        n, m = len(self.entries), len(self.variants)
        early = "; --first-catch stops a variant at its first damage catch" if self.first_catch else ""
        lines = [f"score {self.name}: {n} experiment(s) × {m} variant(s): up to {self.run_count()} runs, one at a "
                 f"time ({n} on the unmodified system first, then {self.run_count() - n} on the variants{early})",
                 "an experiment that fails on the unmodified system is not run on the variants (baseline failed)"]
        k = 0
        for e in self.entries:
            k += 1
            lines.append(f"  {k:>3}. baseline × {e.label}  ({e.path})")
        for v in self.variants:
            for e in self.entries:
                if (why := e.inapplicable.get(v.name)) is not None:
                    lines.append(f"    -. {v.name} × {e.label}  not run: {why}")
                    continue
                k += 1
                lines.append(f"  {k:>3}. {v.name} × {e.label}  ({'; '.join(v.changes())})")
        lines.append(f"caught = a damage expectation fails; threshold {self.threshold:g}% of the variants")
        lines.append(f"output: {out}/score.json, {out}/score.md and one run directory per run under {out}")
        return lines


def is_score_file(path: Path) -> bool:
    """Whether ``path`` is a score file (``kind: Score`` at the top level) rather than an experiment."""
    try:
        return bool(_KIND_SCORE.search(read_text(path, what="YAML file")))
    except (OSError, ConfigError):
        return False


def load_suite(path: Path, registry: FaultRegistry | None = None, *, threshold: float | None = None,
               first_catch: bool | None = None) -> Suite:  # fmt: skip
    """A score file's suite (``threshold``/``first_catch`` given here override the file's)."""
    try:
        text = read_text(path, what="score file")
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", file=str(path)) from None
    spec, _data, where, errors = validate_document(text, str(path), ScoreSpec)
    if spec is None:
        raise errors[0]
    assert isinstance(spec, ScoreSpec)
    files: list[Path] = []
    for i, found in resolve_experiments(spec.experiments, path.parent):
        if not found:
            what = "no file matches" if any(c in spec.experiments[i] for c in "*?[") else "no such file"
            raise where.error(("experiments", i), f"{what}: {spec.experiments[i]} (relative to {path.parent})",
                              expected="an experiment YAML file or a glob of them")  # fmt: skip
        files += found

    def locate(i: int, p: VariantProblem, exp: Path) -> ConfigError:
        return where.error(("variants", i, *p.path), f"with {exp}: {p.message}", expected=p.expected,
                           suggestion=p.suggestion)  # fmt: skip

    return _plan(spec.name, files, list(spec.variants), locate, registry,
                 threshold=spec.threshold if threshold is None else threshold,
                 first_catch=spec.first_catch if first_catch is None else first_catch)  # fmt: skip


def suite_from_args(experiments: list[Path], profiles: list[str], *, all_profiles: bool = False,
                    threshold: float = 100.0, first_catch: bool = False,
                    registry: FaultRegistry | None = None) -> Suite:  # fmt: skip
    """The suite of ``faultdrill score EXPERIMENT... [--variant PROFILE]... [--all-profiles]``: each profile is one
    variant; none (or ``--all-profiles``) means every bundled profile."""
    for name in profiles:
        if (bad := unknown_profile(name)) is not None:
            raise ConfigError(bad[0], field="--variant", expected=bad[1], suggestion=bad[2])
    for path in experiments:
        if not path.is_file():
            raise ConfigError("no such experiment file", file=str(path), field="EXPERIMENT",
                              expected="an experiment YAML file (see experiments/catalog/)")  # fmt: skip
    names = list(dict.fromkeys([*profiles, *(bundled_profiles() if all_profiles else ())]))
    variants = [Variant(name=p, misconfig=[p]) for p in names]

    def locate(i: int, p: VariantProblem, exp: Path) -> ConfigError:
        return ConfigError(f"--variant {variants[i].name} with {exp}: {p.message}", field="--variant",
                           expected=p.expected, suggestion=p.suggestion)  # fmt: skip

    return _plan("score", experiments, variants, locate, registry, threshold=threshold, first_catch=first_catch)


def _plan(name: str, files: list[Path], variants: list[Variant], locate: Locate, registry: FaultRegistry | None,
          *, threshold: float, first_catch: bool) -> Suite:  # fmt: skip
    registry = registry or FaultRegistry.installed()
    specs = [(f, load_experiment(f, registry)) for f in files]
    if not variants:
        own = next((f for f, s in specs if s.target.service != "bundled"), None)
        if own is not None:
            raise ConfigError("no variants, and this experiment's target is a service of your own (the bundled "
                              "misconfiguration profiles mean nothing there)", file=str(own),
                              expected="variants declared in a score file (kind: Score; docs/score.md)")  # fmt: skip
        variants = [Variant(name=p, misconfig=[p]) for p in bundled_profiles()]
    roles = registry.target_roles()
    entries, labels = [], set[str]()
    for f, spec in specs:
        label, k = spec.metadata.name, 2
        while label in labels:
            label, k = f"{spec.metadata.name}#{k}", k + 1
        labels.add(label)
        planned, inapplicable = {}, {}
        for i, v in enumerate(variants):
            try:
                broken = apply_variant(spec, v, spec_dir=f.parent, target_roles=roles)
            except VariantProblem as problem:
                raise locate(i, problem, f) from None
            planned[v.name] = build_plan(broken, registry, source=f)
            if (inert := broken.target.inert_misconfigurations()) and \
                    broken.target.model_copy(update={"misconfigurations": [
                        m for m in broken.target.misconfigurations if m not in inert]}) == spec.target:
                inapplicable[v.name] = f"{', '.join(inert)} changes nothing here (this target has no part it acts on)"
        entries.append(Entry(label, f, build_plan(spec, registry, source=f), planned, inapplicable))
    if any(e.baseline.spec.alerting.enabled for e in entries):
        from faultdrill.experiments.alerting.stack import Binaries

        Binaries().resolve()  # missing Prometheus/Alertmanager: a clear error before anything starts
    return Suite(name, tuple(entries), tuple(variants), threshold, first_catch)
