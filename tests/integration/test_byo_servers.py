"""Real third-party inference servers, started by faultdrill: the examples in experiments/examples/<server>/.

Each example describes its server as ``target.service: {kind: process, …}`` — real Seldon MLServer 1.7.1, real
KServe 0.21 ``ModelServer`` and real NVIDIA Triton 2.51 (through nvidia-pytriton 0.7, on CPU) — each from its own
venv under ``.faultdrill/servers/<server>/venv`` (``make setup`` builds MLServer's, ``make servers`` all three).

* ``make test`` (CI) runs the cheap one end to end: MLServer, SIGKILL of one of two replicas
  (``test_mlserver_process_kill``), plus a check that every example loads (no server needed);
* ``make test-catalog`` runs every example (``catalog``) and pins what each server does: the expectations that
  pass, and the ones that fail because the server (or faultdrill, for the gaps written down in
  experiments/examples/README.md) does not do what an SRE expects — a finding, kept visible here rather than
  hidden: when a server or faultdrill changes, the table below must change with it.

A missing server venv skips on a developer's machine and fails with ``CI=true`` (CI ran ``make setup``, which
builds MLServer's; ``make test-catalog`` builds the others), as the ``tools`` marker does (tests/conftest.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "experiments" / "examples"
SERVERS = ROOT / ".faultdrill" / "servers"


def require_server(name: str) -> None:
    """The server's venv and trained model, or skip (fail with CI=true: the make targets build them)."""
    missing = [str(p.relative_to(ROOT)) for p in (SERVERS / name / "venv" / ".installed",
                                                   EXAMPLES / name / "models" / "digits" / "model.joblib")
               if not p.exists()]  # fmt: skip
    if not missing:
        return
    target = "make setup" if name == "mlserver" else f"make server-{name} (or make servers)"
    message = f"the {name} server is not installed ({', '.join(missing)} missing) — run `{target}`"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI=true: the make targets build it, so it is required here)", pytrace=False)
    pytest.skip(message)


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: memory cgroups for target.memory_limit")


@dataclass
class Run:
    returncode: int
    stdout: str
    journal: dict = field(default_factory=dict)

    def verdicts(self) -> dict[str, bool]:
        return {v["name"]: v["passed"] for v in self.journal.get("verdicts", [])}

    def failed(self) -> list[str]:
        return [name for name, ok in self.verdicts().items() if not ok]

    def why(self) -> str:
        """What each failed expectation observed, and the run's last lines: the assertion message."""
        seen = [f"{v['name']}: {v.get('observed', '')}" for v in self.journal.get("verdicts", []) if not v["passed"]]
        return "\n".join([*seen, self.stdout[-2000:]])


def run_example(tmp_path: Path, spec: Path) -> Run:
    """``faultdrill run`` on the example (which starts the feature service itself where it declares it), journal
    read back; nothing of the run may be left: no ledger record, no process working in the run's folder."""
    out, state = tmp_path / "runs", tmp_path / "state"
    env = {**os.environ, "FAULTDRILL_STATE_DIR": str(state), "CI": "true"}
    result = subprocess.run([sys.executable, "-m", "faultdrill", "run", str(spec), "--out", str(out)],
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=420)  # fmt: skip
    journals = sorted(out.glob("*/journal.json"))
    run = Run(result.returncode, result.stdout + result.stderr,
              json.loads(journals[-1].read_text()) if journals else {})  # fmt: skip
    assert not list((state / "ledger").glob("*.json")), "a ledger record was left"
    assert _processes_in(tmp_path) == [], "processes of the run were left running"
    return run


def _processes_in(folder: Path) -> list[str]:
    """Processes whose working directory is inside ``folder`` (the examples run their servers in the run's dir)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cwd = os.readlink(proc / "cwd")
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:160]
        except OSError:
            continue
        if cwd.startswith(str(folder)):
            found.append(f"{proc.name}: {cmd}")
    return found


# -- every example loads (no server needed): make test ---------------------------------------------------------

REFUSED: dict[str, str] = {
    # example file name → what its refusal says, for an example faultdrill cannot run (none now: oom_kill runs in
    # mode pressure, model_load_failure on the declared model.artifact). README.md: "What faultdrill lacks".
}


def test_every_example_loads_or_is_refused_for_the_reason_written_down() -> None:
    """What ``faultdrill validate`` checks, in process (one CLI start per file would cost seconds in make test)."""
    from faultdrill.experiments import FaultRegistry, load_experiment
    from faultdrill.faults.errors import ConfigError

    registry = FaultRegistry.installed()
    specs = sorted(p for server in ("mlserver", "kserve", "triton", "vllm", "tgi")
                   for p in (EXAMPLES / server).glob("*.yaml"))  # fmt: skip
    assert len(specs) >= 19, specs
    problems = []
    for spec in specs:
        refused = REFUSED.get(spec.name)
        try:
            load_experiment(spec, registry)
        except ConfigError as exc:
            if refused is None or refused not in str(exc):
                problems.append(f"{spec.relative_to(ROOT)}: {exc}")
            continue
        if refused is not None:
            problems.append(f"{spec.relative_to(ROOT)} loads now: update REFUSED, README.md and the catalog table")
    assert problems == []


# -- the short one, in make test -------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.system
def test_mlserver_process_kill(tmp_path: Path) -> None:
    """Real MLServer, two replicas, SIGKILL one: it restarts (reason Signal), is out of rotation meanwhile, the
    other keeps the SLO, and no false page in steady state (the profile's rules). About 60 s."""
    _require_root()
    require_server("mlserver")
    run = run_example(tmp_path, EXAMPLES / "mlserver" / "process_kill.yaml")
    assert run.returncode == 0, run.why()
    assert run.journal["outcome"] == "passed"


# -- every example, in make test-catalog -----------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    server: str
    example: str
    exit_code: int = 0
    failing: tuple[str, ...] = ()
    """Expectations (substrings of their names) that fail, and must: what the server does that an SRE would not
    expect (README.md's findings table)."""
    flaky: tuple[str, ...] = ()
    """Expectations whose outcome depends on timing on a shared 2-core machine: either way is accepted."""
    says: str | None = None
    """For a run refused before any fault (exit 2): what the refusal says."""


# At half the probed capacity (open model), every request routed to the hung replica before readiness takes it out
# of rotation (~3 s) hangs: availability during the hang falls to 0.78-0.90. Whether those requests end lost (the
# client's 10 s timeout first) or failed (the liveness kill resets them first, and the endpoint answers 503) is a
# race of the two clocks. Closed-loop users hid all of it (a handful of stuck users, then no request sent at all).
HUNG = "availability at least 0.95 during hang"
LOST = "at most 0 lost requests during hang"

CASES = [
    Case("mlserver", "process_kill"),
    # Liveness kills the hung replica after ~10 s; readiness takes it out of rotation after ~3 s, and what was sent
    # to it until then hangs (HUNG). MLServerDown pages (~4 s).
    Case("mlserver", "process_freeze", 1, failing=(HUNG,), flaky=(LOST,)),
    Case("mlserver", "overload"),
    Case("mlserver", "dependency"),
    # Exits 0 ("Completed") when its model fails to load: a crash loop all the same; MLServerDown pages (~3 s).
    Case("mlserver", "model_load_failure"),
    Case("mlserver", "oom_kill"),
    Case("kserve", "process_kill"),
    Case("kserve", "process_freeze", 1, failing=(HUNG,), flaky=(LOST,)),
    Case("kserve", "overload"),
    Case("kserve", "dependency"),
    Case("kserve", "model_load_failure"),
    Case("kserve", "oom_kill"),
    # The killed launcher's tritonserver is killed with it (the replica is a container): one clean restart.
    Case("triton", "process_kill"),
    # SIGSTOP freezes the PyTriton process (the model); tritonserver, its child, still answers every health and
    # metrics endpoint: never unready, never restarted, never paged, requests hang.
    Case("triton", "process_freeze", 1, failing=("readiness of triton-0 becomes false", "triton-0 restarts at least 1",
                                                 "alert TritonDown", HUNG, LOST)),
    Case("triton", "overload"),
    Case("triton", "model_load_failure"),
    Case("triton", "oom_kill"),
]


@pytest.mark.catalog
@pytest.mark.slow
@pytest.mark.root
@pytest.mark.system
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.server}-{c.example}")
def test_example_against_real_server(tmp_path: Path, case: Case) -> None:
    _require_root()
    require_server(case.server)
    run = run_example(tmp_path, EXAMPLES / case.server / f"{case.example}.yaml")
    # A flaky expectation may fail the run (exit 1) or not (exit 0, where nothing else fails).
    allowed = {case.exit_code} | ({0, 1} if case.flaky and case.exit_code in (0, 1) else set())
    assert run.returncode in allowed, run.why()
    if case.says is not None:
        assert case.says in run.stdout, run.stdout[-3000:]
        return
    failed = [n for n in run.failed() if not any(f in n for f in case.flaky)]
    expected = [n for n in failed if any(f in n for f in case.failing)]
    assert failed == expected, f"unexpected failures: {sorted(set(failed) - set(expected))}"
    for finding in case.failing:
        assert any(finding in n for n in failed), f"no longer fails (update README.md's findings): {finding}"


# -- the GPU servers' device script, where it cannot run ---------------------------------------------------------


def test_the_gpu_servers_script_says_why_it_cannot_run_here(tmp_path: Path) -> None:
    """``benchmarks/gpu_servers.py`` on a machine without a GPU, vLLM or TGI: exit 2, and for each server the reasons
    in its JSON (on a GPU machine with both installed it runs them: not this test's business)."""
    import shutil

    if shutil.which("nvidia-smi") is not None:
        pytest.skip("a GPU machine: the script would run the servers (benchmarks/gpu_servers.py, docs/gpu)")
    env = {**os.environ, "VLLM_MODEL": ""}
    done = subprocess.run([sys.executable, "benchmarks/gpu_servers.py", "--out", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False, env=env)  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    results = {r["server"]: r for r in json.loads((tmp_path / "gpu_servers.json").read_text())}
    assert set(results) == {"vllm", "tgi"} and not any(r["ran"] for r in results.values())
    assert "no CUDA GPU (nvidia-smi lists none)" in results["vllm"]["why_not"]
    assert any("VLLM_MODEL is not set" in w for w in results["vllm"]["why_not"])
    assert "tgi: not run — no CUDA GPU" in done.stdout
