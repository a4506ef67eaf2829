"""The profiles of known inference servers (experiments/systems/): model, loader and what each ships.

Every shipped profile loads; its rules select only the series it declares (each verified at a source
pinned to a commit) and pass ``promtool check rules`` and ``promtool test rules``, where every alert
fires in one case and stays silent in another; every alert has its own runbook, which
``faultdrill runbook check`` accepts. A broken profile is one located error (file, line, column, field),
never a traceback. promtool comes from the Debian package ``prometheus``: the tests that run it are
marked ``tools`` (they skip locally without it and fail with CI=true).
"""

from __future__ import annotations

import ast
import os
import random
import re
import subprocess
import time
import tomllib
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from faultdrill.experiments.spec import profile as profile_module
from faultdrill.experiments.spec.profile import (
    PROFILE_FILE,
    SYSTEMS_DIR,
    Profile,
    check_profile,
    load_profile,
    profile_path,
    shipped_profiles,
)
from faultdrill.faults.errors import ConfigError
from faultdrill.gamedays.runbook import parse_runbook
from faultdrill.gamedays.runbook_check import check_runbooks, metric_names

REPO = Path(__file__).resolve().parents[3]
REQUIRED = ("mlserver", "kserve", "triton", "vllm", "tgi", "torchserve")
SHIPPED = shipped_profiles()
SEVERITIES = frozenset({"critical", "warning", "ticket"})
PROMETHEUS_SERIES = frozenset({"up", "ALERTS", "ALERTS_FOR_STATE"})
PINNED = re.compile(r"^https://github\.com/[\w.-]+/[\w.-]+/blob/[0-9a-f]{40}/\S+$")


@cache
def profile(name: str) -> Profile:
    return load_profile(name)


@cache
def rules_doc(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(profile(name).rules_file.read_text())
    return doc


def all_rules(name: str) -> list[dict[str, Any]]:
    return [rule for group in rules_doc(name)["groups"] for rule in group["rules"]]


def alerts(name: str) -> list[dict[str, Any]]:
    return [rule for rule in all_rules(name) if "alert" in rule]


def records(name: str) -> frozenset[str]:
    return frozenset(rule["record"] for rule in all_rules(name) if "record" in rule)


@cache
def promtool_tests_doc(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(profile(name).rules_test_file.read_text())
    return doc


def runbooks(name: str) -> list[Path]:
    return sorted(profile(name).runbooks_dir.glob("*.md"))


def every_alert() -> list[tuple[str, dict[str, Any]]]:
    return [(name, rule) for name in SHIPPED for rule in alerts(name)]


# -- the shipped profiles -------------------------------------------------------------------------------


def test_the_known_servers_are_shipped() -> None:
    assert set(REQUIRED) <= set(SHIPPED), f"missing: {sorted(set(REQUIRED) - set(SHIPPED))}"
    assert list(SHIPPED) == sorted(SHIPPED)
    assert check_profile("vllm") == []


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_profile_loads_with_its_files(name: str) -> None:
    p = load_profile(name)
    assert p.name == name, "a profile's name is its folder's name"
    assert p.file == (SYSTEMS_DIR / name / PROFILE_FILE).resolve()
    assert load_profile(SYSTEMS_DIR / name) == p == load_profile(str(SYSTEMS_DIR / name / PROFILE_FILE))
    assert p.rules_file.is_file() and p.rules_test_file.is_file() and runbooks(name)
    assert p.health.liveness is not None and p.health.readiness is not None
    assert p.health.model_ready is not None or p.health.models is not None
    assert p.metrics.series.items(), "a profile names its key series"


@pytest.mark.parametrize("name", SHIPPED)
def test_every_name_was_verified_at_a_pinned_source(name: str) -> None:
    p = profile(name)
    sources = {"health": p.health.source, "metrics": p.metrics.source}
    sources |= {f"metrics.series.{role}": m.source for role, m in p.metrics.series.items()}
    unpinned = {where: url for where, url in sources.items() if not PINNED.match(url)}
    assert not unpinned, f"sources must point at a file at a commit: {unpinned}"


def test_vllm_matches_both_kv_cache_names_and_names_its_key_series() -> None:
    series = profile("vllm").metrics.series
    assert series.kv_cache_usage is not None and series.kv_cache_usage.name == "vllm:kv_cache_usage_perc"
    assert series.kv_cache_usage.aliases == ["vllm:gpu_cache_usage_perc"]
    names = profile("vllm").series_names()
    for metric in ("vllm:num_requests_waiting", "vllm:num_preemptions_total",
                   "vllm:time_to_first_token_seconds_bucket"):  # fmt: skip
        assert metric in names
    expr = next(r["expr"] for r in all_rules("vllm") if r.get("record") == "instance_model:vllm_kv_cache_usage:max")
    assert re.search(r"vllm:kv_cache_usage_perc\{[^}]*\}\)\s+or\s+max by \([^)]*\) \(vllm:gpu_cache_usage_perc", expr)
    assert "0.9" in profile("vllm").versions


def test_triton_names_its_counters_without_total() -> None:
    names = profile("triton").series_names()
    for metric in ("nv_inference_request_success", "nv_inference_request_failure", "nv_inference_queue_duration_us",
                   "nv_inference_count", "nv_gpu_utilization"):  # fmt: skip
        assert metric in names
    assert profile("triton").metrics_port == 8002


# -- rules.yml ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SHIPPED)
def test_rules_select_only_the_series_the_profile_declares(name: str) -> None:
    known = profile(name).series_names() | records(name) | PROMETHEUS_SERIES
    for rule in all_rules(name):
        unknown = metric_names(rule["expr"]) - known
        assert not unknown, f"{rule.get('alert') or rule['record']}: not declared in profile.yaml: {sorted(unknown)}"


@pytest.mark.parametrize("name", SHIPPED)
def test_rules_select_the_profile_job(name: str) -> None:
    p = profile(name)
    series = "|".join(re.escape(s) for s in sorted(p.series_names() | {"up"}, key=len, reverse=True))
    selector = re.compile(rf"(?<![\w:])({series})(?![\w:])(\{{[^{{}}]*\}})?")
    for rule in all_rules(name):
        for metric, matchers in selector.findall(rule["expr"]):
            assert f'job="{p.metrics.job}"' in matchers, f"{rule.get('alert') or rule['record']}: {metric} {matchers}"


@pytest.mark.parametrize(("name", "rule"), every_alert(), ids=lambda v: v if isinstance(v, str) else v["alert"])
def test_alert_has_severity_annotations_and_its_own_runbook(name: str, rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in SEVERITIES
    assert "for" in rule, f"{rule['alert']}: state `for:` explicitly"
    annotations = rule["annotations"]
    assert {"summary", "description", "runbook_url"} <= set(annotations)
    url = annotations["runbook_url"]
    assert re.fullmatch(r"runbooks/[a-z0-9-]+\.md", url), url
    path = profile(name).rules_file.parent / url
    assert path.is_file(), f"{rule['alert']}: {url} does not exist"
    assert parse_runbook(path).alerts == (rule["alert"],), f"{url} answers {rule['alert']} alone"


@pytest.mark.parametrize("name", SHIPPED)
def test_one_runbook_per_alert_and_no_orphans(name: str) -> None:
    names = [rule["alert"] for rule in alerts(name)]
    assert len(names) == len(set(names)), "an alert name is defined twice"
    assert all(n.lower().startswith(name[:3]) for n in names), f"{name}'s alerts carry the server's name: {names}"
    urls = [rule["annotations"]["runbook_url"] for rule in alerts(name)]
    assert len(urls) == len(set(urls)), "two alerts share a runbook"
    assert {f"runbooks/{p.name}" for p in runbooks(name)} == set(urls), "a runbook no alert points at"
    assert {"critical", "warning"} <= {rule["labels"]["severity"] for rule in alerts(name)}


@pytest.mark.parametrize("name", SHIPPED)
def test_range_selectors_are_at_least_five_minutes(name: str) -> None:
    seconds = {"m": 60, "h": 3600, "d": 86400}
    for rule in all_rules(name):
        for amount, unit in re.findall(r"\[(\d+)([mhd])\]", rule["expr"]):
            assert int(amount) * seconds[unit] >= 300, (rule.get("alert") or rule["record"], amount + unit)


# -- rules_test.yml: promtool's unit tests cover every alert both ways ---------------------------------


@pytest.mark.parametrize("name", SHIPPED)
def test_promtool_tests_cover_every_alert_both_ways_and_every_record(name: str) -> None:
    doc = promtool_tests_doc(name)
    assert doc["rule_files"] == ["rules.yml"]
    assert doc["group_eval_order"][0] == rules_doc(name)["groups"][0]["name"], "recording rules evaluate first"
    firing: set[str] = set()
    silent: set[str] = set()
    exprs = []
    for group in doc["tests"]:
        for case in group.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else silent).add(case["alertname"])
        exprs += [case["expr"] for case in group.get("promql_expr_test", [])]
    defined = {rule["alert"] for rule in alerts(name)}
    assert defined - firing == set(), "alerts never seen firing in a promtool test"
    assert defined - silent == set(), "alerts never seen silent in a promtool test"
    assert (firing | silent) <= defined, "promtool tests name alerts that do not exist"
    assert records(name) - set(" ".join(exprs).split()) == set(), "recording rules without a promql_expr_test"


@pytest.mark.tools("promtool")
@pytest.mark.parametrize("name", SHIPPED)
def test_promtool_check_rules(name: str) -> None:
    done = subprocess.run(["promtool", "check", "rules", str(profile(name).rules_file)], capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(all_rules(name))} rules found" in done.stdout


@pytest.mark.tools("promtool")
@pytest.mark.parametrize("name", SHIPPED)
def test_promtool_test_rules(name: str) -> None:
    p = profile(name)
    done = subprocess.run(["promtool", "test", "rules", p.rules_test_file.name], cwd=p.rules_test_file.parent,
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0 and "SUCCESS" in done.stdout, done.stdout + done.stderr


# -- runbooks ---------------------------------------------------------------------------------------


@pytest.mark.tools("promtool")  # the runbooks' steps run promtool: the check wants it on PATH
@pytest.mark.parametrize("name", SHIPPED)
def test_runbook_check_passes(name: str) -> None:
    errors = check_runbooks(runbooks(name), rules_file=profile(name).rules_file)
    assert errors == [], "\n".join(str(e) for e in errors)


@pytest.mark.parametrize("name", SHIPPED)
def test_runbook_queries_select_declared_series(name: str) -> None:
    # runbook_check verifies `metric` checks; the promtool queries of the sh steps are checked here.
    known = profile(name).series_names() | records(name) | PROMETHEUS_SERIES
    query = re.compile(r"""promtool query instant "\$PROM" '([^']*)'""")
    for path in runbooks(name):
        for step in parse_runbook(path).steps:
            script = step.command.text if step.command is not None and step.command.kind == "sh" else ""
            for promql in query.findall(script):
                assert not metric_names(promql) - known, f"{path.name} step {step.number}: {promql}"


# -- packaging and layering -------------------------------------------------------------------------


def test_package_data_ships_every_profile_file() -> None:
    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["*"]
    suffixes = {g.removeprefix("**/*") for g in globs}
    files = [p for p in (REPO / "experiments" / "systems").rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert files and all(p.suffix in suffixes for p in files), sorted(p.name for p in files if p.suffix not in suffixes)


def test_profile_module_imports_only_the_bottom_layer() -> None:
    tree = ast.parse(Path(profile_module.__file__).read_text())
    modules = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    modules += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    ours = {m for m in modules if m.startswith("faultdrill")}
    assert ours <= {"faultdrill.faults.errors", "faultdrill.faults.inputlimits"}, ours


# -- a broken profile is a located error --------------------------------------------------------------

GOOD = (SYSTEMS_DIR / "triton" / PROFILE_FILE).read_text()


def write(tmp_path: Path, text: str) -> Path:
    folder = tmp_path / "my-server"
    folder.mkdir(exist_ok=True)
    path = folder / PROFILE_FILE
    path.write_text(text)
    return path


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), start=1) if needle in line)


def error(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_profile(path)
    return info.value


def test_a_copy_of_a_shipped_profile_loads_from_its_folder(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    assert load_profile(path.parent).file == path.resolve()
    assert load_profile(str(path)).rules_file == path.parent / "rules.yml"
    assert profile_path(path.parent) == path


def test_unknown_key_names_file_line_field_and_a_suggestion(tmp_path: Path) -> None:
    text = GOOD.replace("    queue_size:\n", "    queue_sise:\n")
    err = error(write(tmp_path, text))
    assert err.file is not None and err.file.endswith("my-server/profile.yaml")
    assert err.line == line_of(text, "queue_sise:") and err.column == 5
    assert err.field == "metrics.series.queue_sise"
    assert err.suggestion == "queue_size" and "unknown key 'queue_sise'" in err.message
    assert str(err).startswith(f"{err.file}:{err.line}:5: metrics.series.queue_sise: unknown key")


def test_wrong_value_points_at_the_value(tmp_path: Path) -> None:
    text = GOOD.replace("  metrics: 8002\n", "  metrics: eighty\n")
    err = error(write(tmp_path, text))
    assert (err.line, err.column, err.field) == (line_of(text, "metrics: eighty"), 12, "ports.metrics")


def test_unknown_protocol_and_metric_type_suggest_the_closest(tmp_path: Path) -> None:
    text = GOOD.replace("protocol: oip_v2", "protocol: oip-v2").replace("type: gauge", "type: gauges", 1)
    errors = check_profile(write(tmp_path, text))
    assert [e.field for e in errors] == ["protocol", "metrics.series.queue_size.type"]
    assert [e.suggestion for e in errors] == ["oip_v2", "gauge"]
    assert errors[0].line == line_of(text, "protocol: oip-v2")


def test_missing_required_key_is_located_at_its_mapping(tmp_path: Path) -> None:
    text = GOOD.replace("  job: triton\n", "")
    err = error(write(tmp_path, text))
    assert err.field == "metrics.job" and "missing required key 'job'" in err.message
    assert err.line == text.splitlines().index("metrics:") + 1 and err.column == 1


def test_bad_names_and_paths_say_what_is_expected(tmp_path: Path) -> None:
    for old, new, fld, expected in (
        ("name: nv_gpu_utilization", "name: nv-gpu-utilization", "metrics.series.gpu_utilization.name",
         "a Prometheus metric name"),
        ("liveness: /v2/health/live", "liveness: v2/health/live", "health.liveness", "an HTTP path"),
        ("source: https://github.com/triton-inference-server/server/blob/e1db8a603d863b1317ee859bdeea2be19959462e/src",
         "source: http://example.com/src", "health.source", "an https:// URL"),
    ):  # fmt: skip
        text = GOOD.replace(old, new, 1)
        err = error(write(tmp_path, text))
        assert (err.field, err.line) == (fld, line_of(text, new)), str(err)
        assert err.expected is not None and err.expected.startswith(expected), str(err)


def test_model_ready_must_name_the_model(tmp_path: Path) -> None:
    err = error(write(tmp_path, GOOD.replace("model_ready: /v2/models/{model}/ready", "model_ready: /v2/ready")))
    assert err.field == "health.model_ready" and "{model}" in err.message
    err = error(write(tmp_path, GOOD.replace("/v2/models/{model}/ready", "/v2/models/{name}/ready")))
    assert "unknown placeholder {name}" in err.message


def test_whole_profile_problems_point_at_their_field(tmp_path: Path) -> None:
    text = GOOD.replace("  liveness: /v2/health/live\n", "  liveness: {path: /v2/health/live, port: management}\n")
    err = error(write(tmp_path, text))
    assert "ports.management is not set" in err.message
    assert (err.field, err.line) == ("health.liveness", line_of(text, "port: management"))
    text = GOOD.replace("protocol: oip_v2\n", "protocol: oip_v2\nother_protocols: [openai, oip_v2]\n")
    err = error(write(tmp_path, text))
    assert (err.field, err.line, err.column) == ("other_protocols[1]", line_of(text, "other_protocols"), 27)


def test_a_bad_key_of_other_series_points_at_the_key(tmp_path: Path) -> None:
    text = GOOD.replace("      request_latency_summary:\n", "      request-latency:\n")
    err = error(write(tmp_path, text))
    where = ("metrics.series.other.request-latency", line_of(text, "request-latency"), 7)
    assert (err.field, err.line, err.column) == where
    assert err.expected is not None and "label name" in err.expected


def test_yaml_problems_are_located(tmp_path: Path) -> None:
    err = error(write(tmp_path, "name: x\nserver: [unclosed\n"))
    assert err.file is not None and err.line == 3 and "not valid YAML" in err.message
    err = error(write(tmp_path, "name: x\nname: y\n"))
    assert (err.line, err.column) == (2, 1) and "appears twice" in err.message
    err = error(write(tmp_path, ""))
    assert (err.line, err.message) == (1, "empty file")
    err = error(write(tmp_path, "- a list\n"))
    assert "the document is a list" in err.message and err.line == 1
    err = error(write(tmp_path, "a: &a [*a]\n"))
    assert err.file is not None and err.line == 1


def test_files_that_cannot_be_read_are_config_errors(tmp_path: Path) -> None:
    err = error(tmp_path / "missing.yaml")
    assert err.file is not None and "cannot read the profile" in err.message
    big = write(tmp_path, "# " + "x" * (2 << 20))
    assert "too large" in error(big).message
    (tmp_path / "bin.yaml").write_bytes(b"name: \xff\n")
    assert "not UTF-8" in error(tmp_path / "bin.yaml").message


def test_unknown_shipped_name_suggests_the_closest() -> None:
    with pytest.raises(ConfigError) as info:
        load_profile("trition")
    assert info.value.suggestion == "triton" and "unknown profile 'trition'" in str(info.value)
    assert check_profile("nothing-like-it")[0].field == "profile"


def test_every_problem_is_reported_in_file_order(tmp_path: Path) -> None:
    text = GOOD.replace("protocol: oip_v2", "protocol: grpc").replace("  http: 8000\n", "  http: 0\n")
    text = text.replace("    request_success:\n", "    request_sucess:\n")
    errors = check_profile(write(tmp_path, text))
    assert [e.field for e in errors] == ["protocol", "ports.http", "metrics.series.request_sucess"]
    assert [e.line for e in errors] == sorted(e.line or 0 for e in errors)


def _bomb(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join([*lines, f"top: *a{levels - 1}"]) + "\n"


HOSTILE: dict[str, Callable[[Path], object]] = {
    "alias_bomb": lambda p: p.write_text(_bomb()),
    "nested_brackets": lambda p: p.write_text("[" * 2000 + "]" * 2000 + "\n"),
    "nested_braces": lambda p: p.write_text("{a: " * 2000 + "}" * 2000 + "\n"),
    "many_nodes": lambda p: p.write_text("[" + ",".join(["0"] * 150_000) + "]\n"),
    "binary_garbage": lambda p: p.write_bytes(random.Random(7).randbytes(8192)),
    "python_tag": lambda p: p.write_text("name: !!python/object/apply:os.system ['echo pwned']\n"),
    "directory": lambda p: p.mkdir(),
    "fifo": lambda p: os.mkfifo(p),
    "device": lambda p: p.symlink_to("/dev/zero"),
}


@pytest.mark.parametrize("item", list(HOSTILE))
def test_hostile_files_are_one_located_error_fast(item: str, tmp_path: Path) -> None:
    path = tmp_path / f"{item}.yaml"
    HOSTILE[item](path)
    started = time.monotonic()
    errors = check_profile(path)
    assert time.monotonic() - started < 5
    assert len(errors) == 1 and isinstance(errors[0], ConfigError), errors
    assert errors[0].file is not None and errors[0].file.startswith(str(path)), str(errors[0])
