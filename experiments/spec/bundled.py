"""What the bundled target's programs are called and where they listen, by role: the one table of them.

A platform learns *which* services exist, their names and roles, from a
:class:`~experiments.spec.system.SystemDescription`. How the bundled target (``target_service/``)
runs a service of a role is not in a description — it is a fact of that program and of its
manifests (``target_service/deploy``): the ``python -m faultdrill.target_service`` subcommand, the
container in its pod, its ports, the env var holding its admin token, its health route. Platforms
read those facts here, keyed by the role the description gives, so no platform spells a service name
or a bundled-target detail of its own. (Where each process reads its settings from — the
``FAULTDRILL_*`` env vars the local platform sets — lives with the local stack's starters, one per
role, in ``experiments/platforms/local/stack.py``.)

Example::

    BUNDLED_PROCESSES["feature_store"].command      # 'feature-store'
    process_of("replica").container                  # 'target'
    process_of("cache")                               # None: redis, not a bundled-target program
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BUNDLED_PROCESSES", "BundledProcess", "process_of"]


@dataclass(frozen=True)
class BundledProcess:
    """How the bundled target runs a service of one role."""

    command: str
    """``python -m faultdrill.target_service <command>`` starts it."""
    container: str
    """Its container in ``target_service/deploy`` (also the ``container`` label of the local platform's
    kube-state-metrics series)."""
    port: int
    """Where it serves in its pod."""
    admin_url: str
    """Its admin API as seen from inside its pod."""
    admin_token_env: str
    """The env var holding its admin token (in the pod, and where the local platform sets it)."""
    health_path: str
    """Answers 200 when it serves."""


BUNDLED_PROCESSES: dict[str, BundledProcess] = {
    "replica": BundledProcess(command="serve", container="target", port=8000, admin_url="http://127.0.0.1:9000",
                              admin_token_env="FAULTDRILL_ADMIN_TOKEN", health_path="/v2/health/ready"),
    "feature_store": BundledProcess(command="feature-store", container="feature-store", port=8443,
                                    admin_url="https://127.0.0.1:8443", admin_token_env="FAULTDRILL_FS_ADMIN_TOKEN",
                                    health_path="/healthz"),
}  # fmt: skip
"""Role → the bundled program serving it; roles absent here (``cache``: redis; ``proxy``: the fault proxy)
are no bundled-target program."""


def process_of(role: str) -> BundledProcess | None:
    """The bundled program of ``role`` (None for a role the bundled target has no program for)."""
    return BUNDLED_PROCESSES.get(role)
