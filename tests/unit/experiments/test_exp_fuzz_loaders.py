"""Property-based fuzzing of every loader: whatever the document or the bytes, the only exception is a
``ConfigError`` that names its file — never a traceback-type exception.

Inputs: random YAML documents (recursive dicts/lists/scalars through ``yaml.safe_dump``), the shipped
specs and game-day plans mutated at the data level (a field's value replaced by another type, keys
deleted, unknown keys inserted) and at the byte level (truncated, bytes flipped, bytes inserted), and the
same for runbooks, the alert rules and a journal. Reproducible and bounded: ``derandomize=True``, no
example database, a fixed number of examples per property (the module runs in well under 30 s).
"""

from __future__ import annotations

import copy
import gzip
import json
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from faultdrill.experiments.spec.loader import (
    check_experiment,
    check_experiment_text,
    load_experiment,
    load_experiment_text,
)
from faultdrill.experiments.spec.rules import DEFAULT_RULES, alert_rules
from faultdrill.faults.errors import ConfigError
from faultdrill.faults.registry import FaultRegistry
from faultdrill.gamedays.plan import check_plan
from faultdrill.gamedays.runbook import parse_runbook, parse_runbook_text, runbook_files
from faultdrill.gamedays.schedule import load_plan_schedule
from faultdrill.reports.source import load_journal

ROOT = Path(__file__).resolve().parents[3]
SPECS = sorted((ROOT / "experiments" / "catalog").glob("*.yaml"))
PLANS = sorted((ROOT / "gamedays" / "plans").glob("*.yaml"))
RUNBOOKS = runbook_files(ROOT / "gamedays" / "runbooks")
RULES = ROOT / DEFAULT_RULES
JOURNAL = ROOT / "tests" / "fixtures" / "reports" / "smoke_journal.json.gz"

FUZZ = settings(deadline=None, derandomize=True, database=None, print_blob=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip

# -- strategies --------------------------------------------------------------------------------------------
SCALARS = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
           | st.sampled_from(["", "0s", "-5s", "1e999", "replica-0", "gpu_memory_exhaustion", "faultdrill/v1",
                              "Experiment", "GameDay", "hog.start", "${X}", "~", "null", "yes", "*", "&",
                              # file names the OS or the path code refuse: the spec names files to read
                              "~nosuchuser/x.yaml", "a\x00b.yaml", "x" * 300 + ".yaml", "/", ".", "..",
                              "gamedays/runbooks/gpu-memory.md", "experiments/catalog/smoke.yaml"]))  # fmt: skip
KEYS = st.text(max_size=10) | st.sampled_from(["apiVersion", "kind", "metadata", "name", "faults", "expect",
                                               "target", "id", "type", "params", "duration", "scenarios", "inline",
                                               "roles", "schedule", "groups", "rules", "alert", "<<"])  # fmt: skip
DOCUMENTS = st.recursive(SCALARS, lambda c: st.lists(c, max_size=4) | st.dictionaries(KEYS, c, max_size=4),
                         max_leaves=25)  # fmt: skip


def _paths(doc: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside ``doc`` (dict keys and list indexes)."""
    out = [at]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*at, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*at, i))
    return out


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        doc = doc[part]
    return doc


@st.composite
def mutated_documents(draw: st.DrawFn, base: Any) -> Any:
    """``base`` with 1–4 data-level mutations: replace a value (any type), delete a key, add an unknown key."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["replace", "delete", "insert"]))
        if not path:
            doc = draw(DOCUMENTS) if op == "replace" else doc
            continue
        parent, last = _get(doc, path[:-1]), path[-1]
        if op == "replace":
            parent[last] = draw(DOCUMENTS)
        elif op == "delete":
            del parent[last]
        elif isinstance(parent, dict):
            parent[draw(KEYS)] = draw(DOCUMENTS)
        else:
            parent.insert(draw(st.integers(0, len(parent))), draw(DOCUMENTS))
    return doc


@st.composite
def mutated_bytes(draw: st.DrawFn, base: bytes) -> bytes:
    """``base`` truncated, with bytes flipped and with random bytes inserted."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["truncate", "flip", "insert", "flip"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "truncate":
            del data[at:]
        elif op == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8) | st.sampled_from(
                [b"&a ", b"*a", b"[", b"{", b"\t", b"\n  ", b": ", b"- ", b"!!python/none ", b"\xff", b"---\n"]))
    return bytes(data)


# -- fixtures and the one assertion --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def registry() -> FaultRegistry:
    return FaultRegistry.installed()


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _dump(doc: Any) -> str:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


def _only_config_errors(call: Callable[[], object]) -> object:
    """Run ``call``: it returns, or raises a ConfigError naming a file; returned errors name one too."""
    try:
        result = call()
    except ConfigError as exc:
        assert exc.file, f"a ConfigError without a file: {exc}"
        assert "\n" not in str(exc), f"not one line: {exc!s}"
        return None
    errors = result[1] if isinstance(result, tuple) else result
    for err in errors if isinstance(errors, list) else []:
        assert isinstance(err, ConfigError) and err.file, f"an error without a file: {err}"
        assert "\n" not in str(err), f"not one line: {err!s}"
    return result


def _write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, str):
        content = content.encode("utf-8", errors="surrogatepass")
    path.write_bytes(content)
    return path


# -- experiment specs ------------------------------------------------------------------------------------
@settings(FUZZ, max_examples=120)
@given(doc=DOCUMENTS)
def test_random_documents_as_specs(doc: Any, registry: FaultRegistry) -> None:
    text = _dump(doc)
    _only_config_errors(lambda: check_experiment_text(text, file="fuzz.yaml", registry=registry))
    _only_config_errors(lambda: load_experiment_text(text, file="fuzz.yaml", registry=registry))


SPEC_DOCS = {p.name: yaml.safe_load(p.read_text(encoding="utf-8")) for p in SPECS}


@settings(FUZZ, max_examples=200)
@given(data=st.data())
def test_mutated_shipped_specs(data: st.DataObject, registry: FaultRegistry) -> None:
    name = data.draw(st.sampled_from(sorted(SPEC_DOCS)))
    text = _dump(data.draw(mutated_documents(SPEC_DOCS[name])))
    _only_config_errors(lambda: check_experiment_text(text, file=name, registry=registry))
    _only_config_errors(lambda: load_experiment_text(text, file=name, registry=registry))


@settings(FUZZ, max_examples=150)
@given(data=st.data())
def test_byte_mutated_shipped_specs(data: st.DataObject, registry: FaultRegistry, fuzz_dir: Path) -> None:
    spec = data.draw(st.sampled_from(SPECS))
    path = _write(fuzz_dir / spec.name, data.draw(mutated_bytes(spec.read_bytes())))
    _only_config_errors(lambda: check_experiment(path, registry))
    _only_config_errors(lambda: load_experiment(path, registry))


# -- game-day plans (and their schedule) --------------------------------------------------------------------
PLAN_DOCS = {p.name: yaml.safe_load(p.read_text(encoding="utf-8")) for p in PLANS}


@settings(FUZZ, max_examples=60)
@given(data=st.data())
def test_mutated_shipped_plans(data: st.DataObject, registry: FaultRegistry, fuzz_dir: Path,
                               monkeypatch_cwd: None) -> None:  # fmt: skip
    name = data.draw(st.sampled_from(sorted(PLAN_DOCS)))
    if data.draw(st.booleans()):
        content: str | bytes = _dump(data.draw(mutated_documents(PLAN_DOCS[name])))
    else:
        content = data.draw(mutated_bytes((ROOT / "gamedays" / "plans" / name).read_bytes()))
    path = _write(fuzz_dir / name, content)
    _only_config_errors(lambda: check_plan(path, registry))
    _only_config_errors(lambda: load_plan_schedule(path))


@pytest.fixture(scope="module")
def monkeypatch_cwd() -> Any:
    """Plans name catalog experiments relative to the repository: resolve them from its root."""
    mp = pytest.MonkeyPatch()
    mp.chdir(ROOT)
    yield None
    mp.undo()


# -- runbooks, alert rules, journals -------------------------------------------------------------------------
@settings(FUZZ, max_examples=100)
@given(data=st.data())
def test_mutated_runbooks(data: st.DataObject, fuzz_dir: Path) -> None:
    runbook = data.draw(st.sampled_from(RUNBOOKS))
    raw = data.draw(mutated_bytes(runbook.read_bytes()))
    path = _write(fuzz_dir / runbook.name, raw)
    _only_config_errors(lambda: parse_runbook(path))
    text = raw.decode("utf-8", errors="replace")
    _only_config_errors(lambda: parse_runbook_text(text, file=runbook.name))


RULES_DOC = yaml.safe_load(RULES.read_text(encoding="utf-8"))


@settings(FUZZ, max_examples=80)
@given(data=st.data())
def test_mutated_alert_rules(data: st.DataObject, fuzz_dir: Path) -> None:
    from faultdrill.gamedays.runbook_check import check_runbooks

    if data.draw(st.booleans()):
        content: str | bytes = _dump(data.draw(mutated_documents(RULES_DOC)))
    else:
        content = data.draw(mutated_bytes(RULES.read_bytes()))
    path = _write(fuzz_dir / f"rules-{data.draw(st.integers(0, 10**9))}.yml", content)  # a fresh cache key
    _only_config_errors(lambda: alert_rules(path))
    _only_config_errors(lambda: check_runbooks(RUNBOOKS[:1], rules_file=path, platform="standalone"))


def _small_journal() -> dict[str, Any]:
    doc = json.loads(gzip.decompress(JOURNAL.read_bytes()))
    doc["events"] = doc["events"][:150]
    return doc


JOURNAL_DOC = _small_journal()


@settings(FUZZ, max_examples=80)
@given(data=st.data())
def test_mutated_journals(data: st.DataObject, fuzz_dir: Path) -> None:
    from faultdrill.experiments.journal import Journal

    run = fuzz_dir / "run"
    run.mkdir(exist_ok=True)
    base = json.dumps(JOURNAL_DOC).encode()
    if data.draw(st.booleans()):
        content: str | bytes = json.dumps(data.draw(mutated_documents(JOURNAL_DOC)), allow_nan=True)
    else:
        content = data.draw(mutated_bytes(base))
    path = _write(run / "journal.json", content)
    _only_config_errors(lambda: load_journal(run))
    _only_config_errors(lambda: Journal.read(path))


# -- a handful through the real CLI ------------------------------------------------------------------------
def _variants(seed: int, count: int, sources: list[Path]) -> list[tuple[str, bytes]]:
    """Deterministic byte-mutated copies of ``sources`` (the same mutations as above, without hypothesis)."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        src = sources[i % len(sources)]
        data = bytearray(src.read_bytes())
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(max(len(data), 1))
            op = rng.choice(["truncate", "flip", "insert"])
            if op == "truncate":
                del data[at:]
            elif op == "flip" and data:
                data[at] ^= rng.randrange(1, 256)
            else:
                data[at:at] = rng.choice([b"&a [*a]", b"[[[[", b"\xff\xfe", b"\t", b": : :", b"!!python/none"])
        out.append((f"{i}-{src.name}", bytes(data)))
    return out


@pytest.mark.slow
@pytest.mark.parametrize(("command", "sources"), [(["validate"], SPECS), (["gameday", "validate"], PLANS),
                                                  (["runbook", "check"], RUNBOOKS)])  # fmt: skip
def test_fuzzed_files_through_the_cli_exit_0_or_2(command: list[str], sources: list[Path], tmp_path: Path) -> None:
    files = [_write(tmp_path / name, raw) for name, raw in _variants(len(command) * 7, 8, sources)]
    done = subprocess.run([sys.executable, "-m", "faultdrill", *command, *map(str, files)], capture_output=True,
                          text=True, errors="replace", cwd=ROOT, timeout=120)  # fmt: skip
    assert done.returncode in (0, 2), done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    if done.returncode == 2:
        assert any(str(tmp_path) in line for line in done.stderr.splitlines()), done.stderr
