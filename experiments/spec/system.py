"""The system under test, described by data: its services, their roles and what each can do.

Whatever needs a service's name or role asks a ``SystemDescription``: the loader's reference
checks (a fault's target must be a service whose role the fault accepts — ``Fault.target_roles``),
the dry-run topology (``experiments.engine.plan``), runbooks, game days and the platforms
(``build_platform(…, system=plan.system)``: the local one starts exactly the services described, the
kubernetes one names the pods it finds after them, the fake one and the Chaos Toolkit target too), so
no platform spells a service name. What the bundled target's *programs* are (subcommands, containers,
ports) is ``experiments.spec.bundled``, keyed by role. ``bundled_system`` describes the bundled target
(``target_service/``): replicas behind a readiness-aware endpoint, a TLS feature store reached
through a fault proxy, optionally a redis cache behind its own proxy and canary replicas. It is one
description; a spec for another inference server describes its own services the same way.

Roles:

================  =====================================================================
``replica``       an inference replica (serves ``/v2/models/…``; canary replicas too)
``feature_store`` a dependency the replicas call on every request (TLS)
``proxy``         a fault proxy on one edge (``upstream_of`` names the service it fronts)
``cache``         the prediction cache (redis)
``dependency``    a service of the user's that a described service calls (never started: it is theirs)
================  =====================================================================

A service of your own (``target.service: {kind: process | url}``, ``experiments.spec.service``) is described
by :func:`described_system`: its replicas (``<name>-0`` …), each declared dependency with a fault proxy in
front, and what each can do — the description then also carries the service itself (``program``) and the
spec's folder (``spec_dir``), which is all a platform needs to start it.

Example::

    system = bundled_system(replicas=2)
    system.names()             # ['replica-0', 'replica-1', 'feature-store', 'feature-store-proxy']
    system.role_of("feature-store-proxy"), system.replicas()   # 'proxy', ['replica-0', 'replica-1']
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

from faultdrill.experiments.spec.service import KubernetesWorkload, ProcessService, UrlService
from faultdrill.faults.topology import Role

__all__ = ["CAPABILITIES", "ROLES", "Role", "Service", "SystemDescription", "bundled_role", "bundled_system",
           "described_system"]

ROLES: dict[str, str] = {  # the roles a described service takes (``faults.topology.Role`` has more)
    "replica": "an inference replica",
    "feature_store": "a dependency every request calls",
    "proxy": "a fault proxy on one edge",
    "cache": "the prediction cache",
    "dependency": "a service of the user's that a described service calls",
}
CAPABILITIES: dict[str, str] = {  # what a described service can do: what faults declare they need (Fault.target_needs)
    "admin_api": "a token-guarded chaos admin API (the bundled target's)",
    "metrics": "Prometheus metrics",
    "tls": "a certificate it serves, in files faultdrill may swap",
    "memory_cgroup": "its own memory cgroup",
    "own_netns": "its own network namespace",
    "model_repository": "model files faultdrill may corrupt and restore",
    "process": "a process faultdrill may signal (one it started, or a pid the spec allow-lists)",
}
"""Besides these, a fault may need ``supervised``: the platform starts and restarts the service."""


class Service(BaseModel):
    """One service of the system under test."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    role: Role
    supervised: bool = True
    """The platform watches it and restarts it (a proxy belongs to its edge and is not restarted)."""
    upstream_of: str | None = None
    """A proxy: the service whose clients it stands in front of."""
    canary: bool = False
    """A replica of the canary model version, outside the primary pool."""
    capabilities: frozenset[str] = frozenset()
    """What faults and observers may rely on: ``admin_api`` (token-guarded chaos endpoint), ``metrics``
    (Prometheus ``/metrics``), ``tls``, ``memory_cgroup``, ``own_netns`` (its own network namespace),
    ``model_repository``, ``process`` (see :data:`CAPABILITIES`)."""

    def offers(self, need: str) -> bool:
        """Whether a fault needing ``need`` (a capability, or ``supervised``) can act on this service."""
        return need in self.capabilities or (need == "supervised" and self.supervised)


class SystemDescription(BaseModel):
    """The services of one system under test, in start order (replicas first when listed)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    services: tuple[Service, ...]
    program: ProcessService | UrlService | KubernetesWorkload | None = None
    """The user's service as ``target.service`` describes it; None: the bundled target
    (``experiments.spec.bundled``)."""
    spec_dir: str | None = None
    """The spec file's folder (``{spec_dir}`` in the program's templates; None: the working directory)."""
    private_models: bool = True
    """The bundled target gets a model registry of its own in the run's folder (its default models published there,
    ~21 MB): needed when something writes it (a canary rollout, a fault with ``writes_models``). False: the
    replicas read the shared cache (``host.cache.shared_model_registry``), built once per machine."""

    def names(self) -> list[str]:
        """Every service: primary replicas first, then the others in start order."""
        return [s.name for s in self.services]

    def get(self, name: str) -> Service | None:
        return next((s for s in self.services if s.name == name), None)

    def role_of(self, name: str) -> str | None:
        """The role of ``name`` (None when the system has no such service)."""
        service = self.get(name)
        return service.role if service is not None else None

    def with_role(self, *roles: str) -> list[str]:
        return [s.name for s in self.services if s.role in roles]

    def replicas(self) -> list[str]:
        """The primary pool's replicas (canary replicas excluded)."""
        return [s.name for s in self.services if s.role == "replica" and not s.canary]

    def canaries(self) -> list[str]:
        return [s.name for s in self.services if s.canary]

    def supervised(self) -> list[str]:
        return [s.name for s in self.services if s.supervised]

    def one(self, role: str) -> str:
        """The single service of ``role`` (a ValueError when there is none or several)."""
        named = self.with_role(role)
        if len(named) != 1:
            raise ValueError(f"system {self.name!r} has {len(named)} services of role {role!r}, not one")
        return named[0]

    def proxy_of(self, upstream: str) -> str | None:
        """The proxy in front of ``upstream``, if any."""
        return next((s.name for s in self.services if s.upstream_of == upstream), None)

    def replica_slot(self, i: int) -> str:
        """The name of the ``i``-th primary replica slot: the described replicas in order; a platform that runs
        more at a moment (a rolling update's surge pod) numbers on in the last one's scheme (``replica-2``
        after ``replica-1``, ``web-b-1`` after ``web-b``)."""
        described = self.replicas()
        if i < len(described):
            return described[i]
        if not described:
            return _bundled_replica(i)
        beyond = i - len(described) + 1
        last = described[-1]
        if (m := _NUMBERED.fullmatch(last)) is not None:
            return f"{m[1]}{int(m[2]) + beyond}"
        return f"{last}-{beyond}"


_BUNDLED_NAMES = {"feature-store": "feature_store", "feature-store-proxy": "proxy", "cache": "cache",
                  "cache-proxy": "proxy"}  # fmt: skip
_REPLICA = re.compile(r"(?:replica|canary)-\d+")
_NUMBERED = re.compile(r"(.*?)(\d+)")


def _bundled_replica(i: int) -> str:
    return f"replica-{i}"


def bundled_role(name: str) -> str | None:
    """The role a service name has in the bundled system's naming scheme (None for a name it never uses)."""
    return "replica" if _REPLICA.fullmatch(name) else _BUNDLED_NAMES.get(name)


def bundled_system(
    *, replicas: int, cache: bool = False, canary_replicas: int = 0, feature_store_netns: bool = False,
    memory_limit: bool = False, store_proxy: bool = True,
) -> SystemDescription:  # fmt: skip
    """The bundled target (``target_service/``) as the spec's ``target`` section configures it.

    ``store_proxy=False`` leaves out the fault proxy in front of the feature store (replicas then call
    the store directly: what ``LocalStack(with_proxy=False)`` starts for the fault tests)."""
    replica_caps = frozenset({"admin_api", "metrics", "model_repository", "process",
                              *(("memory_cgroup",) if memory_limit else ())})  # fmt: skip
    store_caps = frozenset({"admin_api", "tls", "process", *(("own_netns",) if feature_store_netns else ())})
    services = [Service(name=_bundled_replica(i), role="replica", capabilities=replica_caps) for i in range(replicas)]
    services.append(Service(name="feature-store", role="feature_store", capabilities=store_caps))
    if store_proxy:
        services.append(Service(name="feature-store-proxy", role="proxy", supervised=False,
                                upstream_of="feature-store"))  # fmt: skip
    if cache:
        services += [
            Service(name="cache", role="cache", capabilities=frozenset({"process"})),
            Service(name="cache-proxy", role="proxy", supervised=False, upstream_of="cache"),
        ]
    services += [Service(name=f"canary-{i}", role="replica", canary=True, capabilities=replica_caps)
                 for i in range(canary_replicas)]  # fmt: skip
    return SystemDescription(name="bundled", services=tuple(services))


def described_system(program: ProcessService | UrlService | KubernetesWorkload, *, replicas: int = 1,
                     memory_limit: bool = False,
                     spec_dir: str | None = None) -> SystemDescription:  # fmt: skip
    """A service of the user's (``target.service``): ``kind: process`` — ``replicas`` supervised replicas
    ``<name>-N`` (``memory_cgroup`` with a memory limit, ``tls`` and ``model_repository`` where declared) and each
    dependency behind its fault proxy; ``kind: url`` — one replica faultdrill neither starts nor restarts, behind a
    fault proxy, able to do what ``allow`` lists (``process`` for pids, ``memory_cgroup`` for cgroups);
    ``kind: kubernetes`` — ``replicas`` pods the kubelet supervises (``process``: a pod can be deleted)."""
    prefix = program.replica_prefix
    services: list[Service] = []
    if isinstance(program, ProcessService):
        caps = {"metrics", "process", *(("memory_cgroup",) if memory_limit else ()),
                *(("tls",) if program.tls is not None else ()),
                *(("model_repository",) if program.model is not None and program.model.repository else ())}
        services += [Service(name=f"{prefix}-{i}", role="replica", capabilities=frozenset(caps))
                     for i in range(replicas)]  # fmt: skip
        for dep in program.dependencies:
            services += [Service(name=dep.name, role="dependency", supervised=False),
                         Service(name=f"{dep.name}-proxy", role="proxy", supervised=False, upstream_of=dep.name)]
    elif isinstance(program, KubernetesWorkload):
        services += [Service(name=f"{prefix}-{i}", role="replica", capabilities=frozenset({"metrics", "process"}))
                     for i in range(replicas)]  # fmt: skip
    else:
        caps = {"metrics", *(("process",) if program.allow.pids else ()),
                *(("memory_cgroup",) if program.allow.cgroups else ())}
        name = f"{prefix}-0"
        services += [Service(name=name, role="replica", supervised=False, capabilities=frozenset(caps)),
                     Service(name=f"{name}-proxy", role="proxy", supervised=False, upstream_of=name)]
    return SystemDescription(name=prefix, services=tuple(services), program=program, spec_dir=spec_dir)
