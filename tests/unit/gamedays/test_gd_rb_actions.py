"""faultdrill actions: parsed strictly, carried out on a RecordingSupervisor, a real model
registry layout, the real project PKI and a real admin-API server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import signal
import ssl
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from faultdrill.faults.topology import ServiceHandle, Topology
from faultdrill.gamedays.actions import (
    ActionContext,
    ActionError,
    ActionSyntaxError,
    RecordingSupervisor,
    Scalable,
    ScalableRecordingSupervisor,
    parse_action,
    run_action,
)
from faultdrill.target_service.pki import cert_info, ensure_dev_pki, issue_cert


def _topo(*handles: ServiceHandle) -> Topology:
    return Topology(services={h.name: h for h in handles})


def _run(text: str, sup: RecordingSupervisor | None, topo: Topology, stop: threading.Event | None = None) -> str:
    return run_action(parse_action(text), ActionContext(supervisor=sup, topology=lambda: topo, stop=stop))


REPLICA = ServiceHandle(name="replica-0", role="replica", url="http://127.0.0.1:1")


def test_restart_and_kill_go_to_the_supervisor() -> None:
    topo = _topo(REPLICA)
    sup = RecordingSupervisor(topo)
    assert _run("restart replica-0", sup, topo) == "restarted replica-0"
    assert _run("kill replica-0", sup, topo) == "sent SIGKILL to replica-0"
    assert _run("kill replica-0 TERM", sup, topo) == "sent SIGTERM to replica-0"
    assert sup.calls == [("restart", "replica-0", None), ("kill", "replica-0", int(signal.SIGKILL)),
                         ("kill", "replica-0", int(signal.SIGTERM))]  # fmt: skip


def test_platform_actions_without_a_platform_are_refused_clearly() -> None:
    with pytest.raises(ActionError, match=r"'restart' needs a platform: .* experiment or game day"):
        _run("restart replica-0", None, _topo(REPLICA))


def test_platform_errors_pass_through_to_the_caller() -> None:
    topo = _topo(REPLICA)
    sup = RecordingSupervisor(topo, fail={"restart": RuntimeError("replica-0 exited with status 1")})
    with pytest.raises(RuntimeError, match="exited with status 1"):
        _run("restart replica-0", sup, topo)
    with pytest.raises(Exception, match="unknown target 'replica-9'"):
        _run("restart replica-9", sup, topo)


def test_scale_needs_the_scalable_capability() -> None:
    topo = _topo(REPLICA)
    with pytest.raises(ActionError, match="cannot scale: it does not implement Scalable"):
        _run("scale replicas 3", RecordingSupervisor(topo), topo)
    sup = ScalableRecordingSupervisor(topo)
    assert isinstance(sup, Scalable) and not isinstance(RecordingSupervisor(topo), Scalable)
    assert _run("scale replicas 3", sup, topo) == "scaled to 3 replicas"
    assert sup.calls == [("scale", 3)]


def test_wait_waits_and_a_stop_cuts_it_short() -> None:
    start = time.monotonic()
    assert _run("wait 200ms", None, Topology()) == "waited 200ms"
    assert time.monotonic() - start >= 0.19
    stop = threading.Event()
    threading.Timer(0.1, stop.set).start()
    start = time.monotonic()
    with pytest.raises(ActionError, match="stopped early"):
        _run("wait 30s", None, Topology(), stop)
    assert time.monotonic() - start < 2


@pytest.mark.parametrize(("text", "message", "suggestion"), [
    ("restat x", "unknown action 'restat'", "restart"),
    ("restart", "'restart' takes 1 argument, got 0", None),
    ("kill a SIGTERM extra", "'kill' takes 1 or 2 arguments, got 3", None),
    ("kill a SIGNOPE", "unknown signal 'SIGNOPE'", None),
    ("wait forever", "bad duration 'forever'", None),
    ("wait 2h", "wait is at most 1h", None),
    ("scale replica 3", "usage: scale replicas <N>", "replicas"),
    ("scale replicas 0", "replicas must be a whole number from 1 to 64", None),
    ("scale replicas many", "replicas must be a whole number from 1 to 64", None),
])  # fmt: skip
def test_bad_actions_say_what_is_wrong(text: str, message: str, suggestion: str | None) -> None:
    with pytest.raises(ActionSyntaxError) as info:
        parse_action(text)
    assert message in str(info.value) and info.value.suggestion == suggestion


# -- rollback-model ------------------------------------------------------------------------
def _publish(registry: Path, version: str, *, corrupt: bool = False) -> None:
    vdir = registry / "digits" / version
    vdir.mkdir(parents=True)
    data = f"weights of version {version}".encode()
    (vdir / "manifest.json").write_text(json.dumps({"sha256": hashlib.sha256(data).hexdigest()}))
    (vdir / "model.pt").write_bytes(data + (b"!" if corrupt else b""))


def _model_replica(registry: Path, version: str) -> ServiceHandle:
    return ServiceHandle(name="replica-0", role="replica", model_registry=registry, model_name="digits",
                         model_version=version)  # fmt: skip


@pytest.mark.parametrize(("published", "configured", "chosen"), [
    ([("1", False), ("2", False)], "2", "1"),       # a plain rollback: the one below
    ([("1", False), ("2", True)], "latest", "1"),   # latest resolves to 2, which is corrupt
    ([("1", True), ("2", False), ("3", True)], "3", "2"),  # skip the corrupt, pick the newest good below
    ([("1", False)], "1", "1"),                     # nothing below: its own good version (undoes an override)
    ([("1", False), ("10", False), ("9", True)], "10", "1"),  # numeric order, 9 is corrupt
])  # fmt: skip
def test_rollback_model_picks_the_previous_good_version(tmp_path: Path, published: list[tuple[str, bool]],
                                                        configured: str, chosen: str) -> None:  # fmt: skip
    for version, corrupt in published:
        _publish(tmp_path, version, corrupt=corrupt)
    topo = _topo(_model_replica(tmp_path, configured))
    sup = RecordingSupervisor(topo)
    text = _run("rollback-model replica-0", sup, topo)
    # The spec first (what every later start uses, like ``kubectl rollout undo``), then the restart on it.
    assert sup.calls == [("set_env", "replica-0", {"FAULTDRILL_MODEL_VERSION": chosen}),
                         ("restart", "replica-0", {"FAULTDRILL_MODEL_VERSION": chosen})]
    assert sup.spec_env == {"replica-0": {"FAULTDRILL_MODEL_VERSION": chosen}}
    assert f"version {chosen}" in text and "spec" in text


def test_rollback_model_without_a_good_version_fails_and_restarts_nothing(tmp_path: Path) -> None:
    _publish(tmp_path, "1", corrupt=True)
    topo = _topo(_model_replica(tmp_path, "1"))
    sup = RecordingSupervisor(topo)
    with pytest.raises(ActionError, match=r"no good version of model 'digits'.*good: none"):
        _run("rollback-model replica-0", sup, topo)
    assert sup.calls == []
    with pytest.raises(ActionError, match="no model registry"):
        _run("rollback-model replica-0", RecordingSupervisor(_topo(REPLICA)), _topo(REPLICA))


# -- release-device-memory -----------------------------------------------------------------
@pytest.fixture()
def admin_api(serve_http: Callable[[type], str]) -> tuple[str, list[tuple[str, str, bytes]]]:
    seen: list[tuple[str, str, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            seen.append((self.path, self.headers.get("authorization", ""), body))
            ok = self.headers.get("authorization") == "Bearer tok-0123456789"
            doc = {"device_memory_held_bytes": 0} if ok else {"error": "missing or wrong bearer token"}
            out = json.dumps(doc).encode()
            self.send_response(200 if ok else 401)
            self.send_header("content-length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args: object) -> None:
            pass

    return serve_http(Handler), seen


def test_release_device_memory_calls_the_admin_api_with_the_token_from_its_file(
    tmp_path: Path, admin_api: tuple[str, list[tuple[str, str, bytes]]]
) -> None:
    url, seen = admin_api
    token = tmp_path / "admin.token"
    token.write_text("tok-0123456789\n")
    handle = REPLICA.model_copy(update={"admin_url": url, "admin_token_file": token})
    text = _run("release-device-memory replica-0", None, _topo(handle))
    assert seen == [("/admin/device-memory/release", "Bearer tok-0123456789", b"{}")]
    assert text == "released the device memory held on replica-0 (now held: 0 bytes)"
    assert "tok-0123456789" not in text
    token.write_text("wrong")
    with pytest.raises(Exception, match="answered 401"):
        _run("release-device-memory replica-0", None, _topo(handle))
    with pytest.raises(ActionError, match="has no admin API"):
        _run("release-device-memory replica-0", None, _topo(REPLICA))


# -- renew-certificate ---------------------------------------------------------------------
def test_renew_certificate_reissues_an_expired_certificate_in_place(tmp_path: Path) -> None:
    pki = ensure_dev_pki(tmp_path / "pki")
    past = datetime.now(UTC) - timedelta(days=30)
    issue_cert(pki.ca, tmp_path / "pki", "feature-store", not_before=past, not_after=past + timedelta(days=1))
    assert not cert_info(pki.feature_store.cert).valid_at()
    store = ServiceHandle(name="feature-store", role="feature_store", url="https://127.0.0.1:8443",
                          cert_file=pki.feature_store.cert, key_file=pki.feature_store.key, ca_file=pki.ca.cert)
    text = _run("renew-certificate feature-store", None, _topo(store))
    info = cert_info(pki.feature_store.cert)
    assert info.valid_at() and info.not_after > datetime.now(UTC) + timedelta(days=300)
    assert "127.0.0.1" in info.sans and "localhost" in info.sans and "valid until" in text
    assert pki.feature_store.key.stat().st_mode & 0o777 == 0o600
    assert _handshake(pki.feature_store.cert, pki.feature_store.key, pki.ca.cert) == "ok"


def test_the_handshake_helper_fails_on_an_expired_certificate(tmp_path: Path) -> None:
    pki = ensure_dev_pki(tmp_path / "pki")
    past = datetime.now(UTC) - timedelta(days=30)
    bad = issue_cert(pki.ca, tmp_path, "old", not_before=past, not_after=past + timedelta(days=1))
    assert "certificate has expired" in _handshake(bad.cert, bad.key, pki.ca.cert)


def _handshake(cert: Path, key: Path, ca: Path, host: str = "127.0.0.1") -> str:
    """A real TLS handshake in memory: the server serves ``cert``, the client verifies it with ``ca``."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(ca))
    s_in, s_out, c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=host)
    done = {"server": False, "client": False}
    for _ in range(20):
        for name, side in (("client", client), ("server", server)):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLError as exc:
                    return str(exc)
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return "ok"
    return "no handshake"


def test_renew_certificate_needs_certificate_files_and_the_ca_key(tmp_path: Path) -> None:
    with pytest.raises(ActionError, match="serves no certificate"):
        _run("renew-certificate replica-0", None, _topo(REPLICA))
    pki = ensure_dev_pki(tmp_path / "pki")
    pki.ca.key.unlink()
    store = ServiceHandle(name="feature-store", role="feature_store", cert_file=pki.feature_store.cert,
                          key_file=pki.feature_store.key, ca_file=pki.ca.cert)  # fmt: skip
    with pytest.raises(ActionError, match=r"the CA key .* is missing"):
        _run("renew-certificate feature-store", None, _topo(store))
