"""A ``faultdrill run`` SIGKILLed mid-fault (or before any fault) leaves nothing running.

Every catalog experiment: start the real run, wait until its first fault is ``active``, SIGKILL it,
run the real ``faultdrill rollback --pending``, and check the system itself — the process table
(psutil: every process the run had started, and any process whose command line or environment
names the run's directory), the run's network namespaces (``ip netns``), the ledger, and the
fault's effect. The matrix is ``catalog`` (``make test-catalog``); ``network_partition`` (it has a
namespace) runs in CI, as does a kill during steady state, before any fault, where nothing but the
run's own records and the dead-man watchdog can stop the platform.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.root, pytest.mark.system]
ROOT = Path(__file__).resolve().parents[2]
CATALOG = ROOT / "experiments" / "catalog"
CLEAN_WITHIN_S = 30.0
RESOURCE_KINDS = ("process", "netns")


def _case(path: Path) -> object:
    # network_partition is the representative CI case (platform + alerting + load + a namespace).
    marks = [] if path.stem == "network_partition" else [pytest.mark.catalog]
    return pytest.param(path.stem, marks=marks, id=path.stem)


@dataclass
class LiveRun:
    """A ``faultdrill run`` child, its output read on a thread (so every wait is bounded)."""

    proc: subprocess.Popen[str]
    out: Path
    state: Path
    lines: list[str] = field(default_factory=list)
    _q: queue.Queue[str | None] = field(default_factory=queue.Queue)

    @classmethod
    def start(cls, experiment: str | Path, tmp: Path) -> LiveRun:
        """A catalog experiment by name, or a spec file."""
        out, state = tmp / "runs", tmp / "state"
        env = {**os.environ, "FAULTDRILL_STATE_DIR": str(state), "CI": "true"}
        spec = experiment if isinstance(experiment, Path) else CATALOG / f"{experiment}.yaml"
        proc = subprocess.Popen([sys.executable, "-m", "faultdrill", "run", str(spec),
                                 "--out", str(out), "--plain"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=env, cwd=ROOT)  # fmt: skip
        run = cls(proc, out, state)
        threading.Thread(target=run._read, daemon=True).start()
        return run

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._q.put(line)
        self._q.put(None)

    def wait_for(self, pred: Callable[[str], bool], timeout_s: float = 240.0) -> str:
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._q.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
            if pred(line):
                return line
        raise AssertionError(f"run never printed the line (rc={self.proc.poll()}):\n{''.join(self.lines[-40:])}")

    def env(self) -> dict[str, str]:
        return {**os.environ, "FAULTDRILL_STATE_DIR": str(self.state), "CI": "true"}

    def records(self) -> list[dict[str, object]]:
        found = []
        for path in sorted((self.state / "ledger").glob("*.json")):
            try:
                found.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue  # cleared (or replaced) while we read
        return found

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


def _descendants(pid: int) -> dict[int, float]:
    """pid → create time of every process under ``pid`` (identity survives pid reuse)."""
    found = {}
    for child in psutil.Process(pid).children(recursive=True):
        try:
            found[child.pid] = child.create_time()
        except psutil.Error:
            continue
    return found


def _names(proc: psutil.Process, marker: str) -> bool:
    try:
        text = " ".join(proc.cmdline())
        if marker not in text:  # replicas name the run's directory in their environment only
            text = " ".join(f"{k}={v}" for k, v in proc.environ().items())
    except psutil.Error:
        return False
    return marker in text


def _still_running(started: dict[int, float], marker: str) -> list[str]:
    left = []
    for pid, created in started.items():
        try:
            p = psutil.Process(pid)
            if p.create_time() == created and p.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{pid} {' '.join(p.cmdline())[:140]}")
        except psutil.Error:
            continue
    me = os.getpid()
    for p in psutil.process_iter():
        if p.pid != me and p.pid not in started and _names(p, marker):
            with_cmd = " ".join(p.cmdline()) if p.is_running() else "?"
            if "pytest" not in with_cmd:
                left.append(f"{p.pid} (names the run) {with_cmd[:140]}")
    return left


def _existing_namespaces() -> set[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    return {line.split()[0] for line in listed.splitlines() if line.startswith("fd-")}


def _wait_clean(started: dict[int, float], marker: str, namespaces: set[str], state: Path) -> tuple[float, list[str]]:
    """Seconds until processes, namespaces and ledger are all clean (or what is left after the bound)."""
    began = time.monotonic()
    left: list[str] = []
    while time.monotonic() - began < CLEAN_WITHIN_S:
        left = _still_running(started, marker)
        left += [f"netns {n}" for n in sorted(namespaces & _existing_namespaces())]
        left += [f"ledger {p.name}" for p in (state / "ledger").glob("*.json")]
        if not left:
            break
        time.sleep(0.1)
    return time.monotonic() - began, left


def _skip_unless_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces, cgroups, iptables")


@pytest.mark.parametrize("experiment", [_case(p) for p in sorted(CATALOG.glob("*.yaml"))])
def test_sigkill_mid_fault_then_rollback_pending_leaves_nothing(experiment: str, tmp_path: Path,
                                                                 namespaces_of: Callable[[set[int]], set[str]]) -> None:
    _skip_unless_root()
    run = LiveRun.start(experiment, tmp_path)
    try:
        run.wait_for(lambda line: ": active" in line)
        started = _descendants(run.proc.pid)
        namespaces = namespaces_of(set(started))
        records = run.records()
        faults = {str(r["id"]) for r in records if r["fault"] not in RESOURCE_KINDS}
        owned = [r for r in records if r["fault"] == "process" and r["owner_pid"] == run.proc.pid]
        assert faults, f"no fault record while the fault is active: {records}"
        assert len(owned) >= 3, f"the platform's processes are not recorded: {records}"  # store, proxy, replica(s)…
        assert {r["target"] for r in records if r["fault"] == "netns"} == namespaces
        effect = _effect_probe(experiment, run, namespaces)
    finally:
        run.kill()
    cli = [sys.executable, "-m", "faultdrill", "rollback", "--pending"]
    first = subprocess.run(cli, capture_output=True, text=True, env=run.env(), cwd=ROOT, timeout=120)
    assert first.returncode == 0, first.stdout + first.stderr
    took, left = _wait_clean(started, str(run.out), namespaces, run.state)
    assert left == [], f"{experiment}: still there {took:.0f} s after SIGKILL + rollback --pending: {left}"
    log = (run.state / "deadman.log").read_text() if (run.state / "deadman.log").exists() else ""
    for fid in faults:  # undone by rollback --pending or by the watchdog, whichever came first
        assert fid in first.stdout + log, f"fault record {fid} was never rolled back:\n{first.stdout}\n{log}"
    effect()
    second = subprocess.run(cli, capture_output=True, text=True, env=run.env(), cwd=ROOT, timeout=60)
    assert second.returncode == 0 and "nothing pending" in second.stdout, second.stdout


def _effect_probe(experiment: str, run: LiveRun, namespaces: set[str]) -> Callable[[], None]:
    """A check, made after the cleanup, that the fault's effect is gone (beyond its processes)."""
    if experiment in ("cert_expiry", "smoke"):
        certs = sorted(run.out.glob("*/platform/pki*/feature-store.crt"))
        assert certs, "no feature-store certificate under the run"

        def certificates_valid() -> None:  # the expired certificate swapped back for the original
            from cryptography import x509

            for path in certs:
                cert = x509.load_pem_x509_certificate(path.read_bytes())
                assert cert.not_valid_after_utc.timestamp() > time.time(), f"{path} left expired"

        return certificates_valid
    if namespaces:

        def no_rules_no_namespace() -> None:
            assert not namespaces & _existing_namespaces()  # the partition's iptables rules lived in them

        return no_rules_no_namespace
    return lambda: None


def test_sigkill_before_any_fault_the_watchdog_stops_the_platform(
    tmp_path: Path, namespaces_of: Callable[[set[int]], set[str]]
) -> None:
    """Killed during steady state, before anything is injected: no fault record exists, so only the run's
    process and namespace records (and the watchdog spawned with the first of them) can stop it."""
    _skip_unless_root()
    run = LiveRun.start("network_partition", tmp_path)
    try:
        run.wait_for(lambda line: "steady state reached" in line)
        started = _descendants(run.proc.pid)
        namespaces = namespaces_of(set(started))
        records = run.records()
        assert records and all(r["fault"] in RESOURCE_KINDS for r in records), records  # no fault yet (at: 3s)
        assert namespaces and {r["target"] for r in records if r["fault"] == "netns"} == namespaces
        dog = [p for p in psutil.process_iter(["cmdline"])
               if "faultdrill.faults.deadman" in " ".join(p.info["cmdline"] or [])
               and str(run.state) in " ".join(p.info["cmdline"] or [])]  # fmt: skip
        assert dog, "no dead-man watchdog although the run has recorded its processes"
    finally:
        run.kill()
    took, left = _wait_clean(started, str(run.out), namespaces, run.state)  # the watchdog alone
    assert left == [], f"still there {took:.0f} s after SIGKILL, without rollback --pending: {left}"
    done = subprocess.run([sys.executable, "-m", "faultdrill", "rollback", "--pending"], capture_output=True,
                          text=True, env=run.env(), cwd=ROOT, timeout=60)  # fmt: skip
    assert done.returncode == 0 and "nothing pending" in done.stdout, done.stdout
    assert "(netns fd-" in (run.state / "deadman.log").read_text()


ENVOY_RUN = """\
apiVersion: faultdrill/v1
kind: Experiment
metadata: {name: envoy-crash}
target: {replicas: 2, endpoint: envoy}
load: {users: 4}
steady_state: {window: 2s, slo: {availability: 0.99}}
faults:
  - {id: kill, type: process_kill, target: replica-0, at: 1s, duration: 60s}
alerting: {enabled: false}
"""


@pytest.mark.tools("envoy")
def test_sigkill_of_a_run_through_envoy_leaves_no_proxy(tmp_path: Path) -> None:
    """``target.endpoint: envoy``: the run SIGKILLed mid-fault; its Envoy (a ledger record, a parent-death signal)
    is gone after ``rollback --pending`` with everything else the run started."""
    _skip_unless_root()
    spec = tmp_path / "envoy-crash.yaml"
    spec.write_text(ENVOY_RUN)
    run = LiveRun.start(spec, tmp_path)
    try:
        run.wait_for(lambda line: ": active" in line)
        started = _descendants(run.proc.pid)
        envoys = [pid for pid in started if "envoy" in _cmdline(pid)]
        assert envoys, "no Envoy among the run's processes"
        [endpoint] = [r for r in run.records() if r["fault"] == "process" and r["target"] == "service-endpoint"]
        # this run's admin socket (Envoy is every run's endpoint now: other tests' sockets come and go beside it)
        sockets = [Path(p) for p in endpoint["undo"].get("sockets", [])]  # type: ignore[union-attr]
        assert sockets and all(p.parent == Path(tempfile.gettempdir()) and p.exists() for p in sockets), endpoint
    finally:
        run.kill()
    done = subprocess.run([sys.executable, "-m", "faultdrill", "rollback", "--pending"], capture_output=True,
                          text=True, env=run.env(), cwd=ROOT, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    took, left = _wait_clean(started, str(run.out), set(), run.state)
    assert left == [], f"still there {took:.0f} s after SIGKILL + rollback --pending: {left}"
    # Its admin socket (in $TMPDIR: this run folder's path is too long for a unix socket) went with it.
    assert not [p for p in sockets if p.exists()]


def _cmdline(pid: int) -> str:
    """``pid``'s command line, or "" for one that is gone or a zombie (the fault's killed replica, not yet reaped)."""
    try:
        return " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return ""
