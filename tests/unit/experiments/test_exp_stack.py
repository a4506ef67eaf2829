"""ObservabilityStack without running it: binaries, generated configs, validation (experiments.alerting.stack)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from faultdrill.experiments.alerting import stack as stack_mod
from faultdrill.experiments.alerting.stack import (
    Binaries,
    ObservabilityStack,
    ScrapeTarget,
    StackUnavailable,
    receiver_names,
    scrape_targets,
)
from faultdrill.faults.errors import ConfigError, PreflightError
from faultdrill.faults.topology import ServiceHandle, Topology

RULES = {"groups": [{"name": "t", "interval": "1m", "rules": [
    {"record": "job:x:rate5m", "expr": 'sum(rate(x{le="0.5"}[5m]))'},
    {"alert": "FlipHigh", "expr": "flip_gauge > 0", "for": "2m", "labels": {"severity": "critical"},
     "annotations": {"summary": "flipped"}},
]}]}  # fmt: skip
AM = {
    "global": {"resolve_timeout": "5m"},
    "route": {"receiver": "chat", "group_by": ["alertname", "severity"], "group_wait": "30s", "group_interval": "5m",
              "repeat_interval": "4h", "routes": [{"receiver": "pager", "matchers": ['severity="critical"'],
                                                   "group_wait": "10s", "repeat_interval": "1h"}]},
    "receivers": [{"name": n, "webhook_configs": [{"url": f"http://127.0.0.1:9095/{n}", "send_resolved": True}]}
                  for n in ("pager", "chat", "ticket")],
}  # fmt: skip


def write_sources(tmp_path: Path, rules: dict[str, Any] = RULES, am: dict[str, Any] = AM) -> tuple[Path, Path]:
    (tmp_path / "src").mkdir(exist_ok=True)
    r, a = tmp_path / "src" / "rules.yml", tmp_path / "src" / "alertmanager.yml"
    r.write_text(yaml.safe_dump(rules))
    a.write_text(yaml.safe_dump(am))
    return r, a


def topology(tmp_path: Path) -> Topology:
    token = tmp_path / "proxy.token"
    token.write_text("s3cret-token-value")
    token.chmod(0o600)
    return Topology(services={
        "replica-1": ServiceHandle(name="replica-1", role="replica", url="http://127.0.0.1:8002"),
        "replica-0": ServiceHandle(name="replica-0", role="replica", url="http://127.0.0.1:8001"),
        "feature-store": ServiceHandle(name="feature-store", role="feature_store", url="https://10.200.1.2:8443",
                                       netns="fs1"),
        "feature-store-proxy": ServiceHandle(name="feature-store-proxy", role="proxy", url="tcp://127.0.0.1:7000",
                                             control_url="http://127.0.0.1:7001", admin_token_file=token),
        "service": ServiceHandle(name="service", role="other", url="http://127.0.0.1:9000"),
    })  # fmt: skip


def test_public_api_is_pinned() -> None:
    assert sorted(stack_mod.__all__) == ["Binaries", "ObservabilityStack", "ScrapeTarget", "StackUnavailable",
                                         "receiver_names", "scrape_targets"]  # fmt: skip


def test_missing_binaries_say_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gone = str(tmp_path / "no" / "prometheus")
    with pytest.raises(StackUnavailable) as info:
        Binaries(prometheus=gone).resolve()
    text = str(info.value)
    assert text.startswith("Prometheus/Alertmanager not found (need ")
    assert f"missing {gone})" in text and "/usr/bin/prometheus-alertmanager" in text
    assert "run `make setup` (apt-get install prometheus prometheus-alertmanager), or run with --no-alerts" in text
    assert isinstance(info.value, PreflightError), "the CLI maps PreflightError to exit code 2"
    assert info.value.missing == (gone,)
    # Bare names are looked up on PATH: an empty PATH finds none of the four.
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(StackUnavailable, match="missing prometheus, prometheus-alertmanager, promtool, amtool"):
        Binaries("prometheus", "prometheus-alertmanager", "promtool", "amtool").resolve()


def test_start_without_binaries_touches_nothing(tmp_path: Path) -> None:
    rules, am = write_sources(tmp_path)
    obs = ObservabilityStack(tmp_path / "obs", rules_file=rules, alertmanager_config=am, webhook_url="http://h:1",
                             binaries=Binaries(alertmanager=str(tmp_path / "nope")))  # fmt: skip
    with pytest.raises(StackUnavailable, match="nope"):
        obs.start()
    assert not (tmp_path / "obs").exists() and obs.pids == {}
    obs.close()  # harmless when nothing started


def test_scrape_targets_follow_the_contract(tmp_path: Path) -> None:
    targets = scrape_targets(topology(tmp_path), "http://127.0.0.1:9500")
    by = {(t.job, t.address): t for t in targets}
    assert list(by) == [("target", "127.0.0.1:8001"), ("target", "127.0.0.1:8002"),
                        ("feature-store", "10.200.1.2:8443"), ("fault-proxy", "127.0.0.1:7001"),
                        ("kube-state-metrics", "127.0.0.1:9500")]  # fmt: skip
    assert by[("target", "127.0.0.1:8001")].labels == {"namespace": "faultdrill", "pod": "replica-0",
                                                       "container": "target", "service": "target"}  # fmt: skip
    fs = by[("feature-store", "10.200.1.2:8443")]
    assert (fs.scheme, fs.insecure_skip_verify) == ("https", True)
    assert fs.labels == {"namespace": "faultdrill", "pod": "feature-store", "container": "feature-store",
                         "service": "feature-store"}  # fmt: skip
    proxy = by[("fault-proxy", "127.0.0.1:7001")]
    assert proxy.labels["pod"] == "feature-store-proxy" and proxy.credentials_file == tmp_path / "proxy.token"
    assert by[("kube-state-metrics", "127.0.0.1:9500")].honor_labels
    assert [t.job for t in scrape_targets(topology(tmp_path))].count("kube-state-metrics") == 0
    # A described server's replicas: the job its profile's rules select (job="mlserver").
    mine = [t for t in scrape_targets(topology(tmp_path), replica_job="mlserver")
            if t.labels.get("pod", "").startswith("replica")]
    assert {t.job for t in mine} == {"mlserver"} and mine[0].labels["container"] == "mlserver"


def test_written_configs(tmp_path: Path) -> None:
    rules, am = write_sources(tmp_path)
    obs = ObservabilityStack(tmp_path / "obs", rules_file=rules, alertmanager_config=am, speedup=60,
                             webhook_url="http://127.0.0.1:4242/", targets=scrape_targets(topology(tmp_path)),
                             scrape_interval_s=0.5, evaluation_interval_s=0.5)  # fmt: skip
    obs.write_configs()
    prom = yaml.safe_load(obs.prometheus_yml.read_text())
    assert prom["global"] == {"scrape_interval": "500ms", "scrape_timeout": "500ms", "evaluation_interval": "500ms"}
    assert prom["rule_files"] == [str(obs.rules_yml)]
    am_target = prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"][0]
    assert am_target.startswith("127.0.0.1:") and am_target == obs.alertmanager_url.removeprefix("http://")
    jobs = {c["job_name"]: c for c in prom["scrape_configs"]}
    assert list(jobs) == ["target", "feature-store", "fault-proxy"]
    assert [s["labels"]["pod"] for s in jobs["target"]["static_configs"]] == ["replica-0", "replica-1"]
    assert jobs["feature-store"]["tls_config"] == {"insecure_skip_verify": True}
    assert jobs["fault-proxy"]["authorization"] == {"type": "Bearer",
                                                    "credentials_file": str(tmp_path / "proxy.token")}  # fmt: skip
    assert "s3cret-token-value" not in obs.prometheus_yml.read_text()
    scaled = yaml.safe_load(obs.rules_yml.read_text())["groups"][0]
    assert scaled["interval"] == "1s" and scaled["rules"][0]["expr"] == 'sum(rate(x{le="0.5"}[5s]))'
    assert scaled["rules"][0]["record"] == "job:x:rate5m" and scaled["rules"][1]["for"] == "2s"
    am_doc = yaml.safe_load(obs.alertmanager_yml.read_text())
    assert [r["webhook_configs"][0]["url"] for r in am_doc["receivers"]] == [
        "http://127.0.0.1:4242/pager", "http://127.0.0.1:4242/chat", "http://127.0.0.1:4242/ticket"]  # fmt: skip
    assert am_doc["route"]["group_wait"] == "500ms" and am_doc["route"]["routes"][0]["repeat_interval"] == "1m"
    assert receiver_names(am_doc) == ("pager", "chat", "ticket")
    assert obs.scaling[0].startswith("time scale: speedup 60×") and "at least 2s" in "\n".join(obs.scaling)


def test_one_job_needs_one_set_of_settings(tmp_path: Path) -> None:
    rules, am = write_sources(tmp_path)
    targets = [ScrapeTarget("x", "127.0.0.1:1"), ScrapeTarget("x", "127.0.0.1:2", scheme="https")]
    obs = ObservabilityStack(tmp_path / "obs", rules_file=rules, alertmanager_config=am, webhook_url="http://h:1",
                             targets=targets)  # fmt: skip
    with pytest.raises(ConfigError, match=re.escape("scrape job 'x': target 127.0.0.1:2 differs from 127.0.0.1:1")):
        obs.write_configs()


def test_unreadable_sources_name_the_file(tmp_path: Path) -> None:
    rules, am = write_sources(tmp_path)
    rules.write_text("groups: [unclosed")
    obs = ObservabilityStack(tmp_path / "obs", rules_file=rules, alertmanager_config=am, webhook_url="http://h:1")
    with pytest.raises(ConfigError, match=r"rules\.yml: the rules file is not valid"):
        obs.write_configs()
    bad_for = {"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "up", "for": "5 minutes"}]}]}
    rules, am = write_sources(tmp_path, rules=bad_for)
    with pytest.raises(ConfigError, match=r"groups\[0\]\.rules\[0\]\.for: not a Prometheus duration"):
        ObservabilityStack(tmp_path / "obs", rules_file=rules, alertmanager_config=am, speedup=60,
                           webhook_url="http://h:1").write_configs()  # fmt: skip
    with pytest.raises(ConfigError, match="cannot read the Alertmanager config"):
        ObservabilityStack(tmp_path / "obs", rules_file=rules, alertmanager_config=tmp_path / "none.yml",
                           webhook_url="http://h:1").write_configs()  # fmt: skip


@pytest.mark.tools("prometheus", "promtool", "prometheus-alertmanager", "amtool")
def test_generated_config_passes_promtool(tmp_path: Path) -> None:
    rules, am = write_sources(tmp_path)
    targets = scrape_targets(topology(tmp_path), "http://127.0.0.1:9500")
    obs = ObservabilityStack(tmp_path / "obs", rules_file=rules, alertmanager_config=am, speedup=60,
                             webhook_url="http://127.0.0.1:4242", targets=targets)  # fmt: skip
    obs.write_configs()
    for argv in (["promtool", "check", "config", str(obs.prometheus_yml)],
                 ["amtool", "check-config", str(obs.alertmanager_yml)]):  # fmt: skip
        done = subprocess.run([shutil.which(argv[0]) or argv[0], *argv[1:]], capture_output=True, text=True,
                              check=False)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.tools("prometheus", "promtool", "prometheus-alertmanager", "amtool")
def test_relative_workdir_and_sources_give_configs_promtool_accepts(tmp_path: Path, monkeypatch) -> None:
    """`faultdrill run` with the default `--out runs`: every path is relative to the working directory,
    while Prometheus resolves rule_files against prometheus.yml's own directory (a doubled path once)."""
    write_sources(tmp_path)
    monkeypatch.chdir(tmp_path)
    obs = ObservabilityStack(Path("runs/smoke-1/alerting"), rules_file=Path("src/rules.yml"),
                             alertmanager_config=Path("src/alertmanager.yml"), webhook_url="http://127.0.0.1:4242")
    obs.write_configs()
    written = yaml.safe_load((tmp_path / "runs/smoke-1/alerting/prometheus.yml").read_text())
    assert written["rule_files"] == [str(tmp_path / "runs/smoke-1/alerting/rules.yml")]
    done = subprocess.run([shutil.which("promtool") or "promtool", "check", "config",
                           "runs/smoke-1/alerting/prometheus.yml"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.tools("prometheus", "promtool", "prometheus-alertmanager", "amtool")
def test_promtool_rejection_names_the_file_and_says_why(tmp_path: Path) -> None:
    broken = {"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "rate(up[5m]", "for": "1m"}]}]}
    rules, am = write_sources(tmp_path, rules=broken)
    obs = ObservabilityStack(tmp_path / "obs", rules_file=rules, alertmanager_config=am, webhook_url="http://h:1")
    with pytest.raises(ConfigError) as info:
        obs.start()
    text = str(info.value)
    assert text.startswith(f"{rules}: promtool rejected {obs.prometheus_yml}")
    assert "unclosed left parenthesis" in text or "parse error" in text, text
    assert obs.pids == {}, "nothing starts when a config is rejected"
    bad_am = {**AM, "route": {"receiver": "nobody"}}
    rules, am = write_sources(tmp_path, am=bad_am)
    with pytest.raises(ConfigError, match=r"amtool rejected .*undefined receiver \"nobody\""):
        ObservabilityStack(tmp_path / "obs2", rules_file=rules, alertmanager_config=am, webhook_url="http://h:1").start()


@pytest.mark.tools("prometheus", "prometheus-alertmanager")
def test_versions() -> None:
    versions = ObservabilityStack(Path("/nonexistent"), rules_file=Path("r"), alertmanager_config=Path("a"),
                                  webhook_url="http://h:1").versions()  # fmt: skip
    assert set(versions) == {"prometheus", "alertmanager"}
    assert all(v.count(".") == 2 and v.replace(".", "").isdigit() for v in versions.values()), versions
