"""The DCGM-compatible exporter: each replica's GPU state as dcgm-exporter's series, over HTTP, and the GPU state
it reads (injection with its effect class, reset, a torn file)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from faultdrill.experiments.journal.timeline import Timeline
from faultdrill.experiments.observe.observers import ObserverContext
from faultdrill.experiments.platforms.local.exporter import PlatformExporter
from faultdrill.faults.topology import ServiceHandle, Topology
from faultdrill.target_service.gpu_state import GpuState, field_id

LABELS = ("gpu", "UUID", "device", "modelName", "Hostname", "namespace", "pod", "container")  # dcgm-exporter's


def _scrape(topo: Topology, window_s: float = 300.0) -> dict[tuple[str, str, str], float]:
    exp = PlatformExporter(xid_window_s=window_s)
    exp.start(ObserverContext(Timeline(), topology=lambda: topo))
    try:
        text = httpx.get(f"{exp.url}/metrics", timeout=5).text
    finally:
        exp.stop()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith("DCGM_"):
                assert set(LABELS) <= set(s.labels)
                out[(s.name, s.labels["pod"], s.labels.get("xid", ""))] = s.value
    return out


@pytest.fixture
def topo(tmp_path: Path) -> Topology:
    return Topology(services={f"replica-{i}": ServiceHandle(
        name=f"replica-{i}", role="replica", url=f"http://127.0.0.1:{i + 1}",
        gpu_state_file=tmp_path / "gpus" / f"replica-{i}.json") for i in range(2)})  # fmt: skip


def test_injected_fields_show_per_pod_and_the_xid_count_keeps_every_code(topo: Topology) -> None:
    gpu0 = GpuState(topo.get("replica-0").gpu_state_file)
    assert gpu0.inject("DCGM_FI_DEV_XID_ERRORS", 48).action == "RESET_GPU"
    assert gpu0.inject(230, 13).action == "RESTART_APP"  # by field id, as dcgmi takes it
    assert gpu0.inject("DCGM_FI_DEV_CLOCKS_EVENT_REASONS", 0x48).slowdown == 4.0
    samples = _scrape(topo)
    assert samples[("DCGM_FI_DEV_XID_ERRORS", "replica-0", "")] == 13  # the last code only: the known trap
    assert samples[("DCGM_EXP_XID_ERRORS_COUNT", "replica-0", "48")] == 1  # ... which the count avoids
    assert samples[("DCGM_EXP_XID_ERRORS_COUNT", "replica-0", "13")] == 1
    assert samples[("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "replica-0", "")] == 1  # Xid 48 is a double-bit error
    assert samples[("DCGM_FI_DEV_CLOCKS_EVENT_REASONS", "replica-0", "")] == 0x48
    assert samples[("DCGM_FI_DEV_SM_CLOCK", "replica-0", "")] == pytest.approx(1410 / 4)
    assert samples[("DCGM_FI_DEV_XID_ERRORS", "replica-1", "")] == 0  # a healthy GPU beside it
    assert ("DCGM_EXP_XID_ERRORS_COUNT", "replica-1", "13") not in samples
    assert samples[("DCGM_FI_DEV_SM_CLOCK", "replica-1", "")] == 1410


def test_the_xid_count_has_a_window_and_a_reset_clears_what_nvidia_smi_r_clears(topo: Topology) -> None:
    gpu = GpuState(topo.get("replica-1").gpu_state_file)
    gpu.inject("DCGM_FI_DEV_XID_ERRORS", 79)
    assert gpu.reset_required == "Xid 79 (GPU has fallen off the bus): reset the GPU" and gpu.read()["lost"]
    time.sleep(0.3)
    assert ("DCGM_EXP_XID_ERRORS_COUNT", "replica-1", "79") not in _scrape(topo, window_s=0.2)
    before = gpu.reset()
    after = gpu.read()
    assert before["reset_required"] and after["reset_required"] is None and not after["lost"]
    assert after["xid_last"] == 0 and len(after["xid_events"]) == 1  # the history stays


def test_bad_fields_and_a_torn_state_file(topo: Topology) -> None:
    with pytest.raises(ValueError, match=r"field 'DCGM_FI_DEV_FB_USED' cannot be injected here; injectable: "
                                         r"DCGM_FI_DEV_XID_ERRORS \(230\)"):  # fmt: skip
        field_id("DCGM_FI_DEV_FB_USED")
    with pytest.raises(ValueError, match="field 999 cannot be injected"):
        field_id(999)
    path = topo.get("replica-0").gpu_state_file
    assert path is not None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"xid_last": 4')  # torn: reads as a healthy GPU, never a crash of the exporter
    assert GpuState(path).read()["xid_last"] == 0
    assert _scrape(topo)[("DCGM_FI_DEV_XID_ERRORS", "replica-0", "")] == 0
