"""Durable file operations shared by faults that swap files (certificates, model artifacts).

Every write is atomic (temp file, fsync, rename, fsync of the directory) so a crash leaves
either the old bytes or the new ones, never a torn file; backups carry their sha256 so a
rollback can prove it restored the exact original.

Example::

    digest = backup_file(cert, state_dir / "backups" / inj_id / "cert.pem")
    write_atomic(cert, bad_bytes, 0o644)
    restore_file(cert, state_dir / "backups" / inj_id / "cert.pem", digest, 0o644, fault="cert_expiry")
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from faultdrill.faults.errors import RollbackError

__all__ = ["backup_file", "restore_file", "sha256_file", "write_atomic"]


def sha256_file(path: Path) -> str | None:
    """The file's sha256, or None when it does not exist."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Replace ``path`` with ``data`` (temp file beside it, fsync, ``os.replace``, fsync dir)."""
    tmp = path.with_name(f".{path.name}.fd-tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # before any byte lands: a key is never world-readable
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def backup_file(src: Path, dst: Path) -> str:
    """Copy ``src`` to ``dst`` (mode 0600, fsynced, durable) and return its sha256."""
    data = src.read_bytes()
    dst.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(dst, data, 0o600)
    return hashlib.sha256(data).hexdigest()


def restore_file(path: Path, backup: Path, sha256: str, mode: int, *, fault: str) -> bool:
    """Put the backed-up bytes back at ``path`` unless they are already there; True if written."""
    if sha256_file(path) == sha256:
        return False  # already restored: rollback is idempotent
    try:
        data = backup.read_bytes()
    except FileNotFoundError:
        raise RollbackError(f"{path} differs from the original and its backup {backup} is gone", fault=fault) from None
    if hashlib.sha256(data).hexdigest() != sha256:
        raise RollbackError(f"backup {backup} does not match the recorded sha256; {path} left as is", fault=fault)
    write_atomic(path, data, mode)
    return True


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


