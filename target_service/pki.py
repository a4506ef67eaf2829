"""The project's own small PKI: a CA and server certificates, made with ``cryptography``.

Keys are EC P-256 (a key costs about a millisecond, against tens for RSA-2048), so tests and
the ``cert_expiry`` fault can mint certificates freely. Validity windows are arbitrary, so the
same call makes a good certificate, an expired one or a not-yet-valid one; issuing from another
CA makes a wrong-CA certificate and other ``hosts`` make a wrong-host one.

Files are written atomically (temporary file, then ``os.replace``) so a process that
hot-reloads them never reads half a file; private keys are created mode 0600 and never logged.

Example::

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> pki = ensure_dev_pki(d)
    >>> cert_info(pki.feature_store.cert).sans
    ('127.0.0.1', 'localhost')
"""

from __future__ import annotations

import ipaddress
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CertInfo",
    "CertPaths",
    "DevPki",
    "cert_info",
    "create_ca",
    "ensure_dev_pki",
    "issue_cert",
]

# Re-issue a dev certificate when less than this is left: a game day must not cross expiry.
RENEW_BEFORE = timedelta(days=30)
# Backdating absorbs small clock differences between the issuer and a verifier.
BACKDATE = timedelta(minutes=5)


@dataclass(frozen=True)
class CertPaths:
    """A PEM certificate and its PEM private key."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class DevPki:
    """The development PKI: one CA and the certificates of the two services."""

    ca: CertPaths
    feature_store: CertPaths
    target: CertPaths


@dataclass(frozen=True)
class CertInfo:
    """What matters about a certificate, without its key."""

    subject: str
    issuer: str
    not_before: datetime
    not_after: datetime
    sans: tuple[str, ...]
    serial: int

    def valid_at(self, when: datetime | None = None) -> bool:
        """True when ``when`` (default now) is inside the validity window."""
        now = when or datetime.now(UTC)
        return self.not_before <= now <= self.not_after


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)  # before any byte lands: a key is never world-readable
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _save(
    directory: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> CertPaths:
    paths = CertPaths(cert=directory / f"{name}.crt", key=directory / f"{name}.key")
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Key first: a watcher that sees the new certificate must find its key already there.
    _write_atomic(paths.key, key_pem, 0o600)
    _write_atomic(paths.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return paths


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "faultdrill"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def create_ca(
    directory: Path | str, common_name: str = "faultdrill dev CA", days: int = 3650
) -> CertPaths:
    """Create a self-signed CA (``ca.crt``, ``ca.key``) in ``directory``."""
    directory = Path(directory)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    name = _name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _save(directory, "ca", cert, key)


def _load_ca(ca: CertPaths) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    key = serialization.load_pem_private_key(ca.key.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"CA key {ca.key} is not an EC key")
    return cert, key


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def issue_cert(
    ca: CertPaths,
    directory: Path | str,
    name: str,
    hosts: Sequence[str] = ("127.0.0.1", "localhost"),
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    days: int = 397,
) -> CertPaths:
    """Issue a server certificate ``<name>.crt`` / ``<name>.key`` signed by ``ca``.

    ``hosts`` become subjectAltNames (IP entries for addresses, DNS entries otherwise).
    ``not_before`` defaults to a few minutes ago and ``not_after`` to ``not_before + days``;
    both may lie anywhere, which is how expired and not-yet-valid certificates are made.
    """
    if not hosts:
        raise ValueError("a certificate needs at least one host")
    directory = Path(directory)
    ca_cert, ca_key = _load_ca(ca)
    key = ec.generate_private_key(ec.SECP256R1())
    start = not_before or (datetime.now(UTC) - BACKDATE)
    end = not_after or (start + timedelta(days=days))
    if end <= start:
        raise ValueError("not_after must be later than not_before")
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return _save(directory, name, cert, key)


def cert_info(path: Path | str) -> CertInfo:
    """Read the first certificate of a PEM file."""
    cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = tuple(str(v.value) for v in san)
    except x509.ExtensionNotFound:
        sans = ()
    return CertInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        sans=sans,
        serial=cert.serial_number,
    )


def _usable(paths: CertPaths, issuer: CertPaths | None) -> bool:
    """Both files present, parseable, not expiring soon, and (for a leaf) issued by ``issuer``."""
    if not (paths.cert.is_file() and paths.key.is_file()):
        return False
    try:
        info = cert_info(paths.cert)
        key = serialization.load_pem_private_key(paths.key.read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate(paths.cert.read_bytes())
        if key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ) != cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ):
            return False
        if issuer is not None:
            ca_cert = x509.load_pem_x509_certificate(issuer.cert.read_bytes())
            cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, OSError, InvalidSignature):
        return False
    now = datetime.now(UTC)
    return info.not_before <= now and info.not_after - now > RENEW_BEFORE


def ensure_dev_pki(directory: Path | str) -> DevPki:
    """Make (or reuse) the dev CA and the feature-store and target certificates.

    Idempotent: valid files are reused untouched; a missing, unreadable or soon-expiring
    CA is replaced (and both leaves with it), and a bad leaf is re-issued alone.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    ca = CertPaths(directory / "ca.crt", directory / "ca.key")
    fresh_ca = not _usable(ca, None)
    if fresh_ca:
        ca = create_ca(directory)
    leaves = {}
    for name in ("feature-store", "target"):
        paths = CertPaths(directory / f"{name}.crt", directory / f"{name}.key")
        if fresh_ca or not _usable(paths, ca):
            paths = issue_cert(ca, directory, name)
        leaves[name] = paths
    return DevPki(ca=ca, feature_store=leaves["feature-store"], target=leaves["target"])
