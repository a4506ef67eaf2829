"""A fault's declared Kubernetes action, and the one place that routes to it (``Fault``'s five operations).

A fault class names its action (``kubernetes = KillAction``); ``preflight``/``plan``/``inject`` go to it when
``config.target`` is a service with a Kubernetes reference, ``rollback``/``verify`` when the record says
``platform: kubernetes`` — so ``rollback_pending``, which has only the record, undoes it the same way. Everything
else runs the class's own code. The real actions against a recording API server: ``tests/unit/k8s``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest

from faultdrill.faults.base import KUBERNETES, Fault, FaultContext, Injection, Problem, Scope, Verification
from faultdrill.faults.fake import FakeFault
from faultdrill.faults.kube.actions import KubeAction
from faultdrill.faults.ledger import RollbackOutcome, rollback_pending
from faultdrill.faults.registry import FaultRegistry
from faultdrill.faults.topology import KubeRef, ServiceHandle, Topology

DECLARED = {"process_kill": "KillAction", "process_freeze": "FreezeAction", "oom_kill": "OomAction",
            "gpu_memory_exhaustion": "GpuAction", "model_load_failure": "ModelVersionAction",
            "network_partition": "PartitionAction", "cert_expiry": "CertAction",
            "dependency_outage": "DependencyAction", "gpu_sticky_error": "StickyAction",
            "gpu_slowdown": "SlowdownAction", "gpu_wrong_output": "CorruptAction", "gpu_xid": "XidAction"}  # fmt: skip


class Recording:
    """A stand-in Kubernetes action (``faults.base.PlatformAction``): records each call, writes a real record."""

    calls: ClassVar[list[tuple[str, str]]] = []

    def preflight(self, fault: Fault, config: Any, ctx: FaultContext, handle: ServiceHandle) -> list[Problem]:
        self.calls.append(("preflight", handle.name))
        return []

    def plan(self, config: Any, handle: ServiceHandle) -> list[str]:
        self.calls.append(("plan", handle.name))
        return [f"DELETE pods/{handle.kube.pod if handle.kube else '?'}"]

    def inject(self, fault: Fault, config: Any, ctx: FaultContext, handle: ServiceHandle) -> Injection:
        self.calls.append(("inject", handle.name))
        record = fault.new_injection(config, ctx, mode="overwrite", target=handle.name, undo={"platform": KUBERNETES})
        return fault.apply_recorded(record, ctx, lambda: None)

    def rollback(self, fault: Fault, injection: Injection) -> None:
        self.calls.append(("rollback", injection.target))

    def verify(self, fault: Fault, injection: Injection) -> Verification:
        self.calls.append(("verify", injection.target))
        return Verification(True, message="measured through the API")


class TwoWay(FakeFault):
    """The shipped fake, aimed at a named service, with a Kubernetes action declared."""

    class Config(FakeFault.Config):
        target: str = "local"

    name: ClassVar[str] = "two_way"
    kubernetes = Recording


@pytest.fixture(autouse=True)
def _fresh_calls() -> None:
    Recording.calls.clear()


def context(tmp_path: Path) -> FaultContext:
    pod = KubeRef(namespace="faultdrill", deployment="target", pod="target-abc", pod_uid="u1", container="target")
    topology = Topology(services={"replica-0": ServiceHandle(name="replica-0", role="replica", kube=pod),
                                  "local": ServiceHandle(name="local", role="replica", pid=1)})  # fmt: skip
    return FaultContext.create(tmp_path / "state", scope=Scope().with_paths(tmp_path), topology=topology)


def test_every_built_in_fault_declares_its_kubernetes_action() -> None:
    registry = FaultRegistry.installed()
    declared = {n: action for n in registry.names() if (action := registry.get(n).kubernetes) is not None}
    assert {n: action.__name__ for n, action in declared.items()} == DECLARED
    assert all(issubclass(action, KubeAction) for action in declared.values())


def test_a_kubernetes_target_goes_to_the_declared_action(tmp_path: Path) -> None:
    ctx, fault = context(tmp_path), TwoWay()
    config = fault.parse_config({"target": "replica-0", "path": str(tmp_path / "flag")})
    assert fault.preflight(config, ctx) == []
    assert fault.plan(config, ctx) == ["DELETE pods/target-abc"]
    injection = fault.inject(config, ctx)
    assert ctx.ledger.get(injection.id) == injection and injection.undo == {"platform": KUBERNETES}
    assert fault.verify(injection, ctx).message == "measured through the API"
    fault.undo(injection, ctx)
    assert [c[0] for c in Recording.calls] == ["preflight", "plan", "inject", "verify", "rollback"]
    assert not (tmp_path / "flag").exists() and ctx.ledger.pending() == []  # the local code never ran


def test_a_local_target_runs_the_class_own_code(tmp_path: Path) -> None:
    ctx, fault = context(tmp_path), TwoWay()
    config = fault.parse_config({"target": "local", "path": str(tmp_path / "flag"), "content": "broken"})
    assert fault.preflight(config, ctx) == [] and fault.plan(config, ctx)
    injection = fault.inject(config, ctx)
    assert (tmp_path / "flag").read_text() == "broken" and fault.verify(injection, ctx).effective
    fault.undo(injection, ctx)
    assert not (tmp_path / "flag").exists() and Recording.calls == []


def test_without_a_declaration_a_kubernetes_target_runs_the_class_own_code(tmp_path: Path) -> None:
    class Plain(TwoWay):
        kubernetes = None

    ctx, fault = context(tmp_path), Plain()
    config = fault.parse_config({"target": "replica-0", "path": str(tmp_path / "flag")})
    fault.undo(fault.inject(config, ctx), ctx)
    assert Recording.calls == []


def test_rollback_pending_undoes_a_kubernetes_record_from_the_record_alone(tmp_path: Path) -> None:
    ctx, fault = context(tmp_path), TwoWay()
    injection = fault.inject(fault.parse_config({"target": "replica-0", "path": str(tmp_path / "flag")}), ctx)
    gone = subprocess.Popen(["true"])  # the run that injected it was killed
    gone.wait()
    ctx.ledger.write(injection.model_copy(update={"owner_pid": gone.pid, "owner_start": None}))
    registry = FaultRegistry()
    registry.register(TwoWay, source="tests")
    fresh = FaultContext.create(tmp_path / "state")  # another process: no topology, only the ledger
    [result] = rollback_pending(registry, fresh)
    assert result.outcome is RollbackOutcome.ROLLED_BACK
    assert Recording.calls[-1] == ("rollback", "replica-0") and fresh.ledger.pending() == []


def test_importing_the_faults_loads_no_kubernetes_client() -> None:
    code = ("import sys; from faultdrill.faults.registry import FaultRegistry; FaultRegistry.installed(); "
            "print('kubernetes' in sys.modules)")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "False"
