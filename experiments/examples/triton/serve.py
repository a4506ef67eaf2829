"""NVIDIA Triton Inference Server (2.x, through nvidia-pytriton 0.7) serving the digits model, on CPU, on loopback.

Run from the Triton venv (``make server-triton``)::

    .faultdrill/servers/triton/venv/bin/python experiments/examples/triton/serve.py \
        --http-port 8000 --grpc-port 8001 --metrics-port 8002 --model-dir experiments/examples/triton/models

What it is: PyTriton starts the real ``tritonserver`` binary (shipped in the nvidia-pytriton wheel) as a child
process with a Python-backend model per bound function; the backend's stub talks to this process, where
``infer`` below runs the digits MLP with Triton's dynamic batching (``@batch``, max batch 64). Clients see
Triton: its HTTP/REST and gRPC frontends (Open Inference Protocol v2), its health endpoints and its
``/metrics`` on the metrics port (``nv_inference_*``, with ``summary_latencies=true`` for the p95 series the
profile's rules read). Nothing needs a GPU: the server starts on CPU (it logs that no CUDA device was found).

The model: ``<model-dir>/digits/model.joblib`` (``experiments/examples/train_digits.py``), loaded here before
Triton starts; a file that does not load stops the process (exit 1), so no port opens and the replica never
becomes ready. Triton's own model repository is the one PyTriton generates in its workspace (``config.pbtxt`` +
a Python-backend stub model per bound function): not a user artifact, so ``model_load_failure`` aims at the
joblib file instead (``model.repository`` in the specs).

Two facts of PyTriton this launcher takes care of:

* the Python-backend stub is linked against ``libpython3.X.so``; with a Python built outside the system
  (pyenv, as here) that library is not on the loader's path and the model fails to load
  (``'_thread.RLock' object has no attribute '_recursion_count'``). Triton inherits this process's
  environment, so ``LD_LIBRARY_PATH`` gets this interpreter's ``LIBDIR`` before Triton starts;
* a workspace (a copy of the tritonserver binaries, about 22 MB, the generated model store and PyTriton's unix
  sockets) is removed by PyTriton on a clean stop only: a SIGKILLed launcher leaves it, and PyTriton refuses to
  start in an existing one. With ``--workspace`` (the specs give ``{workdir}/{replica}-pytriton``) a leftover is
  removed first, and a path too deep for a unix socket (107 bytes) is replaced by a short one under /tmp;
  without it PyTriton makes a temporary one under ``~/.cache/pytriton`` that each kill leaks;
* Triton binds 0.0.0.0 by default: the HTTP, gRPC and metrics addresses are set to 127.0.0.1
  (``--address``). PyTriton starts tritonserver with ``PR_SET_PDEATHSIG`` (SIGTERM), so a killed launcher takes
  its server down with it;
* PyTriton stops cleanly on SIGINT only; SIGTERM (what Kubernetes and faultdrill send) ends it at once and leaves
  its shared memory and temporary folders behind, so SIGTERM is handled as SIGINT here. What a SIGKILL leaves
  (a 4 MiB ``/dev/shm/pytrtion<pid>-…`` region, a ``/tmp/pytriton-…`` workspace) is removed at the next start
  when its process is gone; tritonserver's own ``/tmp/folderXXXXXX`` copy of the model's files is not (its
  path is fixed in Triton and names no owner).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import os
import shutil
import signal
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any


def _libpython_on_loader_path() -> None:
    libdir = sysconfig.get_config_var("LIBDIR")
    paths = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]
    if libdir and libdir not in paths:
        os.environ["LD_LIBRARY_PATH"] = ":".join([libdir, *paths])


OWNER = "owner-pid"  # no leading dot: PyTriton's clean stop removes the workspace's other files, then the folder


def _workspace(requested: Path | None, log: logging.Logger) -> Path | None:
    """Where PyTriton's workspace goes for ``--workspace``: that path, or a short one under /tmp standing for it.

    PyTriton listens on unix sockets inside its workspace (``digits_0_0-server.sock`` …), and a socket path has at
    most 107 bytes: under a deep run folder the model fails to initialise (EOFError in the stub's handshake). A
    long path is replaced by ``/tmp/pytriton-<hash of the path>`` — the same for a restart of the same replica.
    PyTriton refuses a workspace that exists and removes it on a clean stop only, so a killed predecessor's is
    removed first (else every restart would crash-loop on FileExistsError), and so are those of any PyTriton
    process of this launcher that is gone.
    """
    if requested is None:
        return None
    path = requested.absolute()
    if len(str(path)) > 60:
        path = Path(tempfile.gettempdir()) / f"pytriton-{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"
        log.info("workspace %s is too deep for PyTriton's unix sockets: using %s", requested, path)
    _remove_stale_workspaces(log)
    if path.exists():
        log.warning("removing the workspace a killed predecessor left: %s", path)
        shutil.rmtree(path, ignore_errors=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _remove_stale_workspaces(log: logging.Logger) -> None:
    for owner in Path(tempfile.gettempdir()).glob(f"pytriton-*/{OWNER}"):
        pid = owner.read_text().strip()
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            log.warning("removing %s, left by PyTriton process %s (gone)", owner.parent, pid)
            shutil.rmtree(owner.parent, ignore_errors=True)


def _remove_stale_shm(log: logging.Logger) -> None:
    """Remove the Python backend's shared-memory regions of PyTriton processes that are gone.

    Each PyTriton process names its regions ``/dev/shm/pytrtion<pid>-…`` (sic) and removes them on a clean stop
    only; a killed one (SIGKILL, the kernel's OOM killer) leaves 4 MiB of tmpfs memory per region for good. In a
    pod, /dev/shm goes with the pod; on a host it piles up, so a starting launcher removes those of dead pids.
    """
    for region in Path("/dev/shm").glob("pytrtion*-*"):
        pid = region.name.removeprefix("pytrtion").split("-", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            with contextlib.suppress(OSError):
                region.unlink()
                log.warning("removed %s, left by PyTriton process %s (gone)", region, pid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--address", default="127.0.0.1",
                        help="where every frontend listens (Triton's default: 0.0.0.0)")
    parser.add_argument("--model-dir", type=Path, required=True, help="the repository: <model-dir>/digits/model.joblib")
    parser.add_argument("--model-name", default="digits")
    parser.add_argument("--workspace", type=Path, default=None,
                        help="PyTriton's workspace (default: a temporary one under ~/.cache/pytriton)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    log = logging.getLogger("digits")
    _libpython_on_loader_path()
    # Kubernetes (and faultdrill) stop a server with SIGTERM; PyTriton stops cleanly only on SIGINT (KeyboardInterrupt
    # in serve()): without this, SIGTERM ends the process at once, tritonserver follows through its parent-death
    # signal, and the workspace, a 4 MiB /dev/shm region and Triton's /tmp/folderXXXXXX model copy are left behind.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    _remove_stale_shm(log)
    workspace = _workspace(args.workspace, log)

    import joblib
    import numpy as np
    from pytriton.decorators import batch
    from pytriton.model_config import ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    try:
        model: Any = joblib.load(args.model_dir / args.model_name / "model.joblib")
    except Exception as exc:  # what a Triton model does when its files are bad: it never becomes ready
        log.error("model load failed: %s: %s", type(exc).__name__, exc)
        sys.exit(1)

    @batch
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        classes = model.predict(inputs["input"].astype(np.float64).reshape(-1, 64))
        return {"predict": classes.astype(np.int64).reshape(-1, 1)}

    config = TritonConfig(
        http_address=args.address, http_port=args.http_port,
        grpc_address=args.address, grpc_port=args.grpc_port,
        metrics_address=args.address, metrics_port=args.metrics_port,
        metrics_config=["summary_latencies=true"], allow_gpu_metrics=False,
        strict_readiness=True, exit_on_error=True,
    )  # fmt: skip
    with Triton(config=config, workspace=workspace) as triton:
        if workspace is not None:
            (workspace / OWNER).write_text(str(os.getpid()))  # whose it is, for _remove_stale_workspaces
        triton.bind(
            model_name=args.model_name, infer_func=infer,
            inputs=[Tensor(name="input", dtype=np.float32, shape=(64,))],
            outputs=[Tensor(name="predict", dtype=np.int64, shape=(1,))],
            config=ModelConfig(max_batch_size=64),
        )  # fmt: skip
        log.info("serving %s on http://%s:%d (metrics :%d)", args.model_name, args.address, args.http_port,
                 args.metrics_port)  # fmt: skip
        triton.serve()


if __name__ == "__main__":
    main()
