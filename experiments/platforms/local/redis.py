"""A real ``redis-server`` (the Debian package) for the target's prediction cache, on loopback.

The platform starts one per run: a free port on 127.0.0.1, a memory cap with LRU eviction
(``maxmemory`` + ``allkeys-lru``: a full cache evicts, it never refuses writes), no persistence
(``save ""``, ``appendonly no``: a restarted cache is cold, as a restarted Redis pod without a
volume is), and a password (``requirepass``). The password exists only in two 0600 files under
the run's directory: the server's config file and ``cache.password``, which replicas and faults
are handed by *path* (``FAULTDRILL_CACHE_PASSWORD_FILE``; a :class:`ServiceHandle`'s
``admin_token_file``) — never on a command line (``ps`` shows ``redis-server <conf>``), never in
a log or a record.

Example::

    server = RedisServerConfig(workdir, max_memory_bytes=64 * 2**20)
    argv = server.write()          # ["redis-server", ".../redis.conf"]
    ...start it...
    wait_redis("127.0.0.1", server.port, server.password_file, timeout_s=10)
"""

from __future__ import annotations

import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from faultdrill.experiments.host.process import ServiceError, free_port

__all__ = ["RedisServerConfig", "redis_binary", "redis_client", "wait_redis"]


def redis_binary() -> str:
    """Path of ``redis-server``; ServiceError with the install hint when it is missing."""
    found = shutil.which("redis-server")
    if found is None:
        raise ServiceError("redis-server not found: install the Debian package `redis-server` "
                           "(the prediction cache runs a real Redis)")  # fmt: skip
    return found


def _write_private(path: Path, text: str) -> None:
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)  # before the secret is written, whatever the umask was
    path.write_text(text)


@dataclass
class RedisServerConfig:
    """The configuration of one cache server under ``workdir``."""

    workdir: Path
    max_memory_bytes: int = 64 * 2**20
    port: int = field(default_factory=free_port)
    host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir).absolute()  # redis.conf's `dir` and the password file path

    @property
    def password_file(self) -> Path:
        return self.workdir / "cache.password"

    @property
    def config_file(self) -> Path:
        return self.workdir / "redis.conf"

    def write(self) -> list[str]:
        """Write the password and config files (0600); the argv that starts the server."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.password_file.exists():
            _write_private(self.password_file, secrets.token_urlsafe(24))
        password = self.password_file.read_text().strip()
        data = self.workdir / "redis-data"
        data.mkdir(mode=0o700, exist_ok=True)
        lines = [
            f"bind {self.host}", f"port {self.port}", "protected-mode yes", "daemonize no",
            'logfile ""', f"dir {data}", f"maxmemory {self.max_memory_bytes}",
            "maxmemory-policy allkeys-lru", 'save ""', "appendonly no", "databases 1",
            f'requirepass "{password}"',
        ]  # fmt: skip
        _write_private(self.config_file, "\n".join(lines) + "\n")
        return [redis_binary(), str(self.config_file)]


def redis_client(host: str, port: int, password_file: Path | str | None, timeout_s: float = 1.0) -> redis.Redis:
    """A synchronous, authenticated client (no retries: a fault's probe must see the failure)."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    password = Path(password_file).read_text().strip() if password_file else None
    return redis.Redis(host=host, port=port, password=password, socket_timeout=timeout_s,
                       socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0))  # fmt: skip


def wait_redis(host: str, port: int, password_file: Path | str | None, timeout_s: float,
               alive: object = None) -> float:  # fmt: skip
    """Until ``PING`` (authenticated) answers; seconds waited. ``alive()`` false → ServiceError at once."""
    started = time.monotonic()
    client = redis_client(host, port, password_file, timeout_s=0.5)
    try:
        while time.monotonic() - started < timeout_s:
            if callable(alive) and not alive():
                raise ServiceError(f"redis-server on port {port} exited during startup")
            try:
                if client.ping():
                    return time.monotonic() - started
            except redis.RedisError:
                pass
            time.sleep(0.02)
    finally:
        client.close()
    raise ServiceError(f"redis-server on {host}:{port} did not answer PING within {timeout_s:.0f}s")
