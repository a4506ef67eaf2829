"""Kubernetes-style probes for local replicas: startup, readiness, liveness.

One thread per replica and probe kind samples ``GET url+path`` every ``period_s`` with
``timeout_s`` (success: a 2xx/3xx answer in time) — or, for an exec probe (``exec``), runs that
command with the service's env and working directory (success: exit status 0 within ``timeout_s``;
the timeline's ``status`` is the exit status). Replicas of a described service (``target.service``)
each have their own rendered set (``probes_for``: their ports and names are in the paths and argv).
As in Kubernetes:

* readiness and liveness do not run until the startup probe passed (if there is one);
  a new process (new pid) starts unready, with counters reset and ``initial_delay_s`` again;
* readiness turns true after ``success_threshold`` successes in a row and false after
  ``failure_threshold`` failures in a row — or at once when the process is gone;
* liveness (or startup) failing ``failure_threshold`` times in a row calls ``on_failed``
  (the platform kills and restarts the process); the counter then starts over.

Timeline: a ``probe`` event (attrs ``probe``, ``value`` = this sample, ``status``,
``latency_s``, ``pid``, ``samples`` = samples it stands for) on every change of a probe's
raw result and at least every ``event_interval_s`` (1 s) while it is steady — 10 Hz samples
for a long run would otherwise flood the journal. The *thresholded* readiness, the one that
routes traffic, is a ``process`` event ``ready``/``unready``.

Example::

    sampler = ProbeSampler(ProbeSet(), pid_of=platform.pid_if_running, on_ready=print)
    sampler.start(ObserverContext(timeline, topology=platform.topology))
    sampler.is_ready(platform.system.replicas()[0]); sampler.stop()
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import httpx

from faultdrill.experiments.observe.observers import ObserverContext

__all__ = ["ProbeConfig", "ProbeKind", "ProbeSampler", "ProbeSet", "probe_once", "wait_probe"]

ProbeKind = Literal["startup", "readiness", "liveness"]


@dataclass(frozen=True)
class ProbeConfig:
    """One probe (Kubernetes' period/timeout/thresholds; defaults scaled for CI: 10 Hz)."""

    path: str
    period_s: float = 0.1
    timeout_s: float = 1.0
    failure_threshold: int = 3
    success_threshold: int = 1
    initial_delay_s: float = 0.0
    url: str | None = None
    """An absolute URL to GET instead of the replica's URL + ``path`` (a probe on another of its ports)."""
    exec: tuple[str, ...] | None = None
    """An exec probe's argv (``path`` unused): exit status 0 is a success."""
    env: Mapping[str, str] | None = None
    """The exec probe's environment (the service's; None: faultdrill's own)."""
    cwd: str | None = None

    def __post_init__(self) -> None:
        if self.period_s <= 0 or self.timeout_s <= 0 or self.initial_delay_s < 0:
            raise ValueError("probe period_s and timeout_s must be > 0, initial_delay_s >= 0")
        if self.failure_threshold < 1 or self.success_threshold < 1:
            raise ValueError("probe thresholds must be >= 1")


@dataclass(frozen=True)
class ProbeSet:
    """The three probes of a replica of the bundled target (OIP v2 health routes)."""

    readiness: ProbeConfig = ProbeConfig("/v2/health/ready")
    liveness: ProbeConfig | None = ProbeConfig("/v2/health/live", failure_threshold=10)
    """1 s of failures: longer than a torch process takes to exit by itself once its port has
    closed (~0.5 s), or a crash (exit 1) would be misreported as a liveness kill (137). None: no liveness
    probe (a described service may have none)."""
    startup: ProbeConfig | None = ProbeConfig("/v2/health/live", failure_threshold=300)
    """Up to 30 s for the port to open (interpreter start); None: liveness runs at once."""
    event_interval_s: float = 1.0

    def of(self, kind: ProbeKind) -> ProbeConfig | None:
        return {"startup": self.startup, "readiness": self.readiness, "liveness": self.liveness}[kind]


def probe_once(cfg: ProbeConfig, base_url: str, client: httpx.Client) -> tuple[bool, int | None]:
    """One sample: (success, HTTP status or exit status; None when there was no answer in time)."""
    if cfg.exec is not None:
        try:
            done = subprocess.run(list(cfg.exec), env=dict(cfg.env) if cfg.env is not None else None, cwd=cfg.cwd,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  timeout=cfg.timeout_s, check=False)  # fmt: skip  # a timeout kills it
        except (subprocess.TimeoutExpired, OSError):
            return False, None
        return done.returncode == 0, done.returncode
    try:
        status = client.get(cfg.url or base_url + cfg.path, timeout=cfg.timeout_s).status_code
    except httpx.HTTPError:
        return False, None
    return 200 <= status < 400, status


def wait_probe(cfg: ProbeConfig, base_url: str, timeout_s: float, alive: Callable[[], bool]) -> bool:
    """Sample ``cfg`` until it succeeds (True), ``alive()`` turns false or ``timeout_s`` passes (False)."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=cfg.timeout_s) as client:
        while time.monotonic() < deadline and alive():
            if probe_once(cfg, base_url, client)[0]:
                return True
            time.sleep(min(cfg.period_s, 0.1))
    return False


@dataclass
class _Replica:
    url: str
    started_pid: int | None = None
    """The pid whose startup probe passed (readiness/liveness run only for it)."""
    ready: bool = False
    ready_pid: int | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class ProbeSampler:
    """Probe every replica of ``ctx.topology()`` (role ``replica``) until stopped.

    ``pid_of(name)`` is the pid of the running process, or None while none runs.
    """

    def __init__(
        self, probes: ProbeSet | None = None, *, pid_of: Callable[[str], int | None],
        on_ready: Callable[[str, bool], None] | None = None,
        on_failed: Callable[[str, ProbeKind, int], None] | None = None,
        replicas: Sequence[str] | None = None,
    ) -> None:  # fmt: skip
        self.name = "probes"
        self.probes = probes or ProbeSet()
        self.probes_for: dict[str, ProbeSet] = {}
        """A replica's own probes (rendered for it), instead of ``probes``; set before ``start``."""
        self._pid_of = pid_of
        self._on_ready = on_ready
        self._on_failed = on_failed
        self._only = set(replicas) if replicas is not None else None
        self._replicas: dict[str, _Replica] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self, ctx: ObserverContext) -> None:
        self._stop.clear()
        for handle in ctx.topology().by_role("replica"):
            if handle.url is None or (self._only is not None and handle.name not in self._only):
                continue
            self._replicas[handle.name] = _Replica(handle.url)
            kinds: tuple[ProbeKind, ...] = ("startup", "readiness", "liveness")
            for kind in kinds:
                if self._probes(handle.name).of(kind) is None:
                    continue
                t = threading.Thread(target=self._run, args=(ctx, handle.name, kind), daemon=True,
                                     name=f"probe-{handle.name}-{kind}")  # fmt: skip
                t.start()
                self._threads.append(t)

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self._threads.clear()

    def _probes(self, name: str) -> ProbeSet:
        return self.probes_for.get(name, self.probes)

    def is_ready(self, name: str) -> bool:
        rep = self._replicas.get(name)
        return rep is not None and rep.ready

    def ready_replicas(self) -> list[str]:
        return sorted(n for n, r in self._replicas.items() if r.ready)

    # -- one probe of one replica ------------------------------------------------------
    def _set_ready(self, ctx: ObserverContext, name: str, value: bool, pid: int | None) -> None:
        rep = self._replicas[name]
        with rep.lock:
            if rep.ready == value:
                return
            rep.ready, rep.ready_pid = value, pid
            ctx.timeline.add("process", name, event="ready" if value else "unready", pid=pid)
        if self._on_ready is not None:
            self._on_ready(name, value)

    def _run(self, ctx: ObserverContext, name: str, kind: ProbeKind) -> None:
        probes = self._probes(name)
        cfg = probes.of(kind)
        assert cfg is not None
        rep = self._replicas[name]
        pid_seen: int | None = None
        successes = failures = samples = 0
        born = 0.0
        last_value: bool | None = None
        last_emit = -1e9
        deadline = time.monotonic() + ctx.max_runtime_s
        next_at = time.monotonic()
        with httpx.Client(timeout=cfg.timeout_s) as client:
            for _ in range(int(ctx.max_runtime_s / cfg.period_s) + 1):
                next_at = max(next_at + cfg.period_s, time.monotonic())
                if self._stop.wait(max(0.0, next_at - time.monotonic())) or time.monotonic() > deadline:
                    return
                pid = self._pid_of(name)
                if pid != pid_seen:  # a new process (or none): Kubernetes starts a container unready
                    pid_seen, born, successes, failures, last_value = pid, time.monotonic(), 0, 0, None
                    if kind == "readiness" and rep.ready:
                        self._set_ready(ctx, name, False, rep.ready_pid)
                if pid is None or time.monotonic() - born < cfg.initial_delay_s:
                    continue
                gated = probes.startup is not None and rep.started_pid != pid
                if (kind == "startup") != gated:  # startup runs until it passed; the others after
                    continue
                t0 = time.monotonic()
                ok, status = probe_once(cfg, rep.url, client)
                latency = time.monotonic() - t0
                if self._pid_of(name) != pid:  # it died meanwhile: not a verdict on this process
                    continue
                samples += 1
                if ok != last_value or time.monotonic() - last_emit >= probes.event_interval_s:
                    ctx.timeline.add("probe", name, probe=kind, value=ok, status=status,
                                     latency_s=round(latency, 6), pid=pid, samples=samples)  # fmt: skip
                    last_value, last_emit, samples = ok, time.monotonic(), 0
                successes, failures = (successes + 1, 0) if ok else (0, failures + 1)
                if kind == "readiness":
                    if successes >= cfg.success_threshold:
                        self._set_ready(ctx, name, True, pid)
                    elif failures >= cfg.failure_threshold:
                        self._set_ready(ctx, name, False, pid)
                elif kind == "startup" and successes >= cfg.success_threshold:
                    rep.started_pid = pid
                elif failures >= cfg.failure_threshold:
                    failures = 0
                    if self._on_failed is not None:
                        self._on_failed(name, kind, pid)
