"""Locust load for the bundled target: real digit rows POSTed to ``/v2/models/{model}/infer``.

Runs headless in its own process (gevent must never meet an orchestrator's threads)::

    python -m locust -f target_service/locustfile.py --headless -H http://127.0.0.1:8000 \\
        -u 8 -r 8 -t 30s --json-file out/stats

Every request is also written as one compact JSON line to the file named by
``FAULTDRILL_LOAD_EVENTS`` (one file per Locust process; buffered, flushed every 50 ms and
at exit), so a watcher can put each request's time and outcome on a run's timeline::

    {"t": 1718000000.123, "ok": true, "status": 200, "latency_s": 0.0021,
     "name": "/v2/models/digits/infer", "error": null}

``t`` is the wall time (``time.time()``) when the request was sent.

Environment (all optional):

==============================  ==========================================================
``FAULTDRILL_LOAD_EVENTS``      per-process request-event file (unset: none written)
``FAULTDRILL_LOAD_MODEL``       model name in the path (default ``digits``)
``FAULTDRILL_LOAD_TIMEOUT_S``   connect and read timeout per request (default 10)
``FAULTDRILL_LOAD_WAIT_S``      think time between a user's requests (default 0: closed loop)
``FAULTDRILL_LOAD_SHAPE``       ``steady`` (default), ``ramp``, ``step`` or ``spike``
``FAULTDRILL_LOAD_RAMP_S``      ramp: seconds from 1 user to ``--users`` (default 10)
``FAULTDRILL_LOAD_STEP_USERS``  step: users added per step (default 1)
``FAULTDRILL_LOAD_STEP_S``      step: seconds per step (default 5)
``FAULTDRILL_LOAD_SPIKE_USERS`` spike: users during the spike (default 4 × ``--users``)
``FAULTDRILL_LOAD_SPIKE_AT_S``  spike: when it starts (default 5)
``FAULTDRILL_LOAD_SPIKE_S``     spike: how long it lasts (default 5)
``FAULTDRILL_LOAD_CLIENTS``     clients the users act for, JSON ``[{"id": "tenant-a", "weight": 1}]``:
                                each user sends ``X-Client-Id`` of one, assigned by weight
                                (smooth weighted round robin); its events carry ``"client"``
==============================  ==========================================================

The shape reads ``--users``, ``--spawn-rate`` and ``--run-time`` (Locust's common options)
and stops the test when the run time is over. This module imports nothing from faultdrill's
framework packages: the target stays deployable, and load-testable, alone.
"""

from __future__ import annotations

import atexit
import functools
import itertools
import json
import math
import os
import random
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import gevent
from locust import FastHttpUser, LoadTestShape, events, task
from locust.env import Environment
from locust.runners import MasterRunner

__all__ = ["FaultdrillShape", "InferUser", "ShapeSettings", "client_cycle", "users_at"]

_PAYLOAD_ROWS = 256
_FLUSH_INTERVAL_S = 0.05  # the brief allows 100 ms; half keeps the watcher's lag low
_ERROR_CHARS = 200


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


@functools.cache
def _bodies(model_rows: int) -> tuple[str, ...]:
    """Pre-serialised OIP v2 request bodies of real digit rows (JSON encoding off the hot path)."""
    from target_service.models import example_inputs  # loaded by path, its grandparent on PYTHONPATH; torch: ~2 s

    rows = example_inputs(model_rows)
    inputs = ({"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [round(float(v), 6) for v in row]}
              for row in rows)  # fmt: skip
    return tuple(json.dumps({"inputs": [one]}) for one in inputs)


def _served_version(response: Any) -> str | None:
    """``X-Faultdrill-Version`` of an answer (set by faultdrill's endpoint during a canary rollout)."""
    try:
        value = response.headers.get("x-faultdrill-version") if response is not None else None
    except (AttributeError, TypeError):
        return None
    return str(value)[:64] if value else None


class _EventWriter:
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
        if (client := (kwargs.get("context") or {}).get("client")) is not None:
            row["client"] = client  # only with load clients: the line format is otherwise unchanged
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


@events.init.add_listener
def _on_init(environment: Environment, **_: Any) -> None:
    runner = environment.runner
    if runner is not None:
        # Headless with a shape, Locust installs its SIGTERM handler only after the shape ends,
        # so until then SIGTERM would kill it without final stats. Quit the runner instead:
        # Locust then shuts down as at the end of a run (final stats, --json-file, exit 0).
        # Where Locust installs its own handler later (workers, no shape), that one wins.
        gevent.signal_handler(signal.SIGTERM, lambda: gevent.spawn(runner.quit))
    path = os.environ.get("FAULTDRILL_LOAD_EVENTS")
    if path and not isinstance(environment.runner, MasterRunner):  # the master sends no requests
        writer = _EventWriter(path)
        environment.events.request.add_listener(writer.on_request)
        environment.events.quit.add_listener(writer.close)


# Load the payloads (and torch, ~2 s) while Locust imports this file: a worker connects to its
# master only afterwards, so the master's run-time clock never runs while a worker is still
# loading. The master only coordinates and skips it (it would load lazily if ever needed).
if "--master" not in sys.argv:
    _bodies(_PAYLOAD_ROWS)


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


_CLIENTS = client_cycle(os.environ.get("FAULTDRILL_LOAD_CLIENTS"))


class InferUser(FastHttpUser):
    """A client of the target: one inference request after another (optional think time)."""

    network_timeout = float(os.environ.get("FAULTDRILL_LOAD_TIMEOUT_S", "10"))
    connection_timeout = network_timeout
    _think_s = float(os.environ.get("FAULTDRILL_LOAD_WAIT_S", "0"))
    _path = f"/v2/models/{os.environ.get('FAULTDRILL_LOAD_MODEL', 'digits')}/infer"

    def wait_time(self) -> float:
        return self._think_s

    def on_start(self) -> None:
        self._next = random.randrange(_PAYLOAD_ROWS)  # users start at different rows
        self._client = next(_CLIENTS)
        self._headers = {"Content-Type": "application/json"}
        if self._client is not None:
            self._headers["X-Client-Id"] = self._client

    @task
    def infer(self) -> None:
        bodies = _bodies(_PAYLOAD_ROWS)
        body = bodies[self._next % len(bodies)]
        self._next += 1
        self.client.post(self._path, data=body, headers=self._headers, name=self._path,
                         context={"client": self._client})  # fmt: skip


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
