"""The container image: hadolint-clean Dockerfiles, and their ENTRYPOINT really serves.

No container engine runs here: the image's exact ENTRYPOINT argv is run against the project's
venv (``PATH`` = .venv/bin, the image's ``ENV`` with a free port and this machine's model
registry) and must answer ``/v2/health/live``.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from faultdrill.experiments.host.process import free_port

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILES = [ROOT / "target_service" / "Dockerfile", ROOT / "target_service" / "Dockerfile.cuda"]
HADOLINT = Path(sys.executable).parent / "hadolint"


def _instructions(path: Path) -> list[tuple[str, str]]:
    out, buf = [], ""
    for line in path.read_text().splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        buf += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            op, _, rest = buf.strip().partition(" ")
            out.append((op.upper(), rest))
            buf = ""
    return out


def _env(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for op, rest in _instructions(path):
        if op == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = value
    return env


@pytest.mark.tools("hadolint")
@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_k8s_image_dockerfile_is_hadolint_clean(dockerfile: Path) -> None:
    done = subprocess.run([str(HADOLINT), "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    ops = dict(_instructions(dockerfile))
    assert json.loads(ops["ENTRYPOINT"]) == ["faultdrill", "target", "serve"]
    users = [rest for op, rest in _instructions(dockerfile) if op == "USER"]
    assert users and not users[-1].startswith(("0", "root"))
    assert sum(op == "FROM" for op, _ in _instructions(dockerfile)) == 2  # multi-stage


@pytest.mark.slow
def test_k8s_image_entrypoint_serves_live(tmp_path: Path) -> None:
    ops = dict(_instructions(DOCKERFILES[0]))
    argv = json.loads(ops["ENTRYPOINT"])
    port = free_port()
    image_env = _env(DOCKERFILES[0])
    assert image_env["FAULTDRILL_HOST"] == "0.0.0.0" and image_env["FAULTDRILL_DEVICE"] == "cpu"
    env = {**os.environ, **{k: v for k, v in image_env.items() if k != "PATH"},
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "FAULTDRILL_HOST": "127.0.0.1", "FAULTDRILL_PORT": str(port)}  # fmt: skip
    env.pop("FAULTDRILL_MODEL_REGISTRY")  # /models exists in the image only: this machine's default registry
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        status = None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/v2/health/live", timeout=1).status_code
                if status == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        assert status == 200, (tmp_path / "serve.log").read_text()[-2000:]
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        log.close()
    assert code == 0  # SIGTERM: drain, exit 0 (a pod's termination)
