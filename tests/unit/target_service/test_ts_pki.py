"""The project's PKI: CA, leaves, validity windows, idempotent dev setup."""

from __future__ import annotations

import os
import stat
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID

from faultdrill.target_service.pki import (
    cert_info,
    create_ca,
    ensure_dev_pki,
    issue_cert,
)


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_ca_and_leaf_have_the_expected_shape(tmp_path: Path) -> None:
    started = time.perf_counter()
    ca = create_ca(tmp_path)
    leaf = issue_cert(ca, tmp_path, "feature-store")
    assert time.perf_counter() - started < 2.0  # EC keys: milliseconds, not seconds

    ca_cert, leaf_cert = _load(ca.cert), _load(leaf.cert)
    assert ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not leaf_cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    eku = leaf_cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    leaf_cert.verify_directly_issued_by(ca_cert)

    info = cert_info(leaf.cert)
    assert info.subject == "CN=feature-store,O=faultdrill"
    assert info.issuer == "CN=faultdrill dev CA,O=faultdrill"
    assert info.sans == ("127.0.0.1", "localhost")
    assert info.valid_at()
    assert timedelta(days=396) < info.not_after - info.not_before < timedelta(days=398)
    san = leaf_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]


def test_private_keys_are_owner_only_and_never_in_certificates(tmp_path: Path) -> None:
    ca = create_ca(tmp_path)
    leaf = issue_cert(ca, tmp_path, "svc")
    for key in (ca.key, leaf.key):
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    for cert in (ca.cert, leaf.cert):
        assert b"PRIVATE KEY" not in cert.read_bytes()
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave nothing behind


def test_arbitrary_validity_windows(tmp_path: Path) -> None:
    ca = create_ca(tmp_path)
    now = datetime.now(UTC).replace(microsecond=0)
    expired = issue_cert(
        ca,
        tmp_path,
        "expired",
        not_before=now - timedelta(days=10),
        not_after=now - timedelta(days=1),
    )
    future = issue_cert(ca, tmp_path, "future", not_before=now + timedelta(days=1), days=30)
    e, f = cert_info(expired.cert), cert_info(future.cert)
    assert e.not_after == now - timedelta(days=1) and not e.valid_at()
    assert f.not_before == now + timedelta(days=1) and not f.valid_at()
    assert f.not_after == now + timedelta(days=31)
    with pytest.raises(ValueError):
        issue_cert(ca, tmp_path, "bad", not_before=now, not_after=now - timedelta(seconds=1))


def test_wrong_ca_and_wrong_host_certificates(tmp_path: Path) -> None:
    ca = create_ca(tmp_path / "good")
    # Same name, other key: the signature gives it away. Other name: the issuer does.
    twin = issue_cert(create_ca(tmp_path / "twin"), tmp_path, "twin")
    with pytest.raises(InvalidSignature):
        _load(twin.cert).verify_directly_issued_by(_load(ca.cert))
    rogue = issue_cert(create_ca(tmp_path / "rogue", common_name="rogue CA"), tmp_path, "rogue")
    assert cert_info(rogue.cert).issuer == "CN=rogue CA,O=faultdrill"
    with pytest.raises(ValueError):
        _load(rogue.cert).verify_directly_issued_by(_load(ca.cert))
    wrong_host = issue_cert(ca, tmp_path, "wrong-host", hosts=("elsewhere.example", "10.9.9.9"))
    assert cert_info(wrong_host.cert).sans == ("elsewhere.example", "10.9.9.9")
    with pytest.raises(ValueError):
        issue_cert(ca, tmp_path, "nohost", hosts=())


def test_ensure_dev_pki_is_idempotent_and_repairs(tmp_path: Path) -> None:
    pki = ensure_dev_pki(tmp_path)
    assert stat.S_IMODE(os.stat(tmp_path).st_mode) == 0o700
    before = {p: p.read_bytes() for p in tmp_path.iterdir()}
    assert ensure_dev_pki(tmp_path) == pki
    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == before  # reused untouched

    pki.target.key.unlink()  # a missing leaf is re-issued alone
    ensure_dev_pki(tmp_path)
    assert pki.target.key.exists()
    assert pki.target.cert.read_bytes() != before[pki.target.cert]
    assert pki.feature_store.cert.read_bytes() == before[pki.feature_store.cert]
    assert pki.ca.cert.read_bytes() == before[pki.ca.cert]

    # A soon-expiring leaf is renewed; a leaf from another CA is replaced.
    now = datetime.now(UTC)
    issue_cert(pki.ca, tmp_path, "feature-store", not_after=now + timedelta(days=3))
    ensure_dev_pki(tmp_path)
    assert cert_info(pki.feature_store.cert).not_after > now + timedelta(days=300)
    rogue = create_ca(tmp_path / "rogue")
    issue_cert(rogue, tmp_path, "target")
    ensure_dev_pki(tmp_path)
    _load(pki.target.cert).verify_directly_issued_by(_load(pki.ca.cert))

    # A CA close to expiry is replaced, and both leaves with it.
    create_ca(tmp_path, days=5)
    old_ca = pki.ca.cert.read_bytes()
    ensure_dev_pki(tmp_path)
    assert pki.ca.cert.read_bytes() != old_ca
    for leaf in (pki.feature_store, pki.target):
        _load(leaf.cert).verify_directly_issued_by(_load(pki.ca.cert))
