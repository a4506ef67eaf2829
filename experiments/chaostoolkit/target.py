"""The bundled target for Chaos Toolkit: brought up in a background process, described by a state file.

``chaos run`` needs the target up before its steady-state hypothesis, so an experiment names
this module as a **control** (``before_experiment_control`` starts it, ``after_experiment_control``
stops it), or calls the ``faultdrill_up``/``faultdrill_down`` actions itself. Either way a
detached process (``python -m faultdrill.experiments.chaostoolkit.target serve``) runs a
:class:`~experiments.platforms.local.platform.LocalPlatform` of the bundled system its arguments describe
(``experiments.spec.system.bundled_system``: replicas + feature store + fault proxy; probes, restart
policy, readiness-aware service URL) — a Chaos Toolkit experiment has no faultdrill spec, so the bundled
description is its system — optionally Prometheus + Alertmanager
with the shipped rules, and a loopback control API (bearer token in a 0600 file) that
serves the live topology and scope and the supervisor calls faults need
(``faults.chaostoolkit.RemoteSupervisor``). Its state file (``faults.chaostoolkit.TargetState``)
says where everything is.

Nothing outlives the experiment: the target process watches its owner (the process that
started it, e.g. ``chaos run``); when the owner exits — normally, by Ctrl-C, or SIGKILL — or
on ``faultdrill_down``/SIGTERM, it undoes the owner's ledger records through its own live
supervisor, stops Prometheus, Alertmanager and every process, and removes the state file.
``faultdrill rollback --pending`` remains the last resort.

Example (an experiment's controls)::

    "controls": [{"name": "faultdrill-target",
                  "provider": {"type": "python", "module": "faultdrill.experiments.chaostoolkit.target",
                               "arguments": {"replicas": 2, "alerting": false}}}]
"""

import argparse
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from http import HTTPStatus
from pathlib import Path
from typing import Any

from faultdrill.experiments.host.tokenapi import TokenHandler, TokenServer
from faultdrill.experiments.spec.experiment import MISCONFIGURATIONS
from faultdrill.faults.chaostoolkit import TargetState, read_state, state_path, write_state
from faultdrill.faults.errors import ConfigError, FaultdrillError
from faultdrill.faults.ledger import rollback_owned
from faultdrill.faults.procid import pid_alive, process_start_ticks
from faultdrill.faults.records import default_state_dir

# Only the activities: the control hooks below are found by name by Chaos Toolkit.
__all__ = ["faultdrill_down", "faultdrill_up"]

UP_TIMEOUT_S = 150.0
_OWNER_POLL_S = 0.25


# -- the actions ---------------------------------------------------------------------------
def faultdrill_up(replicas: int = 2, misconfigurations: str = "", alerting: bool = False,
                  feature_store_netns: bool = False, memory_limit_mib: int = 0, state: str | None = None,
                  configuration: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """Bring the bundled target up in a background process owned by this one; returns its state file.

    ``misconfigurations`` is a comma-separated list of the target's misconfiguration profiles
    (``readiness_ignores_model``, ``no_circuit_breaker``, ``unbounded_queue``,
    ``liveness_checks_dependency``), added to ``$FAULTDRILL_MISCONFIGURATIONS``; ``alerting``
    also starts Prometheus + Alertmanager with the shipped rules (time-scaled ÷60) for the
    ``alert_firing`` probe; ``feature_store_netns`` runs the feature store in its own network
    namespace (``network_partition`` needs it). When this process exits, the target rolls
    back what this process injected and stops.
    """
    path = state_path(state, configuration)
    names = _misconfigs(misconfigurations)
    if unknown := [n for n in names if n not in MISCONFIGURATIONS]:
        raise ConfigError(f"unknown misconfiguration {', '.join(map(repr, unknown))}", field="misconfigurations",
                          expected="one of " + ", ".join(MISCONFIGURATIONS))  # fmt: skip
    _refuse_running(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    log = path.with_suffix(".log")
    argv = [sys.executable, "-m", "faultdrill.experiments.chaostoolkit.target", "serve", "--state", str(path),
            "--owner",
            str(os.getpid()), "--replicas", str(int(replicas)),
            "--memory-limit-mib", str(int(memory_limit_mib))]  # fmt: skip
    for name in names:
        argv += ["--misconfig", name]
    argv += ["--alerting"] if alerting else []
    argv += ["--netns"] if feature_store_netns else []
    with open(log, "ab") as out:
        # Its own session: a Ctrl-C to chaos run reaches chaos run, whose rollbacks and
        # controls then ask this process to stop, in order.
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True)  # fmt: skip
    deadline = time.monotonic() + UP_TIMEOUT_S
    while time.monotonic() < deadline:
        found = _peek(path)
        if found is not None and found.pid == proc.pid and found.status in ("ready", "failed"):
            if found.status == "failed":
                proc.wait(30)
                raise FaultdrillError(f"the faultdrill target did not come up: {found.error} (log: {log})")
            return {"state": str(path), "service_url": found.service_url, "replicas": found.replicas,
                    "prometheus_url": found.prometheus_url, "misconfigurations": found.misconfigurations}  # fmt: skip
        if proc.poll() is not None:
            raise FaultdrillError(f"the faultdrill target exited with status {proc.returncode} before it was ready "
                                  f"(log: {log}):\n{_tail(log)}")  # fmt: skip
        time.sleep(0.1)
    proc.terminate()
    raise FaultdrillError(f"the faultdrill target was not ready after {UP_TIMEOUT_S:.0f} s (log: {log})")


def faultdrill_down(timeout_s: float = 60.0, state: str | None = None,
                    configuration: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """Stop the target: roll back what its owner injected, stop every process, remove the state file.

    A no-op when no target is up (it belongs in ``rollbacks`` and after-controls alike).
    """
    path = state_path(state, configuration)
    found = _peek(path)
    if found is None or not found.alive():
        path.unlink(missing_ok=True)
        return {"stopped": False, "state": str(path)}
    with contextlib.suppress(OSError):
        os.kill(found.pid, signal.SIGTERM)  # the target's handler: rollback, then stop in order
    deadline = time.monotonic() + timeout_s
    while found.alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(found.pid, os.WNOHANG)  # reap it when this process started it (no zombie left)
    if found.alive():
        os.kill(found.pid, signal.SIGKILL)
        raise FaultdrillError(f"the faultdrill target (pid {found.pid}) did not stop within {timeout_s:g} s: killed; "
                              "run `faultdrill rollback --pending`")  # fmt: skip
    return {"stopped": True, "state": str(path)}


# -- Chaos Toolkit control hooks (by name) -------------------------------------------------
def before_experiment_control(context: Any, configuration: dict[str, Any] | None = None,
                              **arguments: Any) -> None:  # fmt: skip
    """Bring the target up before the steady-state hypothesis (the control's arguments are ``faultdrill_up``'s)."""
    from chaoslib.exceptions import InterruptExecution

    known = {k: v for k, v in arguments.items() if k in _UP_ARGS}
    try:
        faultdrill_up(configuration=configuration, **known)
    except FaultdrillError as exc:
        # Chaos Toolkit swallows a control's errors; only this stops the experiment.
        raise InterruptExecution(f"faultdrill target: {exc}") from exc


def after_experiment_control(context: Any, configuration: dict[str, Any] | None = None,
                             **arguments: Any) -> None:  # fmt: skip
    """Stop the target after the rollbacks (also when the run was interrupted)."""
    faultdrill_down(configuration=configuration, state=arguments.get("state"))


_UP_ARGS = ("replicas", "misconfigurations", "alerting", "feature_store_netns", "memory_limit_mib", "state")


def _misconfigs(value: str | list[str] | None) -> list[str]:
    items = value.split(",") if isinstance(value, str) else list(value or [])
    from_env = os.environ.get("FAULTDRILL_MISCONFIGURATIONS", "").split(",")
    return list(dict.fromkeys(s.strip() for s in [*from_env, *items] if s.strip()))


def _peek(path: Path) -> TargetState | None:
    try:
        return read_state(path)
    except ConfigError:
        return None


def _refuse_running(path: Path) -> None:
    found = _peek(path)
    if found is not None and found.alive():
        raise FaultdrillError(f"a faultdrill target is already up for {path} (pid {found.pid}, owner pid "
                              f"{found.owner_pid}): stop it with faultdrill_down, or use another state "
                              "file")  # fmt: skip
    path.unlink(missing_ok=True)  # a stale file of a target that is gone


def _tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# -- the target process ----------------------------------------------------------------------
class _Control(TokenServer):
    """Loopback control API: topology, scope, supervisor calls. Every request needs the token."""

    def __init__(self, platform: Any, token: str) -> None:
        super().__init__(_Handler, token)
        self.platform = platform


_OPS = ("stop", "kill", "start", "restart", "set_env", "handle", "wait_exit", "exit_status")


class _Handler(TokenHandler):
    server: _Control

    def do_GET(self) -> None:
        if not self.authorized():
            return
        platform = self.server.platform
        if self.path == "/topology":
            self.reply(HTTPStatus.OK, {"result": platform.topology().model_dump(mode="json")})
        elif self.path == "/scope":
            scope = platform.scope()
            self.reply(HTTPStatus.OK, {"result": {k: sorted(getattr(scope, k)) for k in
                                                   ("pids", "cgroups", "netns", "paths", "ports")}})  # fmt: skip
        else:
            self.reply(HTTPStatus.NOT_FOUND, {"error": f"no route {self.path}"})

    def do_POST(self) -> None:
        if not self.authorized():
            return
        if self.path != "/supervisor":
            self.reply(HTTPStatus.NOT_FOUND, {"error": f"no route {self.path}"})
            return
        try:
            args = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            op = args.pop("op", None)
            if op not in _OPS:
                raise ValueError(f"unknown supervisor call {op!r} (known: {', '.join(_OPS)})")
            result = getattr(self.server.platform, op)(**args)
            if hasattr(result, "model_dump"):
                result = result.model_dump(mode="json")
            self.reply(HTTPStatus.OK, {"result": result})
        except Exception as exc:  # a refused call is the caller's error to report, never this server's end
            self.reply(HTTPStatus.CONFLICT, {"error": f"{type(exc).__name__}: {exc}"})


def serve(args: argparse.Namespace) -> int:
    """The target process: up, state file, control API, then wait for stop or the owner's exit."""
    from faultdrill.experiments.journal.timeline import Timeline
    from faultdrill.experiments.platforms.build import build_platform
    from faultdrill.experiments.spec.system import bundled_system

    path = Path(args.state).absolute()
    owner_start = process_start_ticks(args.owner)
    workdir = path.parent / f"{path.stem}-{os.getpid()}"
    workdir.mkdir(parents=True, exist_ok=True)
    state = TargetState(status="starting", pid=os.getpid(), pid_start=process_start_ticks(os.getpid()),
                        owner_pid=args.owner, state_dir=default_state_dir(), workdir=workdir,
                        misconfigurations=list(args.misconfig), log_file=path.with_suffix(".log"))  # fmt: skip
    write_state(path, state)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    timeline = Timeline()
    memory_limit = args.memory_limit_mib * 2**20 or None
    system = bundled_system(replicas=args.replicas, feature_store_netns=args.netns,
                            memory_limit=memory_limit is not None)  # the CTK target has no spec: the bundled system
    platform = build_platform(timeline=timeline, workdir=workdir / "platform", misconfigurations=args.misconfig,
                              system=system, memory_limit_bytes=memory_limit)  # fmt: skip
    alerting: Any = None
    control: _Control | None = None
    try:
        platform.up()
        info: dict[str, Any] = {}
        if args.alerting:
            alerting = _alerting(workdir, timeline, platform)
            info = alerting.up()
        token_file = workdir / "control.token"
        token_file.write_text(secrets.token_urlsafe(24))
        token_file.chmod(0o600)
        control = _Control(platform, token_file.read_text())
        threading.Thread(target=control.serve_forever, name="ctk-control", daemon=True).start()
        topo = platform.topology()
        state = state.model_copy(update={
            "status": "ready", "control_url": control.url, "token_file": token_file,
            "service_url": platform.service_url, "prometheus_url": info.get("prometheus_url"),
            "alertmanager_url": info.get("alertmanager_url"),
            "replicas": {h.name: h.url for h in topo.by_role("replica") if h.url},
        })  # fmt: skip
        write_state(path, state)
        print(f"faultdrill target ready: {platform.service_url} (owner pid {args.owner})", flush=True)
        while not stop.is_set() and pid_alive(args.owner, owner_start):
            stop.wait(_OWNER_POLL_S)
        why = "stop requested" if stop.is_set() else f"owner pid {args.owner} exited"
        print(f"faultdrill target stopping: {why}", flush=True)
        return 0
    except Exception as exc:
        write_state(path, state.model_copy(update={"status": "failed", "error": f"{type(exc).__name__}: {exc}"}))
        print(f"faultdrill target failed: {type(exc).__name__}: {exc}", flush=True)
        return 1
    finally:
        _teardown(path, state, args.owner, platform, alerting, control)


def _alerting(workdir: Path, timeline: Any, platform: Any) -> Any:
    from faultdrill.experiments.alerting.session import RunAlerting
    from faultdrill.experiments.spec.alerting import AlertingSpec
    from faultdrill.experiments.spec.rules import alertmanager_path, rules_path

    return RunAlerting(AlertingSpec(), rules_path("default", spec_file=None),
                       alertmanager_path("default", spec_file=None), workdir / "alerting", timeline,
                       platform.topology)  # fmt: skip


def _teardown(path: Path, state: TargetState, owner: int, platform: Any, alerting: Any, control: Any) -> None:
    """Undo the owner's injections with the live supervisor, then stop everything; each step even if one fails."""
    failed = state.status == "failed"
    try:
        if not failed:
            write_state(path, state.model_copy(update={"status": "stopping"}))
        for line in _rollback_owner(owner, platform):
            print(line, flush=True)
    except Exception as exc:  # the ledger keeps what was not undone; stopping must still happen
        print(f"rollback on stop failed: {type(exc).__name__}: {exc}", flush=True)
    finally:
        try:
            if control is not None:
                control.shutdown()
                control.server_close()
            if alerting is not None:
                alerting.close()
        finally:
            platform.close()
            if not failed:  # a failed start keeps its file: faultdrill_up reads the error from it
                path.unlink(missing_ok=True)


def _rollback_owner(owner: int, platform: Any) -> list[str]:
    from faultdrill.faults.base import FaultContext
    from faultdrill.faults.registry import FaultRegistry

    ctx = FaultContext.create(default_state_dir(), scope=platform.scope(), topology=platform.topology(),
                              supervisor=platform)  # fmt: skip
    return rollback_owned(FaultRegistry.installed(), ctx, owner)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m faultdrill.experiments.chaostoolkit.target",
                                     description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("serve", help="run the target until stopped or until the owner exits")
    up.add_argument("--state", required=True)
    up.add_argument("--owner", type=int, required=True)
    up.add_argument("--replicas", type=int, default=2)
    up.add_argument("--misconfig", action="append", default=[])
    up.add_argument("--alerting", action="store_true")
    up.add_argument("--netns", action="store_true")
    up.add_argument("--memory-limit-mib", type=int, default=0)
    return serve(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
