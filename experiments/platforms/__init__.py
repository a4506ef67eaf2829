"""Platforms: where the target runs, with Kubernetes semantics.

``local`` (:class:`LocalPlatform`) supervises processes on this machine: probes, restart
policy with CrashLoopBackOff, memory cgroups, and a readiness-aware service endpoint.
Every platform (``local``, ``kubernetes``, the shipped ``fake``) satisfies the :class:`Platform`
contract (``base.py``); :func:`build_platform` (``build.py``) is the one place that picks one.

Example::

    from faultdrill.experiments.platforms import LocalPlatform
    with LocalPlatform(workdir, replicas=2) as platform:
        print(platform.service_url, platform.ready_replicas())
"""

from __future__ import annotations

from faultdrill.experiments.platforms.base import Load, Platform, PlatformEnvironment
from faultdrill.experiments.platforms.build import build_platform
from faultdrill.experiments.platforms.local.endpoint import ServiceEndpoint
from faultdrill.experiments.platforms.local.platform import LocalPlatform
from faultdrill.experiments.platforms.local.probes import ProbeConfig, ProbeKind, ProbeSampler, ProbeSet
from faultdrill.experiments.platforms.local.restarts import BackOff, RestartPolicy, exit_reason, restarts_after

__all__ = [
    "BackOff",
    "Load",
    "LocalPlatform",
    "Platform",
    "PlatformEnvironment",
    "ProbeConfig",
    "ProbeKind",
    "ProbeSampler",
    "ProbeSet",
    "RestartPolicy",
    "ServiceEndpoint",
    "build_platform",
    "exit_reason",
    "restarts_after",
]
