"""Fixtures of the target's tests: the real target process, served on loopback."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from faultdrill.experiments.host.process import ServiceProcess, free_port


@dataclass(frozen=True)
class ServedTarget:
    """A running target: ``url`` (``http://127.0.0.1:PORT``), ``host_port`` (what the Triton client takes)."""

    url: str
    host_port: str
    log: Path


@pytest.fixture(scope="session")
def served_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedTarget]:
    """``python -m faultdrill.target_service serve`` (digits on the CPU, no feature store, echo route
    on), one per test process; stopped at the end of the session."""
    from faultdrill.target_service.registry import ModelRegistry

    root = tmp_path_factory.mktemp("served-target")
    ModelRegistry(root / "registry").ensure_defaults()
    port, log = free_port(), root / "target.log"
    env = {"FAULTDRILL_PORT": str(port), "FAULTDRILL_MODEL_REGISTRY": str(root / "registry"),
           "FAULTDRILL_DEVICE": "cpu", "FAULTDRILL_ECHO_ENDPOINT": "true"}  # fmt: skip
    svc = ServiceProcess("target", [sys.executable, "-m", "faultdrill.target_service", "serve"], env=env, log_path=log)
    svc.start()
    try:
        svc.wait_http(f"http://127.0.0.1:{port}/v2/health/ready", 60)
        yield ServedTarget(f"http://127.0.0.1:{port}", f"127.0.0.1:{port}", log)
    finally:
        svc.stop()
