"""A canary rollout on the local platform: the pieces ``LocalPlatform`` wires in for ``target.canary``.

:class:`CanaryRollout` owns the traffic split, the per-pool outcome store, the endpoint's
routing and the analysis controller (``canary.py``). The platform calls it at four points:
:meth:`prepare` (publish the canary version in the run's registry if missing; the stack then
starts the description's canary replicas on it — ``Service.canary``, ``canary-N`` in the bundled
system — and the rollout takes their names from it), :meth:`start` (after every replica is ready),
:meth:`revised` (a supervisor call restarted a canary replica: a new revision),
:meth:`stop`. A token-guarded control API (``control.py``) lets a person or a runbook read the
status and roll back by hand.

Example::

    rollout = CanaryRollout(spec.target.canary, timeline, judge=True)
    platform = LocalPlatform(workdir, replicas=2, canary=rollout, timeline=timeline)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from faultdrill.experiments.journal.timeline import Timeline
from faultdrill.experiments.platforms.local.canary import CanaryController
from faultdrill.experiments.platforms.local.split import CanaryRouting, Pool, PoolStats, TrafficSplit
from faultdrill.experiments.spec.canary import CanarySpec

if TYPE_CHECKING:
    from faultdrill.experiments.platforms.local.stack import LocalStack

__all__ = ["CanaryRollout", "publish_version"]


def publish_version(registry: Path, model: str, version: str) -> bool:
    """Publish ``model`` ``version`` unless it exists (digits retrained with that seed); True if published."""
    from faultdrill.target_service.models import HeavyNet, digits_known_answers, train_digits
    from faultdrill.target_service.registry import ModelRegistry

    reg = ModelRegistry(registry)
    reg.ensure_defaults()
    if reg.path(model, version).is_dir():
        return False
    seed = int(version) if version.isdigit() else sum(version.encode())
    if model == "digits":
        net, metrics = train_digits(seed=seed)
        reg.publish(model, net, {"kind": "digits"}, metrics, version=version,
                    known_answers=digits_known_answers(net, model, version))  # fmt: skip
    else:
        arch = reg.manifest(model, "1").arch
        reg.publish(model, HeavyNet(int(arch["width"]), int(arch["depth"]), seed=seed), {**arch, "seed": seed},
                    {}, version=version)  # fmt: skip
    return True


class CanaryRollout:
    """Split + stats + routing + controller of one platform's canary; see the module docstring."""

    def __init__(self, spec: CanarySpec, timeline: Timeline, *, judge: bool = True) -> None:
        self.spec = spec
        self.timeline = timeline
        self.judge = judge
        self.split = TrafficSplit(spec.initial_weight)
        self.stats = PoolStats()
        self.canaries: tuple[str, ...] = ()
        """The canary replicas, from the stack's description (:meth:`prepare`)."""
        self.routing = CanaryRouting(self.split, self.stats, self.pool_of)
        self.controller: CanaryController | None = None
        self.control: Any = None
        self._revision_at = 0.0

    def names(self) -> list[str]:
        return list(self.canaries)

    def pool_of(self, name: str) -> Pool:
        return "canary" if name in self.canaries else "stable"

    def prepare(self, stack: LocalStack) -> None:
        """Before the stack starts: the canary version exists and the stack will start the described canary
        replicas on it."""
        stack.model_registry = stack.model_registry or stack.workdir / "models"
        stack.workdir.mkdir(parents=True, exist_ok=True)
        model = stack.replica_env.get("FAULTDRILL_MODEL", "digits")
        publish_version(stack.model_registry, model, self.spec.version)
        self.canaries = tuple(stack.described.canaries())
        stack.canary_env = {"FAULTDRILL_MODEL_VERSION": self.spec.version}

    def start(self, ready: Callable[[], list[str]], stop: Callable[[str], object], workdir: Path,
              started_at: Callable[[str], float] = lambda _n: 0.0) -> None:  # fmt: skip
        """Analysis on; ``ready()`` lists ready replicas, ``stop(name)`` holds one down, ``started_at(name)``
        is when its process started (monotonic): only a canary started for the current revision counts."""
        from faultdrill.experiments.platforms.local.control import ControlServer

        def stop_canary() -> None:
            for name in self.names():
                stop(name)

        self.controller = CanaryController(
            self.spec, self.split, self.stats, self.timeline, judge=self.judge, stop_canary=stop_canary,
            canary_ready=lambda: any(n in self.canaries and started_at(n) >= self._revision_at for n in ready()),
        )  # fmt: skip
        self.controller.start()
        self.control = ControlServer(self.controller, workdir / "canary-control.token")
        self.control.start()

    def revised(self, name: str, env: dict[str, str] | None) -> None:
        """Called *before* a supervisor call (re)starts ``name``: a canary's traffic stops at once."""
        if self.controller is not None and self.pool_of(name) == "canary":
            self._revision_at = time.monotonic()
            self.controller.new_revision((env or {}).get("FAULTDRILL_MODEL_VERSION", self.spec.version))

    def stop(self) -> None:
        if self.control is not None:
            self.control.stop()
        if self.controller is not None:
            self.controller.stop()
