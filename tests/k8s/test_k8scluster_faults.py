"""Each fault on a live cluster: inject, verify (measured), roll back, and the system recovers."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

CASES = [
    ("process_kill", {"target": "replica-0", "mode": "sigkill"}),
    ("process_freeze", {"target": "replica-0", "mode": "sigstop"}),
    ("oom_kill", {"target": "replica-0", "mode": "leak", "rate_mib_s": 200}),
    ("gpu_memory_exhaustion", {"target": "replica-0", "hold_mib": 64}),
    ("network_partition", {"target": "feature-store", "direction": "ingress"}),
    ("cert_expiry", {"target": "feature-store", "mode": "expired"}),
    ("dependency_outage", {"target": "feature-store", "mode": "killed"}),
    ("dependency_outage", {"target": "feature-store", "mode": "slow", "delay_ms": 1500}),
    ("model_load_failure", {"target": "replica-0", "mode": "bad_version"}),
]


IDS = [f"{n}-{p.get('mode', p.get('direction', ''))}" for n, p in CASES]


@pytest.mark.parametrize(("name", "params"), CASES, ids=IDS)
def test_k8scluster_fault_injects_verifies_rolls_back(deployed: dict[str, Any], tmp_path: Path, name: str,
                                                      params: dict[str, Any]) -> None:  # fmt: skip
    from faultdrill.experiments.platforms.kubernetes.platform import KubernetesPlatform
    from faultdrill.experiments.spec.kubernetes import KubernetesSettings
    from faultdrill.faults.base import FaultContext
    from faultdrill.faults.registry import FaultRegistry

    registry = FaultRegistry()
    registry.load_entry_points()
    with KubernetesPlatform(KubernetesSettings(), replicas=2, ready_timeout_s=180) as platform:
        ctx = FaultContext.create(tmp_path / "state", scope=platform.scope(), topology=platform.topology(),
                                  supervisor=platform)  # fmt: skip
        fault = registry.get(name)()
        config = fault.parse_config({**params, "duration_s": 120})
        assert fault.preflight(config, ctx) == []
        injection = fault.inject(config, ctx)
        try:
            deadline, check = time.monotonic() + 120, None
            while time.monotonic() < deadline:
                check = fault.verify(injection, ctx)
                if check.effective:
                    break
                time.sleep(2)
            assert check is not None and check.effective, check
        finally:
            fault.undo(injection, ctx)
        deadline = time.monotonic() + 180
        while len(platform.ready_replicas()) < 2 and time.monotonic() < deadline:
            time.sleep(1)
        assert len(platform.ready_replicas()) == 2
        assert ctx.ledger.pending() == []
