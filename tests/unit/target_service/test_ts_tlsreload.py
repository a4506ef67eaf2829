"""Certificate hot reload, checked with real TLS handshakes over memory BIOs (no sockets)."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import ssl
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from faultdrill.target_service.pki import CertPaths, cert_info, create_ca, issue_cert
from faultdrill.target_service.tlsreload import (
    CertWatcher,
    ConnectionDrainer,
    FileSignature,
    ReloadingClientContext,
    ReloadingServerContext,
)


def _pump(a: ssl.MemoryBIO, b: ssl.MemoryBIO) -> None:
    data = a.read()
    if data:
        b.write(data)


def handshake(
    server: ssl.SSLContext | ssl.SSLObject, client_ctx: ssl.SSLContext, host: str = "127.0.0.1"
) -> int:
    """Complete a TLS handshake in memory; return the serial the server presented."""
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    srv = (
        server
        if isinstance(server, ssl.SSLObject)
        else server.wrap_bio(s_in, s_out, server_side=True)
    )
    if isinstance(server, ssl.SSLObject):
        s_in, s_out = server._faultdrill_bios  # type: ignore[attr-defined]
    cli = client_ctx.wrap_bio(c_in, c_out, server_hostname=host)
    done = {"c": False, "s": False}
    for _ in range(20):
        for name, obj in (("c", cli), ("s", srv)):
            if not done[name]:
                try:
                    obj.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        _pump(c_out, s_in)
        _pump(s_out, c_in)
        if all(done.values()):
            break
    der = cli.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def server_object(ctx: ssl.SSLContext) -> ssl.SSLObject:
    """A server-side connection created now (as on accept), handshaken later."""
    s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(s_in, s_out, server_side=True)
    obj._faultdrill_bios = (s_in, s_out)  # type: ignore[attr-defined]
    return obj


def client_ctx(ca: CertPaths) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca.cert))


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Any]:
    ca = create_ca(tmp_path / "ca")
    live = issue_cert(ca, tmp_path, "live")
    return {"dir": tmp_path, "ca": ca, "live": live}


def swap(src: CertPaths, dst: CertPaths) -> None:
    """Replace dst's files with src's (key first), as the cert_expiry fault does."""
    shutil.copyfile(src.key, dst.key)
    shutil.copyfile(src.cert, dst.cert)


def test_file_signature(tmp_path: Path) -> None:
    f = tmp_path / "f"
    assert FileSignature.of(f) is None
    f.write_bytes(b"a")
    first = FileSignature.of(f)
    f.write_bytes(b"bb")
    assert FileSignature.of(f) != first


def test_server_context_reloads_in_place_for_new_handshakes(pki: dict[str, Any]) -> None:
    ca, live = pki["ca"], pki["live"]
    reloaded: list[str] = []
    ctx = ReloadingServerContext(
        live.cert, live.key, on_reload=lambda r: reloaded.append(r.subject)
    )
    same_object = ctx.ssl
    first_serial = cert_info(live.cert).serial
    assert handshake(ctx.ssl, client_ctx(ca)) == first_serial
    assert ctx.check() is False and ctx.generation == 1

    before_reload = server_object(ctx.ssl)  # accepted before the swap
    new = issue_cert(ca, pki["dir"] / "new", "new-leaf")
    swap(new, live)
    started = time.perf_counter()
    assert ctx.check() is True
    reload_s = time.perf_counter() - started
    assert reload_s < 0.5
    assert ctx.ssl is same_object and ctx.generation == 2 and ctx.reloaded_at is not None
    assert reloaded == ["CN=new-leaf,O=faultdrill"]
    assert handshake(ctx.ssl, client_ctx(ca)) == cert_info(new.cert).serial
    # OpenSSL copied the old certificate into the connection when it was created.
    assert handshake(before_reload, client_ctx(ca)) == first_serial


def test_expired_certificate_is_rejected_after_hot_swap(pki: dict[str, Any]) -> None:
    from datetime import UTC, datetime, timedelta

    ca, live = pki["ca"], pki["live"]
    ctx = ReloadingServerContext(live.cert, live.key)
    original = live.cert.read_bytes(), live.key.read_bytes()
    now = datetime.now(UTC)
    issue_cert(
        ca,
        pki["dir"],
        "live",
        not_before=now - timedelta(days=9),
        not_after=now - timedelta(days=1),
    )
    assert ctx.check()
    with pytest.raises(ssl.SSLCertVerificationError) as err:
        handshake(ctx.ssl, client_ctx(ca))
    assert err.value.verify_code == 10 and "expired" in err.value.verify_message
    live.cert.write_bytes(original[0])  # rollback: byte for byte
    live.key.write_bytes(original[1])
    assert ctx.check()
    handshake(ctx.ssl, client_ctx(ca))


def test_half_written_swap_keeps_the_old_certificate(
    pki: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    ca, live = pki["ca"], pki["live"]
    ctx = ReloadingServerContext(live.cert, live.key)
    old_serial = cert_info(live.cert).serial
    new = issue_cert(ca, pki["dir"] / "new", "next")
    shutil.copyfile(new.cert, live.cert)  # certificate swapped, key not yet
    with caplog.at_level(logging.WARNING, logger="faultdrill.tls"):
        assert ctx.check() is False
        assert ctx.check() is False  # same bad state: retried, warned once
    assert len([r for r in caplog.records if "reload failed" in r.getMessage()]) == 1
    assert handshake(ctx.ssl, client_ctx(ca)) == old_serial
    live.key.unlink()  # mid-rename: a missing file is not an error either
    assert ctx.check() is False
    shutil.copyfile(new.key, live.key)
    assert ctx.check() is True
    assert handshake(ctx.ssl, client_ctx(ca)) == cert_info(new.cert).serial
    garbage = pki["dir"] / "garbage.crt"
    garbage.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64\n")
    os.replace(garbage, live.cert)
    assert ctx.check() is False
    assert handshake(ctx.ssl, client_ctx(ca)) == cert_info(new.cert).serial


def test_wrong_ca_and_wrong_host_are_rejected(pki: dict[str, Any]) -> None:
    ca, live, d = pki["ca"], pki["live"], pki["dir"]
    ctx = ReloadingServerContext(live.cert, live.key)
    swap(issue_cert(create_ca(d / "rogue"), d / "r", "rogue"), live)
    assert ctx.check()
    with pytest.raises(ssl.SSLCertVerificationError) as err:
        handshake(ctx.ssl, client_ctx(ca))
    assert "unable to get local issuer certificate" in err.value.verify_message
    swap(issue_cert(ca, d / "h", "wrong-host", hosts=("elsewhere.example",)), live)
    assert ctx.check()
    with pytest.raises(ssl.SSLCertVerificationError) as err:
        handshake(ctx.ssl, client_ctx(ca))
    assert "mismatch" in err.value.verify_message


def test_client_context_follows_the_ca_bundle(pki: dict[str, Any]) -> None:
    d = pki["dir"]
    trusted = d / "trusted.pem"
    shutil.copyfile(pki["ca"].cert, trusted)
    client = ReloadingClientContext(trusted)
    assert client.generation == 1 and client.ssl.check_hostname
    rotated_ca = create_ca(d / "ca2", common_name="rotated CA")
    server = ReloadingServerContext(*_astuple(issue_cert(rotated_ca, d / "s2", "s2")))
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(server.ssl, client.ssl)
    assert client.check() is False
    # Both CAs during a rotation: one PEM bundle with two certificates.
    trusted.write_bytes(pki["ca"].cert.read_bytes() + rotated_ca.cert.read_bytes())
    assert client.check() is True and client.generation == 2
    handshake(server.ssl, client.ssl)
    assert {r.subject for r in client.certificates()} == {
        "CN=faultdrill dev CA,O=faultdrill", "CN=rotated CA,O=faultdrill",
    }  # fmt: skip
    trusted.write_bytes(b"junk")
    assert client.check() is False and client.generation == 2
    handshake(server.ssl, client.ssl)


def _astuple(p: CertPaths) -> tuple[Path, Path]:
    return p.cert, p.key


def test_watcher_reports_expiry_and_reloads_within_a_bound(pki: dict[str, Any]) -> None:
    ca, live, d = pki["ca"], pki["live"], pki["dir"]
    seen: list[tuple[str, str, str, float]] = []

    async def scenario() -> float:
        ctx = ReloadingServerContext(live.cert, live.key, role="server")
        watcher = CertWatcher(0.05, [ctx], on_expiry=lambda *a: seen.append(a))
        watcher.start()
        assert seen == [("server", str(live.cert), "CN=live,O=faultdrill",
                         cert_info(live.cert).not_after.timestamp())]  # fmt: skip
        swap(issue_cert(ca, d / "n", "renewed", days=10), live)
        started = time.monotonic()
        while ctx.generation < 2:
            assert time.monotonic() - started < 3.0, "reload not seen"
            await asyncio.sleep(0.01)
        latency = time.monotonic() - started
        await watcher.stop()
        return latency

    latency = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert latency < 1.0
    assert seen[-1][2] == "CN=renewed,O=faultdrill"
    assert seen[-1][3] == cert_info(live.cert).not_after.timestamp()


def test_connection_drainer_closes_only_pre_reload_connections(pki: dict[str, Any]) -> None:
    ctx = ReloadingServerContext(pki["live"].cert, pki["live"].key)
    drainer = ConnectionDrainer(ctx, grace_s=0.0)
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"connection", b"keep-alive")]})  # fmt: skip
        await send({"type": "http.response.body", "body": b"ok"})

    async def call(peer: tuple[str, int]) -> list[tuple[bytes, bytes]]:
        sent.clear()

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "client": list(peer)}  # some servers give a list
        await drainer.middleware(app)(scope, None, send)  # type: ignore[arg-type]
        return list(sent[0]["headers"])

    old, new = ("127.0.0.1", 50000), ("127.0.0.1", 50001)
    drainer.accepted(old)
    assert asyncio.run(call(old)) == [(b"connection", b"keep-alive")]  # no reload yet
    swap(issue_cert(pki["ca"], pki["dir"] / "x", "x"), pki["live"])
    assert ctx.check()
    time.sleep(0.01)
    drainer.accepted(new)
    assert asyncio.run(call(old)) == [(b"connection", b"close")]
    assert asyncio.run(call(new)) == [(b"connection", b"keep-alive")]
    drainer.lost(old)
    assert not drainer.should_close(old)
    assert drainer.drained == 1
