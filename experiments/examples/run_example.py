"""Run one bring-your-own-server example: ``faultdrill run SPEC``, with the feature service up when SPEC needs it.

``make example SPEC=experiments/examples/mlserver/process_kill.yaml`` calls this (after ``make setup servers``)::

    .venv/bin/python experiments/examples/run_example.py SPEC [-- FAULTDRILL-RUN-ARGS …]

faultdrill starts the server itself (``target.service.kind: process``); what it does not start is a declared
dependency (``target.service.dependencies``: where *your* dependency already listens). The examples' only one
is the feature service (``experiments/examples/features.py``): when SPEC declares a dependency named
``features`` on 127.0.0.1, it is started on that port first and stopped after the run. The exit status is
``faultdrill run``'s (0 all expectations held, 1 one failed, 2 the spec or setup is wrong, 3 aborted).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import yaml

HERE = Path(__file__).resolve().parent
FEATURES = HERE / "features.py"


def feature_port(spec: Path) -> int | None:
    """The loopback port SPEC expects the feature service on, or None when it declares none."""
    doc = yaml.safe_load(spec.read_text())
    service = ((doc or {}).get("target") or {}).get("service")
    deps = service.get("dependencies", []) if isinstance(service, dict) else []
    for dep in deps:
        url = urlsplit(str(dep.get("url", "")))
        if dep.get("name") == "features" and url.hostname in ("127.0.0.1", "localhost") and url.port:
            return url.port
    return None


@contextlib.contextmanager
def feature_service(port: int | None, timeout_s: float = 10.0) -> Iterator[None]:
    """The feature service on ``port`` for the block's length (nothing when ``port`` is None)."""
    if port is None:
        yield
        return
    proc = subprocess.Popen([sys.executable, str(FEATURES), "--port", str(port)])
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                    pass
                if proc.poll() is not None:  # another process answered: ours could not bind
                    raise RuntimeError(f"127.0.0.1:{port} is taken by another process; the examples' feature "
                                       "service needs it (stop that process)")  # fmt: skip
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the feature service did not start on 127.0.0.1:{port} "
                                       f"(exit {proc.poll()}; is the port taken?)") from None  # fmt: skip
                time.sleep(0.1)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def main(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    spec, rest = Path(argv[0]), argv[1:]
    if rest[:1] == ["--"]:
        rest = rest[1:]
    with feature_service(feature_port(spec)):
        return subprocess.call([sys.executable, "-m", "faultdrill", "run", str(spec), *rest])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
