"""The journal: one JSON file per run, the only thing reports read.

It holds the spec that ran, the environment (device real or emulated, versions, time scale),
every timeline event, the verdicts, MTTD/MTTR per fault, and the outcome with its exit code
(0 passed, 1 an expectation failed, 2 bad input, 3 halted). ``JOURNAL_VERSION`` is bumped
on any incompatible change; readers refuse versions they do not know.

Example::

    journal = Journal.new(spec_doc, environment=collect_environment(device="cpu", emulated=True))
    journal.finish(timeline, verdicts=[...], outcome="passed")
    path = journal.write(run_dir)            # run_dir/journal.json
    again = Journal.read(path)
"""

from __future__ import annotations

import os
import platform
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from experiments.timeline import Event, Timeline
from experiments.traces import TraceSummary
from faults.errors import ConfigError

__all__ = ["EXIT_CODES", "JOURNAL_VERSION", "Environment", "Journal", "collect_environment", "faultdrill_version"]

JOURNAL_VERSION = 1
Outcome = Literal["passed", "failed", "halted", "error"]
EXIT_CODES: dict[str, int] = {"passed": 0, "failed": 1, "error": 2, "halted": 3}


class Environment(BaseModel):
    """Where a run happened; ``device_label`` is what reports show (``cpu (emulated)``)."""

    model_config = ConfigDict(extra="forbid")

    device: str
    emulated: bool
    device_name: str = ""
    faultdrill: str
    python: str
    torch: str | None = None
    platform: str
    host: str
    time_scale: float = 1.0
    """Factor applied to alert rule durations and back-offs in this run (1.0 = production)."""
    notes: list[str] = Field(default_factory=list)
    """What was emulated and why, in plain words."""

    @property
    def device_label(self) -> str:
        return f"{self.device} ({'emulated' if self.emulated else 'real'})"


def faultdrill_version() -> str:
    """The installed distribution's version (its metadata: no import reaches up into the CLI package)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("faultdrill")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


def collect_environment(*, device: str, emulated: bool, device_name: str = "", time_scale: float = 1.0,
                        notes: list[str] | None = None) -> Environment:  # fmt: skip
    """The environment of this process (torch's version only if torch is already imported)."""
    torch_mod = sys.modules.get("torch")
    return Environment(
        device=device, emulated=emulated, device_name=device_name, faultdrill=faultdrill_version(),
        python=platform.python_version(), torch=getattr(torch_mod, "__version__", None),
        platform=platform.platform(), host=platform.node(), time_scale=time_scale, notes=notes or [],
    )  # fmt: skip


class Journal(BaseModel):
    """Everything one run saw and decided."""

    model_config = ConfigDict(extra="forbid")

    version: int = JOURNAL_VERSION
    run_id: str
    name: str
    spec: dict[str, Any]
    environment: Environment
    started_at: float
    ended_at: float | None = None
    outcome: Outcome | None = None
    exit_code: int | None = None
    reason: str = ""
    """Why the run halted or errored; empty when it passed or failed on expectations."""
    verdicts: list[dict[str, Any]] = Field(default_factory=list)
    faults: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Per fault id: type, mode, target, start/end times, emulated, mttd_s (start → first page),
    detected_by (that alert), receiver, first_signal_s (start → first symptom), mttr_s."""
    load: dict[str, Any] = Field(default_factory=dict)
    """The load generator's own totals (Locust's exact counts)."""
    alerting: dict[str, Any] = Field(default_factory=dict)
    """The alerting stack of the run: enabled, rules file and its sha256, speedup and what it scaled,
    scrape/evaluation intervals, Prometheus/Alertmanager versions, seconds to the first sample."""
    traces: TraceSummary | None = None
    """Example traces per window (steady state, each fault): the slowest and the failed requests' span trees
    across target and feature store (``experiments.traces``); the span files stay in the run directory."""
    events: list[Event] = Field(default_factory=list)

    @classmethod
    def new(cls, spec: dict[str, Any], environment: Environment) -> Journal:
        name = str(spec.get("metadata", {}).get("name", "experiment"))
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        return cls(run_id=f"{stamp}-{uuid.uuid4().hex[:6]}", name=name, spec=spec, environment=environment,
                   started_at=time.time())  # fmt: skip

    def finish(self, timeline: Timeline, *, verdicts: list[dict[str, Any]], outcome: Outcome,
               faults: dict[str, dict[str, Any]] | None = None, reason: str = "") -> None:  # fmt: skip
        self.events = timeline.events()
        self.verdicts = verdicts
        self.faults = faults or {}
        self.outcome = outcome
        self.exit_code = EXIT_CODES[outcome]
        self.reason = reason
        self.ended_at = time.time()

    def timeline(self) -> Timeline:
        return Timeline(self.events, start=0.0)

    def write(self, run_dir: Path) -> Path:
        """Write ``run_dir/journal.json`` atomically."""
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / "journal.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(self.model_dump_json(indent=1))
        os.replace(tmp, path)
        return path

    @classmethod
    def read(cls, path: Path) -> Journal:
        """Read a journal; a missing file, bad JSON, one over the input limits (``MAX_JOURNAL_BYTES``, nesting)
        or an unknown version is a ConfigError."""
        import json

        from faults.inputlimits import MAX_JOURNAL_BYTES, decode_utf8, json_depth_error, read_bytes

        try:
            raw = decode_utf8(read_bytes(path, limit=MAX_JOURNAL_BYTES, what="journal"), str(path))
        except OSError as exc:
            raise ConfigError(f"cannot read journal: {exc.strerror}", file=str(path)) from None
        try:
            doc = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"not a journal: {exc.msg}", file=str(path), line=exc.lineno, column=exc.colno) from None
        except RecursionError:
            raise json_depth_error(raw, str(path), "a journal") from None
        if not isinstance(doc, dict) or doc.get("version") != JOURNAL_VERSION:
            found = doc.get("version") if isinstance(doc, dict) else None
            raise ConfigError(f"journal version {found!r} is not supported (this faultdrill reads {JOURNAL_VERSION})",
                              file=str(path), field="version")  # fmt: skip
        try:
            return cls.model_validate(doc)
        except ValidationError as exc:
            first = exc.errors()[0]
            more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
            raise ConfigError(f"not a valid journal: {first['msg']}{more}", file=str(path),
                              field=".".join(str(p) for p in first["loc"])) from None  # fmt: skip
