"""What every faultdrill locustfile shares: the load shape, load clients, and the request-event lines.

Two locustfiles use it: ``target_service/locustfile.py`` (the bundled target's own request) and
``experiments/observe/protocol_locustfile.py`` (``load.protocol``: OIP v2, OpenAI, KServe V1, plain
HTTP against any server). Both must write the same line per request and follow the same
``FAULTDRILL_LOAD_*`` settings, and the bundled one may import nothing of the framework (the target
stays deployable, and load-testable, alone), so the shared part lives here, next to it, importing
only Locust, gevent and ``hdrhistogram``. A locustfile calls ``events.init.add_listener(on_init)`` and names
:class:`FaultdrillShape` in its namespace (Locust takes the shape class it finds there).

Requests are **aggregated where they are sent** (``FAULTDRILL_LOAD_EVENTS``): one JSON line per 100 ms of send
time (``t``, wall time, the bucket's start) and key — endpoint, ``client`` (load clients), ``version`` (canary
rollouts) and ``replica`` (the endpoint's ``X-Faultdrill-Replica``), each only when there is one — written once
those 100 ms are over::

    {"t": 1718000000.1, "span_s": 0.1, "name": "/v2/models/digits/infer", "count": 812, "ok": 809, "lost": 2,
     "wrong": 1, "statuses": {"200": 811, "0": 2}, "latency": "HISTFAAAAC…", "replica": "replica-0",
     "errors": {"ConnectionRefusedError: …": 2}, "samples": [{"t": 1718000000.1003, "ok": true, …}, …]}

``lost`` counts the failures never answered (status 0, a connection error); ``wrong`` those answered wrongly
(:class:`WrongAnswer`, whatever their status: a malformed, non-finite or mis-shaped output, or a failed known
answer). ``latency`` is an HDR histogram (``hdrhistogram``, µs, 1 µs – 1 h, 2 significant digits, its standard
encoding) of the ok requests' latency; ``ttft``/``itl`` the same for streamed answers' time to first token and
mean inter-token latency. ``samples`` keeps up to 3 failures raw per line, and the first ok request of each
second; ``errors`` counts up to 3 distinct messages (the rest as ``(further errors)``). Answers that come
after their line was written make another line for the same 100 ms: readers add them up. A line weighs
~0.3–0.7 kB whatever the rate (``benchmarks/journal_bench.py``), so a run's journal grows with its duration, not
with its request count (``experiments.journal.traffic`` reads it).

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
import functools
import itertools
import json
import math
import os
import random
import re
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import gevent
import gevent.pool
from hdrh.histogram import HdrHistogram
from locust import LoadTestShape
from locust.env import Environment
from locust.runners import MasterRunner

__all__ = [
    "BUCKET_S",
    "STREAM_TIMINGS",
    "EventWriter",
    "FaultdrillShape",
    "NotSent",
    "Pacer",
    "RateSchedule",
    "RateStage",
    "ShapeSettings",
    "WrongAnswer",
    "aggregate_file",
    "client_cycle",
    "on_init",
    "users_at",
]  # fmt: skip

_FLUSH_INTERVAL_S = 0.05  # a bucket is written at most 50 ms after its 100 ms are over
_ERROR_CHARS = 200
_KEPT = 3  # per line: failures kept raw, distinct error messages counted (a further one is counted, not named)
BUCKET_S = 0.1
"""Seconds of send time one line aggregates."""
HDR_MAX_US, HDR_DIGITS = 3_600_000_000, 2  # as experiments.journal.traffic reads them: 1 µs – 1 h, 2 digits
# A refused/reset connection: Locust's status 0, or these in the error (experiments.journal.traffic.is_lost).
_CONNECTION = re.compile(r"connect|connection|disconnect|reset by peer|broken pipe", re.IGNORECASE)
STREAM_TIMINGS = ("ttft_s", "itl_s")
"""Request ``context`` keys copied onto the line: a streamed answer's time to first token and mean
inter-token latency (seconds)."""


class WrongAnswer(Exception):
    """An answer that came (any status) but is wrong: malformed, of another shape, non-finite, or failing a known
    answer (``target_service/answers.py``). Its requests are failures, and counted as ``wrong`` on their line."""


class NotSent(Exception):
    """An open-model arrival not sent: the user already had its cap of requests in flight."""


@dataclass(frozen=True)
class RateStage:
    """One stage of a :class:`RateSchedule` (rates per second of one user): from ``at_s`` the rate goes to
    ``rate`` — linearly from the base rate over ``ramp_s``, at once when it is 0 — holds it ``hold_s``, then is
    the base rate again."""

    at_s: float
    ramp_s: float
    hold_s: float
    rate: float

    @property
    def end_s(self) -> float:
        return self.at_s + self.ramp_s + self.hold_s


@dataclass(frozen=True)
class RateSchedule:
    """One user's open-model rate over time: ``base`` outside the stages, the stages' offsets counted from ``t0``
    (wall time; None: not started, ``base`` throughout). Stages are in time order and do not overlap."""

    base: float
    t0: float | None = None
    stages: tuple[RateStage, ...] = ()

    @functools.cached_property
    def _edges(self) -> tuple[float, ...]:
        """Wall times where the rate changes course (computed once: ``next_after`` runs for every arrival)."""
        if self.t0 is None:
            return ()
        return tuple(sorted(self.t0 + e for st in self.stages for e in (st.at_s, st.at_s + st.ramp_s, st.end_s)))

    def rate_at(self, wall: float) -> float:
        """Arrivals per second asked at wall time ``wall``."""
        if self.t0 is None:
            return self.base
        rel = wall - self.t0
        for st in self.stages:
            if rel < st.at_s:
                break
            if rel < st.at_s + st.ramp_s:
                return self.base + (st.rate - self.base) * (rel - st.at_s) / st.ramp_s
            if rel < st.end_s:
                return st.rate
        return self.base

    def next_after(self, wall: float) -> float:
        """When the arrival after one at ``wall`` is due: one arrival's worth of the rate asked from then on — an
        interval that crosses a stage's edge is finished at the new rate, so a spike starts on time whatever the
        base rate's interval (within a ramp the rate is taken at the interval's start)."""
        t, need = wall, 1.0
        for edge in (e for e in self._edges if e > wall):
            rate = self.rate_at(t)
            if t + need / rate <= edge:
                break
            need -= (edge - t) * rate
            t = edge
        return t + need / self.rate_at(t)

    @classmethod
    def read(cls, path: str, base: float) -> RateSchedule:
        """The schedule in ``path`` (written by the run at steady state: ``{"t0": WALL, "stages": [{"at_s", "ramp_s",
        "hold_s", "rate"}]}``, rates per user); just ``base`` while the file is absent or incomplete."""
        try:
            with open(path, encoding="utf-8") as f:
                raw = json.load(f)
            stages = tuple(RateStage(float(x["at_s"]), float(x["ramp_s"]), float(x["hold_s"]), float(x["rate"]))
                           for x in raw.get("stages", ()))  # fmt: skip
            if any(st.rate <= 0 or st.ramp_s < 0 or st.hold_s < 0 for st in stages):
                raise ValueError("a stage needs rate > 0, ramp_s >= 0, hold_s >= 0")
            return cls(base, float(raw["t0"]), stages)
        except FileNotFoundError:
            return cls(base)
        except (OSError, ValueError, KeyError, TypeError) as exc:  # a torn write: read again at the next poll
            print(f"faultdrill load: rate schedule {path} not read ({exc}); base rate kept", file=sys.stderr)
            return cls(base)


class Pacer:
    """One user's open-model arrivals: ``rate`` per second, evenly spaced from a random phase; see the docstring.

    With ``schedule_file`` (``FAULTDRILL_LOAD_RATE_SCHEDULE``) the rate follows a :class:`RateSchedule` the run writes
    there once steady state holds (spikes and ramps: ``load.rate_stages``), read again whenever the file changes.
    ``send(intended_wall_time)`` runs in its own greenlet per arrival; it must time the request from that moment.
    ``refuse(intended_wall_time, in_flight)`` reports an arrival over ``max_in_flight``.
    """

    POLL_S = 0.2
    """How often the schedule file is looked at (a stat) for a change."""

    def __init__(self, rate: float, max_in_flight: int = 256, schedule_file: str | None = None) -> None:
        if rate <= 0 or max_in_flight < 1:
            raise ValueError("a pacer needs rate > 0 and max_in_flight >= 1")
        self.interval_s, self.max_in_flight = 1.0 / rate, max_in_flight
        self.schedule, self.schedule_file = RateSchedule(rate), schedule_file
        self._seen: float | None = None  # the schedule file's mtime when last read
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
        return cls(rate, cap, os.environ.get("FAULTDRILL_LOAD_RATE_SCHEDULE") or None) if rate > 0 else None

    def poll(self) -> None:
        """Read the schedule file again if it changed since the last look."""
        if self.schedule_file is None:
            return
        try:
            mtime = os.stat(self.schedule_file).st_mtime_ns / 1e9
        except OSError:
            return
        if mtime != self._seen:
            self._seen = mtime
            self.schedule = RateSchedule.read(self.schedule_file, self.schedule.base)

    def run(self, send: Any, refuse: Any, phase: float | None = None) -> None:
        """Send forever on schedule (Locust kills the user's greenlet at stop; ``stop`` kills the requests)."""
        next_at = time.monotonic() + (random.random() if phase is None else phase) * self.interval_s
        offset = time.time() - time.monotonic()  # wall time of each scheduled moment, for the line's ``t``
        polled = 0.0
        while True:
            gevent.sleep(max(0.0, next_at - time.monotonic()))
            if next_at - polled >= self.POLL_S:
                polled = next_at
                self.poll()
            intended = next_at + offset
            if len(self.group) >= self.max_in_flight:
                refuse(intended, len(self.group))
            else:
                self.group.spawn(send, intended)
            next_at = self.schedule.next_after(intended) - offset

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


def _header(response: Any, name: str) -> str | None:
    """A header of an answer (``X-Faultdrill-Version`` during a canary rollout, ``X-Faultdrill-Replica``)."""
    try:
        value = response.headers.get(name) if response is not None else None
    except (AttributeError, TypeError):
        return None
    return str(value)[:64] if value else None


class _Bucket:
    """What one flush writes for one key: counts, statuses, latency histograms, errors, raw samples."""

    __slots__ = ("count", "errors", "hists", "lost", "ok", "samples", "statuses", "wrong")

    def __init__(self) -> None:
        self.count = self.ok = self.lost = self.wrong = 0
        self.statuses: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.hists: dict[str, HdrHistogram] = {}
        self.samples: list[dict[str, Any]] = []

    def record(self, key: str, seconds: float) -> None:
        hist = self.hists.get(key)
        if hist is None:
            hist = self.hists[key] = HdrHistogram(1, HDR_MAX_US, HDR_DIGITS)
        hist.record_value(min(HDR_MAX_US, max(1, round(seconds * 1e6))))

    def line(self, key: tuple[int, str, str | None, str | None, str | None]) -> dict[str, Any]:
        index, name, client, version, replica = key
        row: dict[str, Any] = {"t": round(index * BUCKET_S, 3), "span_s": BUCKET_S, "name": name, "count": self.count,
                               "ok": self.ok, "lost": self.lost, "wrong": self.wrong,
                               "statuses": self.statuses}  # fmt: skip
        for field, value in (("client", client), ("version", version), ("replica", replica)):
            if value is not None:
                row[field] = value
        for field, hist in self.hists.items():
            row[field] = hist.encode().decode("ascii")
        if self.errors:
            row["errors"] = self.errors
        if self.samples:
            row["samples"] = self.samples
        return row


class EventWriter:
    """Requests aggregated where they are sent: one JSON line per 100 ms of send time and key (endpoint, client,
    model version, replica), written by a greenlet once the 100 ms are over and at exit; see the docstring."""

    def __init__(self, path: str) -> None:
        self._file: IO[str] | None = open(path, "a", buffering=1 << 16, encoding="utf-8")  # noqa: SIM115
        self._buckets: dict[tuple[int, str, str | None, str | None, str | None], _Bucket] = {}
        self._sampled: dict[tuple[str, str | None, str | None, str | None], int] = {}  # key → second last sampled
        self._flusher = gevent.spawn(self._flush_loop)
        atexit.register(self.close)  # also on paths where Locust's quit event never fires

    def on_request(self, request_type: str, name: str, response_time: float, response_length: int,
                   response: Any = None, exception: BaseException | None = None,
                   start_time: float | None = None, **kwargs: Any) -> None:  # fmt: skip
        if self._file is None:
            return
        status = getattr(response, "status_code", None)
        latency_s = (response_time or 0.0) / 1000.0
        sent = start_time if start_time is not None else time.time() - latency_s
        context = kwargs.get("context") or {}
        client = context.get("client")
        key = (math.floor(sent / BUCKET_S), name, None if client is None else str(client),
               _header(response, "x-faultdrill-version"), _header(response, "x-faultdrill-replica"))  # fmt: skip
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket()
        code = str(int(status)) if status is not None else "0"
        bucket.count += 1
        bucket.statuses[code] = bucket.statuses.get(code, 0) + 1
        sample: dict[str, Any] = {"t": round(sent, 6), "ok": exception is None, "status": int(code),
                                  "latency_s": round(latency_s, 6)}  # fmt: skip
        for field in STREAM_TIMINGS:  # streamed answers (a protocol load): time to first token, inter-token
            value = context.get(field)
            if isinstance(value, float | int) and not isinstance(value, bool) and math.isfinite(value):
                sample[field] = round(float(value), 6)
        if exception is None:
            bucket.ok += 1
            bucket.record("latency", latency_s)
            for field in STREAM_TIMINGS:
                if field in sample:
                    bucket.record(field.removesuffix("_s"), sample[field])
            second = math.floor(sent)
            if self._sampled.get(key[1:]) != second:  # the first ok request of each second (per key), kept raw
                self._sampled[key[1:]] = second
                bucket.samples.append(sample)
            return
        error = f"{type(exception).__name__}: {exception}"[:_ERROR_CHARS]
        if code in ("503", "429") and _header(response, "retry-after") is None:  # a refusal that says not when
            error = f"{error[: _ERROR_CHARS - 17]} (no Retry-After)"  # to come back: told apart in the errors
        sample["error"] = error
        if type(exception).__name__ == "WrongAnswer":  # answered, wrongly (either locustfile's WrongAnswer)
            bucket.wrong += 1
        else:
            bucket.lost += code == "0" or bool(_CONNECTION.search(error))
        named = error if error in bucket.errors or len(bucket.errors) < _KEPT else "(further errors)"
        bucket.errors[named] = bucket.errors.get(named, 0) + 1
        if sum(not s["ok"] for s in bucket.samples) < _KEPT:
            bucket.samples.append(sample)

    def _flush_loop(self) -> None:
        while self._file is not None:
            gevent.sleep(_FLUSH_INTERVAL_S)
            self.flush()

    def flush(self, everything: bool = False) -> None:
        """Write the buckets whose 100 ms of send time are over (all of them at exit); late answers to a
        bucket already written make another line for the same 100 ms."""
        if self._file is None:
            return
        now = math.floor(time.time() / BUCKET_S)
        done = [k for k in self._buckets if everything or k[0] < now]
        for key in done:
            self._file.write(json.dumps(self._buckets.pop(key).line(key), separators=(",", ":")) + "\n")
        self._file.flush()

    def close(self, **_: Any) -> None:
        if self._file is not None:
            self.flush(everything=True)
        file, self._file = self._file, None
        if file is not None:
            file.close()


class _Answer:
    """What :func:`aggregate_file` hands :meth:`EventWriter.on_request` for a recorded answer."""

    def __init__(self, status: int, headers: dict[str, str]) -> None:
        self.status_code, self.headers = status, headers


def aggregate_file(src: str, dst: str) -> int:
    """Aggregate recorded requests — one JSON line each, as older faultdrill versions and other tools wrote them
    (``t``, ``ok``, ``status``, ``latency_s``, ``name``, ``error`` and optionally ``client``, ``version``,
    ``replica``, ``ttft_s``, ``itl_s``, ``retry_after``: null for a refusal sent without one) — into the buckets
    :class:`EventWriter` writes; returns the requests read.
    Tests and ``benchmarks/journal_bench.py`` drive the real aggregation with it."""
    if os.path.exists(dst):
        os.remove(dst)  # written anew (the writer appends, as a restarted Locust process must)
    writer, n = EventWriter(dst), 0
    with open(src, encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            error = None
            if not row["ok"]:  # "HTTPError: 503 …" → an HTTPError("503 …"), as the request raised it
                kind, _, message = str(row.get("error") or "Error: failed").partition(": ")
                error = type(kind, (Exception,), {})(message)
            headers = {f"x-faultdrill-{k}": str(row[k]) for k in ("version", "replica") if row.get(k) is not None}
            if row.get("retry_after", "not recorded") is not None:  # a recording that does not say: taken as sent
                headers["retry-after"] = str(row.get("retry_after", "not recorded"))
            context = {k: row[k] for k in ("client", *STREAM_TIMINGS) if row.get(k) is not None}
            writer.on_request("POST", row["name"], float(row["latency_s"]) * 1000.0, 0,
                              response=_Answer(int(row["status"]), headers), exception=error,
                              start_time=float(row["t"]), context=context)  # fmt: skip
            n += 1
    writer.close()
    return n


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
