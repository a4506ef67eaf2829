"""What a fault can aim at: the services a platform started, and how to reach them.

A :class:`Topology` is handed to faults through :class:`~faults.base.FaultContext`. It holds
only OS-level facts (pids, URLs, file paths, cgroup paths, namespaces) so that an injection
record built from it can be undone later by a process that knows nothing of the platform
(``faultdrill rollback --pending`` after a crash). Secrets are never stored here: an admin
token is a *file* path (mode 0600), read when needed.

A :class:`Supervisor` is the optional capability of a live platform to stop, hold down and
restart its services (a fault that kills the feature store "and keeps it down" needs it), and to
change a service's spec (``set_env``: what every later start uses, like a Deployment's template).

Example::

    topo = Topology(services={"replica-0": ServiceHandle(name="replica-0", role="replica",
                                                         pid=4242, url="http://127.0.0.1:8000")})
    topo.get("replica-0").url
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from faultdrill.faults.errors import ConfigError

__all__ = ["KubeRef", "Role", "ServiceHandle", "Supervisor", "Topology", "merge_env"]

Role = Literal["replica", "feature_store", "proxy", "hog", "other", "cache", "dependency"]
"""``dependency``: a service of the user's that theirs calls (reached through a fault proxy, never started here)."""


class KubeRef(BaseModel):
    """Where a service lives on Kubernetes (names only, never credentials); set by the kubernetes
    platform. Faults aimed at a handle with one go through the Kubernetes API (``faults.kube``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    namespace: str
    context: str | None = None
    kubeconfig: str | None = None
    deployment: str
    pod: str | None = None
    """The pod of a replica; None for a service handled as its whole Deployment (feature store)."""
    pod_uid: str | None = None
    container: str
    tls_secret: str | None = None
    admin_token_env: str | None = None
    """The container's env var holding its admin token (read inside the pod, never here)."""
    admin_url: str | None = None
    """The admin API as seen from inside the pod, e.g. ``http://127.0.0.1:9000``."""


class ServiceHandle(BaseModel):
    """One service a platform started (or that is explicitly allow-listed)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    role: Role
    pid: int | None = None
    url: str | None = None
    """Base URL of its main API, e.g. ``http://127.0.0.1:8000``."""
    admin_url: str | None = None
    admin_token_file: Path | None = None
    cgroup: str | None = None
    """Memory cgroup directory the process runs in (its limit is the replica's limit)."""
    cert_file: Path | None = None
    key_file: Path | None = None
    ca_file: Path | None = None
    model_registry: Path | None = None
    model_name: str | None = None
    model_version: str | None = None
    model_artifact: Path | None = None
    """The model file a described service loads (``model.artifact``); None: the bundled layout, or the largest file
    under ``model_registry/model_name``."""
    ready_url: str | None = None
    """Its readiness probe's URL when that is an HTTP GET (a described service's; the bundled target's is
    ``url + /v2/health/ready``)."""
    netns: str | None = None
    port: int | None = None
    upstream_of: str | None = None
    """For a proxy: the service it fronts (``feature-store``), so edges can be named."""
    control_url: str | None = None
    """For a proxy: its control API."""
    metrics_url: str | None = None
    """Where its Prometheus metrics are, when not ``url + /metrics`` (a described service's declared endpoint)."""
    log_file: Path | None = None
    """Where the service's stdout/stderr go (faults read startup failures from it)."""
    gpu_state_file: Path | None = None
    """The emulated GPU's own state (``target_service/gpu_state.py``), which outlives the replica's process: the
    local platform's stand-in for the device (``gpu_xid`` writes it, ``reset-gpu`` clears it)."""
    kube: KubeRef | None = None
    """Set on the kubernetes platform: faults then act through the Kubernetes API."""

    def admin_token(self) -> str:
        """Read the admin token (never stored in records or logs)."""
        if self.admin_token_file is None:
            raise ConfigError(f"service '{self.name}' has no admin API token", field="target")
        return self.admin_token_file.read_text().strip()


class Topology(BaseModel):
    """The services of one run, by name."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    services: dict[str, ServiceHandle] = Field(default_factory=dict)

    def get(self, name: str, *, role: Role | None = None) -> ServiceHandle:
        """The service ``name``; an unknown name is a ConfigError with a did-you-mean."""
        handle = self.services.get(name)
        if handle is None:
            close = difflib.get_close_matches(name, list(self.services), n=1)
            known = ", ".join(sorted(self.services)) or "none"
            raise ConfigError(
                f"unknown target '{name}' (known: {known})",
                field="target",
                suggestion=close[0] if close else None,
            )
        if role is not None and handle.role != role:
            raise ConfigError(
                f"target '{name}' is a {handle.role}, this fault needs a {role}", field="target"
            )
        return handle

    def by_role(self, role: Role) -> list[ServiceHandle]:
        return [s for s in self.services.values() if s.role == role]

    def with_service(self, handle: ServiceHandle) -> Topology:
        return Topology(services={**self.services, handle.name: handle})


class Supervisor(Protocol):
    """A live platform's control over the services it started."""

    def stop(self, name: str, *, hold: bool = True) -> int | None:
        """Stop ``name`` (SIGTERM, then SIGKILL); with ``hold`` it is not restarted."""
        ...

    def kill(self, name: str, sig: int) -> None:
        """Send ``sig`` to ``name``'s process (the platform's restart policy applies)."""
        ...

    def start(self, name: str, *, env: dict[str, str] | None = None, wait: bool = True) -> None:
        """Start ``name`` again (releasing a hold), optionally with extra environment;
        ``wait`` blocks until it answers."""
        ...

    def restart(self, name: str, *, env: dict[str, str] | None = None, wait: bool = True) -> None:
        """Stop then start ``name`` (``wait=False`` for a start that is expected to fail)."""
        ...

    def set_env(self, name: str, env: Mapping[str, str | None]) -> dict[str, str | None]:
        """Change ``name``'s *spec*: the environment every later start of it uses — the platform's own restarts
        (crash-loop back-off), plain ``restart``/``start`` calls included — as a Deployment's pod template does
        (``kubectl set env``); a None value removes the variable. Nothing is restarted. Returns what each changed
        variable was before (None: not set), which undoes the change when given back. ``env`` of ``start`` and
        ``restart`` is per start, layered on top of the spec."""
        ...

    def handle(self, name: str) -> ServiceHandle:
        """The current handle of ``name`` (its pid changes on restart)."""
        ...

    def wait_exit(self, name: str, timeout_s: float) -> int | None:
        """Wait up to ``timeout_s`` for ``name`` to exit; its exit status, or None."""
        ...

    def exit_status(self, name: str) -> int | None:
        """The last exit status of ``name`` (negative: killed by that signal)."""
        ...


def merge_env(spec: dict[str, str], env: Mapping[str, str | None]) -> dict[str, str | None]:
    """``Supervisor.set_env`` on a plain mapping: ``env`` merged into ``spec`` in place (None removes a variable);
    returns each given variable's previous value (None: not set), which undoes the change when merged back."""
    previous = {key: spec.get(key) for key in env}
    for key, value in env.items():
        if value is None:
            spec.pop(key, None)
        else:
            spec[key] = str(value)
    return previous
