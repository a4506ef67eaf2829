"""cert_expiry: bad configs, and each mode injected, verified and rolled back for real."""

from __future__ import annotations

import hashlib
import json
import os
import select
import signal
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from faults_helpers import start_python, wait_for_line

from faultdrill.experiments.platforms.local.stack import LocalStack
from faultdrill.faults.base import FaultContext, Scope
from faultdrill.faults.certs import TAG_ENV, CertExpiryFault, tagged_pids, tls_handshake
from faultdrill.faults.errors import ConfigError, PreflightError
from faultdrill.faults.ledger import rollback_pending
from faultdrill.faults.registry import FaultRegistry
from faultdrill.faults.topology import ServiceHandle, Topology
from faultdrill.target_service.pki import DevPki, create_ca, ensure_dev_pki, issue_cert
from faultdrill.target_service.tlsreload import ReloadingServerContext


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _poll(fn: Callable[[], object], timeout_s: float = 10.0) -> tuple[object, float]:
    """Call ``fn`` until it returns something truthy (bounded); return (value, elapsed ms)."""
    started = time.monotonic()
    value = None
    for _ in range(2000):
        value = fn()
        if value or time.monotonic() - started > timeout_s:
            break
        time.sleep(0.01)
    return value, (time.monotonic() - started) * 1000


@pytest.fixture
def registry() -> FaultRegistry:
    reg = FaultRegistry()
    reg.register(CertExpiryFault, source="tests")
    return reg


# -- bad configs: located, readable, nothing injected -----------------------------------


def _offline_ctx(tmp_path: Path) -> FaultContext:
    cert = tmp_path / "fs.crt"
    cert.write_text("original")
    fs = ServiceHandle(name="feature-store", role="feature_store", cert_file=cert, key_file=tmp_path / "fs.key")
    topo = Topology(services={"feature-store": fs})
    return FaultContext.create(tmp_path / "state", topology=topo, scope=Scope().with_paths(tmp_path))


def test_unknown_key_suggests_the_right_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        CertExpiryFault().parse_config({"target": "feature-store", "mdoe": "expired"}, file="exp.yaml")
    assert "unknown key 'mdoe'" in str(err.value) and "did you mean 'mode'" in str(err.value)
    assert str(err.value).startswith("exp.yaml: mdoe:")


def test_wrong_type_and_unknown_mode_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="skew_days"):
        CertExpiryFault().parse_config({"target": "x", "mode": "clock_skew", "skew_days": "lots"})
    with pytest.raises(ConfigError, match="mode"):
        CertExpiryFault().parse_config({"target": "x", "mode": "expird"})


def test_unknown_target_suggests_and_injects_nothing(tmp_path: Path) -> None:
    ctx = _offline_ctx(tmp_path)
    fault = CertExpiryFault()
    cfg = fault.parse_config({"target": "feature-stor", "mode": "expired"})
    with pytest.raises(ConfigError, match="did you mean 'feature-store'"):
        fault.inject(cfg, ctx)
    assert ctx.ledger.ids() == [] and (tmp_path / "fs.crt").read_text() == "original"


def test_service_without_tls_or_out_of_scope_is_refused(tmp_path: Path) -> None:
    ctx = _offline_ctx(tmp_path)
    ctx.scope = Scope()  # nothing allowed
    fault = CertExpiryFault()
    cfg = fault.parse_config({"target": "feature-store", "mode": "expired"})
    codes = {p.code for p in fault.preflight(cfg, ctx)}
    assert {"no_tls", "blast_radius"} <= codes
    with pytest.raises(PreflightError, match="refused to touch path"):
        fault.inject(cfg, ctx)
    assert ctx.ledger.ids() == [] and (tmp_path / "fs.crt").read_text() == "original"
    skew = fault.parse_config({"target": "feature-store", "mode": "clock_skew"})
    assert "no_supervisor" in {p.code for p in fault.preflight(skew, ctx)}


# -- verify against a real TLS server with the project's PKI and hot reload ---------------


class _TlsServer:
    """A TLS server on loopback serving ``ReloadingServerContext`` (the services' hot reload).

    One thread accepts, handshakes and, with ``reload``, polls the files every 20 ms (the
    same thread: the context is only touched there, as on the services' event loop). Without
    ``reload`` it keeps serving the certificate it started with: a swap that never takes effect.
    """

    def __init__(self, cert: Path, key: Path, *, reload: bool = True) -> None:
        self.tls = ReloadingServerContext(cert, key)
        self.reload = reload
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tls-server", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.reload:
                self.tls.check()
            if not select.select([self.sock], [], [], 0.02)[0]:
                continue
            conn, _ = self.sock.accept()
            conn.settimeout(2.0)
            try:
                with self.tls.ssl.wrap_socket(conn, server_side=True):
                    pass
            except (OSError, ssl.SSLError):
                pass  # the client rejected us: exactly what the bad modes are for
            finally:
                conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def pki(tmp_path: Path) -> DevPki:
    return ensure_dev_pki(tmp_path / "pki")


def _tls_ctx(tmp_path: Path, pki: DevPki, port: int, host: str = "127.0.0.1") -> FaultContext:
    fs = ServiceHandle(
        name="feature-store", role="feature_store", url=f"https://{host}:{port}", port=port,
        cert_file=pki.feature_store.cert, key_file=pki.feature_store.key, ca_file=pki.ca.cert,
    )  # fmt: skip
    return FaultContext.create(tmp_path / "state", topology=Topology(services={"feature-store": fs}),
                               scope=Scope().with_paths(pki.ca.cert.parent))  # fmt: skip


@pytest.mark.parametrize(
    ("mode", "host", "code", "reason"),
    [
        ("expired", "127.0.0.1", 10, "certificate has expired"),
        ("not_yet_valid", "127.0.0.1", 9, "certificate is not yet valid"),
        ("wrong_ca", "127.0.0.1", 20, "unable to get local issuer certificate"),
        ("wrong_host", "127.0.0.1", 64, "IP address mismatch"),  # the client checks an IP: 64
        ("wrong_host", "localhost", 62, "Hostname mismatch"),  # a DNS name: 62
    ],
)
def test_verify_sees_the_reloaded_certificate_fail_for_the_mode(
    tmp_path: Path, pki: DevPki, mode: str, host: str, code: int, reason: str
) -> None:
    server = _TlsServer(pki.feature_store.cert, pki.feature_store.key)
    try:
        ctx = _tls_ctx(tmp_path, pki, server.port, host)
        assert tls_handshake(f"https://{host}:{server.port}", pki.ca.cert)["ok"]
        fault = CertExpiryFault()
        inj = fault.inject(fault.parse_config({"target": "feature-store", "mode": mode}), ctx)
        try:
            v = fault.verify(inj, ctx)  # once, right after the swap: it waits for the reload itself
            assert v.effective, v.message
            assert v.details["verify_code"] == code and reason in v.details["error"]
            served = v.details["served"]
            assert served["is_injected"] is True and served["subject"].startswith("CN=injected")
            assert v.message.startswith("verified: ") and f"[{code}] " in v.message and reason in v.message
            assert server.tls.generation == 2  # it is the hot reload that made it fail
            print(f"\ncert_expiry {mode} ({host}): verified after {v.details['waited_ms']:.0f} ms, "
                  f"{v.details['attempts']} handshakes: {v.message}")  # fmt: skip
        finally:
            fault.undo(inj, ctx)
        ok, healthy_ms = _poll(lambda: tls_handshake(f"https://{host}:{server.port}", pki.ca.cert)["ok"])
        assert ok  # the restored certificate is reloaded and verifies again
        print(f"cert_expiry {mode}: rollback->handshake ok {healthy_ms:.0f} ms")
    finally:
        server.close()


def test_swap_that_never_reloads_is_not_verified(tmp_path: Path, pki: DevPki, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(CertExpiryFault, "settle_s", 0.5)
    server = _TlsServer(pki.feature_store.cert, pki.feature_store.key, reload=False)
    try:
        ctx = _tls_ctx(tmp_path, pki, server.port)
        fault = CertExpiryFault()
        inj = fault.inject(fault.parse_config({"target": "feature-store", "mode": "expired"}), ctx)
        try:
            assert tls_handshake(f"https://127.0.0.1:{server.port}", pki.ca.cert)["ok"]  # still the old one
            v = fault.verify(inj, ctx)
            assert not v.effective and v.details["ok"] is True and v.details["verify_code"] is None
            assert v.details["waited_ms"] >= 500 and v.details["attempts"] > 1  # it did wait, bounded
            assert v.details["served"]["is_injected"] is False and "CN=feature-store" in v.details["served"]["subject"]
            assert v.message.startswith("not verified: ") and "still succeeds" in v.message, v.message
            assert "the original certificate" in v.message and "expected [10] certificate has expired" in v.message
        finally:
            fault.undo(inj, ctx)
    finally:
        server.close()


def test_handshake_failing_for_another_reason_is_not_verified(
    tmp_path: Path, pki: DevPki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(CertExpiryFault, "settle_s", 0.3)
    # The server serves a certificate from another CA, not the files the fault swaps.
    other = issue_cert(create_ca(tmp_path / "other-ca", "other CA"), tmp_path / "other", "other", ("127.0.0.1",))
    server = _TlsServer(other.cert, other.key)
    try:
        ctx = _tls_ctx(tmp_path, pki, server.port)
        fault = CertExpiryFault()
        inj = fault.inject(fault.parse_config({"target": "feature-store", "mode": "expired"}), ctx)
        try:
            v = fault.verify(inj, ctx)
            assert not v.effective and v.details["verify_code"] == 20, v.details
            assert v.message.startswith("not verified: ") and "[20] unable to get local issuer" in v.message
            assert "expected [10] certificate has expired" in v.message
        finally:
            fault.undo(inj, ctx)
    finally:
        server.close()
    # Nothing listens any more: a refused connection is no certificate failure either.
    v = fault.verify(inj, ctx)
    assert not v.effective and v.details["verify_code"] is None and "ConnectionRefusedError" in v.message


# -- for real, against LocalStack ---------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with LocalStack(tmp_path_factory.mktemp("certs-stack"), replicas=1) as s:
        yield s


def _ctx(stack: LocalStack, state: Path) -> FaultContext:
    return FaultContext.create(state, scope=stack.scope(), topology=stack.topology(), supervisor=stack)


def _infer(url: str) -> int:
    body = {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}],
            "parameters": {"entity_id": uuid.uuid4().hex}}  # fmt: skip
    return httpx.post(f"{url}/v2/models/digits/infer", json=body, timeout=10).status_code


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["expired", "not_yet_valid", "wrong_ca", "wrong_host"])
def test_file_mode_injects_verifies_and_restores(stack: LocalStack, tmp_path: Path, mode: str) -> None:
    ctx = _ctx(stack, tmp_path / "state")
    fs = stack.topology().get("feature-store")
    assert fs.cert_file and fs.key_file and fs.ca_file
    before = (_sha(fs.cert_file), _sha(fs.key_file))
    fault = CertExpiryFault()
    cfg = fault.parse_config({"target": "feature-store", "mode": mode})
    plan = fault.plan(cfg, ctx)
    assert (_sha(fs.cert_file), _sha(fs.key_file)) == before and any("replace" in line for line in plan)
    inj = fault.inject(cfg, ctx)
    try:
        assert "token" not in json.dumps(inj.undo).lower()
        assert (ctx.state_dir / "backups" / inj.id / fs.cert_file.name).read_bytes() != b""
        v = fault.verify(inj, ctx)  # once, as a run calls it: right after the swap
        assert v.effective, v.details
        assert v.details["verify_code"] in {"expired": {10}, "not_yet_valid": {9}, "wrong_ca": {20}}.get(mode, {62, 64})
        print(f"\ncert_expiry {mode}: inject->verified {v.details['waited_ms']:.0f} ms: {v.message}")
        if mode == "expired":  # the replica's own reaction: its feature calls fail on the cert
            replica = stack.topology().get("replica-0")
            assert replica.url
            _infer(replica.url)
            assert "certificate has expired" in str(fault.verify(inj, ctx).details["replicas"]["replica-0"])
    finally:
        fault.undo(inj, ctx)
    assert (_sha(fs.cert_file), _sha(fs.key_file)) == before
    ok, healthy_ms = _poll(lambda: tls_handshake(fs.url or "", Path(str(fs.ca_file)))["ok"])
    assert ok
    print(f"cert_expiry {mode}: rollback->healthy {healthy_ms:.0f} ms")
    fault.rollback(inj, ctx)  # idempotent
    assert (_sha(fs.cert_file), _sha(fs.key_file)) == before
    assert not (ctx.state_dir / "backups" / inj.id).exists()


@pytest.mark.slow
@pytest.mark.tools("faketime")
def test_clock_skew_restarts_under_faketime_and_back(stack: LocalStack, tmp_path: Path) -> None:
    ctx = _ctx(stack, tmp_path / "state")
    fault = CertExpiryFault()
    cfg = fault.parse_config({"target": "replica-0", "mode": "clock_skew", "skew_days": 400})
    assert fault.preflight(cfg, ctx) == []
    inj = fault.inject(cfg, ctx)
    try:
        v = fault.verify(inj, ctx)
        assert v.effective, v.details
        assert abs(v.details["date_skew_s"] - 400 * 86400) < 3600
        replica = stack.handle("replica-0")
        assert replica.url
        _infer(replica.url)  # its clock is 400 days on: the store's certificate has expired for it
        v = fault.verify(inj, ctx)
        assert "certificate has expired" in str(v.details["replicas"]["replica-0"])
        assert v.message.startswith("verified: replica-0 clock skew +345")
        assert "(expected: certificate has expired)" in v.message
        print(f"\ncert_expiry clock_skew: {v.message}")
    finally:
        started = time.monotonic()
        fault.undo(inj, ctx)
    print(f"\ncert_expiry clock_skew: rollback->healthy (restart) {(time.monotonic() - started) * 1000:.0f} ms")
    assert tagged_pids(TAG_ENV, inj.id) == []
    environ = Path(f"/proc/{stack.handle('replica-0').pid}/environ").read_bytes()
    assert b"FAKETIME" not in environ
    assert fault.verify(inj, ctx).effective is False
    fault.rollback(inj, ctx)  # idempotent: nothing tagged, no second restart
    assert stack.handle("replica-0").pid == stack.handle("replica-0").pid


# -- crash safety: the injector is SIGKILLed mid fault --------------------------------------

FILE_CHILD = """
import sys, time
from faultdrill.faults.base import FaultContext, Scope
from faultdrill.faults.certs import CertExpiryFault
from faultdrill.faults.topology import Topology
topo = Topology.model_validate_json(sys.argv[1])
ctx = FaultContext.create({state!r}, topology=topo, scope=Scope().with_paths({allowed!r}))
fault = CertExpiryFault()
inj = fault.inject(fault.parse_config({{"target": "feature-store", "mode": "wrong_ca"}}), ctx)
print("injected", inj.id, flush=True)
time.sleep(120)
"""


@pytest.mark.slow
def test_crash_after_swap_then_rollback_pending(stack: LocalStack, tmp_path: Path, registry: FaultRegistry) -> None:
    fs = stack.topology().get("feature-store")
    assert fs.cert_file and fs.key_file and fs.ca_file and fs.url
    before = (_sha(fs.cert_file), _sha(fs.key_file))
    state = tmp_path / "state"
    code = FILE_CHILD.format(state=str(state), allowed=str(stack.workdir))
    proc = start_python(code.replace("sys.argv[1]", repr(stack.topology().model_dump_json())))
    try:
        wait_for_line(proc, "injected")
        assert _sha(fs.cert_file) != before[0]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
    ctx = FaultContext.create(state)  # a new process: empty topology, no supervisor
    results = rollback_pending(registry, ctx)
    assert [r.outcome.value for r in results] == ["rolled_back"], results
    assert (_sha(fs.cert_file), _sha(fs.key_file)) == before  # checked on disk, not in the ledger
    ok, _ = _poll(lambda: tls_handshake(fs.url or "", Path(str(fs.ca_file)))["ok"])
    assert ok
    assert rollback_pending(registry, ctx) == []
    assert list((state / "backups").iterdir()) == []


# The skew is injected from a worker thread, as the platform's restart watcher restarts services:
# a child forked there gets no parent-death signal (Linux ties it to the forking *thread*), so it
# outlives its killed supervisor — the orphan that rollback must bring back to the real clock. (A
# run's own services are also ledger records, stopped by the watchdog: tests/unit/faults/test_faults_owned.py.)
SKEW_CHILD = """
import threading
import time
from pathlib import Path
from faultdrill.experiments.platforms.local.stack import LocalStack
from faultdrill.faults.base import FaultContext
from faultdrill.faults.certs import CertExpiryFault
stack = LocalStack(Path({work!r}), replicas=0, with_proxy=False)
stack.up()
ctx = FaultContext.create({state!r}, topology=stack.topology(), scope=stack.scope(), supervisor=stack)
fault = CertExpiryFault()
done = []
worker = threading.Thread(target=lambda: done.append(
    fault.inject(fault.parse_config({{"target": "feature-store", "mode": "clock_skew"}}), ctx)))
worker.start()
worker.join()
inj = done[0]
print("injected", inj.id, stack.handle("feature-store").port, flush=True)
time.sleep(120)
"""


def _serving_port(port: int) -> list[int]:
    needle = f"FAULTDRILL_FS_PORT={port}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.slow
@pytest.mark.tools("faketime")
def test_crash_mid_clock_skew_respawns_with_the_real_clock(tmp_path: Path, registry: FaultRegistry) -> None:
    state = tmp_path / "state"
    proc = start_python(SKEW_CHILD.format(work=str(tmp_path / "stack"), state=str(state)))
    port = 0
    try:
        line = wait_for_line(proc, "injected", timeout=60)
        injection_id, port = line.split()[1], int(line.split()[2])
        assert tagged_pids(TAG_ENV, injection_id)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
    try:
        # The orphaned feature store still runs 400 days ahead; rollback has no supervisor.
        results = rollback_pending(registry, FaultContext.create(state))
        assert [r.outcome.value for r in results] == ["rolled_back"], results
        assert tagged_pids(TAG_ENV, injection_id) == []
        ca = tmp_path / "stack" / "pki" / "ca.crt"
        ok, _ = _poll(lambda: tls_handshake(f"https://127.0.0.1:{port}", ca)["ok"], timeout_s=30)
        assert ok
        date = httpx.get(f"https://127.0.0.1:{port}/healthz", verify=False, timeout=2).headers["date"]
        from email.utils import parsedate_to_datetime

        assert abs(parsedate_to_datetime(date).timestamp() - time.time()) < 120
        assert all(b"FAKETIME" not in Path(f"/proc/{p}/environ").read_bytes() for p in _serving_port(port))
        assert rollback_pending(registry, FaultContext.create(state)) == []
    finally:
        for pid in _serving_port(port) if port else []:
            os.kill(pid, signal.SIGKILL)
