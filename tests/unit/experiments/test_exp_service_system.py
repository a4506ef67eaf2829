"""A service of the user's as a system description, and faults refused before anything starts when their target
lacks what they need — through ``faultdrill validate`` as a user runs it (a subprocess: exit 2, one located line)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from faultdrill.experiments.engine.plan import build_plan
from faultdrill.experiments.spec.experiment import Experiment
from faultdrill.experiments.spec.loader import check_experiment_text, load_experiment_text
from faultdrill.experiments.spec.system import CAPABILITIES, Service, bundled_system
from faultdrill.faults.errors import ConfigError
from faultdrill.faults.registry import FaultRegistry

ROOT = Path(__file__).resolve().parents[3]
HEAD = "apiVersion: faultdrill/v1\nkind: Experiment\nmetadata: {name: mine}\n"
PROCESS = HEAD + """target:
  replicas: 2
  memory_limit: 700Mi
  service:
    kind: process
    profile: mlserver
    command: [mlserver, start, "{spec_dir}/models"]
    env: {MLSERVER_HTTP_PORT: "{port}", MLSERVER_METRICS_PORT: "{port.metrics}", MLSERVER_GRPC_PORT: "{port.grpc}"}
    model: {name: digits}
    dependencies:
      - {name: features, url: "http://127.0.0.1:9400", via: {env: FEATURES_URL}}
"""
URL = HEAD + """target:
  service:
    kind: url
    url: http://127.0.0.1:8000
    profile: triton
    model: {name: digits}
"""


@pytest.fixture(scope="module")
def registry() -> FaultRegistry:
    return FaultRegistry.installed()


def _with_faults(text: str, *faults: str) -> str:
    return text + "faults:\n" + "".join(f"  - {f}\n" for f in faults)


def _exp(text: str, registry: FaultRegistry) -> Experiment:
    return load_experiment_text(text, file="mine.yaml", registry=registry)


# -- the description ----------------------------------------------------------------------------------
def test_a_process_service_is_described_with_its_replicas_dependencies_and_proxies(registry: FaultRegistry) -> None:
    system = _exp(PROCESS, registry).system()
    assert system.names() == ["mlserver-0", "mlserver-1", "features", "features-proxy"]
    assert system.replicas() == ["mlserver-0", "mlserver-1"] and system.supervised() == ["mlserver-0", "mlserver-1"]
    replica = system.get("mlserver-0")
    assert replica is not None and replica.capabilities == {"metrics", "process", "memory_cgroup"}
    assert system.role_of("features") == "dependency" and system.proxy_of("features") == "features-proxy"
    assert system.program is not None and system.program.kind == "process"
    tls = PROCESS.replace("    model: {name: digits}\n", "    model: {name: digits, repository: \"{spec_dir}/m\"}\n"
                          "    tls: {cert: c.pem, key: k.pem}\n")  # fmt: skip
    rich = _exp(tls.replace("  memory_limit: 700Mi\n", ""), registry).system().get("mlserver-1")
    assert rich is not None and rich.capabilities == {"metrics", "process", "tls", "model_repository"}
    assert set().union(*(s.capabilities for s in _exp(tls, registry).system().services)) <= set(CAPABILITIES)


def test_a_url_service_is_one_unsupervised_replica_behind_a_proxy(registry: FaultRegistry) -> None:
    system = _exp(URL, registry).system()
    assert system.names() == ["triton-0", "triton-0-proxy"] and system.supervised() == []
    assert system.proxy_of("triton-0") == "triton-0-proxy" and system.get("triton-0").capabilities == {"metrics"}  # type: ignore[union-attr]
    allowed = _exp(URL + "    allow: {pids: [4242], cgroups: [/sys/fs/cgroup/memory/x]}\n", registry).system()
    assert allowed.get("triton-0").capabilities == {"metrics", "process", "memory_cgroup"}  # type: ignore[union-attr]


def test_the_bundled_description_is_unchanged_but_for_what_it_always_had() -> None:
    system = bundled_system(replicas=1)
    assert system.names() == ["replica-0", "feature-store", "feature-store-proxy"] and system.program is None
    assert system.get("replica-0").capabilities == {"admin_api", "metrics", "model_repository", "process"}  # type: ignore[union-attr]
    assert Service(name="x", role="replica").offers("supervised") and not Service(name="x", role="proxy",
                                                                                 supervised=False).offers("supervised")


def test_every_fault_declares_needs_from_the_known_set(registry: FaultRegistry) -> None:
    known = {*CAPABILITIES, "supervised"}
    for name in registry.names():
        fault = registry.get(name)()
        for mode in fault.modes or ("",):
            assert fault.target_needs_for(mode) <= known, (name, mode)
    assert registry.get("gpu_memory_exhaustion")().target_needs_for("in_process") == {"admin_api"}
    assert registry.get("model_load_failure")().target_needs_for("corrupt") == {"model_repository", "supervised"}
    assert registry.get("cert_expiry")().target_needs_for("expired") == {"tls"}
    assert registry.get("oom_kill")().target_needs_for("leak") == {"admin_api", "memory_cgroup", "process"}
    assert registry.get("process_kill")().target_needs_for("sigkill") == {"process"}


# -- faults refused before anything starts -----------------------------------------------------------------
REFUSED = {
    "model_load": ("{id: bad, type: model_load_failure, target: mlserver-0}",
                   "faults[0].target: model_load_failure (mode corrupt) needs `model.repository` on service "
                   "mlserver-0: declare target.service.model.repository"),
    "gpu_in_process": ("{id: hog, type: gpu_memory_exhaustion, target: mlserver-1, params: {leave_free_mib: 0}}",
                       "needs an admin API on service mlserver-1: only the bundled target has one (target.service: "
                       "bundled); or a mode that does not need it: external"),
    "cert": ("{id: cert, type: cert_expiry, target: mlserver-0}", "needs `tls` on service mlserver-0: declare "
                                                                  "target.service.tls"),
    "freeze_worker": ("{id: f, type: process_freeze, target: mlserver-0, params: {mode: worker}}",
                      "or a mode that does not need it: sigstop"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(REFUSED), ids=list(REFUSED))
def test_a_fault_whose_target_lacks_a_need_is_a_located_error(case: str, registry: FaultRegistry) -> None:
    fault, fragment = REFUSED[case]
    errors = check_experiment_text(_with_faults(PROCESS, fault), file="mine.yaml", registry=registry)
    assert len(errors) == 1 and errors[0].line == 16 and errors[0].column is not None, errors
    assert fragment in str(errors[0]), str(errors[0])


def test_what_a_service_offers_is_accepted(registry: FaultRegistry) -> None:
    ok = _with_faults(PROCESS, "{id: kill, type: process_kill, target: mlserver-0}",
                      "{id: oom, type: oom_kill, target: mlserver-1, params: {mode: signal}}",
                      "{id: slow, type: network_degradation, target: features-proxy, params: {mode: latency, "
                      "latency_ms: 50}}")  # fmt: skip
    assert check_experiment_text(ok, file="mine.yaml", registry=registry) == []
    role = check_experiment_text(_with_faults(PROCESS, "{id: k, type: process_kill, target: features}"),
                                 file="mine.yaml", registry=registry)  # fmt: skip
    assert "'features' is not a target of 'process_kill' (is a dependency)" in str(role[0])  # not ours to kill


def test_a_url_service_offers_only_what_allow_lists(registry: FaultRegistry) -> None:
    kill = "{id: kill, type: process_kill, target: triton-0}"
    [err] = check_experiment_text(_with_faults(URL, kill), file="mine.yaml", registry=registry)
    assert "needs a process it may signal on service triton-0: allow-list its pid in target.service.allow.pids" \
        in str(err)  # fmt: skip
    allowed = URL + "    allow: {pids: [4242]}\n"
    assert check_experiment_text(_with_faults(allowed, kill), file="mine.yaml", registry=registry) == []
    [restart] = check_experiment_text(_with_faults(allowed, "{id: b, type: model_load_failure, target: triton-0}"),
                                      file="mine.yaml", registry=registry)  # fmt: skip
    assert "faultdrill restarts only a service it starts" in str(restart)


def test_build_plan_refuses_it_too_and_keeps_the_spec_folder(registry: FaultRegistry, tmp_path: Path) -> None:
    bad = Experiment.model_validate_json(_exp(PROCESS, registry).model_dump_json(by_alias=True)).model_copy(
        update={"faults": _exp(_with_faults(PROCESS, "{id: kill, type: process_kill, target: mlserver-0}"),
                               registry).faults})  # fmt: skip
    plan = build_plan(bad, registry, source=tmp_path / "exp.yaml")
    assert plan.system.spec_dir == str(tmp_path) and plan.system.program is not None
    assert plan.lines()[0].startswith("platform local: 2 replica(s) of `mlserver start {spec_dir}/models`")
    spec = load_experiment_text(_with_faults(PROCESS, "{id: kill, type: process_kill, target: mlserver-0}"),
                                registry=registry)  # fmt: skip
    unchecked = spec.model_copy(update={"faults": [spec.faults[0].model_copy(update={"type": "model_load_failure"})]})
    with pytest.raises(ConfigError, match=r"faults\[0\]\.target: model_load_failure .* needs `model.repository`"):
        build_plan(unchecked, registry, source="exp.yaml")


def test_faultdrill_validate_prints_one_located_line_and_exits_2(tmp_path: Path) -> None:
    spec = tmp_path / "mine.yaml"
    spec.write_text(_with_faults(PROCESS, REFUSED["model_load"][0]))
    done = subprocess.run([sys.executable, "-m", "faultdrill", "validate", str(spec)], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[0] == f"{spec}:16:49: {REFUSED['model_load'][1]}"
    assert lines[1:] == ["faultdrill: 1 of 1 file(s) invalid"] and "Traceback" not in done.stderr
    run = subprocess.run([sys.executable, "-m", "faultdrill", "run", "--dry-run", str(spec)], capture_output=True,
                         text=True, cwd=ROOT, timeout=120)  # fmt: skip
    assert run.returncode == 2 and REFUSED["model_load"][1] in run.stderr and "Traceback" not in run.stderr
