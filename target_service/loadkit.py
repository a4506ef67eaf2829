"""What every faultdrill locustfile shares: the load shape, load clients, and the request-event lines.

Two locustfiles use it: ``target_service/locustfile.py`` (the bundled target's own request) and
``experiments/observe/protocol_locustfile.py`` (``load.protocol``: OIP v2, OpenAI, KServe V1, plain
HTTP against any server). Both must write the same line per request and follow the same
``FAULTDRILL_LOAD_*`` settings, and the bundled one may import nothing of the framework (the target
stays deployable, and load-testable, alone), so the shared part lives here, next to it, importing
only Locust and gevent. A locustfile calls ``events.init.add_listener(on_init)`` and names
:class:`FaultdrillShape` in its namespace (Locust takes the shape class it finds there).

One line per request (``FAULTDRILL_LOAD_EVENTS``; ``t`` is the wall time the request was sent)::

    {"t": 1718000000.123, "ok": true, "status": 200, "latency_s": 0.0021,
     "name": "/v2/models/digits/infer", "error": null}

plus ``version`` (canary rollouts), ``client`` (load clients), and ``ttft_s``/``itl_s`` for
streamed answers, each only when there is one.

**Open-model load** (``FAULTDRILL_LOAD_RATE_PER_USER``, requests per second per Locust user): a user stops being a
closed-loop client and becomes an arrival process (:class:`Pacer`) — each request is sent at its scheduled time
in a greenlet of its own, whatever the earlier ones are waiting for, and its ``t`` and latency count from that
scheduled time, not from when it could be sent. A stalled server then shows its real tail (every request of the
stall waits, and later ones queue behind) instead of fewer requests — no coordinated omission, as wrk2 and
Gatling's open injection do. In-flight requests are capped (``FAULTDRILL_LOAD_MAX_IN_FLIGHT`` per user, 256);
an arrival over the cap is a failed request (``NotSent``), never a silently skipped one.
"""

from __future__ import annotations

import atexit
import itertools
import json
import math
import os
import random
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import gevent
import gevent.pool
from locust import LoadTestShape
from locust.env import Environment
from locust.runners import MasterRunner

__all__ = ["STREAM_TIMINGS", "EventWriter", "FaultdrillShape", "NotSent", "Pacer", "ShapeSettings", "client_cycle",
           "on_init", "users_at"]  # fmt: skip

_FLUSH_INTERVAL_S = 0.05  # the brief allows 100 ms; half keeps the watcher's lag low
_ERROR_CHARS = 200
STREAM_TIMINGS = ("ttft_s", "itl_s")
"""Request ``context`` keys copied onto the line: a streamed answer's time to first token and mean
inter-token latency (seconds)."""


class NotSent(Exception):
    """An open-model arrival not sent: the user already had its cap of requests in flight."""


class Pacer:
    """One user's open-model arrivals: ``rate`` per second, evenly spaced from a random phase; see the docstring.

    ``send(intended_wall_time)`` runs in its own greenlet per arrival; it must time the request from that moment.
    ``refuse(intended_wall_time, in_flight)`` reports an arrival over ``max_in_flight``.
    """

    def __init__(self, rate: float, max_in_flight: int = 256) -> None:
        if rate <= 0 or max_in_flight < 1:
            raise ValueError("a pacer needs rate > 0 and max_in_flight >= 1")
        self.interval_s, self.max_in_flight = 1.0 / rate, max_in_flight
        self.group = gevent.pool.Group()

    @staticmethod
    def connections(closed: int = 10) -> int:
        """A user's connection pool: one per request in flight under open-model load, else ``closed``."""
        pacer = Pacer.from_env()
        return pacer.max_in_flight if pacer is not None else closed

    @classmethod
    def from_env(cls) -> Pacer | None:
        """A new pacer (its own greenlet group) as ``FAULTDRILL_LOAD_RATE_PER_USER`` asks, or None (closed loop)."""
        rate = float(os.environ.get("FAULTDRILL_LOAD_RATE_PER_USER", "0") or 0)
        cap = int(os.environ.get("FAULTDRILL_LOAD_MAX_IN_FLIGHT", "256"))
        return cls(rate, cap) if rate > 0 else None

    def run(self, send: Any, refuse: Any, phase: float | None = None) -> None:
        """Send forever on schedule (Locust kills the user's greenlet at stop; ``stop`` kills the requests)."""
        next_at = time.monotonic() + (random.random() if phase is None else phase) * self.interval_s
        offset = time.time() - time.monotonic()  # wall time of each scheduled moment, for the line's ``t``
        while True:
            gevent.sleep(max(0.0, next_at - time.monotonic()))
            intended = next_at + offset
            if len(self.group) >= self.max_in_flight:
                refuse(intended, len(self.group))
            else:
                self.group.spawn(send, intended)
            next_at += self.interval_s

    def stop(self) -> None:
        self.group.kill(block=False)


@dataclass(frozen=True)
class ShapeSettings:
    """The load shape, read once from ``FAULTDRILL_LOAD_*`` environment variables."""

    kind: str = "steady"
    ramp_s: float = 10.0
    step_users: int = 1
    step_s: float = 5.0
    spike_users: int | None = None
    spike_at_s: float = 5.0
    spike_s: float = 5.0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> ShapeSettings:
        env = dict(os.environ) if env is None else env
        kind = env.get("FAULTDRILL_LOAD_SHAPE", "steady").strip().lower() or "steady"
        if kind not in ("steady", "ramp", "step", "spike"):
            raise ValueError(f"FAULTDRILL_LOAD_SHAPE: unknown shape {kind!r} (expected steady|ramp|step|spike)")
        spike = env.get("FAULTDRILL_LOAD_SPIKE_USERS")
        return cls(
            kind=kind,
            ramp_s=float(env.get("FAULTDRILL_LOAD_RAMP_S", cls.ramp_s)),
            step_users=int(env.get("FAULTDRILL_LOAD_STEP_USERS", cls.step_users)),
            step_s=float(env.get("FAULTDRILL_LOAD_STEP_S", cls.step_s)),
            spike_users=int(spike) if spike else None,
            spike_at_s=float(env.get("FAULTDRILL_LOAD_SPIKE_AT_S", cls.spike_at_s)),
            spike_s=float(env.get("FAULTDRILL_LOAD_SPIKE_S", cls.spike_s)),
        )


def users_at(shape: ShapeSettings, t: float, users: int, spawn_rate: float) -> tuple[int, float]:
    """(user count, spawn rate) the shape asks for ``t`` seconds into the test."""
    if shape.kind == "ramp":
        # Locust's shape worker blocks until a ramp-up finishes, so a smooth ramp is many
        # small, fast steps (one per 1 s tick) rather than one slow spawn.
        frac = 1.0 if shape.ramp_s <= 0 else min(1.0, t / shape.ramp_s)
        return max(1, math.ceil(users * frac)), max(spawn_rate, float(users))
    if shape.kind == "step":
        count = shape.step_users * (1 + int(t // shape.step_s)) if shape.step_s > 0 else users
        return max(1, min(users, count)), max(spawn_rate, float(shape.step_users))
    if shape.kind == "spike":
        peak = shape.spike_users if shape.spike_users is not None else 4 * users
        if shape.spike_at_s <= t < shape.spike_at_s + shape.spike_s:
            return peak, max(spawn_rate, float(peak))  # a spike arrives at once
        return users, max(spawn_rate, float(peak))
    return users, spawn_rate


def _served_version(response: Any) -> str | None:
    """``X-Faultdrill-Version`` of an answer (set by faultdrill's endpoint during a canary rollout)."""
    try:
        value = response.headers.get("x-faultdrill-version") if response is not None else None
    except (AttributeError, TypeError):
        return None
    return str(value)[:64] if value else None


class EventWriter:
    """One JSON line per request into a buffered file, flushed by a greenlet and at exit."""

    def __init__(self, path: str) -> None:
        self._file: IO[str] | None = open(path, "a", buffering=1 << 16, encoding="utf-8")  # noqa: SIM115
        self._flusher = gevent.spawn(self._flush_loop)
        atexit.register(self.close)  # also on paths where Locust's quit event never fires

    def on_request(self, request_type: str, name: str, response_time: float, response_length: int,
                   response: Any = None, exception: BaseException | None = None,
                   start_time: float | None = None, **kwargs: Any) -> None:  # fmt: skip
        if self._file is None:
            return
        status = getattr(response, "status_code", None)
        latency_s = (response_time or 0.0) / 1000.0
        row = {
            "t": start_time if start_time is not None else time.time() - latency_s,
            "ok": exception is None,
            "status": int(status) if status is not None else 0,
            "latency_s": round(latency_s, 6),
            "name": name,
            "error": None if exception is None else f"{type(exception).__name__}: {exception}"[:_ERROR_CHARS],
        }
        if version := _served_version(response):  # a canary rollout's endpoint names the version served
            row["version"] = version
        context = kwargs.get("context") or {}
        if (client := context.get("client")) is not None:
            row["client"] = client  # only with load clients: the line format is otherwise unchanged
        for key in STREAM_TIMINGS:  # streamed answers (a protocol load): time to first token, inter-token
            value = context.get(key)
            if isinstance(value, float | int) and not isinstance(value, bool) and math.isfinite(value):
                row[key] = round(float(value), 6)
        self._file.write(json.dumps(row, separators=(",", ":")) + "\n")

    def _flush_loop(self) -> None:
        while self._file is not None:
            gevent.sleep(_FLUSH_INTERVAL_S)
            self.flush()

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self, **_: Any) -> None:
        file, self._file = self._file, None
        if file is not None:
            file.flush()
            file.close()


def on_init(environment: Environment, **_: Any) -> None:
    """Locust's ``init`` listener of every faultdrill locustfile: SIGTERM quits gracefully; request lines."""
    runner = environment.runner
    if runner is not None:
        # Headless with a shape, Locust installs its SIGTERM handler only after the shape ends,
        # so until then SIGTERM would kill it without final stats. Quit the runner instead:
        # Locust then shuts down as at the end of a run (final stats, --json-file, exit 0).
        # Where Locust installs its own handler later (workers, no shape), that one wins.
        gevent.signal_handler(signal.SIGTERM, lambda: gevent.spawn(runner.quit))
    path = os.environ.get("FAULTDRILL_LOAD_EVENTS")
    if path and not isinstance(environment.runner, MasterRunner):  # the master sends no requests
        writer = EventWriter(path)
        environment.events.request.add_listener(writer.on_request)
        environment.events.quit.add_listener(writer.close)


def client_cycle(raw: str | None) -> Iterator[str | None]:
    """Client ids by smooth weighted round robin (nginx's): weights 3:1 give a, a, b, a, a, a, b, a…"""
    clients = [(str(c["id"]), max(1, int(c.get("weight", 1)))) for c in json.loads(raw)] if raw else []
    if not clients:
        return itertools.repeat(None)

    def cycle() -> Iterator[str | None]:
        current = [0] * len(clients)
        total = sum(w for _, w in clients)
        while True:
            current = [c + w for c, (_, w) in zip(current, clients, strict=True)]
            best = max(range(len(clients)), key=current.__getitem__)
            current[best] -= total
            yield clients[best][0]

    return cycle()


class FaultdrillShape(LoadTestShape):
    """steady / ramp / step / spike from ``FAULTDRILL_LOAD_SHAPE``; stops at ``--run-time``."""

    use_common_options = True

    def __init__(self) -> None:
        super().__init__()
        self.settings = ShapeSettings.from_env()

    def tick(self) -> tuple[int, float] | None:
        options = self.runner.environment.parsed_options if self.runner is not None else None
        run_time = getattr(options, "run_time", None)
        t = self.get_run_time()
        if run_time and t >= run_time:
            return None
        users = int(getattr(options, "num_users", None) or 1)
        spawn_rate = float(getattr(options, "spawn_rate", None) or users)
        return users_at(self.settings, t, users, spawn_rate)
