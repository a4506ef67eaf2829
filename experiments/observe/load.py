"""Load from Locust, in its own processes, with every request's outcome on the timeline.

Locust (gevent) runs headless as a subprocess — one process, or a ``--master`` plus N
``--worker`` processes on loopback — so gevent never meets the orchestrator's threads. Each
process that sends requests writes its requests aggregated per 100 ms (``target_service/loadkit.py``);
a thread here tails those files into ``requests`` events on the timeline (send time made
run-relative; :func:`event_of_line`). Final totals come from Locust's ``--json-file`` (exact; its CSV undercounts).
With an ``owner`` (``faults.owned.Owner``) each Locust process is a ledger record until ``stop``
reaped it, so a killed run's load is stopped by the dead-man watchdog or ``rollback --pending``.

With a ``protocol`` (``load.protocol``: ``experiments.spec.load``) Locust runs
``experiments/observe/protocol_locustfile.py`` instead: the protocol's payload file is read and
checked here, when the generator is built (a located ``ConfigError``, before any process starts),
and written to ``load-protocol.json`` for the Locust processes; wrong answers are failed requests,
and streamed ones carry ``ttft_s`` and ``itl_s``.

Example::

    tl = Timeline()
    load = LoadGenerator("http://127.0.0.1:8000", tl, workdir, users=8, run_time="30s",
                         shape=LoadShape(kind="spike", spike_users=32, spike_at="10s"))
    with load:                       # start(); stop() on exit, whatever happens
        load.wait(timeout_s=60)
    print(load.summary().requests, sum(request_counts(e)[0] for e in tl.select("requests", source="load")))
"""

from __future__ import annotations

import bisect
import contextlib
import importlib.util
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from faultdrill.experiments.host.process import free_port
from faultdrill.experiments.journal.timeline import Event, Timeline
from faultdrill.experiments.observe.protocols import Runtime, prepare
from faultdrill.experiments.spec.load import LoadProtocol
from faultdrill.experiments.timespec import Duration, parse_duration
from faultdrill.faults.base import Injection
from faultdrill.faults.errors import ConfigError, LedgerError
from faultdrill.faults.owned import Owner, die_with_parent
from faultdrill.target_service.answers import KnownAnswerError
from faultdrill.target_service.answers import read as read_known_answers

if TYPE_CHECKING:
    from faultdrill.experiments.spec.experiment import LoadSpec

__all__ = ["LoadGenerator", "LoadShape", "LoadSummary", "event_of_line", "locustfile_path", "protocol_locustfile_path",
           "request_counts"]

_POLL_S = 0.05
_STARTUP_S = 90  # torch import + workers connecting, on a busy 2-core machine


class LoadShape(BaseModel):
    """How the user count changes over time (the locustfile's ``FAULTDRILL_LOAD_*`` settings).

    ``steady``: ``users`` all run; ``ramp``: 1 → ``users`` over ``ramp``; ``step``: +``step_users``
    every ``step``; ``spike``: ``users``, then ``spike_users`` from ``spike_at`` for ``spike_for``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["steady", "ramp", "step", "spike"] = "steady"
    ramp: Duration = Duration(10.0)
    step_users: int = Field(default=1, ge=1)
    step: Duration = Duration(5.0)
    spike_users: int | None = Field(default=None, ge=1)
    spike_at: Duration = Duration(5.0)
    spike_for: Duration = Duration(5.0)

    def env(self) -> dict[str, str]:
        """The locustfile's ``FAULTDRILL_LOAD_*`` variables for this shape."""
        return {
            "FAULTDRILL_LOAD_SHAPE": self.kind, "FAULTDRILL_LOAD_RAMP_S": str(float(self.ramp)),
            "FAULTDRILL_LOAD_STEP_USERS": str(self.step_users), "FAULTDRILL_LOAD_STEP_S": str(float(self.step)),
            "FAULTDRILL_LOAD_SPIKE_AT_S": str(float(self.spike_at)),
            "FAULTDRILL_LOAD_SPIKE_S": str(float(self.spike_for)),
            "FAULTDRILL_LOAD_SPIKE_USERS": str(self.spike_users or ""),  # empty: 4 × users
        }  # fmt: skip


@dataclass(frozen=True)
class LoadSummary:
    """Totals of a run: exact from Locust's ``--json-file``, else counted from the timeline."""

    requests: int
    failures: int
    events: int  # requests this generator put on the timeline (counted in its ``requests`` buckets)
    exact: bool
    rps: float = 0.0
    p50_s: float | None = None
    p95_s: float | None = None
    max_s: float | None = None
    by_name: dict[str, int] = field(default_factory=dict)
    exit_codes: tuple[int | None, ...] = ()

    @classmethod
    def from_locust_json(cls, rows: list[dict[str, Any]], **extra: Any) -> LoadSummary:
        """Aggregate Locust's per-endpoint stats (``response_times``: {ms bucket: count})."""
        buckets = sorted((float(ms), int(n)) for r in rows for ms, n in r.get("response_times", {}).items())
        cum = list(itertools.accumulate(n for _, n in buckets))
        pct = {q: buckets[bisect.bisect_left(cum, q * cum[-1])][0] / 1000.0 if cum else None for q in (0.5, 0.95)}
        used = [r for r in rows if r.get("num_requests")]
        ends, starts = [float(r["last_request_timestamp"]) for r in used], [float(r["start_time"]) for r in used]
        span = max(ends) - min(starts) if used else 0.0
        requests = sum(int(r["num_requests"]) for r in rows)
        return cls(
            requests=requests, failures=sum(int(r["num_failures"]) for r in rows), exact=True,
            rps=requests / span if span > 0 else 0.0, p50_s=pct[0.5], p95_s=pct[0.95],
            max_s=max((float(r["max_response_time"] or 0) / 1000.0 for r in used), default=None),
            by_name={str(r["name"]): int(r["num_requests"]) for r in rows}, **extra,
        )  # fmt: skip


def locustfile_path() -> Path:
    """The bundled target's locustfile, found without importing the target (and torch)."""
    spec = importlib.util.find_spec("faultdrill.target_service")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("package faultdrill.target_service not found")
    return Path(spec.origin).parent / "locustfile.py"


def protocol_locustfile_path() -> Path:
    """The locustfile of ``load.protocol`` (``experiments/observe/protocol_locustfile.py``)."""
    return Path(__file__).with_name("protocol_locustfile.py")


def _kill_groups(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGKILL each process's session (it was started as a group leader) and reap it."""
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)


class _Tail:
    """Reads complete new lines from the per-process event files; keeps partial lines."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths, self._offsets, self._partial = paths, dict.fromkeys(paths, 0), dict.fromkeys(paths, b"")

    def read(self) -> list[bytes]:
        lines: list[bytes] = []
        for path in self.paths:
            if not path.exists():
                continue  # its process has not opened it yet (files are never removed mid-run)
            with path.open("rb") as f:
                f.seek(self._offsets[path])
                chunk = f.read()
            self._offsets[path] += len(chunk)
            *complete, self._partial[path] = (self._partial[path] + chunk).split(b"\n")
            lines.extend(line for line in complete if line)
        return lines


class LoadGenerator:
    """Locust against ``host_url`` for at most ``run_time``; requests go to ``timeline``.

    ``workers=0``: one Locust process; ``workers=N``: a master and N workers on 127.0.0.1.
    ``rate`` (requests per second, all users together): open-model load — each user an arrival process at
    ``rate / users`` (``target_service/loadkit.py``'s ``Pacer``), every request timed from its scheduled moment.
    ``stop()`` asks Locust to finish (SIGTERM: it writes final stats), then kills what is left.
    """

    label = "the load generator"  # how log lines name it (experiments.platforms.base.Load)

    def __init__(
        self, host_url: str, timeline: Timeline, workdir: Path, *, users: int = 8,
        spawn_rate: float | None = None, shape: LoadShape | None = None, workers: int = 0,
        run_time: float | str = 60.0, model: str = "digits", think_time_s: float = 0.0,
        request_timeout_s: float = 10.0, source: str = "load", stop_grace_s: float = 15.0,
        clients: Sequence[tuple[str, int]] = (), owner: Owner | None = None,
        protocol: LoadProtocol | None = None, base_dir: Path | None = None, rate: float | None = None,
        known_answers: Path | None = None, entities: int = 1,
    ) -> None:  # fmt: skip
        if users < 1 or workers < 0:
            raise ValueError(f"need users >= 1 and workers >= 0, got users={users} workers={workers}")
        self.host_url, self.timeline, self.workdir = host_url.rstrip("/"), timeline, Path(workdir).absolute()
        self.users, self.spawn_rate = users, float(spawn_rate or users)
        self.shape, self.workers, self.model = shape or LoadShape(), workers, model
        # Locust's run time and shape ticks have 1 s resolution: round up, never cut short.
        self.run_time_s = max(1, math.ceil(parse_duration(run_time)))
        self.think_time_s, self.request_timeout_s = think_time_s, request_timeout_s
        self.rate = rate
        """Open model: requests per second in all (None: closed-loop users)."""
        self.entities = entities
        """End users the bundled request is for, in turn (``parameters.entity_id``)."""
        self.source, self.stop_grace_s, self.stats_prefix = source, stop_grace_s, self.workdir / "locust-stats"
        self.clients = tuple(clients)  # (client id, weight): users send X-Client-Id, events carry ``client``
        # ``load.protocol``: its payload file read and checked now (ConfigError); None: the bundled target's request.
        self.protocol: Runtime | None = None if protocol is None else prepare(protocol, base_dir or Path.cwd())
        # The bundled request's known answers (the served model version's known_answers.json): checked now.
        self.known_answers = None if known_answers is None or self.protocol is not None else Path(known_answers)
        if self.known_answers is not None:
            try:
                read_known_answers(str(self.known_answers))
            except KnownAnswerError as exc:
                raise ConfigError(str(exc), field="known_answers") from None
        self.events = self.failed_events = self.malformed = 0  # request lines read: all, not ok, unparsable
        self._procs: list[subprocess.Popen[bytes]] = []
        self.owner = owner  # each Locust process a ledger record while it runs; None: not recorded
        self._records: list[Injection | None] = []
        self._tail, self._stop, self._deadline = _Tail([]), threading.Event(), 0.0
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # the tail thread and stop() both drain
        self._finalizer: weakref.finalize[[list[subprocess.Popen[bytes]]], LoadGenerator] | None = None

    @classmethod
    def of_spec(cls, host_url: str, timeline: Timeline, workdir: Path, load: LoadSpec, *, shape: LoadShape,
                run_time: float, model: str, owner: Owner | None = None, base_dir: Path | None = None,
                known_answers: Path | None = None) -> LoadGenerator:  # fmt: skip
        """The generator a spec's ``load`` section asks for (users, spawn rate, workers, think time, clients and
        ``protocol``; its payload files relative to ``base_dir``, the experiment's directory)."""
        if load.rate is not None and not isinstance(load.rate, float | int):
            raise ValueError(f"load.rate {load.rate} is a share of capacity: the run's capacity probe resolves it")
        return cls(host_url, timeline, workdir, users=load.users, spawn_rate=load.spawn_rate, shape=shape,
                   workers=load.workers, run_time=run_time, model=model, think_time_s=float(load.think_time),
                   clients=[(c.id, c.weight) for c in load.clients], owner=owner, protocol=load.protocol,
                   base_dir=base_dir, rate=load.rate, known_answers=known_answers,
                   entities=load.entities)  # fmt: skip

    def __enter__(self) -> LoadGenerator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return any(p.poll() is None for p in self._procs)

    def start(self) -> None:
        """Launch Locust and the tail thread; returns at once (users spawn in the background)."""
        if self._procs:
            raise RuntimeError("load generator already started")
        self.workdir.mkdir(parents=True, exist_ok=True)
        Path(f"{self.stats_prefix}.json").unlink(missing_ok=True)
        self.rate_schedule_path.unlink(missing_ok=True)  # a previous run's stages never shape this one
        locustfile = locustfile_path() if self.protocol is None else protocol_locustfile_path()
        if self.protocol is not None:
            (self.workdir / "load-protocol.json").write_text(self.protocol.model_dump_json())
        base = [sys.executable, "-m", "locust", "-f", str(locustfile)]
        common = ["--headless", "-H", self.host_url, "-u", str(self.users), "-r", str(self.spawn_rate),
                  "-t", f"{self.run_time_s}s", "--json-file", str(self.stats_prefix), "--only-summary"]  # fmt: skip
        if self.workers == 0:
            self._tail = _Tail([self.workdir / "load-events-0.jsonl"])
            self._launch("locust", base + common, self._tail.paths[0])
        else:
            port = free_port()
            self._tail = _Tail([self.workdir / f"load-events-{i}.jsonl" for i in range(1, self.workers + 1)])
            master = ["--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
                      "--expect-workers", str(self.workers), "--expect-workers-max-wait", str(_STARTUP_S)]  # fmt: skip
            self._launch("locust-master", base + common + master, None)
            for i, path in enumerate(self._tail.paths, start=1):
                argv = [*base, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port)]
                self._launch(f"locust-worker-{i}", argv, path)
        # Belt and braces: even if stop() is never called, the interpreter's exit kills them.
        self._finalizer = weakref.finalize(self, _kill_groups, list(self._procs))
        self._deadline = time.monotonic() + _STARTUP_S + self.run_time_s + self.stop_grace_s
        self._thread = threading.Thread(target=self._follow, name="load-tail", daemon=True)
        self._thread.start()

    def _launch(self, name: str, argv: list[str], events_file: Path | None) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FAULTDRILL_LOAD_")}
        root = str(locustfile_path().parent.parent)  # so the locustfile can import target_service
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        env |= self.shape.env() | {
            "FAULTDRILL_LOAD_MODEL": self.model, "FAULTDRILL_LOAD_WAIT_S": str(self.think_time_s),
            "FAULTDRILL_LOAD_TIMEOUT_S": str(self.request_timeout_s),
            "FAULTDRILL_LOAD_ENTITIES": str(self.entities),
        }  # fmt: skip
        if self.rate is not None:
            env["FAULTDRILL_LOAD_RATE_PER_USER"] = str(self.rate / self.users)
            env["FAULTDRILL_LOAD_RATE_SCHEDULE"] = str(self.rate_schedule_path)
        if self.known_answers is not None:
            env["FAULTDRILL_LOAD_KNOWN_ANSWERS"] = str(self.known_answers)
        if self.clients:
            env["FAULTDRILL_LOAD_CLIENTS"] = json.dumps([{"id": c, "weight": w} for c, w in self.clients])
        if self.protocol is not None:
            env["FAULTDRILL_LOAD_PROTOCOL"] = str(self.workdir / "load-protocol.json")
        if events_file is not None:
            events_file.unlink(missing_ok=True)
            env["FAULTDRILL_LOAD_EVENTS"] = str(events_file)
        with (self.workdir / f"{name}.log").open("wb") as log:
            # die_with_parent: only from the main thread (see faults/owned.py); the ledger record covers the rest.
            proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, preexec_fn=die_with_parent())  # fmt: skip
        self._procs.append(proc)
        if self.owner is not None:
            try:
                self._records.append(self.owner.record_process(name, proc.pid, argv))
            except LedgerError:
                _kill_groups(self._procs)  # unrecorded, a crash of this run would leave them running
                raise

    @property
    def rate_schedule_path(self) -> Path:
        """Where :meth:`schedule_rates` writes the open-model rate's stages (the Locust processes poll it)."""
        return self.workdir / "rate-schedule.json"

    def schedule_rates(self, t0_wall: float, stages: Sequence[tuple[float, float, float, float]]) -> None:
        """Open model: from wall time ``t0_wall`` on, the rate follows ``stages`` — ``(at_s, ramp_s, hold_s, rate)``
        each, rates in requests per second in all — and is ``rate`` outside them (``loadkit.RateSchedule``).
        Written atomically; each Locust user reads it within ``Pacer.POLL_S``."""
        if self.rate is None:
            raise ValueError("rate stages shape an open-model rate: this load has none")
        body = {"t0": t0_wall, "stages": [{"at_s": at, "ramp_s": ramp, "hold_s": hold, "rate": rate / self.users}
                                          for at, ramp, hold, rate in stages]}  # fmt: skip
        tmp = self.rate_schedule_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(body))
        os.replace(tmp, self.rate_schedule_path)

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait until Locust finishes by itself (run time over); True if it did."""
        end = time.monotonic() + (self.run_time_s + _STARTUP_S if timeout_s is None else timeout_s)
        with contextlib.suppress(subprocess.TimeoutExpired):
            for proc in self._procs:
                proc.wait(timeout=max(0.0, end - time.monotonic()))
        return not self.running

    def wait_first_request(self, timeout_s: float = 60.0) -> bool:
        """Wait until a request reached the timeline (Locust processes start in 2–4 s)."""
        end = time.monotonic() + timeout_s
        while self.events == 0 and self.running and time.monotonic() < end:
            time.sleep(_POLL_S)
        return self.events > 0

    def stop(self, grace_s: float | None = None) -> LoadSummary:
        """Finish gracefully (SIGTERM, final stats), then SIGKILL leftovers; drain all events."""
        grace = self.stop_grace_s if grace_s is None else grace_s
        if self._procs:
            # The master (or the single process) first: it tells its workers to quit. Then any
            # worker left (its master gone, it would wait on heartbeats). send_signal skips the dead.
            for group, timeout_s in ((self._procs[:1], grace), (self._procs[1:], min(grace, 5.0))):
                for proc in group:
                    proc.send_signal(signal.SIGTERM)
                self.wait(timeout_s=timeout_s)
            _kill_groups(self._procs)
        if self.owner is not None:  # reaped (or still stuck: then its record stays for the watchdog)
            for proc, record in zip(self._procs, self._records, strict=False):
                if proc.poll() is not None:
                    self.owner.release(record)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._drain()  # everything the processes flushed before they exited
        if self._finalizer is not None:
            self._finalizer.detach()
        return self.summary()

    def summary(self) -> LoadSummary:
        """Locust's own final totals (exact, from ``--json-file``), plus what reached the timeline."""
        codes = tuple(p.poll() for p in self._procs)
        try:
            rows = json.loads(Path(f"{self.stats_prefix}.json").read_text())
        except (FileNotFoundError, ValueError):
            return LoadSummary(requests=self.events, failures=self.failed_events, events=self.events,
                               exact=False, exit_codes=codes)  # fmt: skip
        return LoadSummary.from_locust_json(rows, events=self.events, exit_codes=codes)

    def _follow(self) -> None:
        while not self._stop.wait(_POLL_S) and time.monotonic() < self._deadline:
            self._drain()
        if not self._stop.is_set():  # past its bound: a hung Locust never outlives it
            _kill_groups(self._procs)
            self._drain()

    def _drain(self) -> None:
        with self._lock:
            start_wall = self.timeline.start_wall
            for line in self._tail.read():
                event = event_of_line(line, start_wall, self.source)
                if event is None:
                    self.malformed += 1
                    continue
                self.timeline.append(event)
                count, ok = request_counts(event)
                self.events += count
                self.failed_events += count - ok


def request_counts(event: Event) -> tuple[int, int]:
    """``(requests, ok ones)`` an event of :func:`event_of_line` stands for."""
    if event.kind == "requests":
        return int(event.attrs["count"]), int(event.attrs["ok"])
    return 1, int(event.attrs["ok"] is True)


def _bucket_attrs(row: dict[str, Any], start_wall: float) -> dict[str, Any]:
    count, ok, lost = (int(row[k]) for k in ("count", "ok", "lost"))
    wrong = int(row.get("wrong") or 0)  # older locustfiles write none
    if not 0 <= ok <= count or not 0 <= lost <= count - ok or not 0 <= wrong <= count - ok - lost:
        raise ValueError("counts out of range")
    attrs: dict[str, Any] = {"span_s": float(row["span_s"]), "name": str(row["name"]), "count": count, "ok": ok,
                             "lost": lost, "wrong": wrong,
                             "statuses": {str(k): int(v) for k, v in dict(row["statuses"]).items()}}  # fmt: skip
    for key in ("client", "version", "replica", "latency", "ttft", "itl"):
        if row.get(key) is not None:
            attrs[key] = str(row[key])
    if row.get("errors"):
        attrs["errors"] = {str(k): int(v) for k, v in dict(row["errors"]).items()}
    samples = []
    for sample in row.get("samples") or ():
        kept: dict[str, Any] = {"t": round(float(sample["t"]) - start_wall, 6), "ok": bool(sample["ok"]),
                                "status": int(sample["status"]), "latency_s": float(sample["latency_s"])}
        if sample.get("error") is not None:
            kept["error"] = str(sample["error"])
        for key in ("ttft_s", "itl_s"):
            if sample.get(key) is not None:
                kept[key] = float(sample[key])
        samples.append(kept)
    if samples:
        attrs["samples"] = samples
    return attrs


def event_of_line(line: str | bytes, start_wall: float, source: str = "load") -> Event | None:
    """One line of a faultdrill locustfile (a ``requests`` bucket, or one ``request`` as older generators and
    tools write them) as a timeline event, its times made run-relative; None for anything else (Locust's
    own logging on a pod's stdout, a torn line)."""
    try:
        row = json.loads(line)
        wall = float(row["t"])
        if "count" in row:
            return Event.model_construct(t=wall - start_wall, kind="requests", source=source,
                                         attrs=_bucket_attrs(row, start_wall), wall=wall)  # fmt: skip
        attrs = {"ok": bool(row["ok"]), "status": int(row["status"]), "latency_s": float(row["latency_s"]),
                 "name": str(row["name"]), "error": row.get("error")}  # fmt: skip
        for key in ("client", "version"):  # load clients; the model version that answered (canary rollouts)
            if row.get(key) is not None:
                attrs[key] = str(row[key])
        for key in ("ttft_s", "itl_s"):  # streamed answers (load.protocol openai, stream: true)
            if row.get(key) is not None:
                attrs[key] = float(row[key])
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    # Our own writers made these lines: construct without re-validation (thousands a second).
    return Event.model_construct(t=wall - start_wall, kind="request", source=source, attrs=attrs, wall=wall)
