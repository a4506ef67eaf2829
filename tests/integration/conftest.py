"""Fixtures that start the real target and feature store as processes on loopback."""

from __future__ import annotations

import re
import secrets
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from faultdrill.experiments.host.process import ServiceProcess, free_port


@dataclass
class Stack:
    """A running feature store + target pair and how to reach them."""

    workdir: Path
    pki: object
    store: ServiceProcess
    target: ServiceProcess
    fs_port: int
    port: int
    admin_port: int
    token: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def store_url(self) -> str:
        return f"https://127.0.0.1:{self.fs_port}"

    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def ca_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.pki.ca.cert))  # type: ignore[attr-defined]

    def start_store(self) -> None:
        self.store.start()
        self.store.wait_http(f"{self.store_url}/healthz", 30, verify=self.ca_context())

    def stop(self) -> None:
        self.target.stop()
        self.store.stop()


@pytest.fixture(scope="session")
def model_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from faultdrill.target_service.registry import ModelRegistry

    root = tmp_path_factory.mktemp("registry")
    ModelRegistry(root).ensure_defaults()
    return root


@pytest.fixture(scope="session")
def session_pki(tmp_path_factory: pytest.TempPathFactory) -> object:
    from faultdrill.target_service.pki import ensure_dev_pki

    return ensure_dev_pki(tmp_path_factory.mktemp("pki"))


def start_stack(
    workdir: Path, registry: Path, pki: object, extra_env: dict[str, str] | None = None,
    with_store: bool = True,
) -> Stack:
    """Start store and target; the caller stops them (``Stack.stop``)."""
    fs_port, port, admin_port = free_port(), free_port(), free_port()
    token = secrets.token_urlsafe(16)
    store = ServiceProcess(
        "feature-store", [sys.executable, "-m", "faultdrill.target_service", "feature-store"],
        env={"FAULTDRILL_FS_PORT": str(fs_port),
             "FAULTDRILL_FS_TLS_CERT_FILE": str(pki.feature_store.cert),  # type: ignore[attr-defined]
             "FAULTDRILL_FS_TLS_KEY_FILE": str(pki.feature_store.key),  # type: ignore[attr-defined]
             "FAULTDRILL_FS_CERT_RELOAD_INTERVAL_S": "0.2"},
        log_path=workdir / "feature-store.log",
    )  # fmt: skip
    env = {
        "FAULTDRILL_PORT": str(port),
        "FAULTDRILL_ADMIN_PORT": str(admin_port),
        "FAULTDRILL_ADMIN_TOKEN": token,
        "FAULTDRILL_MODEL_REGISTRY": str(registry),
        "FAULTDRILL_FEATURE_STORE_URL": f"https://127.0.0.1:{fs_port}",
        "FAULTDRILL_CA_FILE": str(pki.ca.cert),  # type: ignore[attr-defined]
        "FAULTDRILL_BREAKER_RESET_TIMEOUT_S": "1",
        "FAULTDRILL_CERT_RELOAD_INTERVAL_S": "0.2",
        **(extra_env or {}),
    }
    target = ServiceProcess(
        "target", [sys.executable, "-m", "faultdrill.target_service", "serve"], env=env,
        log_path=workdir / "target.log",
    )  # fmt: skip
    stack = Stack(workdir, pki, store, target, fs_port, port, admin_port, token, env)
    try:
        if with_store:
            stack.start_store()
        target.start()
        target.wait_http(f"{stack.base}/v2/health/ready", 60)
        target.wait_http(f"{stack.base}/v2/models/digits", 60)  # loaded, whatever readiness says
    except Exception:
        stack.stop()
        raise
    return stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, model_registry: Path, session_pki: object) -> Iterator[Stack]:
    s = start_stack(tmp_path_factory.mktemp("stack"), model_registry, session_pki)
    yield s
    s.stop()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0) as c:
        yield c


def infer_body(rows: list[list[float]]) -> dict[str, object]:
    return {"inputs": [{"name": "input", "shape": [len(rows), 64], "datatype": "FP32",
                        "data": [v for r in rows for v in r]}]}  # fmt: skip


@pytest.fixture(name="infer_body")
def _infer_body_fixture():  # type: ignore[no-untyped-def]
    return infer_body


@pytest.fixture
def make_stack(tmp_path: Path, model_registry: Path, session_pki: object):  # type: ignore[no-untyped-def]
    """Factory: ``make_stack(extra_env=…, with_store=…)``; everything it started is stopped."""
    started: list[Stack] = []

    def factory(extra_env: dict[str, str] | None = None, with_store: bool = True) -> Stack:
        workdir = tmp_path / f"stack{len(started)}"
        workdir.mkdir()
        s = start_stack(workdir, model_registry, session_pki, extra_env, with_store)
        started.append(s)
        return s

    yield factory
    for s in started:
        s.stop()


# -- what a run must not leave behind ----------------------------------------------------------------
# Scoped to the run under test: other tests (another xdist worker) may have their own namespaces and
# processes up at the same moment, and those are not this run's leftovers.
_NETNS_NAME = re.compile(r"\bfd-[a-z0-9]{1,11}\b")


def faultdrill_namespaces() -> set[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    return {line.split()[0] for line in listed.splitlines() if line.startswith("fd-")}


def namespaces_of(pids: set[int]) -> set[str]:
    """The faultdrill namespaces any of ``pids`` lives in (``ip netns pids``)."""
    found = set()
    for name in faultdrill_namespaces():
        inside = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, check=False).stdout
        if pids & {int(p) for p in inside.split() if p.isdigit()}:
            found.add(name)
    return found


def run_leftovers(root: Path, state: Path | None = None, namespaces: set[str] = frozenset()) -> list[str]:  # type: ignore[assignment]
    """Processes whose command line names ``root``, ledger records under ``state``, and network namespaces
    still there among those a journal under ``root`` names (plus ``namespaces``)."""
    import psutil

    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if str(root) in cmd and "pytest" not in cmd:
            found.append(f"process {proc.pid}: {cmd[:160]}")
    if state is not None and (state / "ledger").exists():
        found += [f"ledger {p.name}" for p in (state / "ledger").glob("*.json")]
    named = set(namespaces)
    for journal in Path(root).rglob("journal.json"):
        named |= set(_NETNS_NAME.findall(journal.read_text(errors="replace")))
    found += [f"netns {name}" for name in sorted(named & faultdrill_namespaces())]
    return found


@pytest.fixture(name="leftovers")
def _leftovers_fixture():  # type: ignore[no-untyped-def]
    """``leftovers(run_root, state_dir)`` → what the run left behind (empty when it cleaned up)."""
    return run_leftovers


@pytest.fixture(name="namespaces_of")
def _namespaces_of_fixture():  # type: ignore[no-untyped-def]
    return namespaces_of
