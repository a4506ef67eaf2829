"""The installed distribution: one import name, ``faultdrill``, beside a project with its own ``experiments/``
and ``reports/`` packages.

A wheel is built from the repository's files (tracked, and new ones git does not ignore), installed
with ``--no-deps`` into a fresh virtual environment (its dependencies come from this project's
environment through a ``.pth`` line: the wheel, not an editable checkout, provides ``faultdrill``),
and used from a project whose own top-level packages are named ``experiments`` and ``reports``:
``faultdrill validate`` on a spec there, and pytest with the plugin — its expectation fixture and the
bundled target started from the installed wheel.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import textwrap
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    listed = ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
    tracked = subprocess.run(listed, cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        origin, copy = ROOT / name, src / name
        if not origin.exists() and not origin.is_symlink():
            continue  # deleted in the working tree
        copy.parent.mkdir(parents=True, exist_ok=True)
        if origin.is_symlink():
            copy.symlink_to(os.readlink(origin))
        else:
            shutil.copy2(origin, copy)
    argv = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(work / "dist")]
    built = subprocess.run([*argv, str(src)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stdout + built.stderr
    return next((work / "dist").glob("faultdrill-*.whl"))


@pytest.fixture(scope="module")
def fresh(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    env = tmp_path_factory.mktemp("venv") / "env"
    venv.create(env, with_pip=False)
    python = env / "bin" / "python"
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
                           str(wheel)], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    deps = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (Path(purelib) / "faultdrill-test-deps.pth").write_text("\n".join(deps) + "\n")
    return env


def test_the_wheel_installs_one_top_level_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if ".dist-info/" not in n}
    assert tops == {"faultdrill"}, tops
    for module in ("faultdrill/experiments/engine/plan.py", "faultdrill/experiments/platforms/local/platform.py",
                   "faultdrill/experiments/chaostoolkit/examples/gpu_memory_exhaustion.json",
                   "faultdrill/faults/kube/actions.py", "faultdrill/target_service/server.py",
                   "faultdrill/target_service/alerts/rules.yml", "faultdrill/experiments/catalog/smoke.yaml"):
        assert module in names, module  # subpackages and data files ship too
    top_level = next(n for n in names if n.endswith(".dist-info/top_level.txt"))
    assert zipfile.ZipFile(wheel).read(top_level).decode().split() == ["faultdrill"]


def _project(root: Path) -> Path:
    (root / "experiments").mkdir(parents=True)
    (root / "experiments" / "__init__.py").write_text("OWNER = 'the project'\n")
    (root / "reports").mkdir()
    (root / "reports" / "__init__.py").write_text("OWNER = 'the project'\n")
    shutil.copy(ROOT / "experiments" / "catalog" / "smoke.yaml", root / "experiments" / "smoke.yaml")
    (root / "tests").mkdir()
    (root / "tests" / "test_with_faultdrill.py").write_text(textwrap.dedent('''
        import httpx

        import experiments
        import faultdrill.experiments
        import reports
        from faultdrill.experiments.journal.timeline import Timeline


        def test_our_packages_and_faultdrills_side_by_side():
            assert experiments.OWNER == reports.OWNER == "the project"
            assert "site-packages" in faultdrill.experiments.__file__


        def test_the_plugins_expectation_fixture(faultdrill_expect):
            timeline = Timeline()
            timeline.add("probe", "replica-0", t=1.0, probe="readiness", value=True)
            verdict = faultdrill_expect(timeline, {"probe": "readiness", "replica": "replica-0", "holds": True})
            assert verdict.passed, verdict.observed


        def test_the_bundled_target_starts_from_the_installed_wheel(faultdrill_platform):
            answer = httpx.get(faultdrill_platform.service_url + "/v2/health/ready", timeout=10)
            assert answer.status_code == 200
    '''))
    return root


def test_validate_and_the_pytest_plugin_beside_a_projects_own_experiments_and_reports(
    fresh: Path, tmp_path: Path
) -> None:
    project = _project(tmp_path / "project")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{fresh / 'bin'}{os.pathsep}{env['PATH']}"
    validated = subprocess.run([str(fresh / "bin" / "faultdrill"), "validate", "experiments/smoke.yaml"], cwd=project,
                               env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert validated.returncode == 0, validated.stdout + validated.stderr
    assert "smoke.yaml" in validated.stdout
    where = subprocess.run([str(fresh / "bin" / "python"), "-c", "import faultdrill; print(faultdrill.__file__)"],
                           cwd=project, env=env, capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "site-packages" in where and str(ROOT) not in where  # the wheel, not this checkout
    tested = subprocess.run([str(fresh / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
                            cwd=project, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert tested.returncode == 0, tested.stdout[-4000:] + tested.stderr[-2000:]
    assert "3 passed" in tested.stdout
