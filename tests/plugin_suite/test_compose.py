"""A chaos test composed in Python: target up, load on, two faults injected, assertions on the
timeline. Both faults are rolled back at teardown — also when the test fails or is interrupted
(``FAULTDRILL_SUITE_HOLD_S`` keeps them in effect that long, for the interrupt test)."""

from __future__ import annotations

import os
import time

import pytest

TARGET = {"replicas": 2, "feature_store_netns": True, "replica_env": {"FAULTDRILL_OOM_UNREADY_THRESHOLD": "2"}}


@pytest.mark.skipif(os.geteuid() != 0, reason="network_partition needs root (iptables, network namespaces)")
@pytest.mark.faultdrill(platform=TARGET)
def test_gpu_hog_then_partition(faultdrill_platform, faultdrill_load, faultdrill_fault, faultdrill_expect):
    timeline = faultdrill_platform.timeline
    faultdrill_load(users=4)
    # replica-0 runs out of device memory: readiness takes it out of rotation ...
    faultdrill_fault("gpu_memory_exhaustion", target="replica-0", id="hog", mode="in_process", leave_free_mib=0)
    faultdrill_expect(timeline, {"probe": "readiness", "replica": "replica-0", "becomes": False, "within": "5s",
                                 "after": "hog.start"}, wait=True)
    # ... and replica-1, now serving alone, opens its breaker when the feature store is cut off.
    faultdrill_fault("network_partition", target="feature-store", id="part", action="drop")
    faultdrill_expect(timeline, {"breaker": "replica-1", "sequence": ["closed", "open"], "within": "5s",
                                 "after": "part.start"}, wait=True)
    if hold := float(os.environ.get("FAULTDRILL_SUITE_HOLD_S", "0")):
        print("faultdrill-suite: holding the faults", flush=True)
        time.sleep(hold)
