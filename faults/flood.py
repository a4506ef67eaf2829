"""The noisy neighbour as a fault (``client_flood``): one client floods the service.

``inject`` starts a detached, self-bounded load process (``python -m faultdrill.faults.flood_worker``) that
sends inference requests as one client id (``X-Client-Id``) to a service of the run's topology —
the service endpoint (``service``) or one replica directly — on loopback only, at most ``rps``
requests per second over ``concurrency`` connections, and exits by itself at the fault's
dead-man deadline. The ledger record names the worker's stats/pid file before the worker exists
and its pid + start ticks right after, so ``faultdrill rollback --pending`` from another process
stops exactly that process (a recycled pid never matches its start ticks). ``verify`` measures
the achieved rate and the 429s (with ``Retry-After``) the flood received; ``undo`` stops it and
logs its totals.

The flood's requests are NOT on the run's timeline: the timeline's ``request`` events are the
service's well-behaved clients, whose SLOs the experiment judges; the flood's effect is measured
by the fault (``verify``, totals) and by the target's metrics
(``inference_failures_total{reason="rate_limited"}``, ``ratelimit_requests_total{client=…}``).

Example::

    fault = ClientFloodFault()
    cfg = fault.parse_config({"target": "replica-0", "client_id": "batch-importer", "rps": 400,
                              "duration_s": 10})
    inj = fault.inject(cfg, ctx)
    print(fault.verify(inj, ctx).message)   # "flood at 398 req/s; 95% answered 429 (all with Retry-After)"
    fault.undo(inj, ctx)
"""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field

from faultdrill.faults.base import Fault, FaultConfig, FaultContext, Injection, Problem, Verification
from faultdrill.faults.errors import FaultdrillError
from faultdrill.faults.flood_worker import LOOPBACK
from faultdrill.faults.owned import stop_recorded_process
from faultdrill.faults.procid import pid_alive, process_start_ticks

__all__ = ["ClientFloodFault", "read_stats"]

log = logging.getLogger("faultdrill.faults.flood")
_READY_S = 10.0
_SAMPLE_S = 2.0


def read_stats(path: str | Path) -> dict[str, Any] | None:
    """The worker's latest stats document, or None (not written yet, or gone)."""
    with contextlib.suppress(OSError, ValueError):
        doc: dict[str, Any] = json.loads(Path(path).read_text())
        return doc
    return None


def _worker(undo: dict[str, Any]) -> tuple[int, int | None] | None:
    """The live worker's pid and start ticks: from the record, else from the stats file it writes itself."""
    if undo.get("pid") and pid_alive(int(undo["pid"]), undo.get("pid_start")):
        return int(undo["pid"]), undo.get("pid_start")
    doc = read_stats(undo["stats_file"])
    if doc and doc.get("tag") == undo.get("tag") and pid_alive(int(doc["pid"]), doc.get("start_ticks")):
        return int(doc["pid"]), doc.get("start_ticks")
    return None


class ClientFloodFault(Fault):
    """One client floods a service of the run (bounded rate, concurrency and time)."""

    class Config(FaultConfig):
        target: str = Field(default="service", description="`service` (the run's endpoint) or a replica")
        mode: Literal["constant"] = "constant"
        client_id: str = Field(default="noisy-neighbour", pattern=r"^[A-Za-z0-9_.:-]{1,64}$",
                               description="X-Client-Id the flood sends")  # fmt: skip
        rps: float = Field(default=300.0, gt=0, le=5000, description="at most this many requests/s in total")
        concurrency: int = Field(default=16, ge=1, le=256, description="keep-alive connections")
        rows: int = Field(default=1, ge=1, le=256, description="rows per request (a heavy client: big batches)")
        model: str | None = Field(default=None, description="model in the path; default: the target's")

    name: ClassVar[str] = "client_flood"
    target_roles: ClassVar[tuple[str, ...] | None] = ("replica", "service")
    """In a spec: a replica, or ``service`` — the run's service endpoint, the default when none is named."""
    modes: ClassVar[tuple[str, ...]] = ("constant",)
    needs: ClassVar[tuple[str, ...]] = ("a service URL on loopback",)
    verifies: ClassVar[str] = "achieved request rate and the 429s (with Retry-After) the flood received"
    example: ClassVar[dict[str, Any]] = {"client_id": "batch-importer", "rps": 400, "concurrency": 16}

    def _url(self, config: Config, ctx: FaultContext) -> tuple[str, str]:
        handle = ctx.topology.get(config.target)  # unknown names: ConfigError with a did-you-mean
        if handle.url is None:
            raise FaultdrillError(f"service '{config.target}' has no URL")
        return handle.url, config.model or handle.model_name or "digits"

    def local_preflight(self, config: Config, ctx: FaultContext) -> list[Problem]:
        url = ctx.topology.get(config.target).url  # unknown names: ConfigError with a did-you-mean
        if url is None:
            return [Problem("no_url", f"service '{config.target}' has no URL", "aim at 'service' or a replica")]
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname not in LOOPBACK:
            return [Problem("not_loopback", f"{url} is not plain http on loopback",
                            "the flood only targets services this run started on 127.0.0.1")]  # fmt: skip
        return []

    def local_plan(self, config: Config, ctx: FaultContext) -> list[str]:
        url, model = self._url(config, ctx)
        return [f"python -m faultdrill.faults.flood_worker --url {url} --model {model} --client-id {config.client_id} "
                f"--rps {config.rps:g} --concurrency {config.concurrency} --rows {config.rows}  "
                f"# for {config.duration_s:g} s, exits by itself at the deadline",
                "rollback: SIGTERM that process (pid + start time checked), SIGKILL after 5 s"]  # fmt: skip

    def local_inject(self, config: Config, ctx: FaultContext) -> Injection:
        url, model = self._url(config, ctx)
        ctx.state_dir.mkdir(parents=True, exist_ok=True)
        undo: dict[str, Any] = {"url": url, "client_id": config.client_id}
        inj = self.new_injection(config, ctx, mode=config.mode, target=config.target, undo=undo)
        stats = ctx.state_dir / f"flood-{inj.id}.json"
        # The record names the stats file (the worker writes its pid there) before the worker exists.
        inj = inj.model_copy(update={"undo": {**undo, "stats_file": str(stats), "tag": inj.id}})
        argv = [sys.executable, "-m", "faultdrill.faults.flood_worker", "--url", url, "--model", model,
                "--client-id", config.client_id, "--rps", str(config.rps), "--concurrency", str(config.concurrency),
                "--rows", str(config.rows), "--deadline", f"{inj.deadline:.3f}", "--stats", str(stats),
                "--tag", inj.id]  # fmt: skip

        def apply() -> None:
            nonlocal inj
            with (ctx.state_dir / f"flood-{inj.id}.log").open("ab") as err:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                        start_new_session=True, cwd=Path(__file__).resolve().parent.parent)  # fmt: skip
            inj = inj.model_copy(update={"undo": {**inj.undo, "pid": proc.pid,
                                                  "pid_start": process_start_ticks(proc.pid)}})  # fmt: skip
            ctx.ledger.write(inj)
            deadline = time.monotonic() + _READY_S
            while read_stats(stats) is None:
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = (ctx.state_dir / f"flood-{inj.id}.log").read_text()[-300:]
                    raise FaultdrillError(f"flood worker did not start (exit {proc.poll()}): {tail}")
                time.sleep(0.02)

        self.apply_recorded(inj, ctx, apply)
        return inj

    def local_rollback(self, injection: Injection, ctx: FaultContext) -> None:
        undo = injection.undo
        if (worker := _worker(undo)) is not None:  # SIGTERM, 5 s, SIGKILL; pid + start ticks checked; reaped
            stop_recorded_process({"pid": worker[0], "start_ticks": worker[1], "argv": ["client_flood worker"]})
        doc = read_stats(undo["stats_file"])
        if doc is not None:
            log.info("flood %s stopped: %s", injection.id, _summary(doc))
        Path(undo["stats_file"]).unlink(missing_ok=True)

    def totals(self, injection: Injection) -> dict[str, Any] | None:
        """The flood's counts so far (final once ``undo`` stopped it and before the file is removed)."""
        return read_stats(injection.undo["stats_file"])

    def local_verify(self, injection: Injection, ctx: FaultContext) -> Verification:
        undo = injection.undo
        first = read_stats(undo["stats_file"])
        time.sleep(min(_SAMPLE_S, max(0.5, float(injection.config.get("duration_s", 2.0)) / 4)))
        last = read_stats(undo["stats_file"])
        alive = _worker(undo) is not None
        if first is None or last is None:
            return Verification(False, {"alive": alive}, message="no stats from the flood worker")
        # The average since the flood began (its pacing may catch up in bursts after a slow answer).
        rate = int(last["sent"]) / max(1e-3, float(last["updated"]) - float(last["started"]))
        sending = int(last["sent"]) > int(first["sent"])
        wanted = float(injection.config.get("rps", 0.0))
        details = {"alive": alive, "achieved_rps": round(rate, 1), "target_rps": wanted, **_counts(last)}
        # Running and sending is the fault. Below its target rate, the flood is held back by the service's
        # answers (every connection waiting): that is the flood taking the capacity, not a failed injection.
        effective = alive and sending
        held = " (held back by slow answers: all connections busy)" if rate < 0.5 * wanted else ""
        return Verification(effective, details, message=f"flood at {rate:.0f} req/s (target {wanted:g}){held}; "
                            f"{_summary(last)}")  # fmt: skip


def _counts(doc: dict[str, Any]) -> dict[str, Any]:
    statuses = {str(k): int(v) for k, v in (doc.get("statuses") or {}).items()}
    answered = int(doc.get("answered", 0))
    limited = statuses.get("429", 0)
    return {"sent": int(doc.get("sent", 0)), "answered": answered, "errors": int(doc.get("errors", 0)),
            "limited": limited, "limited_ratio": round(limited / answered, 4) if answered else None,
            "retry_after": int(doc.get("retry_after", 0)), "statuses": statuses}  # fmt: skip


def _summary(doc: dict[str, Any]) -> str:
    c = _counts(doc)
    ratio = f"{c['limited_ratio']:.0%}" if c["limited_ratio"] is not None else "n/a"
    return (f"{c['sent']} sent, {c['answered']} answered, {c['limited']} answered 429 ({ratio}; "
            f"{c['retry_after']} with Retry-After), {c['errors']} errors, statuses {c['statuses']}")
