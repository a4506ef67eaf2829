"""``CertExpiryFault``: the certificate failures real TLS outages are made of.

File modes swap a freshly minted bad certificate (and its key) in place of a service's own
and let the service's hot reload pick it up: ``expired``, ``not_yet_valid``, ``wrong_ca``
(issued by another, freshly made CA) and ``wrong_host`` (SANs for another host). The
originals are copied to ``<state_dir>/backups/<injection id>/`` (fsynced, sha256 in the
record) before anything is touched, and rollback restores them byte for byte.
``clock_skew`` restarts the service under libfaketime instead, so *its* clock is off and the
certificates it checks (a replica checking the feature store) look expired.

``verify`` makes a real handshake to the service the way its clients do (a fresh client
context trusting the service's CA: ``CERT_REQUIRED``, hostname checked) and calls the effect
verified only when it fails with the mode's OpenSSL verify code (10 expired, 9 not yet valid,
20 unknown issuer, 62/64 host or IP mismatch). The service picks the swap up on its next
reload poll, so verify retries (bounded) until then; a handshake that still succeeds, or that
fails for another reason, is reported as not verified, with the certificate actually served.

Example::

    fault = CertExpiryFault()
    cfg = fault.parse_config({"target": "feature-store", "mode": "expired"})
    inj = fault.inject(cfg, ctx)                 # backup, ledger record, then the swap
    fault.verify(inj, ctx).details["verify_code"]  # 10: 'certificate has expired' (a real handshake)
    fault.undo(inj, ctx)                         # original bytes back, sha256 checked
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

import httpx
from pydantic import Field

from faultdrill.faults.base import Fault, FaultConfig, FaultContext, Injection, Problem, Verification
from faultdrill.faults.errors import FaultdrillError, PreflightError
from faultdrill.faults.files import backup_file, restore_file, write_atomic
from faultdrill.faults.kube.objects import CertAction
from faultdrill.faults.procid import pid_alive, process_start_ticks
from faultdrill.faults.topology import ServiceHandle

__all__ = ["FAKETIME_LIB", "CertExpiryFault", "served_certificate", "tagged_pids", "tls_handshake"]

FAKETIME_LIB = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
TAG_ENV = "FAULTDRILL_INJECTION_ID"
"""Set in a skewed process's environment, so rollback finds exactly it (no pid guessing)."""
EXPECTED: dict[str, tuple[frozenset[int], str]] = {
    # mode: (OpenSSL X509_V_ERR codes a verifying client must see, the reason in words)
    "expired": (frozenset({10}), "certificate has expired"),
    "not_yet_valid": (frozenset({9}), "certificate is not yet valid"),
    "wrong_ca": (frozenset({20}), "unable to get local issuer certificate"),
    "wrong_host": (frozenset({62, 64}), "Hostname mismatch / IP address mismatch"),  # 64: an IP host
}
"""What each file mode must make a verified handshake fail with (``SSLCertVerificationError``)."""


class CertExpiryFault(Fault):
    """Serve a bad certificate (or skew a service's clock); see the module docstring."""

    class Config(FaultConfig):
        target: str
        mode: Literal["expired", "not_yet_valid", "wrong_ca", "wrong_host", "clock_skew"] = "expired"
        skew_days: int = Field(default=400, ge=-3650, le=3650)  # clock_skew; > the 397-day leaf lifetime
        wrong_host: str = "wrong-host.faultdrill.invalid"
        ca_key_file: str | None = None
        """Key of the service's CA, for modes that re-issue from it (default: ``ca.key`` beside ``ca_file``)."""

    name: ClassVar[str] = "cert_expiry"
    target_roles: ClassVar[tuple[str, ...] | None] = ("feature_store", "replica")
    modes: ClassVar[tuple[str, ...]] = (*EXPECTED, "clock_skew")
    needs: ClassVar[tuple[str, ...]] = ("CA key for re-issuing", "libfaketime + live platform (clock_skew)")
    target_needs_by_mode: ClassVar[Mapping[str, frozenset[str]]] = {
        **{m: frozenset({"tls"}) for m in EXPECTED}, "clock_skew": frozenset({"supervised"})}
    verifies: ClassVar[str] = "a real TLS handshake fails with the expected verify error"
    example: ClassVar[dict[str, Any]] = {"target": "feature-store", "mode": "expired"}
    kubernetes = CertAction  # on a Kubernetes target: faults/kube/objects.py (the API)
    settle_s: ClassVar[float] = 5.0
    """Longest ``verify`` waits for the service to pick up the swap (never past the fault's duration)."""

    def local_preflight(self, config: Config, ctx: FaultContext) -> list[Problem]:
        h = ctx.topology.get(config.target)  # an unknown target is a ConfigError, not a problem
        problems: list[Problem] = []
        if config.mode == "clock_skew":
            if not FAKETIME_LIB.exists():
                problems.append(Problem("no_faketime", f"{FAKETIME_LIB} not found", "apt-get install faketime"))
            if ctx.supervisor is None:
                problems.append(Problem("no_supervisor", "clock_skew restarts the target: needs a live platform"))
            checks: list[Callable[[], None]] = [partial(ctx.scope.check_pid, h.pid)] if h.pid is not None else []
        else:
            for what in ("cert_file", "key_file", "ca_file"):
                if getattr(h, what) is None:
                    problems.append(Problem("no_tls", f"service '{h.name}' has no {what} (does it serve TLS?)"))
            paths = [p for p in (h.cert_file, h.key_file) if p is not None]
            if config.mode != "wrong_ca" and h.ca_file is not None:
                paths.append(_ca_key(config, h))
                if not paths[-1].is_file():
                    problems.append(Problem("no_ca_key", f"CA key {paths[-1]} not found", "set ca_key_file"))
            checks = [partial(ctx.scope.check_path, p) for p in paths]
        for check in checks:
            try:
                check()
            except FaultdrillError as exc:
                problems.append(Problem("blast_radius", str(exc)))
        return problems

    def local_plan(self, config: Config, ctx: FaultContext) -> list[str]:
        h = ctx.topology.get(config.target)
        if config.mode == "clock_skew":
            return [f"restart {h.name} (pid {h.pid}) with LD_PRELOAD={FAKETIME_LIB} FAKETIME={config.skew_days:+d}d "
                    "FAKETIME_DONT_FAKE_MONOTONIC=1", f"rollback: restart {h.name} without them"]  # fmt: skip
        return [
            f"back up {h.key_file} and {h.cert_file} to {ctx.state_dir}/backups/<injection-id>/",
            f"replace {h.key_file} then {h.cert_file} with a {config.mode} certificate (os.replace)",
            f"rollback: restore both byte for byte (sha256 checked); {h.name} hot-reloads them",
        ]

    def local_inject(self, config: Config, ctx: FaultContext) -> Injection:
        h = ctx.topology.get(config.target)
        if problems := self.local_preflight(config, ctx):
            raise PreflightError(problems, fault=self.name)
        base = {"service": h.name, "url": h.url, "ca_file": str(h.ca_file) if h.ca_file else None}
        if config.mode == "clock_skew":
            return self._inject_skew(config, ctx, h, base)
        assert h.cert_file is not None and h.key_file is not None  # preflight checked
        placeholder = self.new_injection(config, ctx, mode=config.mode, target=h.name, undo={})
        backup_dir = ctx.state_dir / "backups" / placeholder.id
        made_dir = ctx.state_dir / "certs" / placeholder.id
        try:  # only faultdrill's own state dir is written before the ledger record
            new = _mint(config, h, made_dir)
            files = [_backup_entry(p, backup_dir, made) for p, made in ((h.key_file, new[1]), (h.cert_file, new[0]))]
            undo = {**base, "backup_dir": str(backup_dir), "made_dir": str(made_dir), "files": files}
        except BaseException:
            shutil.rmtree(backup_dir, ignore_errors=True)
            shutil.rmtree(made_dir, ignore_errors=True)
            raise
        injection = placeholder.model_copy(update={"undo": undo})

        def swap() -> None:
            for f in files:  # key first: a reload that sees the new cert finds its key
                write_atomic(Path(f["path"]), Path(f["made"]).read_bytes(), f["mode"])

        return self.apply_recorded(injection, ctx, swap)

    def _inject_skew(self, config: Config, ctx: FaultContext, h: ServiceHandle, base: dict[str, Any]) -> Injection:
        supervisor = ctx.supervisor
        assert supervisor is not None  # preflight checked
        undo = {**base, "skew_days": config.skew_days, "pid_before": h.pid}
        injection = self.new_injection(config, ctx, mode="clock_skew", target=h.name, undo=undo)
        env = {"LD_PRELOAD": str(FAKETIME_LIB), "FAKETIME": f"{config.skew_days:+d}d",
               "FAKETIME_DONT_FAKE_MONOTONIC": "1", TAG_ENV: injection.id}  # fmt: skip
        return self.apply_recorded(injection, ctx, lambda: supervisor.restart(h.name, env=env))

    def local_rollback(self, injection: Injection, ctx: FaultContext) -> None:
        u = injection.undo
        if injection.mode == "clock_skew":
            pids = tagged_pids(TAG_ENV, injection.id)
            if pids and ctx.supervisor is not None:
                ctx.supervisor.restart(u["service"])  # the supervisor's own env: no faketime
            elif pids:
                # Its supervisor died with the run: re-exec it without faketime (now unsupervised).
                for pid in pids:
                    respawn_without(pid, ("LD_PRELOAD", "FAKETIME", "FAKETIME_DONT_FAKE_MONOTONIC", TAG_ENV))
            return
        for f in u.get("files", []):
            restore_file(Path(f["path"]), Path(f["backup"]), f["sha256"], f["mode"], fault=self.name)
        shutil.rmtree(u["backup_dir"], ignore_errors=True)
        shutil.rmtree(u["made_dir"], ignore_errors=True)

    def local_verify(self, injection: Injection, ctx: FaultContext) -> Verification:
        """A real handshake to the service, verified as its clients verify, must fail for the mode's reason.

        The service hot-reloads its files on a poll (50 ms locally), so right after the swap it
        may still serve the original: verify retries (bounded by ``settle_s`` and the fault's
        duration) until the mode's verify code is seen, and reports what it saw last otherwise.
        """
        u = injection.undo
        if injection.mode == "clock_skew":
            return _verify_skew(injection, ctx)
        codes, reason = EXPECTED[injection.mode]
        wait_s = min(self.settle_s, float(injection.config.get("duration_s", self.settle_s)))
        started = time.monotonic()
        attempts = 0
        while True:
            attempts += 1
            hs = tls_handshake(u["url"], Path(u["ca_file"]))
            effective = hs["verify_code"] in codes
            if effective or time.monotonic() - started >= wait_s:
                break
            time.sleep(0.02)
        waited_ms = round((time.monotonic() - started) * 1000, 1)
        served = served_certificate(u["url"])
        injected = next((fp for f in u.get("files", []) if (fp := _fingerprint(Path(f["made"])))), None)
        served["is_injected"] = None if injected is None or "sha256" not in served else served["sha256"] == injected
        details = {**hs, "expected_codes": sorted(codes), "expected_error": reason, "attempts": attempts,
                   "waited_ms": waited_ms, "served": served, "replicas": _replica_errors(ctx)}  # fmt: skip
        where = f"handshake to {u['service']} ({hs['endpoint']}, CERT_REQUIRED, hostname checked, its CA)"
        seen = f"[{hs['verify_code']}] {hs['error']}" if hs["verify_code"] is not None else hs["error"]
        if effective:
            message = f"verified: {where} fails with {seen} after {waited_ms:.0f} ms"
        elif hs["ok"]:
            still = "the original certificate" if served.get("is_injected") is False else "a certificate"
            message = (f"not verified: {where} still succeeds after {waited_ms:.0f} ms "
                       f"(served: {still}, {served.get('subject')}); expected [{min(codes)}] {reason}")  # fmt: skip
        else:
            message = f"not verified: {where} fails with {seen}, expected [{min(codes)}] {reason}"
        return Verification(effective, details, message=message)


def _verify_skew(injection: Injection, ctx: FaultContext) -> Verification:
    """The restarted service's own clock (its HTTP ``Date``) must be off by the skew.

    For a replica, what its clock does to the certificates it checks is reported too: its last
    dependency error and the reason expected (a clock ahead finds the store's certificate expired,
    one behind finds it not yet valid). That needs a feature call, so it informs, it does not decide.
    """
    u = injection.undo
    pids = tagged_pids(TAG_ENV, injection.id)
    skew_s: float | None = None
    error: str | None = None
    try:
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=u["ca_file"]) if u["ca_file"] else True
        with httpx.Client(timeout=2.0, verify=verify) as client:
            date = client.get(u["url"] + "/").headers.get("date")  # the server's clock, as it sees it
        if date:
            skew_s = parsedate_to_datetime(date).timestamp() - time.time()
        else:
            error = "no Date header"
    except (httpx.HTTPError, ValueError, OSError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    expected_s = u["skew_days"] * 86400.0
    effective = bool(pids) and skew_s is not None and abs(skew_s - expected_s) < 3600
    replicas = _replica_errors(ctx)
    expected_error = EXPECTED["expired" if expected_s > 0 else "not_yet_valid"][1]
    is_replica = u["service"] in replicas
    details = {"skewed_pids": pids, "date_skew_s": skew_s, "expected_s": expected_s, "error": error,
               "replicas": replicas, "expected_client_error": expected_error if is_replica else None}  # fmt: skip
    clock = f"{skew_s:+.0f} s" if skew_s is not None else f"unknown ({error})"
    message = (f"{'verified' if effective else 'not verified'}: {u['service']} clock skew {clock}, "
               f"expected {expected_s:+.0f} s (faketime pids {pids})")  # fmt: skip
    if is_replica:
        message += f"; its last dependency error: {replicas[u['service']] or 'none yet'} (expected: {expected_error})"
    return Verification(effective, details, message=message)


def _replica_errors(ctx: FaultContext) -> dict[str, Any]:
    """Each replica's view of its dependency (``/v2`` → ``dependency.last_error``); cheap, best effort."""
    seen: dict[str, Any] = {}
    for h in ctx.topology.by_role("replica"):
        try:
            seen[h.name] = httpx.get(f"{h.url}/v2", timeout=1.0).json().get("dependency", {}).get("last_error")
        except (httpx.HTTPError, ValueError):
            seen[h.name] = None
    return seen


def _ca_key(config: CertExpiryFault.Config, h: ServiceHandle) -> Path:
    return Path(config.ca_key_file) if config.ca_key_file else Path(str(h.ca_file)).with_name("ca.key")


def _mint(config: CertExpiryFault.Config, h: ServiceHandle, out: Path) -> tuple[Path, Path]:
    """The bad certificate and key for ``config.mode``, written under ``out``."""
    from faultdrill.target_service.pki import CertPaths, cert_info, create_ca, issue_cert

    assert h.cert_file is not None and h.ca_file is not None
    hosts = cert_info(h.cert_file).sans or ("127.0.0.1", "localhost")
    ca = CertPaths(h.ca_file, _ca_key(config, h))
    now = datetime.now(UTC)
    if config.mode == "expired":
        paths = issue_cert(ca, out, "injected", hosts, now - timedelta(days=30), now - timedelta(days=1))
    elif config.mode == "not_yet_valid":
        paths = issue_cert(ca, out, "injected", hosts, now + timedelta(days=1), now + timedelta(days=30))
    elif config.mode == "wrong_ca":
        paths = issue_cert(create_ca(out / "other-ca", "faultdrill other CA"), out, "injected", hosts)
    else:
        paths = issue_cert(ca, out, "injected", (config.wrong_host,))
    return paths.cert, paths.key


def _backup_entry(path: Path, backup_dir: Path, made: Path) -> dict[str, Any]:
    return {"path": str(path), "backup": str(backup_dir / path.name), "made": str(made),
            "sha256": backup_file(path, backup_dir / path.name), "mode": path.stat().st_mode & 0o777}  # fmt: skip


def tls_handshake(url: str, ca_file: Path, timeout_s: float = 2.0) -> dict[str, Any]:
    """A real handshake to ``url``'s host:port, verified as the target's clients verify.

    The context is the client's (``ssl.create_default_context`` trusting ``ca_file`` only:
    ``CERT_REQUIRED``, hostname checked against ``url``'s host), fresh for each call, so no
    TLS session is resumed and no connection from before a swap is reused.
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 443
    context = ssl.create_default_context(cafile=str(ca_file))
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    started = time.perf_counter()
    error, code = None, None
    try:
        with socket.create_connection((host, port), timeout_s) as sock, context.wrap_socket(sock, server_hostname=host):
            pass
    except ssl.SSLCertVerificationError as exc:
        error, code = exc.verify_message, exc.verify_code
    except (OSError, ssl.SSLError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    elapsed_ms = round((time.perf_counter() - started) * 1000, 2)
    return {"ok": error is None, "error": error, "verify_code": code, "elapsed_ms": elapsed_ms,
            "endpoint": f"{host}:{port}", "server_hostname": host, "ca_file": str(ca_file)}  # fmt: skip


def served_certificate(url: str, timeout_s: float = 2.0) -> dict[str, Any]:
    """The certificate ``url`` serves right now (read without verifying it): subject, validity, sha256."""
    from cryptography import x509

    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 443
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # to see it, not to trust it
    try:
        with (
            socket.create_connection((host, port), timeout_s) as sock,
            context.wrap_socket(sock, server_hostname=host) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    if der is None:
        return {"error": "no certificate"}
    cert = x509.load_der_x509_certificate(der)
    return {"subject": cert.subject.rfc4514_string(), "issuer": cert.issuer.rfc4514_string(),
            "not_before": cert.not_valid_before_utc.isoformat(), "not_after": cert.not_valid_after_utc.isoformat(),
            "sha256": hashlib.sha256(der).hexdigest()}  # fmt: skip


def _fingerprint(pem_file: Path) -> str | None:
    """sha256 of the DER of the certificate in ``pem_file`` (as ``served_certificate`` reports it)."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    try:
        cert = x509.load_pem_x509_certificate(pem_file.read_bytes())
    except (OSError, ValueError):
        return None
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


def tagged_pids(tag_env: str, value: str) -> list[int]:
    """Live processes whose environment holds ``tag_env=value``; only the top of a tagged tree."""
    needle = f"{tag_env}={value}".encode()
    found: dict[int, int] = {}
    for entry in Path("/proc").iterdir():  # bounded by the process table
        try:
            if entry.name.isdigit() and needle in (entry / "environ").read_bytes().split(b"\0"):
                found[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # exited while we looked, or a kernel thread
    return sorted(pid for pid, ppid in found.items() if ppid not in found and pid_alive(pid))


def respawn_without(pid: int, drop: tuple[str, ...], timeout_s: float = 15.0) -> int:
    """Stop ``pid``, start its command again (same cwd, log, memory cgroup) without ``drop``; the new pid.

    All is read from /proc at rollback time: no secret (tokens in the env) ever lands in a record."""
    proc = Path(f"/proc/{pid}")
    start = process_start_ticks(pid)
    argv = [os.fsdecode(a) for a in (proc / "cmdline").read_bytes().split(b"\0")[:-1]]
    pairs = [os.fsdecode(kv).split("=", 1) for kv in (proc / "environ").read_bytes().split(b"\0") if b"=" in kv]
    env = {k: v for k, v in pairs if k not in drop}
    cwd, log = os.readlink(proc / "cwd"), os.readlink(proc / "fd" / "1")
    procs_file = _memory_cgroup_procs(proc)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while pid_alive(pid, start) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid_alive(pid, start):
        os.kill(pid, signal.SIGKILL)
        for _ in range(100):  # its port must be free before the new process binds it
            if not pid_alive(pid, start):
                break
            time.sleep(0.05)

    def join_cgroup() -> None:  # in the child: charge all its memory to the same cgroup
        if procs_file is not None:
            procs_file.write_text(str(os.getpid()))

    out = open(log, "ab") if Path(log).is_file() else subprocess.DEVNULL  # noqa: SIM115
    try:
        child = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=join_cgroup)  # fmt: skip
    finally:
        if out is not subprocess.DEVNULL:
            out.close()  # type: ignore[union-attr]
    return child.pid


def _memory_cgroup_procs(proc: Path) -> Path | None:
    for line in (proc / "cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(",") and path not in ("", "/"):
            return Path("/sys/fs/cgroup/memory") / path.lstrip("/") / "cgroup.procs"
    return None
