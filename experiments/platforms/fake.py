"""``FakePlatform``: the :class:`~experiments.platforms.base.Platform` contract in memory, for tests.

It starts nothing: its topology has a handle for each service of its
:class:`~experiments.spec.system.SystemDescription` (``system``; the bundled system of ``replicas`` when
none is given), under the described name and role, plus the ``service`` endpoint, all on 127.0.0.1
port 1 (closed: nothing answers); every supervisor call is recorded in :attr:`calls`, and held
services stay down until started. Its load (:class:`FakeLoad`) records that it ran and returns
an empty summary. Declared capabilities: no own alerting, an emulated CPU device.

Example::

    from faultdrill.experiments.platforms.fake import FakePlatform

    platform = FakePlatform(replicas=2)       # the bundled system: replica-0, replica-1, the store and its proxy
    platform.up()
    store = platform.system.one("feature_store")
    platform.stop(store)                      # held down
    platform.start(store)
    assert platform.calls == [("up",), ("stop", store, True), ("start", store, None)]
    assert [h.name for h in platform.topology().by_role("replica")] == platform.system.replicas()
    platform.close()

    two = SystemDescription(name="two", services=(Service(name="a", role="replica"), Service(name="b", role="replica")))
    sorted(FakePlatform(system=two).topology().services)   # ['a', 'b', 'service']
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from faultdrill.experiments.journal.timeline import Timeline
from faultdrill.experiments.observe.load import LoadSummary
from faultdrill.experiments.platforms.base import PlatformEnvironment
from faultdrill.experiments.spec.system import SystemDescription, bundled_system
from faultdrill.faults.base import Scope
from faultdrill.faults.topology import ServiceHandle, Topology, merge_env

if TYPE_CHECKING:
    from faultdrill.experiments.observe.load import LoadShape
    from faultdrill.experiments.spec.experiment import LoadSpec
    from faultdrill.faults.owned import Owner

__all__ = ["FakeLoad", "FakePlatform"]

CLOSED_URL = "http://127.0.0.1:1"
"""Where every fake service 'listens': a closed port, so a stray request fails at once."""


class FakeLoad:
    """A load that sends nothing: ``start``/``stop`` recorded, an empty summary."""

    label = "the fake load"

    def __init__(self) -> None:
        self.calls: list[str] = []

    def start(self) -> None:
        self.calls.append("start")

    def wait_first_request(self, timeout_s: float = 60.0) -> bool:
        self.calls.append("wait_first_request")
        return True

    def stop(self) -> LoadSummary:
        self.calls.append("stop")
        return LoadSummary(requests=0, failures=0, events=0, exact=True)


class FakePlatform:
    """The platform contract in memory; see the module docstring."""

    name = "fake"
    own_alerting = False  # no replicas to scrape

    def __init__(self, *, replicas: int = 1, timeline: Timeline | None = None,
                 system: SystemDescription | None = None) -> None:  # fmt: skip
        self.timeline = timeline if timeline is not None else Timeline()
        self.system = system if system is not None else bundled_system(replicas=replicas)
        self.replicas = len(self.system.replicas())
        self.calls: list[tuple[Any, ...]] = []
        self.held: set[str] = set()
        self.exits: dict[str, int] = {}
        self.spec_env: dict[str, dict[str, str]] = {}
        """Each service's spec as ``set_env`` left it (what a restart would start it with)."""
        self.loads: list[FakeLoad] = []
        self.is_up = False

    # -- lifecycle -------------------------------------------------------------------------
    def up(self, *, wait_ready: bool = True) -> None:
        self.calls.append(("up",))
        self.is_up = True

    def close(self) -> None:
        self.calls.append(("close",))
        self.is_up = False

    # -- what runs -------------------------------------------------------------------------
    @property
    def service_url(self) -> str:
        return CLOSED_URL

    def topology(self) -> Topology:
        """Exactly the described services (and the ``service`` endpoint), pointing nowhere."""
        services = {s.name: ServiceHandle(name=s.name, role=s.role, url=CLOSED_URL, port=1, upstream_of=s.upstream_of)
                    for s in self.system.services}  # fmt: skip
        services["service"] = ServiceHandle(name="service", role="other", url=CLOSED_URL, port=1)
        return Topology(services=services)

    def scope(self) -> Scope:
        return Scope()

    def environment(self, device: str) -> PlatformEnvironment:
        return PlatformEnvironment(device="cpu", emulated=True, notes=("platform fake: nothing runs",))

    def load_generator(self, load: LoadSpec, *, shape: LoadShape, run_time_s: float, workdir: Path, model: str,
                       owner: Owner | None) -> FakeLoad:  # fmt: skip
        self.loads.append(FakeLoad())
        return self.loads[-1]

    # -- Supervisor protocol ---------------------------------------------------------------
    def handle(self, name: str) -> ServiceHandle:
        return self.topology().get(name)

    def stop(self, name: str, *, hold: bool = True) -> int | None:
        self.handle(name)
        self.calls.append(("stop", name, hold))
        if hold:
            self.held.add(name)
        self.exits[name] = 0
        return 0

    def kill(self, name: str, sig: int) -> None:
        self.handle(name)
        self.calls.append(("kill", name, sig))
        self.exits[name] = -sig

    def start(self, name: str, *, env: dict[str, str] | None = None, wait: bool = True) -> None:
        self.handle(name)
        self.calls.append(("start", name, env))
        self.held.discard(name)

    def restart(self, name: str, *, env: dict[str, str] | None = None, wait: bool = True) -> None:
        self.handle(name)
        self.calls.append(("restart", name, env))
        self.held.discard(name)

    def set_env(self, name: str, env: Mapping[str, str | None]) -> dict[str, str | None]:
        self.handle(name)
        self.calls.append(("set_env", name, dict(env)))
        return merge_env(self.spec_env.setdefault(name, {}), env)

    def wait_exit(self, name: str, timeout_s: float) -> int | None:
        return self.exits.get(name)

    def exit_status(self, name: str) -> int | None:
        return self.exits.get(name)
