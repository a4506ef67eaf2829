"""What the README shows, CI runs: every command of its ``sh`` blocks, exactly as written, from the
repository root, with default arguments (so ``--out`` is the default ``runs/``), after
``source .venv/bin/activate`` as the README says.

- ``test_every_readme_command_is_run_by_a_test``: a README command in none of the tables below is
  a failure, and so is a table entry the README no longer has.
- ``test_quick_readme_command``: each command that finishes in under a minute, with the exit code
  the README gives (``# exit 1``), else 0.
- ``test_make_demo_as_the_readme_shows``: the main job, ``make demo``, and the files it promises.
- ``test_readme_experiments_in_order``: the experiment commands in the order the README lists them
  (each ``report`` line reads the runs before it through ``runs/latest-<name>``).
- ``test_guided_monthly_game_day_halts_on_ctrl_c``: the guided game day, on a terminal, halted by
  the person at the keyboard as the README says (Ctrl-C).

The only change to the environment is a per-test ledger directory (``FAULTDRILL_STATE_DIR``):
``faultdrill rollback --pending`` from one test must never undo a fault another test has in effect.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
EXIT = re.compile(r"#\s*exit (\d)\b")  # a comment that starts "exit N"

# Under a minute each: run by test_quick_readme_command.
QUICK = [
    "faultdrill validate experiments/catalog/*.yaml",
    "faultdrill run experiments/catalog/oom_kill.yaml --dry-run",
    "faultdrill gameday schedule gamedays/plans/monthly.yaml",
    "faultdrill runbook check gamedays/runbooks/*.md",
    "faultdrill history",
    "faultdrill alerts check",
    "faultdrill target tour",
    "faultdrill deploy secrets && faultdrill deploy render target_service/deploy/overlays/cpu",
    "faultdrill faults list",
    "faultdrill faults describe oom_kill",
    "faultdrill rollback --pending",
    "cp target_service/alerts/rules.yml my-rules.yml",  # my-rules.yml is git-ignored
]
# Longer: the test that runs each, exactly as written unless said otherwise.
ORDERED = [  # test_readme_experiments_in_order, in this order
    "faultdrill run experiments/catalog/gpu_memory_exhaustion.yaml --misconfig readiness_ignores_model",
    "faultdrill run experiments/catalog/gpu_memory_exhaustion.yaml",
    "faultdrill report --compare runs/previous-gpu-memory-exhaustion runs/latest-gpu-memory-exhaustion",
    "faultdrill run experiments/catalog/smoke.yaml",
    "faultdrill report runs/latest-smoke --format md",
]
LONG = {
    "make demo": "tests/integration/test_readme.py::test_make_demo_as_the_readme_shows",
    "make test": ".ci/run (CI's entry point runs `make test`: this very suite)",
    **dict.fromkeys(ORDERED, "tests/integration/test_readme.py::test_readme_experiments_in_order"),
    "faultdrill gameday run gamedays/plans/monthly.yaml --guided":
        "tests/integration/test_readme.py::test_guided_monthly_game_day_halts_on_ctrl_c",
    # Proving a rule change (~60 s): the alert-proof test runs the same experiment with `--rules` on a
    # copy of the shipped rules (mutated, so the run must fail naming the alert).
    "faultdrill run experiments/catalog/cert_expiry.yaml --rules my-rules.yml":
        "tests/integration/test_alert_proof.py::test_a_broken_rule_fails_the_experiment_naming_the_alert "
        "(make test-catalog)",
    # About a minute each: cells of the catalog's detection matrix (make test-catalog) — cache_outage is a
    # baseline run, noisy_neighbour × no_rate_limit a variant run caught on the tenants' latency.
    "faultdrill run experiments/catalog/cache_outage.yaml":
        "tests/integration/test_catalog.py::test_every_profile_is_caught_on_damage (make test-catalog)",
    "faultdrill run experiments/catalog/noisy_neighbour.yaml --misconfig no_rate_limit":
        "tests/integration/test_catalog.py::test_every_profile_is_caught_on_damage (make test-catalog)",
    # ~140 runs (~2 h): the matrix itself.
    "faultdrill score experiments/suites/catalog.yaml":
        "tests/integration/test_catalog.py::test_every_profile_is_caught_on_damage (make test-catalog)",
    # Two runs (~2 min): the unmodified target, then readiness_ignores_model, caught on failed requests.
    "faultdrill score experiments/catalog/model_load_failure.yaml --variant readiness_ignores_model":
        "tests/integration/test_score.py::test_score_catches_a_profile_on_damage (make test-catalog)",
    "faultdrill gameday run gamedays/plans/canary.yaml":
        "tests/integration/test_gd_canary_gameday.py::test_canary_gameday[None-None] (make test-catalog)",
    "faultdrill gameday run gamedays/plans/gpu_failures.yaml":
        "tests/integration/test_gd_gpu_gameday.py::test_gpu_failures_gameday[None-broken0] (make test-catalog)",
    # About a minute: a cell of the catalog's matrix (shallow_health × gpu_sticky_error, caught on failed requests).
    "faultdrill run experiments/catalog/gpu_sticky_error.yaml --misconfig shallow_health":
        "tests/integration/test_catalog.py::test_every_profile_is_caught_on_damage (make test-catalog)",
}


def readme_commands(text: str | None = None) -> list[tuple[str, int]]:
    """Each command line of the README's ``sh`` blocks, without its comment, and its expected exit code."""
    text = README.read_text() if text is None else text
    commands = []
    for block in re.findall(r"^```sh\n(.*?)^```", text, flags=re.S | re.M):
        for line in block.splitlines():
            command = re.split(r"\s+#|^#", line, maxsplit=1)[0].strip()
            if command:
                found = EXIT.search(line)
                commands.append((command, int(found.group(1)) if found else 0))
    return commands


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "FAULTDRILL_STATE_DIR": str(tmp_path / "state")}


def _shell(command: str, tmp_path: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """As a person types it after set-up: ``source .venv/bin/activate``, then the command, in bash."""
    return subprocess.run(["bash", "-c", f"source .venv/bin/activate && {command}"], cwd=ROOT, env=_env(tmp_path),
                           capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)  # fmt: skip


def _exit_code(command: str) -> int:
    return dict(readme_commands())[command]


def system_test(test):  # type: ignore[no-untyped-def]
    """A whole-system README command: slow, root, one at a time on one xdist worker; skipped without root
    (memory cgroups and network namespaces), which this machine cannot then give."""
    marks = (pytest.mark.slow, pytest.mark.root, pytest.mark.system,
             pytest.mark.skipif(os.geteuid() != 0, reason="needs root: memory cgroups and network namespaces"))
    for mark in marks:
        test = mark(test)
    return test


def _latest(name: str) -> Path:
    link = ROOT / "runs" / f"latest-{name}"
    assert link.is_symlink(), f"no runs/latest-{name} link"
    return link.resolve()


# -- the table is the README ---------------------------------------------------------------------


def test_every_readme_command_is_run_by_a_test() -> None:
    commands = [c for c, _ in readme_commands()]
    assert len(commands) >= 20, "the README's sh blocks were not found"
    known = set(QUICK) | set(LONG)
    unrun = [c for c in commands if c not in known]
    assert not unrun, f"README commands no test runs (add each to QUICK or LONG in this file): {unrun}"
    stale = sorted(known - set(commands))
    assert not stale, f"listed here but no longer in the README: {stale}"
    named = {where.removesuffix(" (make test-catalog)") for where in LONG.values() if where.startswith("tests/")}
    files = sorted({n.partition("::")[0] for n in named})
    collected = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                                "-m", "catalog or not catalog", *files], cwd=ROOT, capture_output=True, text=True,
                               timeout=120).stdout.splitlines()  # fmt: skip
    missing = sorted(n for n in named if n not in collected)
    assert not missing, f"LONG names tests that do not exist: {missing}"


def test_readme_command_parser() -> None:
    text = ("x\n```sh\nfaultdrill a b   # exit 1\n# a comment\n\nmake c  # note, exit 2 on bad input\n```\n"
            "```yaml\nnot: this\n```\n")
    assert readme_commands(text) == [("faultdrill a b", 1), ("make c", 0)]


# -- quick commands --------------------------------------------------------------------------------


@pytest.mark.parametrize("command", QUICK)
def test_quick_readme_command(command: str, tmp_path: Path) -> None:
    began = time.monotonic()
    done = _shell(command, tmp_path, timeout=60)
    took = time.monotonic() - began
    assert done.returncode == _exit_code(command), f"{command}: exit {done.returncode}\n{done.stdout[-3000:]}\n" \
                                                   f"{done.stderr[-3000:]}"  # fmt: skip
    assert "Traceback" not in done.stdout + done.stderr
    print(f"{command}: exit {done.returncode} in {took:.1f} s")


# -- the main job -------------------------------------------------------------------------------------


@system_test
def test_make_demo_as_the_readme_shows(tmp_path: Path, leftovers) -> None:
    before = set((ROOT / "runs").glob("gameday-smoke-*"))
    done = subprocess.run(["make", "demo"], cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True,
                          timeout=900, stdin=subprocess.DEVNULL)  # fmt: skip
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    [day] = set((ROOT / "runs").glob("gameday-smoke-*")) - before
    assert _latest("gameday-smoke") == day.resolve()
    assert f"report: {day / 'gameday.html'}" in done.stdout.replace("\n", "")
    summary = json.loads((day / "gameday.json").read_text())
    assert summary["outcome"] == "passed" and len(summary["scenarios"]) == 2
    assert (day / "gameday.html").stat().st_size > 10_000 and (day / "gameday.md").exists()
    for scenario in summary["scenarios"]:
        run_dir = Path(scenario["run_dir"])
        assert run_dir.is_absolute() and run_dir.parent == day
        for name in ("journal.json", "report.html", "report.md", "junit.xml"):
            assert (run_dir / name).exists(), f"{run_dir.name}: no {name}"
        journal = json.loads((run_dir / "journal.json").read_text())
        assert journal["outcome"] == "passed"
        steps = [e for e in journal["events"] if e["kind"] == "runbook"]
        assert any(e["attrs"].get("status") == "launched" for e in steps)
        assert any(e["attrs"].get("status") == "done" for e in steps)
        restores = [v for v in journal["verdicts"] if "restores steady state" in v["name"]]
        assert restores and restores[0]["passed"] and "while" in restores[0]["observed"]
    hist = _shell("faultdrill history --json", tmp_path, timeout=60)  # the runs are in the history database
    assert hist.returncode == 0 and "gpu-memory-runbook" in hist.stdout, hist.stdout + hist.stderr
    assert leftovers(day, tmp_path / "state") == []


# -- the experiment commands, in the README's order ---------------------------------------------------


@system_test
def test_readme_experiments_in_order(tmp_path: Path, leftovers) -> None:
    misconfigured, configured, compare, smoke, report = ORDERED

    done = _shell(misconfigured, tmp_path, timeout=600)
    assert done.returncode == _exit_code(misconfigured) == 1, done.stdout[-5000:]
    bad = _latest("gpu-memory-exhaustion")
    failed = [v["name"] for v in json.loads((bad / "journal.json").read_text())["verdicts"] if not v["passed"]]
    assert "readiness of replica-0 becomes false within 5 s after hog.start" in failed
    assert "FAILED: readiness of replica-0 becomes false" in done.stdout
    assert leftovers(bad, tmp_path / "state") == []

    done = _shell(configured, tmp_path, timeout=600)
    assert done.returncode == 0, done.stdout[-5000:]
    good = _latest("gpu-memory-exhaustion")
    assert good != bad and (ROOT / "runs" / "previous-gpu-memory-exhaustion").resolve() == bad

    done = _shell(compare, tmp_path, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "readiness of replica-0 becomes false" in done.stdout and "fixed" in done.stdout, done.stdout

    done = _shell(smoke, tmp_path, timeout=600)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    run = _latest("smoke")
    assert {p.name for p in run.iterdir()} >= {"journal.json", "report.html", "report.md", "junit.xml"}
    assert json.loads((run / "journal.json").read_text())["outcome"] == "passed"
    assert leftovers(run, tmp_path / "state") == []

    done = _shell(report, tmp_path, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("#") and "smoke" in done.stdout and "passed" in done.stdout.lower()


# -- the guided game day, on a terminal ------------------------------------------------------------------


def _read_pty(master: int, seen: str, until: Callable[[str], bool]) -> str:
    """``seen`` plus what the terminal prints until ``until(text)`` holds or the terminal closes."""
    while not until(seen):
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                seen += os.read(master, 65536).decode(errors="replace")
            except OSError:
                break
    return seen


@system_test
def test_guided_monthly_game_day_halts_on_ctrl_c(tmp_path: Path, leftovers) -> None:
    """A person starts the guided monthly game day and halts it with Ctrl-C during the first scenario:
    exit 3, everything rolled back and stopped (the full guided walk is a person's job; the guided
    runbook steps themselves are driven key by key in tests/integration/test_gd_rb_guided.py)."""
    command = "faultdrill gameday run gamedays/plans/monthly.yaml --guided"
    before = set((ROOT / "runs").glob("gameday-monthly-*"))
    master, slave = os.openpty()
    proc = subprocess.Popen(["bash", "-c", f"source .venv/bin/activate && exec {command}"], cwd=ROOT,
                            env={**_env(tmp_path), "TERM": "xterm", "COLUMNS": "120"}, stdin=slave, stdout=slave,
                            stderr=slave, start_new_session=True)  # fmt: skip
    os.close(slave)
    seen = ""
    deadline = time.monotonic() + 240
    try:
        seen = _read_pty(master, seen, until=lambda text: "steady state reached" in text or time.monotonic() > deadline)
        assert "steady state reached" in seen, seen[-4000:]
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C on the terminal sends to the foreground group
        end = time.monotonic() + 180
        seen = _read_pty(master, seen, until=lambda _: proc.poll() is not None or time.monotonic() > end)
        assert proc.wait(timeout=30) == 3, seen[-4000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        os.close(master)
    assert "interrupted by SIGINT" in seen and "game day halted (exit 3)" in seen, seen[-4000:]
    [day] = set((ROOT / "runs").glob("gameday-monthly-*")) - before
    summary = json.loads((day / "gameday.json").read_text())
    assert summary["outcome"] == "halted" and summary["scenarios"][0]["outcome"] == "halted"
    assert all(s["outcome"] == "skipped" for s in summary["scenarios"][1:])
    assert leftovers(day, tmp_path / "state") == []
