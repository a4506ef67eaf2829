"""faultdrill's experiment engine: the public API.

Load a spec, plan it, run the plan; everything else in this package is reached through these::

    from faultdrill.experiments import FaultRegistry, build_plan, load_experiment, run_plan
    registry = FaultRegistry.installed()
    plan = build_plan(load_experiment(path, registry), registry, source=path)
    print("\\n".join(plan.lines()))                      # what --dry-run prints
    result = run_plan(plan, out=Path("runs"), console=Console())

Names are imported on first use (PEP 562), so ``import faultdrill.experiments.spec.experiment`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_API = {
    "load_experiment": "faultdrill.experiments.spec.loader",
    "check_experiment": "faultdrill.experiments.spec.loader",
    "Experiment": "faultdrill.experiments.spec.experiment",
    "build_plan": "faultdrill.experiments.engine.plan",
    "Plan": "faultdrill.experiments.engine.plan",
    "SystemDescription": "faultdrill.experiments.spec.system",
    "run_plan": "faultdrill.experiments.engine.run",
    "run_experiment": "faultdrill.experiments.engine.run",
    "RunResult": "faultdrill.experiments.engine.run",
    "Journal": "faultdrill.experiments.journal",
    "Timeline": "faultdrill.experiments.journal.timeline",
    "FaultRegistry": "faultdrill.faults.registry",
}
__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
