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
================  =====================================================================

Example::

    system = bundled_system(replicas=2)
    system.names()             # ['replica-0', 'replica-1', 'feature-store', 'feature-store-proxy']
    system.role_of("feature-store-proxy"), system.replicas()   # 'proxy', ['replica-0', 'replica-1']
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

from faultdrill.faults.topology import Role

__all__ = ["ROLES", "Role", "Service", "SystemDescription", "bundled_role", "bundled_system"]

ROLES: dict[str, str] = {  # the roles a described service takes (``faults.topology.Role`` has more)
    "replica": "an inference replica",
    "feature_store": "a dependency every request calls",
    "proxy": "a fault proxy on one edge",
    "cache": "the prediction cache",
}


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
    (Prometheus ``/metrics``), ``tls``, ``memory_cgroup``, ``own_netns`` (its own network namespace)."""


class SystemDescription(BaseModel):
    """The services of one system under test, in start order (replicas first when listed)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    services: tuple[Service, ...]

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
    replica_caps = frozenset({"admin_api", "metrics", *(("memory_cgroup",) if memory_limit else ())})
    store_caps = frozenset({"admin_api", "tls", *(("own_netns",) if feature_store_netns else ())})
    services = [Service(name=_bundled_replica(i), role="replica", capabilities=replica_caps) for i in range(replicas)]
    services.append(Service(name="feature-store", role="feature_store", capabilities=store_caps))
    if store_proxy:
        services.append(Service(name="feature-store-proxy", role="proxy", supervised=False,
                                upstream_of="feature-store"))  # fmt: skip
    if cache:
        services += [
            Service(name="cache", role="cache"),
            Service(name="cache-proxy", role="proxy", supervised=False, upstream_of="cache"),
        ]
    services += [Service(name=f"canary-{i}", role="replica", canary=True, capabilities=replica_caps)
                 for i in range(canary_replicas)]  # fmt: skip
    return SystemDescription(name="bundled", services=tuple(services))
