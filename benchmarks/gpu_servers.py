"""Real vLLM and TGI under faultdrill on a GPU machine: the device script for the GPU inference servers.

Runs ``experiments/examples/vllm/process_kill.yaml`` and ``experiments/examples/tgi/process_kill.yaml`` with
``faultdrill run`` where the machine has what each needs — a CUDA GPU, the server installed (``import vllm`` for
``python3``; ``text-generation-launcher`` on PATH) and a model on local disk (``VLLM_MODEL``, ``TGI_MODEL``: a
folder of Hugging Face weights; nothing is downloaded) — and records, per server, what happened (outcome, each
expectation's verdict, MTTD/MTTR per fault, the report's path) or exactly why it did not run::

    VLLM_MODEL=/models/Qwen2.5-0.5B-Instruct python3 benchmarks/gpu_servers.py --out /tmp/gpu-servers

Writes ``<out>/gpu_servers.json`` and the runs under ``<out>/runs``. Exit 0 when every server that could run
ran (whatever its verdict: a failed expectation is a finding, not a script error), 2 when none could run.
The lent device machine (``/work/.library/device/README.md``) has a GPU and torch but no vLLM or TGI and no
network: there this script records "not installed" for both — carry a wheelhouse, or run it where they are.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Server:
    name: str
    spec: Path
    model_env: str
    installed: str
    """How to tell it is installed (shown when it is not)."""

    def missing(self) -> list[str]:
        """Why it cannot run here (empty: it can)."""
        why = []
        if not _cuda():
            why.append("no CUDA GPU (nvidia-smi lists none)")
        if self.name == "vllm":
            probe = subprocess.run(["python3", "-c", "import vllm"], capture_output=True, text=True, check=False)
            if probe.returncode != 0:
                why.append(f"vLLM is not installed for python3 ({self.installed})")
        elif shutil.which("text-generation-launcher") is None:
            why.append(f"text-generation-launcher is not on PATH ({self.installed})")
        model = os.environ.get(self.model_env)
        if not model:
            why.append(f"{self.model_env} is not set (a folder of Hugging Face weights on local disk)")
        elif not Path(model).is_dir():
            why.append(f"{self.model_env}={model} is not a folder")
        return why


@dataclass
class Outcome:
    server: str
    ran: bool
    why_not: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    exit_code: int | None = None
    wall_s: float | None = None
    outcome: str | None = None
    verdicts: list[dict[str, object]] = field(default_factory=list)
    faults: dict[str, dict[str, object]] = field(default_factory=dict)
    report: str | None = None


SERVERS = [
    Server("vllm", ROOT / "experiments/examples/vllm/process_kill.yaml", "VLLM_MODEL", "pip install vllm"),
    Server("tgi", ROOT / "experiments/examples/tgi/process_kill.yaml", "TGI_MODEL",
           "Hugging Face's text-generation-inference launcher"),
]


def _cuda() -> bool:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return False
    done = subprocess.run([exe, "-L"], capture_output=True, text=True, check=False, timeout=30)
    return done.returncode == 0 and "GPU" in done.stdout


def run(server: Server, out: Path, timeout_s: float) -> Outcome:
    why = server.missing()
    if why:
        return Outcome(server.name, ran=False, why_not=why)
    runs = out / "runs"
    argv = [sys.executable, "-m", "faultdrill", "run", str(server.spec), "--out", str(runs), "--plain"]
    notes = []
    if shutil.which("prometheus") is None or shutil.which("alertmanager") is None:
        argv.append("--no-alerts")  # the run's own Prometheus + Alertmanager are Debian packages: not everywhere
        notes.append("alerting off: prometheus/alertmanager not installed (the alert expectations are not judged)")
    started = time.monotonic()
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s, check=False)
    (out / f"{server.name}.log").write_text(done.stdout + done.stderr)
    result = Outcome(server.name, ran=True, exit_code=done.returncode, wall_s=round(time.monotonic() - started, 1),
                     notes=notes)
    journals = sorted((p for p in runs.glob(f"{server.name}-*/journal.json") if not p.parent.is_symlink()),
                      key=lambda p: p.stat().st_mtime)  # fmt: skip
    if journals:
        doc = json.loads(journals[-1].read_text())
        result.outcome = doc.get("outcome")
        result.verdicts = [{"name": v.get("name"), "passed": v.get("passed"), "observed": v.get("observed")}
                           for v in doc.get("verdicts", [])]  # fmt: skip
        result.faults = {k: {m: f.get(m) for m in ("mttd_s", "mttr_s", "detected_by", "verified")}
                         for k, f in (doc.get("faults") or {}).items()}  # fmt: skip
        result.report = str(journals[-1].parent / "report.html")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--only", choices=[s.name for s in SERVERS])
    parser.add_argument("--timeout", type=float, default=900.0, help="per run, seconds")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = [run(s, args.out, args.timeout) for s in SERVERS if args.only in (None, s.name)]
    (args.out / "gpu_servers.json").write_text(json.dumps([asdict(r) for r in results], indent=2))
    for r in results:
        if r.ran:
            print(f"{r.server}: ran in {r.wall_s} s, exit {r.exit_code}, outcome {r.outcome}; report {r.report}")
            for v in r.verdicts:
                print(f"  {'ok  ' if v['passed'] else 'FAIL'} {v['name']}: {v['observed']}")
        else:
            print(f"{r.server}: not run — " + "; ".join(r.why_not))
    return 0 if any(r.ran for r in results) else 2


if __name__ == "__main__":
    raise SystemExit(main())
