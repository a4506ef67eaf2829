"""The loader: every broken spec in the corpus gives a located error; good specs load; the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from faultdrill.experiments.spec.loader import (
    check_experiment,
    check_experiment_text,
    load_experiment,
    load_experiment_text,
)
from faultdrill.faults.errors import ConfigError
from faultdrill.faults.fake import FakeFault
from faultdrill.faults.registry import FaultRegistry
from faultdrill.spec_cli import schema_command, validate_command

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
BROKEN = sorted((FIXTURES / "broken_specs").glob("*.yaml"))
GOOD = sorted((FIXTURES / "good_specs").glob("*.yaml"))
MINIMAL = "apiVersion: faultdrill/v1\nkind: Experiment\nmetadata: {name: t}\n"


@pytest.fixture(scope="module")
def registry() -> FaultRegistry:
    reg = FaultRegistry()
    reg.load_entry_points()
    return reg


def _expected_fragment(path: Path) -> str:
    first = path.read_text(encoding="utf-8").split("\n", 1)[0]
    assert first.startswith("# expect: "), f"{path.name}: first line must be '# expect: <fragment>'"
    return first.removeprefix("# expect: ")


def test_the_corpus_is_big_enough() -> None:
    assert len(BROKEN) >= 30 and len(GOOD) >= 3


@pytest.mark.parametrize("path", BROKEN, ids=[p.stem for p in BROKEN])
def test_every_broken_spec_gives_a_located_error(path: Path, registry: FaultRegistry) -> None:
    with pytest.raises(ConfigError) as info:
        load_experiment(path, registry)
    err = info.value
    assert _expected_fragment(path) in str(err)
    assert err.file == str(path) and err.line is not None and err.line >= 1
    assert re.match(rf"{re.escape(str(path))}:\d+(:\d+)?: ", str(err))


@pytest.mark.parametrize("path", GOOD, ids=[p.stem for p in GOOD])
def test_good_specs_load(path: Path, registry: FaultRegistry) -> None:
    exp = load_experiment(path, registry)
    assert exp.api_version == "faultdrill/v1" and check_experiment(path, registry) == []


def test_line_and_column_point_at_the_value(registry: FaultRegistry) -> None:
    text = MINIMAL + "faults:\n  - id: hog\n    type: gpu_memory_exhaution\n    target: replica-0\n"
    err = check_experiment_text(text, file="exp.yaml", registry=registry)[0]
    assert (err.file, err.line, err.column, err.field) == ("exp.yaml", 6, 11, "faults[0].type")
    assert err.suggestion == "gpu_memory_exhaustion"
    assert str(err).startswith("exp.yaml:6:11: faults[0].type: unknown fault 'gpu_memory_exhaution'")
    assert str(err).endswith("(did you mean 'gpu_memory_exhaustion'?)")


def test_unknown_keys_point_at_the_key(registry: FaultRegistry) -> None:
    err = check_experiment_text(MINIMAL + "target:\n  replicas: 2\n  replcas: 3\n", registry=registry)[0]
    assert (err.line, err.column, err.field, err.suggestion) == (6, 3, "target.replcas", "replicas")


def test_all_errors_are_reported_in_order(registry: FaultRegistry) -> None:
    text = MINIMAL + "target: {replicas: 0, device: gpu}\nfaults:\n  - {id: a, type: oom_kil, target: replica-0}\n"
    errors = check_experiment_text(text, registry=registry)
    assert [e.field for e in errors] == ["target.replicas", "target.device", "faults[0].type"]
    assert [e.line for e in errors] == [4, 4, 6]


def test_params_are_checked_by_the_plugin_and_relocated(registry: FaultRegistry) -> None:
    text = MINIMAL + "faults:\n  - id: o\n    type: oom_kill\n    target: replica-0\n    params:\n      mode: leek\n"
    err = check_experiment_text(text, registry=registry)[0]
    assert (err.line, err.field) == (9, "faults[0].params.mode")
    bad_duration = MINIMAL + "faults:\n  - {id: o, type: oom_kill, target: replica-0, duration: 0s}\n"
    err = check_experiment_text(bad_duration, registry=registry)[0]
    assert err.field == "faults[0].duration" and "greater than 0" in str(err)


def test_a_test_registry_with_a_fake_fault() -> None:
    reg = FaultRegistry()
    reg.register(FakeFault, source="test")
    ok = MINIMAL + "faults:\n  - {id: f, type: fake, at: 1s, params: {path: /tmp/x}}\n"
    assert load_experiment_text(ok, registry=reg).faults[0].config_input()["path"] == "/tmp/x"
    aimed = MINIMAL + "faults:\n  - {id: f, type: fake, target: replica-0, params: {path: /tmp/x}}\n"
    assert "takes no target" in str(check_experiment_text(aimed, registry=reg)[0])
    typo = MINIMAL + "faults:\n  - {id: f, type: fake, params: {path: /tmp/x, contnt: y}}\n"
    err = check_experiment_text(typo, registry=reg)[0]
    assert err.suggestion == "content" and err.field == "faults[0].params.contnt" and err.line == 5
    missing = check_experiment_text(MINIMAL + "faults:\n  - {id: f, type: fake}\n", registry=reg)[0]
    assert str(missing) == "<string>:5:5: faults[0].params.path: missing required param 'path'"


def test_file_problems_are_config_errors(tmp_path: Path, registry: FaultRegistry) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_experiment(tmp_path / "missing.yaml", registry)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    assert "not UTF-8" in str(check_experiment(binary, registry)[0])


def test_recursive_anchors_do_not_hang(registry: FaultRegistry) -> None:
    errors = check_experiment_text(MINIMAL + "load: &a {users: *a}\n", registry=registry)
    assert errors and errors[0].line is not None


def _app() -> typer.Typer:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command("validate")(validate_command)
    app.command("schema")(schema_command)
    return app


def test_validate_command_ok_and_exit_2_without_traceback() -> None:
    runner = CliRunner()
    good = runner.invoke(_app(), ["validate", *map(str, GOOD)])
    assert good.exit_code == 0, good.output
    assert f"ok {GOOD[0]} (" in good.stdout and "faults" in good.stdout
    assert "(1 fault, 4 expectations)" in good.stdout
    bad = runner.invoke(_app(), ["validate", str(GOOD[0]), *map(str, BROKEN)])
    assert bad.exit_code == 2
    assert "Traceback" not in bad.output
    assert f"ok {GOOD[0]}" in bad.stdout
    assert "unknown fault 'gpu_memory_exhaution'" in bad.stderr
    assert f"{len(BROKEN)} of {len(BROKEN) + 1} file(s) invalid" in bad.stderr


def test_schema_command_prints_json_schema() -> None:
    result = CliRunner().invoke(_app(), ["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert "faults" in schema["properties"] and schema["$schema"].startswith("https://json-schema.org/")
    help_text = CliRunner().invoke(_app(), ["schema", "--help"]).stdout
    assert "yaml-language-server" in help_text
