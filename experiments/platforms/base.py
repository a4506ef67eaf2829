"""The platform contract: what a run, a game day, the pytest plugin and the Chaos Toolkit target
use of a platform — nothing more. ``local`` (:class:`~experiments.platforms.local.platform.LocalPlatform`),
``kubernetes`` (:class:`~experiments.platforms.kubernetes.platform.KubernetesPlatform`) and the shipped
fake (:class:`~experiments.platforms.fake.FakePlatform`) implement it; ``build_platform``
(``experiments/platforms/build.py``) is the one place that picks one by ``target.platform``.

A platform is also the faults' :class:`~faults.topology.Supervisor` (stop, hold, restart …).
What differs between platforms is *declared* here, never found by name:

- ``own_alerting``: a run may start its own Prometheus scraping the replicas;
- ``environment()``: the device, emulation and notes the journal's environment records;
- ``load_generator()``: the load this platform is driven with (a :class:`Load`).

Example::

    platform = build_platform(spec.target, timeline=timeline, workdir=run_dir / "platform")
    assert isinstance(platform, Platform)
    platform.up()
    try:
        ctx = FaultContext.create(state_dir, scope=platform.scope(), topology=platform.topology(),
                                  supervisor=platform)
    finally:
        platform.close()
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from faultdrill.faults.topology import Supervisor

if TYPE_CHECKING:
    from pathlib import Path

    from faultdrill.experiments.journal.timeline import Timeline
    from faultdrill.experiments.observe.load import LoadShape, LoadSummary
    from faultdrill.experiments.spec.experiment import LoadSpec
    from faultdrill.faults.base import Scope
    from faultdrill.faults.owned import Owner
    from faultdrill.faults.topology import Topology

__all__ = ["Load", "Platform", "PlatformEnvironment"]


@dataclass(frozen=True)
class PlatformEnvironment:
    """What the journal's environment needs from a running platform."""

    device: str
    emulated: bool
    device_name: str = ""
    notes: tuple[str, ...] = ()


@runtime_checkable
class Load(Protocol):
    """A load generator as a run drives it: start, wait for traffic, stop with a summary."""

    label: str
    """How log lines name it, e.g. ``the load generator``."""

    def start(self) -> None: ...

    def wait_first_request(self, timeout_s: float = 60.0) -> bool: ...

    def stop(self) -> LoadSummary: ...


@runtime_checkable
class Platform(Supervisor, Protocol):
    """A system brought up with Kubernetes semantics; see the module docstring."""

    name: str
    """``local``, ``kubernetes``, ``fake``: for the journal and messages only, never branched on."""
    own_alerting: bool
    """True: a run may start its own Prometheus + Alertmanager scraping the replicas' topology."""
    timeline: Timeline

    def up(self, *, wait_ready: bool = True) -> None: ...

    def close(self) -> None: ...

    @property
    def service_url(self) -> str: ...

    def topology(self) -> Topology: ...

    def scope(self) -> Scope: ...

    def environment(self, device: str) -> PlatformEnvironment:
        """The running target's device (``device`` is what the spec asked for), emulation and notes."""
        ...

    def load_generator(self, load: LoadSpec, *, shape: LoadShape, run_time_s: float, workdir: Path, model: str,
                       owner: Owner | None) -> Load:  # fmt: skip
        """The load this platform is driven with, not started."""
        ...
