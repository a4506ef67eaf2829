"""``target.service`` of kind ``process`` and ``url``: what loads, what a profile fills in, and every mistake as one
located error (file, line, column, field, what fits, a did-you-mean) — templates included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from faultdrill.experiments.spec.experiment import Experiment
from faultdrill.experiments.spec.loader import check_experiment_text, load_experiment, load_experiment_text
from faultdrill.experiments.spec.service import ExecProbe, HttpProbe, ProcessService, UrlService
from faultdrill.experiments.spec.templates import TemplateNames, check_template, render, template_names
from faultdrill.faults.errors import ConfigError
from faultdrill.faults.registry import FaultRegistry
from faultdrill.spec_cli import experiment_json_schema

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((ROOT / "experiments" / "examples" / "process").glob("*.yaml"))
HEAD = "apiVersion: faultdrill/v1\nkind: Experiment\nmetadata: {name: mine}\n"
PROCESS = HEAD + """target:
  replicas: 2
  service:
    kind: process
    command: ["{python}", "-m", "my_server", "--port={port}"]
    probes: {readiness: /ready}
"""
LOAD = "load: {protocol: {kind: http, method: GET, path: /ready}}\n"  # what a service without an OIP v2 model is sent


@pytest.fixture(scope="module")
def registry() -> FaultRegistry:
    return FaultRegistry.installed()


def _load(text: str, registry: FaultRegistry, file: str = "mine.yaml") -> Experiment:
    return load_experiment_text(text, file=file, registry=registry)


def _error(text: str, registry: FaultRegistry) -> ConfigError:
    errors = check_experiment_text(text, file="mine.yaml", registry=registry)
    assert errors, "expected an error"
    return errors[0]


# -- what loads --------------------------------------------------------------------------------------
def test_bundled_stays_the_default_and_spelled_out(registry: FaultRegistry) -> None:
    assert _load(HEAD, registry).target.service == "bundled"
    assert _load(HEAD + "target: {service: bundled, replicas: 2}\n", registry).target.service == "bundled"
    assert _load(HEAD, registry).system().name == "bundled"


def test_a_process_service_loads_with_its_defaults(registry: FaultRegistry) -> None:
    service = _load(PROCESS + LOAD, registry).target.service
    assert isinstance(service, ProcessService)
    assert service.ports == ["http"] and service.replica_prefix == "server" and service.protocol is None
    assert service.probes.readiness == HttpProbe(http="/ready") and service.probes.liveness is None
    assert (service.metrics.path, service.metrics.port) == ("/metrics", "http")


def test_a_profile_fills_what_the_spec_leaves_out_and_the_spec_wins(registry: FaultRegistry) -> None:
    text = HEAD + """target:
  service:
    kind: process
    profile: mlserver
    command: [mlserver, start, "{spec_dir}/models"]
    env: {MLSERVER_HTTP_PORT: "{port}", MLSERVER_METRICS_PORT: "{port.metrics}", MLSERVER_GRPC_PORT: "{port.grpc}"}
    model: {name: digits}
    probes: {liveness: {exec: [curl, -sf, "http://127.0.0.1:{port}/v2/health/live"]}}
"""
    service = _load(text, registry).target.service
    assert isinstance(service, ProcessService)
    assert service.ports == ["http", "grpc", "metrics"] and service.protocol == "oip_v2"
    assert service.replica_prefix == "mlserver"
    assert service.probes.readiness == HttpProbe(http="/v2/models/{model}/ready")  # the model's, a model declared
    assert service.probes.startup == HttpProbe(http="/v2/health/live")
    assert isinstance(service.probes.liveness, ExecProbe)  # the spec's own, not the profile's
    assert (service.metrics.path, service.metrics.port) == ("/metrics", "metrics")
    # Alerting: the profile's rules and the scrape job they select (job="mlserver"), unless the spec says otherwise.
    from faultdrill.experiments.spec.profile import load_profile
    from faultdrill.experiments.spec.rules import alert_rules, rules_path

    exp = _load(text, registry)
    rules = rules_path(exp.alerting.rules, spec_file=None, service_rules=exp.service_rules())
    assert rules == load_profile("mlserver").rules_file and "MLServerDown" in alert_rules(rules)
    assert exp.scrape_job() == "mlserver" and 'job="mlserver"' in rules.read_text()
    assert _load(PROCESS + LOAD, registry).service_rules() is None  # no profile: the bundled target's rules
    declared = "    model: {name: digits}\n    metrics: {job: ml, rules: r.yml}\n"
    mine = text.replace("    model: {name: digits}\n", declared)
    assert (_load(mine, registry).scrape_job(), _load(mine, registry).service_rules()) == ("ml", "r.yml")
    without_model = text.replace("    model: {name: digits}\n", "") + LOAD
    assert _load(without_model, registry).target.service.probes.readiness == HttpProbe(  # type: ignore[union-attr]
        http="/v2/health/ready")


def test_a_profile_port_other_than_http_carries_over(registry: FaultRegistry) -> None:
    text = (HEAD + "target:\n  service: {kind: process, profile: torchserve, command: [torchserve], model: {name: m}}\n"
            + LOAD)
    service = _load(text, registry).target.service
    assert isinstance(service, ProcessService) and service.ports == ["http", "grpc", "metrics", "management"]
    assert service.probes.readiness == HttpProbe(http="/models/{model}", port="management")
    url = _load(HEAD + "target:\n  service: {kind: url, url: 'http://127.0.0.1:8080', profile: torchserve, "
                "model: {name: m}}\n" + LOAD, registry).target.service  # fmt: skip
    assert isinstance(url, UrlService)  # a server already running listens on the profile's default ports
    assert url.probes.readiness == HttpProbe(http="/models/{model}", port=8081) and url.metrics.port == 8082


def test_a_profile_by_path_is_relative_to_the_spec(tmp_path: Path, registry: FaultRegistry) -> None:
    (tmp_path / "ops").mkdir()
    (tmp_path / "ops" / "profile.yaml").write_text(
        (ROOT / "experiments/systems/triton/profile.yaml").read_text().replace("name: triton", "name: my_triton"))
    spec = tmp_path / "exp.yaml"
    spec.write_text(HEAD + "target:\n  service: {kind: process, profile: ops/profile.yaml, command: [tritonserver]}\n"
                    + LOAD)
    service = load_experiment(spec, registry).target.service
    assert isinstance(service, ProcessService) and service.replica_prefix == "my-triton"


def test_a_url_service_loads(registry: FaultRegistry) -> None:
    text = HEAD + """target:
  service:
    kind: url
    url: http://127.0.0.1:8000
    profile: triton
    model: {name: digits}
    allow: {pids: [1234], cgroups: [/sys/fs/cgroup/memory/triton]}
"""
    service = _load(text, registry).target.service
    assert isinstance(service, UrlService) and service.allow.pids == [1234]
    assert service.probes.readiness == HttpProbe(http="/v2/models/{model}/ready")


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_the_examples_validate(path: Path, registry: FaultRegistry) -> None:
    assert load_experiment(path, registry).target.service != "bundled"


def test_the_json_schema_knows_both_kinds() -> None:
    schema = json.loads(json.dumps(experiment_json_schema()))
    options = schema["$defs"]["TargetSpec"]["properties"]["service"]["oneOf"]
    assert {"const": "bundled", "type": "string"} in options
    assert {o.get("$ref") for o in options} >= {"#/$defs/ProcessService", "#/$defs/UrlService"}


# -- mistakes, each located ------------------------------------------------------------------------------
BAD = {
    "unknown_value": (HEAD + "target: {service: external}\n",
                      "4:19: target.service: unknown value 'external'", "{kind: process"),
    "missing_kind": (HEAD + "target:\n  service: {command: [x]}\n", "target.service: missing required key kind",
                     "kind: process, url or kubernetes"),
    "unknown_kind": (HEAD + "target:\n  service: {kind: proces, command: [x]}\n",
                     "5:19: target.service.kind: unknown kind 'proces'", "did you mean 'process'"),
    "unknown_key": (PROCESS + "    prots: [http]\n", "10:5: target.service.prots: unknown key 'prots'",
                    "did you mean 'ports'"),
    "unknown_template": (PROCESS.replace("--port={port}", "--port={prot}"),
                         "mine.yaml:8:46: target.service.command[3]: unknown template {prot}", "did you mean 'port'"),
    "undeclared_port": (PROCESS.replace("--port={port}", "--metrics={port.metrics}"),
                        "target.service.command[3]: unknown port 'metrics' in {port.metrics}", "add it"),
    "model_template_without_model": (PROCESS.replace("/ready", '"/v2/models/{model}/ready"'),
                                     "target.service.probes.readiness.http: {model} names the model", "model: {name"),
    "url_outside_via": (PROCESS.replace("--port={port}", "--x={url}"), "command[3]: {url} is a dependency's", "via"),
    "unbalanced": (PROCESS.replace("--port={port}", "--port={port"), "unbalanced '{'", "{{"),
    "bundled_only_field": (PROCESS.replace("  replicas: 2\n", "  replicas: 2\n  model: heavy\n"),
                           "mine.yaml:6:10: target.model: target.model configures the bundled target",
                           "target.service.model"),
    "env_beside_process": (PROCESS.replace("  replicas: 2\n", "  env: {FAULTDRILL_X: '1'}\n"),
                           "target.env: target.env configures the bundled target", "target.service.env"),
    "kubernetes": (PROCESS.replace("  replicas: 2\n", "  platform: kubernetes\n"),
                   "target.platform: a service of kind process runs on the local platform only", "platform: local"),
    "url_replicas": (HEAD + "target:\n  replicas: 2\n  service: {kind: url, url: 'http://127.0.0.1:1', "
                            "probes: {readiness: /}}\n", "target.replicas: target.replicas configures",
                     "load balancer"),
    "https_url": (HEAD + "target:\n  service: {kind: url, url: 'https://h:1', probes: {readiness: /}}\n",
                  "target.service.url", "http://"),
    "no_readiness": (HEAD + "target:\n  service: {kind: process, command: [x]}\n",
                     "target.service.probes: no readiness probe", "{exec: [argv]}"),
    "probe_on_undeclared_port": (PROCESS.replace("readiness: /ready", "readiness: {http: /r, port: admin}"),
                                 "target.service.probes.readiness.port: the readiness probe is on port 'admin'",
                                 "one of http"),
    "metrics_port": (HEAD + "target:\n  service: {kind: process, profile: mlserver, command: [x], ports: [http]}\n",
                     "target.service.metrics.port: the metrics are on port 'metrics'", "add it to ports"),
    "http_not_first": (PROCESS.replace("    probes:", "    ports: [metrics, http]\n    probes:"),
                       "target.service.ports[1]: the first port must be 'http'", "ports: [http"),
    "unknown_profile": (HEAD + "target:\n  service: {kind: process, profile: mlservr, command: [x]}\n",
                        "target.service.profile: unknown profile 'mlservr'", "did you mean 'mlserver'"),
    "via_both": (PROCESS + "    dependencies:\n      - {name: features, url: 'http://127.0.0.1:9400', "
                           "via: {env: F, arg: '--f={url}'}}\n",
                 "target.service.dependencies[0].via: give exactly one of env or arg", "{env: FEATURES_URL}"),
    "via_arg_without_url": (PROCESS + "    dependencies:\n      - {name: features, url: 'http://127.0.0.1:9400', "
                                      "via: {arg: '--features'}}\n",
                            "dependencies[0].via.arg: via.arg '--features' does not name {url}", "containing {url}"),
    "dependency_name_taken": (PROCESS + "    dependencies:\n      - {name: server-1, url: 'http://127.0.0.1:9400', "
                                        "via: {env: F}}\n",
                              "dependencies[0].name: dependency name 'server-1' is taken", "not ending in -proxy"),
    "dependency_command_template": (
        PROCESS + "    dependencies:\n      - {name: features, url: 'http://127.0.0.1:9400', via: {env: F},\n"
                  "         command: [x, '--port={port}']}\n",
        "dependencies[0].command[1]: unknown template {port}", "{spec_dir}"),
    "dependency_command_not_local": (
        PROCESS + "    dependencies:\n      - {name: features, url: 'http://db.example:9400', via: {env: F},\n"
                  "         command: [x]}\n",
        "dependencies[0].url: a dependency faultdrill starts listens on loopback", "127.0.0.1"),
    "systemd_units": (HEAD + "target:\n  service: {kind: url, url: 'http://127.0.0.1:1', probes: {readiness: /}, "
                             "allow: {systemd_units: [x.service]}}\n",
                      "target.service.allow.systemd_units: systemd units are not supported yet", "MainPID"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_every_mistake_is_one_located_error(case: str, registry: FaultRegistry) -> None:
    text, fragment, hint = BAD[case]
    err = _error(text, registry)
    assert err.file == "mine.yaml" and err.line is not None and err.column is not None, str(err)
    assert fragment in str(err), str(err)
    assert hint in str(err), str(err)
    with pytest.raises(ConfigError):
        _load(text, registry)


# -- the template language ----------------------------------------------------------------------------
def test_templates_render_and_escape() -> None:
    values = {"port": "81", "port.http": "81", "replica": "web-0"}
    assert render("--port={port} {{literal}} {replica}", values) == "--port=81 {literal} web-0"
    assert template_names("a {port} {{x}} {port.http}") == ["port", "port.http"]
    names = TemplateNames(ports=("http", "grpc"), model=True)
    assert check_template("{port.grpc} {model} {spec_dir} {workdir} {index} {python}", names) is None
    problem = check_template("{port.grcp}", names)
    assert problem is not None and problem.suggestion == "port.grpc"
    assert check_template("{url}", TemplateNames(url=True)) is None


def test_the_load_of_a_described_service_is_its_protocols_request_or_a_located_error(registry: FaultRegistry) -> None:
    oip = _load(PROCESS.replace("    probes:", "    protocol: oip_v2\n    model: {name: digits}\n    probes:"),
                registry)  # fmt: skip
    protocol = oip.load_protocol()
    assert protocol is not None and protocol.kind == "oip_v2" and protocol.model == "digits"  # from the metadata
    assert _load(HEAD, registry).load_protocol() is None  # the bundled target: its own request
    # A server whose requests faultdrill cannot guess: the load would send it the bundled target's, so it is refused.
    err = _error(PROCESS, registry)
    assert err.field == "load" and "no request to send" in str(err) and "load.protocol" in str(err)
    assert _load(PROCESS + LOAD, registry).load_protocol() is not None
