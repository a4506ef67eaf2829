"""The runbook format: a good runbook parses into typed steps; each broken file of the corpus
yields exactly its one located error (message and line)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from faultdrill.experiments.spec.rules import rules_path
from faultdrill.faults.errors import ConfigError
from faultdrill.gamedays import actions, checks, runbook, runbook_check, runbook_run
from faultdrill.gamedays.checks import AlertCheck, HttpCheck, MetricCheck, OutputCheck, ProbeCheck
from faultdrill.gamedays.runbook import parse_runbook, parse_runbook_text, runbook_files, variables_in
from faultdrill.gamedays.runbook_check import check_runbooks

ROOT = Path(__file__).resolve().parents[3]
CORPUS = ROOT / "tests" / "fixtures" / "broken_runbooks"
BROKEN = sorted(CORPUS.glob("*.md"))
RULES = rules_path("default", spec_file=None)
_EXPECT = re.compile(r"^<!-- expect: (?P<rules>rules:)?(?P<line>\d+): (?P<fragment>.+) -->$")

GOOD = """# GPU memory exhaustion

Alerts: `InferenceGPUMemoryPressure`, `InferenceCUDAOOM`

What it means, in prose.

## Symptoms

```text
any block is fine outside the steps
```

## Steps

### 1. See how full the device is

Prose of the step.

```sh
curl -sS "$REPLICA_URL/metrics" \\
  | grep gpu_memory
```

```expect
output contains "gpu_memory_used_bytes"
metric max(gpu_memory_used_bytes{pod="$REPLICA"} / gpu_memory_total_bytes{pod="$REPLICA"}) > 0.9
```

### 2. Release it
```faultdrill
release-device-memory $REPLICA
```
```expect
# a comment line is not a check
probe readiness $REPLICA is true within 30s
alert InferenceGPUMemoryPressure{pod="$REPLICA"} resolved within 2m
http GET $TARGET/v2/health/ready status 200
```

### 3. Tell the channel

No command: a person does it.

## Escalation

Page the model owners.
"""


def test_a_good_runbook_parses_into_typed_steps() -> None:
    rb, errors = parse_runbook_text(GOOD, file="gpu.md")
    assert errors == [] and rb is not None
    assert rb.title == "GPU memory exhaustion" and rb.name == "gpu"
    assert rb.alerts == ("InferenceGPUMemoryPressure", "InferenceCUDAOOM") and rb.alerts_line == 3
    assert "What it means" in rb.prose
    assert [(s.number, s.title, s.line) for s in rb.steps] == [
        (1, "See how full the device is", 15), (2, "Release it", 29), (3, "Tell the channel", 40)]
    one, two, three = rb.steps
    assert one.command is not None and one.command.kind == "sh" and one.command.line == 20
    assert one.command.text.splitlines()[1].strip() == "| grep gpu_memory"
    assert "Prose of the step." in one.prose and "curl" not in one.prose
    assert [type(c) for c in one.checks] == [OutputCheck, MetricCheck]
    metric = one.checks[1]
    assert isinstance(metric, MetricCheck) and metric.op == ">" and metric.threshold == 0.9 and metric.line == 26
    assert metric.query.startswith("max(gpu_memory_used_bytes") and metric.within_s == 0
    assert two.command is not None and two.command.action is not None
    assert two.command.action.name == "release-device-memory" and two.command.action.args == ("$REPLICA",)
    probe, alert, http = two.checks
    assert isinstance(probe, ProbeCheck) and probe.expected is True and probe.within_s == 30 and probe.index == 0
    assert isinstance(alert, AlertCheck) and alert.matchers == 'pod="$REPLICA"' and alert.state == "resolved"
    assert alert.within_s == 120
    assert isinstance(http, HttpCheck) and http.status == 200 and http.url == "$TARGET/v2/health/ready"
    assert three.command is None and three.checks == () and "a person does it" in three.prose


def test_parse_runbook_reads_a_file_and_raises_the_first_error(tmp_path: Path) -> None:
    path = tmp_path / "rb.md"
    path.write_text(GOOD)
    assert parse_runbook(path).steps[1].title == "Release it"
    path.write_text(GOOD.replace("### 2. Release it", "### 4. Release it"))
    with pytest.raises(ConfigError) as info:
        parse_runbook(path)
    assert str(info.value).startswith(f"{path}:29: steps[4]: step numbered 4, expected 2")
    with pytest.raises(ConfigError, match="cannot read the runbook"):
        parse_runbook(tmp_path / "missing.md")


def test_headings_inside_code_blocks_are_not_steps() -> None:
    text = "# T\n\n## Steps\n\n### 1. Look\n```sh\necho '### 2. not a step'\n# a shell comment\n```\n"
    rb, errors = parse_runbook_text(text, file="t.md")
    assert errors == [] and rb is not None and len(rb.steps) == 1
    assert rb.steps[0].command is not None and "# a shell comment" in rb.steps[0].command.text


def test_variables_are_found_in_both_spellings() -> None:
    assert variables_in('curl "$REPLICA_URL/x" ${PROM} $$ $1') == ["REPLICA_URL", "PROM"]


def test_the_corpus_has_one_file_per_kind_of_error() -> None:
    assert len(BROKEN) >= 30
    fragments = [_expected(p)[2] for p in BROKEN]
    assert len(set(fragments)) == len(fragments)


def _expected(path: Path) -> tuple[bool, int, str]:
    m = _EXPECT.match(path.read_text(encoding="utf-8").splitlines()[0])
    assert m, f"{path.name}: the first line must be '<!-- expect: [rules:]LINE: FRAGMENT -->'"
    return bool(m.group("rules")), int(m.group("line")), m.group("fragment")


@pytest.mark.parametrize("path", BROKEN, ids=[p.stem for p in BROKEN])
def test_every_broken_runbook_yields_exactly_its_error(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    in_rules, line, fragment = _expected(path)
    companion = path.with_suffix(".rules.yml")
    rules = companion if companion.exists() else RULES
    errors = check_runbooks([path.relative_to(ROOT)], rules_file=rules.relative_to(ROOT) if companion.exists()
                            else rules)  # fmt: skip
    assert len(errors) == 1, "\n".join(map(str, errors))
    err = errors[0]
    assert fragment in err.message or fragment in str(err), str(err)
    assert err.line == line, str(err)
    expected_file = companion.relative_to(ROOT) if in_rules else path.relative_to(ROOT)
    assert err.file == str(expected_file)
    assert str(err).startswith(f"{expected_file}:{line}: ")


def test_parse_errors_of_the_corpus_are_raised_by_parse_runbook() -> None:
    syntax = [p for p in BROKEN if p.stem in ("no_title", "unknown_action", "bad_duration", "step_numbering")]
    for path in syntax:
        with pytest.raises(ConfigError) as info:
            parse_runbook(path)
        assert info.value.line == _expected(path)[1]


def test_runbook_files_skip_the_readme() -> None:
    names = [p.name for p in runbook_files(ROOT / "gamedays" / "runbooks")]
    assert "README.md" not in names and "gpu-memory.md" in names


def test_a_globbed_readme_is_skipped_and_reported_not_checked(tmp_path) -> None:
    """`faultdrill runbook check gamedays/runbooks/*.md` (the README's command): the shell hands over the
    folder's README.md too, which is its index, exactly as a directory argument skips it."""
    (tmp_path / "README.md").write_text("# index\n")
    (tmp_path / "a.md").write_text("# a\n")
    args = sorted(tmp_path.glob("*.md"))
    assert runbook.expand_runbook_args(args) == ([tmp_path / "a.md"], [tmp_path / "README.md"])
    assert runbook.expand_runbook_args([tmp_path]) == ([tmp_path / "a.md"], [])


def test_public_api_is_pinned() -> None:
    assert runbook.__all__ == ["SHELL_VARIABLES", "VARIABLES", "Command", "Runbook", "Step", "expand_runbook_args",
                               "is_index", "parse_runbook", "parse_runbook_text", "runbook_files",
                               "variables_in"]  # fmt: skip
    assert runbook_run.__all__ == ["RunbookEnv", "RunbookResult", "StepResult", "bind_variables", "run_runbook",
                                   "write_result"]  # fmt: skip
    assert runbook_check.__all__ == ["PLATFORMS", "PROMQL_WORDS", "check_runbooks", "known_metrics", "metric_names"]
    assert set(actions.__all__) >= {"RecordingSupervisor", "Scalable", "parse_action", "run_action", "ACTIONS"}
    assert set(checks.__all__) >= {"parse_check", "run_check", "CheckContext", "Check"}
