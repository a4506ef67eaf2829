"""No input can hurt: a corpus of hostile files against every reader, in process and through the real CLI.

Each reader (spec, game-day plan and its schedule, runbook, alert rules, Chaos Toolkit experiment,
journal) must answer every file of the corpus with a located ``ConfigError`` naming the file, fast
and in bounded memory; each command must exit 2 with one located line on stderr, never a traceback.
The limits themselves live in ``faults/inputlimits.py``.
"""

from __future__ import annotations

import gzip
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from faultdrill.experiments.chaostoolkit.embed import check_ctk
from faultdrill.experiments.journal import Journal
from faultdrill.experiments.spec.loader import check_experiment, check_experiment_text, load_experiment
from faultdrill.experiments.spec.rules import DEFAULT_RULES, alert_rules
from faultdrill.faults.errors import ConfigError
from faultdrill.faults.inputlimits import (
    MAX_JOURNAL_BYTES,
    MAX_TEXT_BYTES,
    MAX_YAML_DEPTH,
    MAX_YAML_NODES,
    gunzip_bounded,
    load_yaml,
    yaml_loader,
)
from faultdrill.faults.registry import FaultRegistry
from faultdrill.gamedays.plan import check_plan, load_plan
from faultdrill.gamedays.runbook import parse_runbook
from faultdrill.gamedays.runbook_check import check_runbooks
from faultdrill.gamedays.schedule import load_plan_schedule
from faultdrill.reports.source import load_journal

ROOT = Path(__file__).resolve().parents[3]
RULES = ROOT / DEFAULT_RULES
CLI_SECONDS = 20.0  # generous: shared, noisy machines; an alias bomb survived slowly takes minutes
CLI_RSS_BYTES = 500 << 20
LOADER_SECONDS = 5.0


def _bomb(levels: int = 9) -> str:
    """The classic "billion laughs": 10 lines, 9**9 leaves once expanded."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    lines.append(f"top: *a{levels - 1}")
    return "\n".join(lines) + "\n"


def _write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return path


# name → builder(path) writing the hostile thing at ``path`` (or not: "missing").
CORPUS: dict[str, Callable[[Path], object]] = {
    "alias_bomb": lambda p: _write(p, _bomb()),
    "nested_brackets": lambda p: _write(p, "[" * 2000 + "]" * 2000 + "\n"),
    "nested_braces": lambda p: _write(p, "{a: " * 2000 + "}" * 2000 + "\n"),
    "ten_megabytes": lambda p: _write(p, "apiVersion: faultdrill/v1\n# " + "x" * (10 << 20) + "\n"),
    "many_keys": lambda p: _write(p, "".join(f"k{i}: {i}\n" for i in range(200_000))),
    "many_nodes": lambda p: _write(p, "[" + ",".join(["0"] * 150_000) + "]\n"),  # < 1 MiB, > 20,000 nodes
    "binary_garbage": lambda p: _write(p, random.Random(7).randbytes(8192)),
    "invalid_utf8": lambda p: _write(p, b"apiVersion: faultdrill/v1\nkind: \xff\xfe\xc3\x28\n"),
    "python_tag": lambda p: _write(p, "apiVersion: !!python/object/apply:os.system ['echo pwned']\n"),
    "empty": lambda p: _write(p, ""),
    "directory": lambda p: p.mkdir(),
    "missing": lambda p: None,
    "fifo": lambda p: os.mkfifo(p),  # no writer: open() must not wait for one
    "device": lambda p: p.symlink_to("/dev/zero"),  # endless: refused, not read
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hostile")
    out = {}
    for name, build in CORPUS.items():
        path = root / f"{name}.yaml"
        build(path)
        out[name] = path
    return out


@pytest.fixture(scope="module")
def registry() -> FaultRegistry:
    return FaultRegistry.installed()


# -- every reader, in process ---------------------------------------------------------------------------
def _journal_of(path: Path, tmp: Path) -> Path:
    """The corpus entry as a run directory's journal.json (the directory entry: journal.json is one)."""
    run = tmp / f"run-{path.stem}"
    if path.name.startswith("missing"):
        return run  # no such run directory
    run.mkdir(exist_ok=True)
    target = run / "journal.json"
    if target.exists() or target.is_symlink():
        return run
    if path.is_symlink():
        target.symlink_to(os.readlink(path))
    elif path.is_dir():
        target.mkdir()
    else:
        os.link(path, target)
    return run


READERS: dict[str, Callable[[Path, FaultRegistry, Path], object]] = {
    "load_experiment": lambda p, reg, tmp: load_experiment(p, reg),
    "check_experiment": lambda p, reg, tmp: _first(check_experiment(p, reg)),
    "load_plan": lambda p, reg, tmp: load_plan(p, reg),
    "check_plan": lambda p, reg, tmp: _first(check_plan(p, reg)[1]),
    "load_plan_schedule": lambda p, reg, tmp: load_plan_schedule(p),
    "parse_runbook": lambda p, reg, tmp: parse_runbook(p),
    "check_runbooks": lambda p, reg, tmp: _first([e for e in check_runbooks([p], rules_file=RULES)
                                                  if e.file == str(p)]),
    "alert_rules": lambda p, reg, tmp: alert_rules(p),
    "check_ctk": lambda p, reg, tmp: check_ctk(p),
    "Journal.read": lambda p, reg, tmp: Journal.read(p),
    "load_journal": lambda p, reg, tmp: load_journal(_journal_of(p, tmp)),
}


def _first(errors: list[ConfigError]) -> None:
    assert errors, "expected at least one located error"
    assert all(isinstance(e, ConfigError) for e in errors)
    raise errors[0]


@pytest.mark.parametrize("reader", list(READERS))
@pytest.mark.parametrize("item", list(CORPUS))
def test_every_reader_refuses_every_hostile_file_with_a_located_error(
    reader: str, item: str, corpus: dict[str, Path], registry: FaultRegistry, tmp_path: Path
) -> None:
    path = corpus[item]
    t0 = time.monotonic()
    with pytest.raises(ConfigError) as info:
        READERS[reader](path, registry, tmp_path)
    elapsed = time.monotonic() - t0
    err = info.value
    where = tmp_path if reader == "load_journal" else path.parent  # journals are read from run directories
    assert err.file is not None and str(err.file).startswith(str(where)), str(err)
    assert "\n" not in str(err) and len(str(err)) < 1000, str(err)
    assert elapsed < LOADER_SECONDS, f"{reader} took {elapsed:.1f}s on {item}"


def test_the_errors_say_which_limit(corpus: dict[str, Path], registry: FaultRegistry) -> None:
    def err(item: str) -> str:
        with pytest.raises(ConfigError) as info:
            load_experiment(corpus[item], registry)
        return str(info.value)

    assert re.match(rf"{re.escape(str(corpus['alias_bomb']))}:\d+:\d+: a\d\[\d\]: more than 20,000 YAML nodes",
                    err("alias_bomb"))  # fmt: skip
    assert "nested more than 64 levels deep" in err("nested_braces")
    assert "exceeded maximum nesting depth" in err("nested_brackets")  # libyaml's own limit (1,000) comes first
    assert "YAML file is too large (10.0 MiB) (expected at most 1 MiB" in err("ten_megabytes")
    assert "too large" in err("many_keys")
    assert "more than 20,000 YAML nodes" in err("many_nodes")
    assert "not UTF-8 text" in err("binary_garbage") and ":2:7: not UTF-8 text" in err("invalid_utf8")
    assert "could not determine a constructor for the tag 'tag:yaml.org,2002:python/object" in err("python_tag")
    assert "empty file" in err("empty")
    assert "cannot read: Is a directory" in err("directory")
    assert "cannot read: No such file or directory" in err("missing")
    assert "empty file" in err("fifo")
    assert "not a regular file (a device or socket)" in err("device")


# -- the limits themselves --------------------------------------------------------------------------------
def test_limits_are_the_documented_ones() -> None:
    assert (MAX_TEXT_BYTES, MAX_YAML_DEPTH, MAX_YAML_NODES, MAX_JOURNAL_BYTES) == (1 << 20, 64, 20_000, 512 << 20)
    docs = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    assert "Input limits" in docs and "faults/inputlimits.py" in docs


def test_documents_within_the_limits_load_and_keep_their_positions() -> None:
    deep = "a: " + "[" * (MAX_YAML_DEPTH - 1) + "1" + "]" * (MAX_YAML_DEPTH - 1) + "\n"  # the 1 is level 64
    value, levels = load_yaml(deep, "deep.yaml")["a"], 1
    while isinstance(value, list):
        value, levels = value[0], levels + 1
    assert (value, levels) == (1, MAX_YAML_DEPTH)
    with pytest.raises(ConfigError, match="nested more than 64 levels deep"):
        load_yaml("a: " + "[" * MAX_YAML_DEPTH + "1" + "]" * MAX_YAML_DEPTH, "deeper.yaml")
    many = "[" + ", ".join(["0"] * (MAX_YAML_NODES - 1)) + "]"  # the sequence and its items: exactly the limit
    assert len(load_yaml(many, "many.yaml")) == MAX_YAML_NODES - 1
    with pytest.raises(ConfigError, match="more than 20,000 YAML nodes"):
        load_yaml("[" + ", ".join(["0"] * MAX_YAML_NODES) + "]", "more.yaml")
    loader = yaml_loader("x: &a {b: [1, 2]}\ny: *a\n", "m.yaml")
    node = loader.get_single_node()
    assert node is not None and node.value[1][0].start_mark.line == 1 and node.value[0][1].start_mark.column == 3
    assert loader.construct_document(node) == {"x": {"b": [1, 2]}, "y": {"b": [1, 2]}}


def test_aliases_are_charged_per_use_and_in_depth() -> None:
    # A small anchor used many times is fine; the same anchor used enough times to pass the limit is not.
    anchor = "base: &b [" + ", ".join(["1"] * 99) + "]\n"  # 100 nodes
    uses = "\n".join(f"u{i}: *b" for i in range(150))  # 150 × 100 + 300 keys and values < 20,000
    assert len(load_yaml(anchor + uses, "ok.yaml")) == 151
    with pytest.raises(ConfigError, match=r"u\d+: more than 20,000 YAML nodes") as info:
        load_yaml(anchor + "\n".join(f"u{i}: *b" for i in range(250)), "bomb.yaml")
    assert info.value.line is not None and info.value.line > 150
    chain = "".join(f"l{i}: &l{i} [[[[[[[[{'*l' + str(i - 1) if i else 1}]]]]]]]]\n" for i in range(9))  # 8 deep each
    with pytest.raises(ConfigError, match="nested more than 64 levels deep"):
        load_yaml(chain, "chain.yaml")  # line i is 9 deep as written, 9 + 8·i with its alias expanded: l7 is 65
    with pytest.raises(ConfigError, match=r"alias \*a is used inside its own anchor"):
        load_yaml("a: &a [1, *a]\n", "cycle.yaml")
    with pytest.raises(ConfigError, match="found undefined alias"):
        load_yaml("a: *nope\n", "undefined.yaml")


def test_huge_model_error_lists_are_capped_fast(registry: FaultRegistry) -> None:
    text = "apiVersion: faultdrill/v1\nkind: Experiment\nmetadata: {name: t}\n" + "".join(
        f"k{i}: {i}\n" for i in range(9000))  # fmt: skip
    t0 = time.monotonic()
    errors = check_experiment_text(text, file="keys.yaml", registry=registry)
    assert time.monotonic() - t0 < LOADER_SECONDS
    assert len(errors) == 51 and "… and 8950 more problems from here on" in str(errors[-1])
    assert errors[-1].line == 54


def test_big_documents_within_the_limits_stay_fast(tmp_path: Path, registry: FaultRegistry) -> None:
    head = "apiVersion: faultdrill/v1\nkind: Experiment\nmetadata: {name: t}\ntarget: {replicas: 2}\nfaults:\n"
    faults = ["  - {id: f0, type: process_kill, target: replica-0, at: 1s}\n"] + [
        f"  - {{id: f{i}, type: process_kill, target: replica-0, after: f{i - 1}.end}}\n" for i in range(1, 2000)]
    spec = _write(tmp_path / "spec.yaml", head + "".join(faults))  # ~18,000 nodes: just within the limit
    t0 = time.monotonic()
    assert len(load_experiment(spec, registry).faults) == 2000
    scenarios = "".join(f"  - {{experiment: {spec}, name: s{i}}}\n" for i in range(3000))
    plan = _write(tmp_path / "plan.yaml", "apiVersion: faultdrill/v1\nkind: GameDay\nmetadata: {name: t, title: T, "
                  "objective: O}\nroles: {commander: {name: A}, scribe: {name: B}}\nscenarios:\n" + scenarios)
    with pytest.raises(ConfigError, match=r"plan.yaml:6:3: scenarios: List should have at most 50 items"):
        load_plan(plan, registry)  # 3,000 scenarios, each a whole spec to load: refused by the plan's model
    assert time.monotonic() - t0 < 2 * LOADER_SECONDS


def test_gzip_bomb_stops_at_the_limit(tmp_path: Path) -> None:
    bomb = gzip.compress(b"\0" * (8 << 20), compresslevel=9)  # 8 MiB from ~8 KiB
    assert len(bomb) < 64 << 10
    with pytest.raises(ConfigError, match=r"journal is too large once decompressed \(more than 1 MiB\)"):
        gunzip_bounded(bomb, "j.json.gz", limit=1 << 20)
    assert gunzip_bounded(bomb + gzip.compress(b"x"), "j.json.gz", limit=16 << 20) == b"\0" * (8 << 20) + b"x"
    with pytest.raises(EOFError):
        gunzip_bounded(bomb[:-20], "j.json.gz")
    with pytest.raises(OSError):
        gunzip_bounded(b"\x1f\x8bnot gzip at all", "j.json.gz")


def test_journal_specific_hostility(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    deep = tmp_path / "deep"
    deep.mkdir()
    (deep / "journal.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ConfigError, match=r"journal.json:1:\d+: not a journal: nested too deeply"):
        load_journal(deep)
    with pytest.raises(ConfigError, match=r"journal.json:1:\d+: not a journal: nested too deeply"):
        Journal.read(deep / "journal.json")
    huge = tmp_path / "huge"
    huge.mkdir()
    with open(huge / "journal.json", "wb") as fh:  # sparse: refused by its size, never read
        fh.truncate(MAX_JOURNAL_BYTES + 1)
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match=r"journal is too large \(512.0 MiB\) \(expected at most 512 MiB"):
        load_journal(huge)
    with pytest.raises(ConfigError, match="journal is too large"):
        Journal.read(huge / "journal.json")
    assert time.monotonic() - t0 < LOADER_SECONDS
    zipped = tmp_path / "bomb.json.gz"
    zipped.write_bytes(gzip.compress(b" " * (8 << 20), compresslevel=9))  # 8 KiB → 8 MiB
    monkeypatch.setattr("faultdrill.reports.source.MAX_JOURNAL_BYTES", 1 << 20)  # the same code path, a smaller bomb
    with pytest.raises(ConfigError, match=r"journal is too large once decompressed \(more than 1 MiB\)"):
        load_journal(zipped)


def test_chaos_toolkit_files_are_bounded_and_shapes_checked(tmp_path: Path) -> None:
    cases = {"list.json": "[1, 2]", "trunc.json": '{"title":', "deep.json": "[" * 5000 + "]" * 5000,
             "weird.json": '{"title": 5, "description": [], "method": "x"}', "bomb.yaml": _bomb()}  # fmt: skip
    for name, text in cases.items():
        with pytest.raises(ConfigError) as info:
            check_ctk(_write(tmp_path / name, text))
        assert info.value.file == str(tmp_path / name) and "\n" not in str(info.value), str(info.value)


# -- every command, as a process --------------------------------------------------------------------------
# A small wrapper runs the command and reports its peak RSS: a child's ru_maxrss starts at its parent's RSS
# (Linux carries it over exec), so measured straight from pytest it would count pytest's own memory.
_WRAP = ("import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); "
         "sys.stderr.write(f'\\nMAXRSS {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}\\n'); sys.exit(rc)")


def _run_cli(args: list[str], cwd: Path) -> tuple[int, str, float, int]:
    """Run ``faultdrill ARGS``: (exit code, stderr, seconds, peak RSS in bytes of that process)."""
    err = cwd / "cli.err"
    with open(err, "wb") as fe:
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-c", _WRAP, sys.executable, "-m", "faultdrill", *args],
                                stdout=subprocess.DEVNULL, stderr=fe, cwd=cwd, start_new_session=True,
                                env={**os.environ, "COLUMNS": "200"})  # fmt: skip
        killer = threading.Timer(3 * CLI_SECONDS, os.killpg, (proc.pid, signal.SIGKILL))  # a runaway fails below
        killer.start()
        try:
            rc = proc.wait()
        finally:
            killer.cancel()
        elapsed = time.monotonic() - t0
    text = err.read_text(errors="replace")
    found = re.search(r"\nMAXRSS (\d+)\n$", text)
    rss = int(found.group(1)) * 1024 if found else 1 << 62  # ru_maxrss is in KiB on Linux
    return rc, text[: found.start()] if found else text, elapsed, rss


COMMANDS: dict[str, Callable[[Path, Path], list[str]]] = {
    "validate": lambda p, tmp: ["validate", str(p)],
    "export chaostoolkit": lambda p, tmp: ["export", "chaostoolkit", str(p)],
    "gameday validate": lambda p, tmp: ["gameday", "validate", str(p)],
    "gameday schedule": lambda p, tmp: ["gameday", "schedule", str(p)],
    "runbook check": lambda p, tmp: ["runbook", "check", str(p)],
    "alerts list --rules": lambda p, tmp: ["alerts", "list", "--rules", str(p)],
    "alerts check --rules": lambda p, tmp: ["alerts", "check", "--rules", str(p)],
    "report": lambda p, tmp: ["report", str(_journal_of(p, tmp))],
}


@pytest.mark.slow
@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("item", list(CORPUS))
def test_every_command_exits_2_with_one_located_line(command: str, item: str, corpus: dict[str, Path],
                                                     tmp_path: Path) -> None:  # fmt: skip
    path = corpus[item]
    args = COMMANDS[command](path, tmp_path)
    rc, stderr, elapsed, rss = _run_cli(args, tmp_path)
    if command == "runbook check" and item == "directory":
        # A directory is a documented argument of `runbook check` (its runbooks are checked): this one has none.
        assert rc == 0 and "Traceback" not in stderr, stderr
        return
    assert rc == 2, f"{args}: exit {rc}\n{stderr[-3000:]}"
    assert "Traceback" not in stderr, stderr[-3000:]
    named = str(path) if command != "report" else str(_journal_of(path, tmp_path))
    located = [line for line in stderr.splitlines() if named in line]
    assert located, stderr[-3000:]
    assert all(len(line) < 1000 for line in stderr.splitlines()) and len(stderr.splitlines()) <= 60, stderr[-3000:]
    assert elapsed < CLI_SECONDS, f"{args}: {elapsed:.1f}s"
    assert rss < CLI_RSS_BYTES, f"{args}: peak RSS {rss >> 20} MiB"
