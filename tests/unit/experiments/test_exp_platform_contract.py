"""The one platform contract: every platform satisfies ``Platform``, ``build_platform`` picks the class by
``target.platform``, and the engine (``experiments/engine/runtime.py``)
neither casts nor branches on a platform's name."""

from __future__ import annotations

import inspect
import re
import signal
from pathlib import Path

import pytest

from faultdrill import experiments
from faultdrill.experiments.engine.plan import build_plan
from faultdrill.experiments.engine.runtime import RunParts
from faultdrill.experiments.journal.timeline import Timeline
from faultdrill.experiments.platforms import build_platform
from faultdrill.experiments.platforms.base import Load, Platform
from faultdrill.experiments.platforms.fake import FakePlatform
from faultdrill.experiments.platforms.kubernetes.platform import KubernetesPlatform
from faultdrill.experiments.platforms.local.platform import LocalPlatform
from faultdrill.experiments.spec.experiment import LoadSpec, TargetSpec
from faultdrill.experiments.spec.kubernetes import KubernetesSettings
from faultdrill.experiments.spec.loader import load_experiment_text
from faultdrill.faults.errors import ConfigError
from faultdrill.faults.registry import FaultRegistry

SPEC = """apiVersion: faultdrill/v1
kind: Experiment
metadata: {name: contract}
faults:
  - {id: hog, type: gpu_memory_exhaustion, target: replica-0, at: 1s, duration: 5s, params: {leave_free_mib: 32}}
expect:
  - {probe: readiness, replica: replica-0, becomes: false, within: 5s, after: hog.start}
"""


def test_every_platform_satisfies_the_contract(tmp_path: Path) -> None:
    fake = FakePlatform(replicas=2)
    local = LocalPlatform(tmp_path / "platform", replicas=1)  # constructed, never started
    # No cluster needed. A given service_url: on Python 3.11 isinstance() reads the property, which raises
    # "not up" while no port-forward runs.
    kube = KubernetesPlatform(KubernetesSettings(service_url="http://127.0.0.1:1"), replicas=2, timeline=Timeline())
    for platform in (fake, local, kube):
        assert isinstance(platform, Platform), type(platform).__name__
    assert (local.name, local.own_alerting) == ("local", True)
    assert (kube.name, kube.own_alerting) == ("kubernetes", False)
    assert (fake.name, fake.own_alerting) == ("fake", False)


def test_build_platform_picks_the_class_by_target_platform(tmp_path: Path) -> None:
    timeline = Timeline()
    local = build_platform(TargetSpec(), timeline=timeline, workdir=tmp_path / "local")
    assert type(local) is LocalPlatform and local.timeline is timeline
    kube = build_platform(TargetSpec(platform="kubernetes", replicas=2, kubernetes=KubernetesSettings()),
                          timeline=timeline, workdir=tmp_path / "kube")  # fmt: skip
    assert type(kube) is KubernetesPlatform and kube.timeline is timeline
    bare = build_platform(timeline=timeline, workdir=tmp_path / "bare", replicas=2,
                          misconfigurations=["no_readiness_probe"])  # fmt: skip
    assert type(bare) is LocalPlatform
    assert isinstance(bare, LocalPlatform)
    assert bare.stack.replica_env["FAULTDRILL_MISCONFIGURATIONS"] == "no_readiness_probe"
    with pytest.raises(TypeError):
        build_platform(TargetSpec(), timeline=timeline, workdir=tmp_path / "x", replicas=2)


def test_the_engine_has_no_casts_and_no_platform_name_branches() -> None:
    source = inspect.getsource(experiments.engine.runtime)
    assert "cast(" not in source
    assert not re.search(r"""==\s*["']kubernetes["']""", source)
    assert not re.search(r"""==\s*["']local["']""", source)


def test_the_fake_records_supervisor_calls_and_points_nowhere() -> None:
    fake = FakePlatform(replicas=2)
    fake.up()
    fake.stop("feature-store")
    fake.kill("replica-1", signal.SIGKILL)
    fake.start("feature-store", env={"X": "1"})
    fake.restart("replica-0")
    assert fake.calls == [("up",), ("stop", "feature-store", True), ("kill", "replica-1", signal.SIGKILL),
                          ("start", "feature-store", {"X": "1"}), ("restart", "replica-0", None)]  # fmt: skip
    assert fake.exit_status("replica-1") == -signal.SIGKILL and not fake.held
    assert [h.name for h in fake.topology().by_role("replica")] == ["replica-0", "replica-1"]
    assert fake.service_url == "http://127.0.0.1:1"
    with pytest.raises(ConfigError, match="unknown target"):
        fake.stop("nope")
    load = fake.load_generator(LoadSpec(), shape=None, run_time_s=1.0, workdir=Path("."), model="digits",  # type: ignore[arg-type]
                               owner=None)  # fmt: skip
    assert isinstance(load, Load)
    fake.close()
    assert not fake.is_up


def test_run_parts_use_declared_capabilities(tmp_path: Path) -> None:
    spec = load_experiment_text(SPEC, file="contract.yaml")
    parts = RunParts(build_plan(spec, FaultRegistry.installed(), source="contract.yaml"), Timeline(), tmp_path,
                     run_dir=tmp_path / "run")
    parts.platform = FakePlatform()
    parts.platform.up()
    env = parts.environment()
    assert (env.device, env.emulated) == ("cpu", True) and env.notes == ["platform fake: nothing runs"]
    with pytest.raises(ConfigError, match="the fake platform does not wire yet: run with --no-alerts"):
        parts.alerts_up(None)
    parts.load_up(total_s=5.0)
    assert parts.load is not None and parts.load.calls == ["start", "wait_first_request"]  # type: ignore[attr-defined]
    parts.close()
    assert parts.load.calls[-1] == "stop" and parts.load_summary()["requests"] == 0  # type: ignore[attr-defined]


def test_set_env_changes_the_spec_and_returns_what_undoes_it() -> None:
    """``Supervisor.set_env``: the spec every later start uses; its return value, given back, undoes it."""
    fake = FakePlatform(replicas=1)
    previous = fake.set_env("replica-0", {"FAULTDRILL_MODEL_VERSION": "999999"})
    assert previous == {"FAULTDRILL_MODEL_VERSION": None}
    assert fake.set_env("replica-0", {"FAULTDRILL_MODEL_VERSION": "1"}) == {"FAULTDRILL_MODEL_VERSION": "999999"}
    fake.set_env("replica-0", previous)
    assert fake.spec_env["replica-0"] == {}
    assert fake.calls[-1] == ("set_env", "replica-0", {"FAULTDRILL_MODEL_VERSION": None})
