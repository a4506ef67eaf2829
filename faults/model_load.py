"""``ModelLoadFailureFault``: a replica restarts and cannot load its model.

``corrupt`` flips bytes in ``<registry>/<name>/<version>/model.pt`` (the manifest's sha256
check is what then fails), ``missing`` takes the artifact away, ``bad_version`` changes the
replica's *spec* to a version that does not exist and restarts it — ``Supervisor.set_env``, the
environment every later start uses (the platform's crash-loop restarts and a plain ``restart``
too), as ``kubectl set env``/``set image`` changes a Deployment: restarting the replica does not
undo it, rolling the version back does (the ``rollback-model`` runbook action). Rollback puts the
recorded previous spec back and restarts the replica unless it already serves its original
version. The spec lives in the platform's process: after a crash (``faultdrill rollback
--pending``, no supervisor) it died with the run, with the replicas, so there is nothing to restore.

A described service (``target.service.model``) is any server with a model file: the artifact is
its declared ``model.artifact``, else the largest file under ``<repository>/<name>/``; ``corrupt``
and ``missing`` work on it the same way (``bad_version`` is the bundled target's version switch
and is refused). What counts as the load failing is what an SRE sees: the restarted replica
never passes its readiness probe (its own, from the spec) while the artifact is broken — whether
the server exits (crash loop) or stays up unready is reported, not assumed; its log's last
line is kept in the details (what the server said). The artifact is copied to
``<state_dir>/backups/<injection id>/`` (fsynced, sha256 in the record) before it is touched;
rollback puts the exact bytes back and, with a live supervisor, restarts the replica and
waits for it to be ready.

Example::

    fault = ModelLoadFailureFault()
    cfg = fault.parse_config({"target": "replica-0", "mode": "corrupt"})
    inj = fault.inject(cfg, ctx)             # backup, ledger record, flip bytes, restart
    fault.verify(inj, ctx).details           # {'exit_code': 1, 'ever_ready': False, ...}
    fault.undo(inj, ctx)                     # artifact restored (sha256), replica ready again
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, ClassVar, Literal

import httpx
from pydantic import Field

from faultdrill.faults.base import Fault, FaultConfig, FaultContext, Injection, Problem, Verification
from faultdrill.faults.errors import FaultdrillError, PreflightError, RollbackError
from faultdrill.faults.files import backup_file, restore_file, sha256_file, write_atomic
from faultdrill.faults.kube.pods import VERSION_ENV, ModelVersionAction
from faultdrill.faults.topology import ServiceHandle, Supervisor

__all__ = ["ModelLoadFailureFault"]


class ModelLoadFailureFault(Fault):
    """Make a replica's model load fail on restart; see the module docstring."""

    class Config(FaultConfig):
        target: str
        mode: Literal["corrupt", "missing", "bad_version"] = "corrupt"
        bad_version: str = Field(default="999999", pattern=r"^[A-Za-z0-9_-]{1,64}$")
        flip_bytes: int = Field(default=64, ge=1, le=4096)
        wait_s: float = Field(default=60.0, gt=0, le=600)
        """How long verify waits for the restarted replica to exit, and rollback for it to be ready."""

    name: ClassVar[str] = "model_load_failure"
    target_roles: ClassVar[tuple[str, ...] | None] = ("replica",)
    modes: ClassVar[tuple[str, ...]] = ("corrupt", "missing", "bad_version")
    needs: ClassVar[tuple[str, ...]] = ("model registry in scope", "live platform to restart the replica")
    target_needs: ClassVar[frozenset[str]] = frozenset({"model_repository", "supervised"})
    verifies: ClassVar[str] = "artifact checksum, exit code 1, never ready"
    example: ClassVar[dict[str, Any]] = {"target": "replica-0", "mode": "corrupt"}
    kubernetes = ModelVersionAction  # on a Kubernetes target: faults/kube/pods.py (the API)
    writes_models: ClassVar[bool] = True

    def writes_models_for(self, config: Any) -> bool:
        return getattr(config, "mode", "corrupt") != "bad_version"  # bad_version only restarts with another env

    def local_preflight(self, config: Config, ctx: FaultContext) -> list[Problem]:
        h = ctx.topology.get(config.target, role="replica")  # unknown target: ConfigError
        problems: list[Problem] = []
        if h.model_registry is None or h.model_name is None:
            return [Problem("no_model", f"replica '{h.name}' declares no model repository",
                            "declare target.service.model: {name: …, repository: …}")]  # fmt: skip
        if h.model_version is None:  # a described service
            if config.mode == "bad_version":
                problems.append(Problem("no_version_switch", "bad_version restarts the bundled target asking for "
                                        "another version; a described service has no such switch",
                                        "use mode corrupt or missing"))  # fmt: skip
            if ctx.supervisor is None:
                problems.append(Problem("no_supervisor", "the replica must be restarted on the broken artifact: "
                                        "needs a live platform"))  # fmt: skip
            if problems:
                return problems
        if config.mode == "bad_version":
            if ctx.supervisor is None:
                problems.append(Problem("no_supervisor", "bad_version restarts the replica: needs a live platform"))
            if (h.model_registry / h.model_name / config.bad_version).exists():
                problems.append(Problem("version_exists", f"version '{config.bad_version}' exists; pick another"))
            return problems
        artifact = _artifact(h)
        if not artifact.is_file():
            problems.append(Problem("no_artifact", f"model artifact {artifact} not found"))
        try:
            ctx.scope.check_path(artifact)
        except FaultdrillError as exc:
            problems.append(Problem("blast_radius", str(exc)))
        return problems

    def local_plan(self, config: Config, ctx: FaultContext) -> list[str]:
        h = ctx.topology.get(config.target, role="replica")
        restart = f"restart {h.name} (pid {h.pid})" if ctx.supervisor else f"(no supervisor: {h.name} not restarted)"
        if config.mode == "bad_version":
            return [f"set {h.name}'s spec: {VERSION_ENV}={config.bad_version} (every later start uses it, a plain "
                    f"restart too)", restart,
                    f"rollback: put {h.name}'s previous spec back, restart it on its own version "
                    f"({h.model_version}) unless it already serves it"]  # fmt: skip
        artifact = _artifact(h)
        change = f"flip {config.flip_bytes} bytes in" if config.mode == "corrupt" else "remove"
        return [f"back up {artifact} to {ctx.state_dir}/backups/<injection-id>/", f"{change} {artifact}", restart,
                f"rollback: restore {artifact} byte for byte (sha256 checked), restart {h.name}, wait for ready"]

    def local_inject(self, config: Config, ctx: FaultContext) -> Injection:
        h = ctx.topology.get(config.target, role="replica")
        if problems := self.local_preflight(config, ctx):
            raise PreflightError(problems, fault=self.name)
        log_file = str(h.log_file) if h.log_file else _log_file(h.pid)
        undo: dict[str, Any] = {"service": h.name, "url": h.url, "log_file": log_file, "log_offset": _size(log_file),
                                "restarted": ctx.supervisor is not None, "wait_s": config.wait_s,
                                "described": h.model_version is None}  # fmt: skip
        if config.mode == "bad_version":
            undo["version_dir"] = str(Path(h.model_registry or "", h.model_name or "", config.bad_version))
            undo["original_version"] = h.model_version
            injection = self.new_injection(config, ctx, mode=config.mode, target=h.name, undo=undo)
        else:
            artifact = _artifact(h)
            ctx.scope.check_path(artifact)
            injection = self.new_injection(config, ctx, mode=config.mode, target=h.name, undo={})
            backup_dir = ctx.state_dir / "backups" / injection.id
            undo.update(artifact=str(artifact), backup_dir=str(backup_dir), backup=str(backup_dir / artifact.name),
                        sha256=backup_file(artifact, backup_dir / artifact.name),
                        file_mode=artifact.stat().st_mode & 0o777,
                        manifest=str(artifact.with_name("manifest.json")))  # fmt: skip
            injection = injection.model_copy(update={"undo": undo})

        def apply() -> None:
            nonlocal injection
            sup = ctx.supervisor
            if config.mode == "bad_version":
                assert sup is not None  # preflight: no_supervisor
                previous = sup.set_env(h.name, {VERSION_ENV: config.bad_version})
                # What undoes the spec change, recorded before anything else can happen (the restart below).
                injection = injection.model_copy(update={"undo": {**injection.undo, "spec_previous": previous}})
                ctx.ledger.write(injection)
                try:
                    _restart(sup, h.name, None, wait=False)  # it must fail its start-up, and every later one
                except Exception:
                    sup.set_env(h.name, previous)  # the record above is not the one apply_recorded rolls back
                    raise
                return
            if config.mode == "corrupt":
                write_atomic(artifact, _flipped(artifact.read_bytes(), config.flip_bytes), undo["file_mode"])
            elif config.mode == "missing":
                artifact.unlink()  # "moved aside": the fsynced copy is already in the backup dir
            if sup is not None:
                _restart(sup, h.name, None, wait=False)  # it must fail its start-up

        self.apply_recorded(injection, ctx, apply)
        return injection

    def local_rollback(self, injection: Injection, ctx: FaultContext) -> None:
        u = injection.undo
        if "artifact" in u:
            restore_file(Path(u["artifact"]), Path(u["backup"]), u["sha256"], u["file_mode"], fault=self.name)
        sup = ctx.supervisor
        # Without a supervisor (crash) the failed replica has exited on its own: there is
        # nothing to stop, and the next start (platform restart policy, next run) loads the
        # restored artifact; a changed spec died with the platform that held it. With one, the
        # spec goes back to what it was (whatever a runbook set since), then the replica restarts
        # unless it is already serving its original version.
        if sup is not None and "spec_previous" in u:
            sup.set_env(u["service"], u["spec_previous"])
        if sup is not None and u.get("restarted"):
            url = _ready_url(sup.handle(u["service"]))
            running = sup.handle(u["service"]).model_version
            if not _ready(url) or ("original_version" in u and running != u["original_version"]):
                # A described server's start may take seconds (it loads its model): not waited for by the start,
                # by its readiness probe below.
                _restart(sup, u["service"], None, wait=not u.get("described"))
                deadline = time.monotonic() + float(u.get("wait_s", 60.0))
                while not _ready(url) and time.monotonic() < deadline:
                    time.sleep(0.05)
                if not _ready(_ready_url(sup.handle(u["service"]))):
                    raise RollbackError(f"{u['service']} not ready after restart", fault=self.name)
        if "backup_dir" in u:
            shutil.rmtree(u["backup_dir"], ignore_errors=True)

    def local_verify(self, injection: Injection, ctx: FaultContext) -> Verification:
        u = injection.undo
        details: dict[str, Any] = {"artifact_check": _artifact_check(injection)}
        effective = details["artifact_check"]["broken"]
        sup = ctx.supervisor
        if sup is not None and u.get("restarted") and u.get("described"):
            # Bounded by the fault's duration: a server that stays up unready never exits.
            wait_s = min(float(u.get("wait_s", 60.0)), float(injection.config.get("duration_s", 60.0)))
            exit_code, ever_ready = _watch_start(sup, u["service"], wait_s)
            said = _what_it_said(_tail(u.get("log_file"), int(u.get("log_offset", 0))))
            outcome = "up, never ready" if exit_code is None else f"exited with code {exit_code}: it crash-loops"
            details.update(exit_code=exit_code, ever_ready=ever_ready, said=said, outcome=outcome)
            effective = effective and not ever_ready
            broke = "corrupted" if injection.mode == "corrupt" else "moved aside"
            return Verification(effective, details, message=(
                f"{u['service']}: {Path(u['artifact']).name} {broke}; restarted on it: "
                f"{'it became ready (not a load failure)' if ever_ready else outcome + ', never ready'}"
                + (f"; it said: {said}" if said else "")))
        elif sup is not None and u.get("restarted"):
            exit_code, ever_ready = _watch_start(sup, u["service"], float(u.get("wait_s", 60.0)))
            log_tail = _tail(u.get("log_file"), int(u.get("log_offset", 0)))
            details.update(exit_code=exit_code, ever_ready=ever_ready,
                           load_failed_logged="model load failed" in log_tail)  # fmt: skip
            if injection.mode == "bad_version":
                details["running_version"] = sup.handle(u["service"]).model_version
            if injection.mode == "corrupt":
                details["checksum_failure_logged"] = "checksum mismatch" in log_tail
            effective = effective and exit_code == 1 and not ever_ready
            if u.get("log_file"):
                effective = effective and details["load_failed_logged"]
                effective = effective and details.get("checksum_failure_logged", True)
        return Verification(effective, details, message=f"{u['service']}: {details}")


def _artifact(h: ServiceHandle) -> Path:
    assert h.model_registry is not None and h.model_name is not None
    if h.model_artifact is not None:
        return h.model_artifact
    if h.model_version is None:  # a described service without model.artifact: its largest model file
        folder = h.model_registry / h.model_name
        folder = folder if folder.is_dir() else h.model_registry
        files = [p for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()][:10_000]  # bounded
        return max(files, key=lambda p: p.stat().st_size, default=folder / "<no file>")
    version = h.model_version
    if version == "latest":  # the server resolves "latest" to the highest version: so do we
        parent = h.model_registry / h.model_name
        found = [p.name for p in parent.iterdir() if (p / "manifest.json").exists() and not p.name.startswith(".")]
        version = max(found, key=lambda v: (1, int(v), "") if v.isdigit() else (0, 0, v), default=version)
    return h.model_registry / h.model_name / version / "model.pt"


def _flipped(data: bytes, count: int) -> bytes:
    # Spread over the file so the change cannot hide in padding; XOR always changes a byte.
    out = bytearray(data)
    for i in range(min(count, len(out))):
        out[(i * len(out)) // count] ^= 0xFF
    return bytes(out)


def _artifact_check(injection: Injection) -> dict[str, Any]:
    """Measure what the server's load will find: the same sha256 comparison with the manifest."""
    u = injection.undo
    if injection.mode == "bad_version":
        return {"version_dir_exists": Path(u["version_dir"]).exists(), "broken": not Path(u["version_dir"]).exists()}
    actual = sha256_file(Path(u["artifact"]))
    if u.get("described"):  # no manifest: broken is "not the bytes that were there"
        return {"sha256": actual, "original_sha256": u["sha256"], "broken": actual != u["sha256"]}
    try:
        expected = json.loads(Path(u["manifest"]).read_text())["sha256"]
    except (OSError, ValueError, KeyError):
        expected = None
    return {"sha256": actual, "manifest_sha256": expected, "broken": actual is None or actual != expected}


def _watch_start(sup: Supervisor, name: str, wait_s: float) -> tuple[int | None, bool]:
    """Poll readiness until the restarted replica exits (bounded); was it ever ready?"""
    url = _ready_url(sup.handle(name))
    ever_ready = False
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        ever_ready = ever_ready or _ready(url)
        code = sup.exit_status(name)
        if code is not None:
            return code, ever_ready
        time.sleep(0.05)
    return None, ever_ready


def _ready_url(h: ServiceHandle) -> str | None:
    """Its readiness probe's URL: declared (a described service), else the bundled target's."""
    return h.ready_url or (f"{h.url}/v2/health/ready" if h.url else None)


def _ready(url: str | None) -> bool:
    try:
        return url is not None and 200 <= httpx.get(url, timeout=0.5).status_code < 400  # Kubernetes: 2xx/3xx
    except httpx.HTTPError:
        return False


def _restart(sup: Supervisor, name: str, env: dict[str, str] | None, *, wait: bool) -> None:
    sup.restart(name, env=env, wait=wait)


def _what_it_said(log: str) -> str | None:
    """The server's last line naming an error (else its last line), shortened: what an SRE reads first."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    errors = [line for line in lines if re.search(r"(?i)error|fail|exception|cannot|unable", line)]
    picked = errors or lines
    return picked[-1][-240:] if picked else None


def _log_file(pid: int | None) -> str | None:
    """Where the replica's stdout goes when the handle does not say: read from /proc."""
    try:
        target = os.readlink(f"/proc/{pid}/fd/1") if pid else ""
    except OSError:
        return None
    return target if target.startswith("/") and Path(target).is_file() else None


def _size(path: str | None) -> int:
    try:
        return os.path.getsize(path) if path else 0
    except OSError:
        return 0


def _tail(path: str | None, offset: int, size: int = 65536) -> str:
    """What the log got since ``offset`` (this start-up only, not earlier failures)."""
    if not path:
        return ""
    try:
        with open(path, "rb") as fh:
            fh.seek(max(offset, _size(path) - size))
            return fh.read().decode(errors="replace")
    except OSError:
        return ""
