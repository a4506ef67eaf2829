"""Platforms: where the target runs, with Kubernetes semantics.

``local`` (:class:`LocalPlatform`) supervises processes on this machine: probes, restart
policy with CrashLoopBackOff, memory cgroups, and a readiness-aware service endpoint.

Example::

    from experiments.platforms import LocalPlatform
    with LocalPlatform(workdir, replicas=2) as platform:
        print(platform.service_url, platform.ready_replicas())
"""

from __future__ import annotations

from experiments.platforms.endpoint import ServiceEndpoint
from experiments.platforms.local import LocalPlatform
from experiments.platforms.probes import ProbeConfig, ProbeKind, ProbeSampler, ProbeSet
from experiments.platforms.restarts import BackOff, RestartPolicy, exit_reason, restarts_after

__all__ = [
    "BackOff",
    "LocalPlatform",
    "ProbeConfig",
    "ProbeKind",
    "ProbeSampler",
    "ProbeSet",
    "RestartPolicy",
    "ServiceEndpoint",
    "exit_reason",
    "restarts_after",
]
