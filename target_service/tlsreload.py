"""Certificate hot reload: server and client TLS contexts that follow their files.

A swapped certificate takes effect without a restart, which is what the ``cert_expiry``
fault relies on (it swaps files and lets reload pick them up; rollback restores the bytes).

* :class:`ReloadingServerContext` owns one server ``ssl.SSLContext`` and re-loads its chain
  *in place* (``load_cert_chain``): OpenSSL copies the certificate into each connection when
  the connection is created, so new handshakes use the new certificate and established
  connections keep theirs. The new pair is first copied to a private temporary directory
  and validated in a scratch context, so a half-written swap (certificate and key not
  matching yet) never reaches the live context: the old certificate stays, a warning is
  logged, and the next poll retries.
* :class:`ReloadingClientContext` builds a fresh client context when the CA bundle changes
  and bumps ``generation``; a client rebuilds its connection pool when it sees a new one.
* :class:`CertWatcher` polls a set of contexts from an asyncio task (on the event loop's
  thread, the only thread that touches the contexts) and reports every certificate's
  ``notAfter`` through a callback ``(role, path, subject, not_after_ts)``.
* :class:`ConnectionDrainer` answers with ``Connection: close`` on connections established
  before a reload (graceful draining, as nginx does on reload), so keep-alive clients
  reconnect and meet the new certificate. uvicorn closes the connection after such a response.

Example::

    >>> ctx = ReloadingServerContext("fs.crt", "fs.key")  # doctest: +SKIP
    >>> watcher = CertWatcher(0.5, [ctx], on_expiry=print)  # doctest: +SKIP
    >>> watcher.start()  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import ssl
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "CertRecord",
    "CertWatcher",
    "ConnectionDrainer",
    "ExpiryCallback",
    "FileSignature",
    "ReloadingClientContext",
    "ReloadingServerContext",
    "Watchable",
]

log = logging.getLogger("faultdrill.tls")

ExpiryCallback = Callable[[str, str, str, float], None]
"""``(role, path, subject, not_after_ts)``: called for each certificate in use."""

# Connections accepted this soon after a reload may have been created (SSL object made,
# certificate copied) just before it: drain them too. One extra reconnect costs little.
HANDSHAKE_GRACE_S = 0.5


@dataclass(frozen=True)
class FileSignature:
    """What ``stat`` says about a file; any change means "look again"."""

    st_mtime_ns: int
    st_size: int
    st_ino: int

    @classmethod
    def of(cls, path: Path) -> FileSignature | None:
        """The signature of ``path``, or None when it does not exist (mid-swap)."""
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        return cls(st.st_mtime_ns, st.st_size, st.st_ino)


@dataclass(frozen=True)
class CertRecord:
    """One certificate in use."""

    role: str
    path: str
    subject: str
    not_after_ts: float


class Watchable(Protocol):
    """What :class:`CertWatcher` polls."""

    role: str

    def check(self) -> bool:
        """Reload when the files changed; True when something new was loaded."""
        ...

    def certificates(self) -> list[CertRecord]:
        """The certificates in use now."""
        ...


def _describe(role: str, path: Path, pem: bytes) -> CertRecord:
    cert = x509.load_pem_x509_certificate(pem)
    return CertRecord(
        role=role,
        path=str(path),
        subject=cert.subject.rfc4514_string(),
        not_after_ts=cert.not_valid_after_utc.timestamp(),
    )


def _read_stable(paths: tuple[Path, ...]) -> tuple[tuple[FileSignature | None, ...], list[bytes]]:
    """Read files, and raise when any changed while being read (a swap in progress)."""
    before = tuple(FileSignature.of(p) for p in paths)
    data = [p.read_bytes() for p in paths]
    after = tuple(FileSignature.of(p) for p in paths)
    if before != after:
        raise OSError("files changed while being read")
    return after, data


class ReloadingServerContext:
    """A server ``ssl.SSLContext`` whose certificate chain follows ``cert_file``/``key_file``.

    ``ssl`` is the same object for the life of the server (hand it to uvicorn once);
    ``generation`` counts successful loads and ``reloaded_at`` is the ``time.monotonic()``
    of the last reload (None before any).
    """

    def __init__(
        self,
        cert_file: Path | str,
        key_file: Path | str,
        on_reload: Callable[[CertRecord], None] | None = None,
        role: str = "server",
    ) -> None:
        self.cert_file = Path(cert_file)
        self.key_file = Path(key_file)
        self.role = role
        self.on_reload = on_reload
        self.ssl = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ssl.minimum_version = ssl.TLSVersion.TLSv1_2
        self.generation = 0
        self.reloaded_at: float | None = None
        self.reload_duration_s: float | None = None
        self._signature: tuple[FileSignature | None, ...] = ()
        self._failed_signature: tuple[FileSignature | None, ...] | None = None
        self._record: CertRecord | None = None
        self._load()  # the first load must work: a server without a certificate is a bug

    def _load(self) -> None:
        started = time.perf_counter()
        signature, (cert_pem, key_pem) = _read_stable((self.cert_file, self.key_file))
        record = _describe(self.role, self.cert_file, cert_pem)
        # load_cert_chain takes paths only; a private copy pins exactly the bytes checked.
        tmp = Path(tempfile.mkdtemp(prefix="faultdrill-tls-"))
        try:
            cert_tmp, key_tmp = tmp / "cert.pem", tmp / "key.pem"
            cert_tmp.write_bytes(cert_pem)
            fd = os.open(key_tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(key_pem)
            scratch = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            scratch.load_cert_chain(cert_tmp, key_tmp)  # raises on a mismatched/partial pair
            self.ssl.load_cert_chain(cert_tmp, key_tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self._signature = signature
        self._failed_signature = None
        self._record = record
        if self.generation > 0:
            self.reloaded_at = time.monotonic()
        self.generation += 1
        self.reload_duration_s = time.perf_counter() - started

    def check(self) -> bool:
        """Reload when the files changed; True when a new chain was loaded."""
        signature = (FileSignature.of(self.cert_file), FileSignature.of(self.key_file))
        if signature == self._signature:
            return False
        try:
            self._load()
        except (OSError, ValueError, ssl.SSLError) as exc:
            if signature != self._failed_signature:  # one warning per distinct bad state
                log.warning(
                    "certificate reload failed; keeping the previous certificate",
                    extra={"fields": {"role": self.role, "cert": str(self.cert_file),
                                      "error": type(exc).__name__}},
                )  # fmt: skip
                self._failed_signature = signature
            return False
        assert self._record is not None
        log.info(
            "certificate reloaded",
            extra={"fields": {"role": self.role, "cert": str(self.cert_file),
                              "subject": self._record.subject, "generation": self.generation}},
        )  # fmt: skip
        if self.on_reload is not None:
            self.on_reload(self._record)
        return True

    def certificates(self) -> list[CertRecord]:
        return [self._record] if self._record is not None else []


class ReloadingClientContext:
    """A client ``ssl.SSLContext`` trusting ``ca_file``, rebuilt when that file changes.

    Read ``ssl`` for the current context; when ``generation`` moves, build new connections.
    """

    def __init__(self, ca_file: Path | str, role: str = "ca") -> None:
        self.ca_file = Path(ca_file)
        self.role = role
        self.generation = 0
        self._signature: tuple[FileSignature | None, ...] = ()
        self._failed_signature: tuple[FileSignature | None, ...] | None = None
        self._records: list[CertRecord] = []
        self.ssl = self._build()

    def _build(self) -> ssl.SSLContext:
        signature, (pem,) = _read_stable((self.ca_file,))
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)  # hostname check + CERT_REQUIRED
        ctx.load_verify_locations(cadata=pem.decode("ascii"))
        self._records = [
            CertRecord(self.role, str(self.ca_file), c.subject.rfc4514_string(),
                       c.not_valid_after_utc.timestamp())
            for c in x509.load_pem_x509_certificates(pem)
        ]  # fmt: skip
        self._signature = signature
        self._failed_signature = None
        self.generation += 1
        return ctx

    def check(self) -> bool:
        """Rebuild when the CA file changed; True when a new context is in ``ssl``."""
        signature = (FileSignature.of(self.ca_file),)
        if signature == self._signature:
            return False
        try:
            self.ssl = self._build()
        except (OSError, ValueError, ssl.SSLError) as exc:
            if signature != self._failed_signature:
                log.warning(
                    "CA bundle reload failed; keeping the previous one",
                    extra={"fields": {"ca": str(self.ca_file), "error": type(exc).__name__}},
                )
                self._failed_signature = signature
            return False
        log.info("CA bundle reloaded", extra={"fields": {"ca": str(self.ca_file)}})
        return True

    def certificates(self) -> list[CertRecord]:
        return list(self._records)


class CertWatcher:
    """Polls ``targets`` every ``interval_s`` and reports certificate expiry.

    ``on_expiry`` is called for every certificate at :meth:`start` and again for a target's
    certificates after each reload of it.
    """

    def __init__(
        self,
        interval_s: float,
        targets: Iterable[Watchable],
        on_expiry: ExpiryCallback | None = None,
    ) -> None:
        self.interval_s = interval_s
        self.targets = list(targets)
        self.on_expiry = on_expiry
        self._task: asyncio.Task[None] | None = None

    def report(self, target: Watchable) -> None:
        if self.on_expiry is None:
            return
        for rec in target.certificates():
            self.on_expiry(rec.role, rec.path, rec.subject, rec.not_after_ts)

    def poll_once(self) -> int:
        """Check every target once; return how many reloaded."""
        reloaded = 0
        for target in self.targets:
            try:
                changed = target.check()
            except Exception:  # a watcher that dies silently would freeze certificates
                log.exception("certificate check failed", extra={"fields": {"role": target.role}})
                continue
            if changed:
                reloaded += 1
                self.report(target)
        return reloaded

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            self.poll_once()

    def start(self) -> None:
        """Report current expiry and start polling (needs a running loop)."""
        for target in self.targets:
            self.report(target)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="cert-watcher")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _peer_key(peer: Any) -> tuple[str, int] | None:
    if isinstance(peer, list | tuple) and len(peer) >= 2:
        return (str(peer[0]), int(peer[1]))
    return None


class ConnectionDrainer:
    """Closes keep-alive connections that predate a certificate reload.

    Plug both halves into uvicorn: ``http=drainer.protocol_class(HttpToolsProtocol)`` records
    when each connection was accepted, and ``drainer.middleware(app)`` adds
    ``Connection: close`` to responses on connections accepted before the last reload
    (or within :data:`HANDSHAKE_GRACE_S` after it).
    """

    def __init__(self, context: ReloadingServerContext, grace_s: float = HANDSHAKE_GRACE_S) -> None:
        self.context = context
        self.grace_s = grace_s
        self._accepted: dict[tuple[str, int], float] = {}
        self.drained = 0

    def accepted(self, peer: Any) -> None:
        key = _peer_key(peer)
        if key is not None:
            self._accepted[key] = time.monotonic()

    def lost(self, peer: Any) -> None:
        key = _peer_key(peer)
        if key is not None:
            self._accepted.pop(key, None)

    def should_close(self, peer: Any) -> bool:
        reloaded_at = self.context.reloaded_at
        key = _peer_key(peer)
        if reloaded_at is None or key is None:
            return False
        accepted_at = self._accepted.get(key)
        return accepted_at is not None and accepted_at < reloaded_at + self.grace_s

    def protocol_class(self, base: type[asyncio.Protocol]) -> type[asyncio.Protocol]:
        """A subclass of uvicorn's HTTP protocol ``base`` that reports accepts and losses."""
        drainer = self

        def connection_made(proto: Any, transport: Any) -> None:
            base.connection_made(proto, transport)
            proto._faultdrill_peer = transport.get_extra_info("peername")
            drainer.accepted(proto._faultdrill_peer)

        def connection_lost(proto: Any, exc: Exception | None) -> None:
            drainer.lost(getattr(proto, "_faultdrill_peer", None))
            base.connection_lost(proto, exc)

        return type(
            f"Draining{base.__name__}",
            (base,),
            {"connection_made": connection_made, "connection_lost": connection_lost},
        )

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """Wrap ``app`` so that responses on pre-reload connections say ``Connection: close``."""

        async def draining(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http" or not self.should_close(scope.get("client")):
                await app(scope, receive, send)
                return

            async def send_closing(message: Message) -> None:
                if message["type"] == "http.response.start":
                    headers = [
                        (k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"
                    ]
                    headers.append((b"connection", b"close"))
                    message = {**message, "headers": headers}
                    self.drained += 1
                await send(message)

            await app(scope, receive, send_closing)

        return draining
