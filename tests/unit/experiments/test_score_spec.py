"""Score files and variants: located errors (file, line, field, did-you-mean), and overrides that reach the
spec each run executes."""

from __future__ import annotations

from pathlib import Path

import pytest

from faultdrill.experiments.score import load_suite, suite_from_args
from faultdrill.experiments.score.spec import bundled_profiles
from faultdrill.faults.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]
CATALOG = ROOT / "experiments" / "catalog"
PROCESS = ROOT / "experiments" / "examples" / "process" / "bundled_as_process.yaml"


def score_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(f"apiVersion: faultdrill/v1\nkind: Score\nexperiments: [{CATALOG}/model_load_failure.yaml]\n"
                    + body)  # fmt: skip
    return path


def error_of(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_suite(path)
    return caught.value


def test_env_and_misconfig_reach_the_spec(tmp_path):
    suite = load_suite(score_file(tmp_path, "variants:\n  - {name: both, misconfig: [no_circuit_breaker],"
                                            " env: {FAULTDRILL_OOM_UNREADY_THRESHOLD: '99'}}\n"))  # fmt: skip
    entry = suite.entries[0]
    broken = entry.variants["both"].spec.target
    assert broken.env["FAULTDRILL_OOM_UNREADY_THRESHOLD"] == "99"
    assert broken.misconfigurations == ["no_circuit_breaker"]
    assert entry.baseline.spec.target.env == {} and entry.baseline.spec.target.misconfigurations == []
    assert entry.variants["both"].spec.faults == entry.baseline.spec.faults


def test_process_service_env_args_and_target_overrides(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text(f"kind: Score\nexperiments: [{PROCESS}]\nvariants:\n"
                    "  - {name: slow, env: {FAULTDRILL_WARMUP_S: '5'}, args: ['--extra'],"
                    " target: {probes: {failure_threshold: 50}}}\n")  # fmt: skip
    spec = load_suite(path).entries[0].variants["slow"].spec
    service = spec.target.service
    assert not isinstance(service, str)
    assert service.env["FAULTDRILL_WARMUP_S"] == "5" and service.env["FAULTDRILL_DEVICE"] == "cpu"
    assert service.command[-1] == "--extra"  # type: ignore[union-attr]
    assert spec.target.probes.failure_threshold == 50 and spec.target.replicas == 2


def test_unknown_variant_key_is_located_with_did_you_mean(tmp_path):
    err = error_of(score_file(tmp_path, "variants:\n  - {name: x, misconfg: [no_circuit_breaker]}\n"))
    assert (err.file, err.line, err.field) == (str(tmp_path / "suite.yaml"), 5, "variants[0].misconfg")
    assert err.suggestion == "misconfig"


def test_unknown_profile_is_located_with_did_you_mean(tmp_path):
    err = error_of(score_file(tmp_path, "variants:\n  - name: x\n    misconfig: [no_circuit_breaker, no_rate_limt]\n"))
    assert (err.line, err.field, err.suggestion) == (6, "variants[0].misconfig[1]", "no_rate_limit")
    assert "unknown misconfiguration profile 'no_rate_limt'" in str(err)


def test_missing_experiment_file_is_located(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text("kind: Score\nexperiments:\n  - nope.yaml\n  - '*.missing'\n")
    err = error_of(path)
    assert (err.line, err.field) == (3, "experiments[0]") and "no such file: nope.yaml" in str(err)


def test_variant_that_does_not_fit_the_experiment_is_located(tmp_path):
    err = error_of(score_file(tmp_path, "variants:\n  - {name: x, args: [--fast]}\n"))
    assert (err.line, err.field) == (5, "variants[0].args") and "kind: process" in str(err)
    err = error_of(score_file(tmp_path, "variants:\n  - {name: x, env: {WRONG: '1'}}\n"))
    assert err.field == "variants[0].env" and "FAULTDRILL_" in str(err)
    err = error_of(score_file(tmp_path, "variants:\n  - {name: x, target: {replicas: 1}}\n"))
    assert err.field == "variants[0].target" and "replica-1" in str(err)


def test_variant_names_unique_and_changing_something(tmp_path):
    err = error_of(score_file(tmp_path, "variants:\n  - {name: x, misconfig: [no_rate_limit]}\n"
                                        "  - {name: x, misconfig: [no_circuit_breaker]}\n"))  # fmt: skip
    assert err.field == "variants[1].name" and "used twice" in str(err)
    err = error_of(score_file(tmp_path, "variants:\n  - {name: x}\n"))
    assert err.field == "variants[0]" and "changes nothing" in str(err)


def test_arguments_default_to_every_bundled_profile_and_refuse_unknown_ones():
    suite = suite_from_args([CATALOG / "model_load_failure.yaml"], [])
    assert [v.name for v in suite.variants] == list(bundled_profiles())
    assert suite.run_count() == len(bundled_profiles())  # no_canary_analysis is not run: the target has no canary
    with pytest.raises(ConfigError) as caught:
        suite_from_args([CATALOG / "model_load_failure.yaml"], ["no_circuit_breakr"])
    assert caught.value.field == "--variant" and caught.value.suggestion == "no_circuit_breaker"


def test_own_service_needs_declared_variants():
    with pytest.raises(ConfigError) as caught:
        suite_from_args([PROCESS], [])
    assert "score file" in str(caught.value)


def test_a_platform_profile_for_a_part_the_target_lacks_is_not_run():
    """``no_canary_analysis`` without a canary changes nothing: its run would be the baseline's."""
    plain = suite_from_args([CATALOG / "model_load_failure.yaml"], ["no_canary_analysis", "no_rate_limit"])
    (entry,) = plain.entries
    assert list(entry.inapplicable) == ["no_canary_analysis"] and plain.run_count() == 2
    assert any("no_canary_analysis × model-load-failure  not run" in line for line in plain.lines(Path("out")))
    canary = suite_from_args([CATALOG / "canary_rollout.yaml"], ["no_canary_analysis"])
    assert canary.entries[0].inapplicable == {} and canary.run_count() == 2
