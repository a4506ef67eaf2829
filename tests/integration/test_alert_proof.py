"""An experiment proves its alert rules: with a broken rule the same catalog experiment fails,
naming the alert — real Prometheus, real Alertmanager, real faults."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.root, pytest.mark.system]
ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "target_service" / "alerts" / "rules.yml"
GOOD = "expr: time() - tls_certificate_expiry_timestamp_seconds >= 0"
# The classic silent breakage: a metric renamed in the exporter, not in the rule. Still valid PromQL.
BROKEN = "expr: time() - tls_certificate_expiry_timestamp >= 0"


# ~60 s: run by make test-catalog with the other whole-experiment negative controls (CI's budget is 15 min);
# the rules' own behaviour is proven in CI by promtool's rule tests and the alerting stack's tests.
@pytest.mark.catalog
def test_a_broken_rule_fails_the_experiment_naming_the_alert(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces for the feature store")
    text = RULES.read_text()
    assert text.count(GOOD) == 1, "the TLSCertificateExpired rule changed: update this mutation"
    mutated = tmp_path / "rules-broken.yml"
    mutated.write_text(text.replace(GOOD, BROKEN))
    check = subprocess.run(["promtool", "check", "rules", str(mutated)], capture_output=True, text=True)
    assert check.returncode == 0, "the mutation must stay a valid rule file: only the experiment can catch it"
    out = tmp_path / "runs"
    env = {**os.environ, "FAULTDRILL_STATE_DIR": str(tmp_path / "state"), "CI": "true"}
    result = subprocess.run(
        [sys.executable, "-m", "faultdrill", "run", str(ROOT / "experiments/catalog/cert_expiry.yaml"),
         "--rules", str(mutated), "--out", str(out), "--plain"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout[-4000:] + result.stderr[-2000:]
    assert "FAILED: alert TLSCertificateExpired pod=feature-store fires within 6 s after cert.start" in result.stdout
    journal = json.loads(next(out.glob("*/journal.json")).read_text())
    failed = {v["name"]: v["observed"] for v in journal["verdicts"] if not v["passed"]}
    assert len(failed) == 2, failed  # the page and its resolution; everything else still held
    fires = next(o for n, o in failed.items() if "fires" in n)
    assert fires.startswith("TLSCertificateExpired never went pending or firing after cert.start")
    assert journal["alerting"]["rules_file"] == str(mutated)
    assert journal["faults"]["cert"]["detected_by"] != "TLSCertificateExpired"
