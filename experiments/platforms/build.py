"""``build_platform``: the one place that maps ``target.platform`` to a platform class and turns
the target's settings (misconfigurations, model, device, cache, probes, restart policy, canary)
into its arguments. Runs, game days, the pytest plugin and the Chaos Toolkit target all call it.

Which services run, their names and roles, is the :class:`~experiments.spec.system.SystemDescription`
passed as ``system`` (a run's ``plan.system``); every platform builds its topology from it and spells no
service name. A caller with no spec passes none and gets the bundled system its settings describe.

Example::

    platform = build_platform(spec.target, system=plan.system, timeline=timeline, workdir=run_dir / "platform",
                              owner=owner)
    platform.up()

    # no spec (the pytest plugin, the CTK target): a local platform from explicit replica settings
    platform = build_platform(timeline=timeline, workdir=tmp / "platform", replicas=2,
                              misconfigurations=["no_readiness_probe"])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from faultdrill.experiments.journal.timeline import Timeline
from faultdrill.experiments.spec.kubernetes import KubernetesSettings
from faultdrill.faults.errors import ConfigError

if TYPE_CHECKING:
    from faultdrill.experiments.observe.observers import Observer
    from faultdrill.experiments.platforms.base import Platform
    from faultdrill.experiments.spec.experiment import TargetSpec
    from faultdrill.experiments.spec.system import SystemDescription
    from faultdrill.faults.owned import Owner

__all__ = ["PLATFORMS", "build_platform", "check_platform"]


def _local(t: TargetSpec, system: SystemDescription, timeline: Timeline, workdir: Path, owner: Owner | None,
           observers: tuple[Observer, ...]) -> Platform:  # fmt: skip
    from faultdrill.experiments.platforms.local.platform import LocalPlatform
    from faultdrill.experiments.platforms.local.probes import ProbeConfig, ProbeSet
    from faultdrill.experiments.platforms.local.restarts import BackOff
    from faultdrill.experiments.platforms.local.rollout import CanaryRollout
    from faultdrill.experiments.spec.experiment import PLATFORM_MISCONFIGURATIONS

    backoff = BackOff(initial_s=float(t.restart.backoff_initial), max_s=float(t.restart.backoff_max))
    if system.program is not None:  # a service of the user's: its own command, env and probe paths (the system's)
        return LocalPlatform(workdir, system=system, memory_limit_bytes=t.memory_limit, probe_settings=t.probes,
                             restart_policy=t.restart.policy, backoff=backoff, timeline=timeline, observers=observers,
                             owner=owner, endpoint=t.endpoint)  # fmt: skip
    env = dict(t.env)
    if target_misconfigs := [m for m in t.misconfigurations if m not in PLATFORM_MISCONFIGURATIONS]:
        env["FAULTDRILL_MISCONFIGURATIONS"] = ",".join(target_misconfigs)
    if t.model != "digits":
        env["FAULTDRILL_MODEL"] = t.model
    env["FAULTDRILL_DEVICE"] = t.device
    if t.cache.enabled:
        env.setdefault("FAULTDRILL_CACHE_TIMEOUT_S", str(float(t.cache.timeout)))
    p = t.probes
    period, timeout = float(p.period), float(p.timeout)
    probes = ProbeSet(
        readiness=ProbeConfig("/v2/health/ready", period_s=period, timeout_s=timeout,
                              failure_threshold=p.failure_threshold, success_threshold=p.success_threshold),
        # At least 1 s of failures: a crashing torch process takes ~0.5-1 s to exit after its port
        # closes, and must be reported as its own exit, not as a liveness kill.
        liveness=ProbeConfig("/v2/health/live", period_s=period, timeout_s=timeout,
                             failure_threshold=max(p.failure_threshold, round(1.0 / period))),
    )  # fmt: skip
    return LocalPlatform(
        workdir, system=system, memory_limit_bytes=t.memory_limit, replica_env=env,
        probes=probes, restart_policy=t.restart.policy, backoff=backoff, timeline=timeline, observers=observers,
        canary=CanaryRollout(t.canary, timeline, judge="no_canary_analysis" not in t.misconfigurations)
        if t.canary is not None else None,
        cache_max_memory_bytes=t.cache.max_memory if t.cache.enabled else None, cache_ttl_s=float(t.cache.ttl),
        owner=owner, endpoint=t.endpoint,
    )  # fmt: skip


def _kubernetes(t: TargetSpec, system: SystemDescription, timeline: Timeline, workdir: Path, owner: Owner | None,
                observers: tuple[Observer, ...]) -> Platform:  # fmt: skip
    """The deployed target, or a workload of your own, on a cluster (``experiments/platforms/kubernetes/``)."""
    from faultdrill.experiments.platforms.kubernetes.platform import KubernetesPlatform

    if system.program is not None and system.program.kind != "kubernetes":  # the loader refuses it first
        raise ConfigError(f"a service of kind {system.program.kind} runs on the local platform only",
                          field="target.platform", expected="target.platform: local")  # fmt: skip
    return KubernetesPlatform(t.kubernetes or KubernetesSettings(), system=system, timeline=timeline)


def _check_kubernetes(t: TargetSpec) -> None:
    from faultdrill.experiments.platforms.kubernetes.platform import check_cluster

    check_cluster(t.kubernetes or KubernetesSettings())


@dataclass(frozen=True)
class _Kind:
    build: Callable[[TargetSpec, SystemDescription, Timeline, Path, Owner | None, tuple[Observer, ...]], Platform]
    check: Callable[[TargetSpec], None] | None = None
    """Before anything starts (e.g. no cluster: one located line, exit 2)."""


PLATFORMS: dict[str, _Kind] = {"local": _Kind(_local), "kubernetes": _Kind(_kubernetes, _check_kubernetes)}
"""``target.platform`` → how to build (and check) it: the one table of platform kinds."""


def check_platform(target: TargetSpec) -> None:
    """The platform's own checks before a run starts anything (no cluster: a ConfigError)."""
    if (check := PLATFORMS[target.platform].check) is not None:
        check(target)


def build_platform(target: TargetSpec | None = None, *, timeline: Timeline, workdir: Path, owner: Owner | None = None,
                   system: SystemDescription | None = None, observers: tuple[Observer, ...] = (),
                   replica_env: dict[str, str] | None = None, misconfigurations: Sequence[str] = (),
                   **local: Any) -> Platform:  # fmt: skip
    """The platform ``target.platform`` names, built (not started) from the target's settings, running the
    services of ``system`` (a run's ``plan.system``; None: the bundled system the target describes).

    Without a ``target`` (the pytest plugin, the CTK target: no spec) it is a local platform from
    explicit settings: ``system`` (None: the bundled system of the keywords), ``replica_env``, the target's
    ``misconfigurations`` (as ``FAULTDRILL_MISCONFIGURATIONS``) and ``local`` (``LocalPlatform`` keywords:
    replicas, memory_limit_bytes, feature_store_netns …).
    """
    if target is not None:
        if replica_env is not None or misconfigurations or local:
            raise TypeError("build_platform: replica_env, misconfigurations and platform keywords go without a "
                            "target (a target carries its own)")  # fmt: skip
        described = system if system is not None else _bundled(target)
        return PLATFORMS[target.platform].build(target, described, timeline, workdir, owner, observers)
    from faultdrill.experiments.platforms.local.platform import LocalPlatform

    env = dict(replica_env or {})
    if misconfigurations:
        env["FAULTDRILL_MISCONFIGURATIONS"] = ",".join(misconfigurations)
    return LocalPlatform(workdir, timeline=timeline, replica_env=env, owner=owner, observers=observers,
                         system=system, **local)  # fmt: skip


def _bundled(target: TargetSpec) -> SystemDescription:
    """The system a bare target describes, for a caller that has a target but no plan: the spec's own mapping
    (``Experiment.system()`` reads the target only), not a copy of it."""
    from faultdrill.experiments.spec.experiment import Experiment

    # Unvalidated on purpose: metadata & co. are not read; model_construct fills the defaults it has.
    return Experiment.model_construct(target=target).system()  # type: ignore[call-arg]
