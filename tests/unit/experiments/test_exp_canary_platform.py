"""A real canary rollout on the local platform: stable and canary replicas (real target processes),
the endpoint's weighted split with ``X-Faultdrill-Version``, a real ``bad_canary`` injection through
the platform's supervisor, the analysis rolling it back on its own, and the fault's undo."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from faultdrill.experiments.journal.timeline import Timeline
from faultdrill.experiments.platforms.local.platform import LocalPlatform
from faultdrill.experiments.platforms.local.rollout import CanaryRollout
from faultdrill.experiments.spec.canary import CanarySpec
from faultdrill.faults.base import FaultContext
from faultdrill.faults.canary import BadCanaryFault
from faultdrill.target_service.models import example_inputs

SPEC = CanarySpec.model_validate({
    "version": "2", "initial_weight": 50, "step_weight": 10, "max_weight": 60,
    "analysis": {"interval": "500ms", "window": "4s", "threshold": 2, "progress_deadline": "30s",
                 "checks": {"success_rate": 0.99, "confidence": 0.6, "min_requests": 30}},
})  # fmt: skip


def _send(url: str, n: int) -> Counter[str]:
    body = {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": example_inputs(1)[0].tolist()}]}
    served: Counter[str] = Counter()
    with httpx.Client(timeout=10) as client:
        for _ in range(n):
            r = client.post(f"{url}/v2/models/digits/infer", json=body)
            served[f"{r.status_code}:{r.headers.get('x-faultdrill-version')}"] += 1
    return served


def _wait_event(tl: Timeline, event: str, after: float, timeout_s: float, url: str) -> float | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = [e for e in tl.select("canary", start=after) if e.get("event") == event]
        if found:
            return found[0].t
        _send(url, 10)  # traffic is what the analysis judges
    return None


@pytest.mark.slow
def test_split_bad_canary_and_automatic_rollback(tmp_path: Path) -> None:
    tl = Timeline()
    rollout = CanaryRollout(SPEC, tl, judge=True)
    with LocalPlatform(tmp_path / "plat", replicas=1, with_proxy=False, timeline=tl, canary=rollout) as platform:
        topo = platform.topology()
        assert topo.get("canary-0").model_version == "2" and "canary-control" in topo.services
        deadline = time.monotonic() + 30
        while rollout.split.canary_weight != 50 and time.monotonic() < deadline:
            time.sleep(0.05)  # the revision's canary is ready: its traffic begins at the initial weight
        served = _send(platform.service_url, 40)  # 20 canary answers: below min_requests, so nothing moves
        assert served == Counter({"200:1": 20, "200:2": 20}), served  # exactly half, by smooth weighted RR
        ctx = FaultContext.create(tmp_path / "state", scope=platform.scope(), topology=platform.topology(),
                                  supervisor=platform)  # fmt: skip
        fault = BadCanaryFault()
        # A less confident build (same classes): the replicas' deep readiness does not see a calibration change,
        # the analysis must. (An all-NaN `erroring` build never becomes ready: readiness keeps it out by itself.)
        cfg = fault.parse_config({"mode": "low_confidence", "wait_s": 60})
        assert fault.preflight(cfg, ctx) == []
        started = tl.now()
        inj = fault.inject(cfg, ctx)
        try:
            verification = fault.verify(inj, ctx)
            assert verification.effective, verification.details
            details = verification.details
            assert details["canary-0"]["confidence"] < details["stable"]["confidence"], details
            rolled_at = _wait_event(tl, "rollback", started, 90, platform.service_url)
            assert rolled_at is not None, [(e.t, e.get("event"), e.get("weight"), e.get("reason"))
                                           for e in tl.select("canary", start=started)][-6:]  # fmt: skip
            rollback = next(e for e in tl.select("canary", start=started) if e.get("event") == "rollback")
            assert rollback.get("by") == "analysis" and "confidence" in rollback.get("reason"), rollback.attrs
            print(f"bad canary: rolled back {rolled_at - started:.1f} s after injection, "
                  f"{rollback.get('seconds')} s after it first took traffic")
            after = _send(platform.service_url, 20)
            assert after == Counter({"200:1": 20}), after  # stable only
            # Stopped and held by the rollback: SIGTERM, then its graceful drain (up to 10 s), so waited for. (The
            # 20 requests above used to take ~1 s through the endpoint's delayed-ACK stall; now ~40 ms.)
            deadline = time.monotonic() + 15
            while platform.exit_status("canary-0") is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert platform.exit_status("canary-0") is not None
        finally:
            fault.undo(inj, ctx)
        assert httpx.get(f"{platform.topology().get('canary-0').url}/v2", timeout=5).json()["model"]["version"] == "2"
        assert not (platform.stack.model_registry / "digits" / inj.undo["bad_version"]).exists()  # type: ignore[operator]
