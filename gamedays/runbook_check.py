"""Static validation of runbooks: everything that can be known without running them.

:func:`check_runbooks` returns every problem as a located :class:`ConfigError`
(``file:line: field: message (did you mean …?)``):

- syntax (from :func:`~gamedays.runbook.parse_runbook_text`): title, ``## Steps``, step
  numbering, two command blocks, unknown block language, unknown action, wrong arity, bad
  durations, malformed checks;
- an ``sh`` program that is not on PATH (the first word of each command, after variables);
- an alert (``Alerts:`` line or ``alert`` check) that the rules file does not define;
- a metric name in a ``metric`` check that nothing exports: the target's and the feature
  store's exposition, the kube-state-metrics/cAdvisor names of the platform exporter,
  Prometheus' own series and the rules file's recording rules;
- an unknown ``$VARIABLE`` (see :data:`~gamedays.runbook.VARIABLES`);
- an action the platform does not support (``scale`` without :class:`~gamedays.actions.Scalable`;
  any platform action on ``standalone``);
- an ``output`` check in a step without a command;
- for the rules file: an alert whose ``runbook_url`` names a missing file, or a runbook whose
  ``Alerts:`` line does not list an alert that points at it.

Example::

    errors = check_runbooks(runbook_files(Path("gamedays/runbooks")), rules_file=Path(DEFAULT_RULES))
    for err in errors:
        print(err)      # gamedays/runbooks/gpu-memory.md:31: steps[3].expect[0]: unknown alert …
"""

from __future__ import annotations

import difflib
import importlib
import re
import shlex
import shutil
from collections.abc import Iterable
from functools import cache
from pathlib import Path

import yaml

from faultdrill.experiments.platforms.local.dcgm import DCGM_SERIES
from faultdrill.experiments.spec.rules import alert_rules
from faultdrill.faults.errors import ConfigError
from faultdrill.faults.inputlimits import load_yaml, read_text
from faultdrill.gamedays.actions import ACTIONS
from faultdrill.gamedays.checks import AlertCheck, MetricCheck, OutputCheck
from faultdrill.gamedays.runbook import SHELL_VARIABLES, VARIABLES, Runbook, parse_runbook_text, variables_in

__all__ = ["PLATFORMS", "PROMQL_WORDS", "check_runbooks", "known_metrics", "metric_names"]

PLATFORMS: dict[str, str | None] = {"local": "faultdrill.experiments.platforms.local.platform:LocalPlatform",
                                    "standalone": None}
"""Platform name → the class a run uses (None: no platform, as ``faultdrill runbook run``)."""

PLATFORM_METRICS = frozenset({
    "kube_pod_container_status_restarts_total", "kube_pod_container_status_last_terminated_reason",
    "kube_pod_container_status_waiting_reason", "kube_pod_container_status_running", "kube_pod_status_ready",
    "container_memory_working_set_bytes", "container_spec_memory_limit_bytes",
})  # fmt: skip
"""kube-state-metrics and cAdvisor series the rules read (served locally by the platform exporter)."""
DCGM_METRICS = DCGM_SERIES
"""dcgm-exporter's series the GPU-health rules read (served locally by the platform exporter: ``dcgm.py``)."""
PROMETHEUS_SERIES = frozenset({"up", "ALERTS", "ALERTS_FOR_STATE", "scrape_duration_seconds", "scrape_samples_scraped"})

PROMQL_WORDS = frozenset({
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk",
    "quantile", "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "offset",
    "bool", "atan2", "inf", "nan", "abs", "absent", "absent_over_time", "ceil", "changes", "clamp", "clamp_max",
    "clamp_min", "day_of_month", "day_of_week", "day_of_year", "days_in_month", "delta", "deriv", "exp",
    "floor", "histogram_quantile", "holt_winters", "hour", "idelta", "increase", "irate", "label_join",
    "label_replace", "ln", "log2", "log10", "minute", "month", "predict_linear", "rate", "resets", "round",
    "scalar", "sgn", "sort", "sort_desc", "sqrt", "time", "timestamp", "vector", "year", "avg_over_time",
    "min_over_time", "max_over_time", "sum_over_time", "count_over_time", "quantile_over_time",
    "stddev_over_time", "stdvar_over_time", "last_over_time", "present_over_time",
})  # fmt: skip
_STRIP = [re.compile(p) for p in (
    r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', r"\{[^{}]*\}", r"\[[^\[\]]*\]",
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", r"(?i)\boffset\s+-?\w+",
    r"\$\{?[A-Za-z_]\w*\}?", r"(?<![\w:])(?:\d+\.?\d*(?:e[+-]?\d+)?|\.\d+)",
)]  # fmt: skip
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_SHELL_WORDS = frozenset({
    "if", "then", "else", "elif", "fi", "for", "while", "until", "do", "done", "case", "esac", "in", "function",
    "!", "{", "}", "cd", "export", "set", "unset", "exit", "return", "read", "local", "eval", "exec", "source",
    ".", ":", "shift", "wait", "trap", "alias", "type", "command", "builtin", "test", "[", "[[", "echo",
    "printf", "true", "false", "ulimit", "umask",
})  # fmt: skip
_OPERATORS = frozenset({"|", "||", "&&", ";", "&", "(", ")", ";;", "|&"})


def metric_names(query: str) -> set[str]:
    """Metric names a PromQL expression selects (functions, keywords, labels, variables left out)."""
    for pattern in _STRIP:
        query = pattern.sub(" ", query)
    return {w for w in _IDENT.findall(query) if w not in PROMQL_WORDS}


def _exposed(registry: object) -> set[str]:
    suffixes = {
        "counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("_sum", "_count", "_created"), "info": ("_info",), "gauge": ("",), "unknown": ("",),
    }  # fmt: skip
    return {f.name + s for f in registry.collect() for s in suffixes.get(f.type, ("",))}  # type: ignore[attr-defined]


@cache
def _exposition() -> frozenset[str]:
    from prometheus_client import CollectorRegistry

    from faultdrill.target_service.config import FeatureStoreSettings
    from faultdrill.target_service.feature_store import create_feature_store_app
    from faultdrill.target_service.metrics import TargetMetrics

    target, store = CollectorRegistry(), CollectorRegistry()
    TargetMetrics(target, model="digits")
    create_feature_store_app(FeatureStoreSettings(), store)
    return frozenset(_exposed(target) | _exposed(store))


def known_metrics(rules_file: Path, served: frozenset[str] | None = None) -> frozenset[str]:
    """Every series a metric check may select, given the rules file (its recording rules).

    ``served``: what the system under test exposes (a profile's series names); None is the bundled target and
    feature store, with the platform exporter's series."""
    records = {str(rule["record"]) for _no, rule in _rules(rules_file) if isinstance(rule.get("record"), str)}
    own = _exposition() | PLATFORM_METRICS | DCGM_METRICS if served is None else served
    return own | PROMETHEUS_SERIES | frozenset(records)


def _rules(rules_file: Path) -> tuple[tuple[int, dict[str, object]], ...]:
    """(line of the rule, rule) for every rule of the file (line: its ``- alert:``/``- record:`` line)."""
    stat = rules_file.stat()
    return _rules_cached(str(rules_file.resolve()), stat.st_mtime_ns, stat.st_size)


@cache
def _rules_cached(path: str, _mtime_ns: int, _size: int) -> tuple[tuple[int, dict[str, object]], ...]:
    # Keyed on mtime and size: a check of 30 runbooks reads a 500-line rules file once, not 90 times.
    # Bounded (faults.inputlimits): a rules file over the size, depth or node limits is a located ConfigError.
    text = read_text(path, what="rules file")
    doc = load_yaml(text, path, prefix="alert rules are not valid YAML") or {}
    lines = text.splitlines()
    found: list[tuple[int, dict[str, object]]] = []
    cursor = 0
    for group in doc.get("groups") or []:
        for rule in (group or {}).get("rules") or []:
            if not isinstance(rule, dict):
                continue
            key = "alert" if "alert" in rule else "record"
            pattern = re.compile(rf"^\s*-?\s*{key}:\s*['\"]?{re.escape(str(rule.get(key)))}['\"]?\s*$")
            for i in range(cursor, len(lines)):
                if pattern.match(lines[i]):
                    cursor = i + 1
                    break
            found.append((cursor, rule))
    return tuple(found)


def _alerts(rules_file: Path) -> dict[str, dict[str, str]]:
    """Alert name → labels; a missing or malformed file is the located ConfigError of ``alert_rules``."""
    try:
        rules = _rules(rules_file)
    except (OSError, yaml.YAMLError, AttributeError, TypeError):
        alert_rules(rules_file)  # raises the located error
        raise ConfigError("not a Prometheus rules file", file=str(rules_file), field="groups") from None
    out: dict[str, dict[str, str]] = {}
    for _no, rule in rules:
        if isinstance(name := rule.get("alert"), str):
            labels = rule.get("labels")
            out.setdefault(name, {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {})
    return out


def _platform_class(platform: str) -> type | None:
    if platform not in PLATFORMS:
        close = difflib.get_close_matches(platform, list(PLATFORMS), n=1)
        raise ConfigError(f"unknown platform '{platform}' (known: {', '.join(PLATFORMS)})", field="platform",
                          suggestion=close[0] if close else None)  # fmt: skip
    target = PLATFORMS[platform]
    if target is None:
        return None
    module, _, name = target.partition(":")
    cls: type = getattr(importlib.import_module(module), name)
    return cls


def _supports(cls: type | None, capability: type | None, needs: str) -> bool:
    if needs == "platform" and cls is None:
        return False
    if capability is None:
        return True
    members = [m for m in vars(capability) if not m.startswith("_")]
    return cls is not None and all(callable(getattr(cls, m, None)) for m in members)


def _logical_lines(script: str) -> list[tuple[int, str]]:
    """(offset of its first line, text) of each logical line: ``\\``-continued lines joined."""
    out: list[tuple[int, str]] = []
    start, parts = 0, list[str]()
    for i, line in enumerate(script.splitlines()):
        if not parts:
            start = i
        if line.rstrip().endswith("\\"):
            parts.append(line.rstrip()[:-1])
            continue
        out.append((start, " ".join([*parts, line])))
        parts = []
    if parts:
        out.append((start, " ".join(parts)))
    return out


def _programs(line: str) -> list[str]:
    """The first word of every simple command of one logical shell line (best effort, never raises)."""
    if not line.strip() or line.strip().startswith("#"):
        return []
    try:
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        tokens = list(lexer)
    except ValueError:  # an unbalanced quote (a string spanning lines): look at the first word only
        tokens = line.split()[:1]
    words: list[str] = []
    expect_command = True
    for token in tokens:
        if token in _OPERATORS:
            expect_command = True
        elif expect_command:
            if re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", token):  # VAR=value cmd
                continue
            if token in ("if", "then", "else", "elif", "do", "while", "until", "!", "{", "time"):
                continue
            words.append(token)
            expect_command = False
    return words


def check_runbooks(paths: Iterable[Path], *, rules_file: Path, platform: str = "local",
                   served: frozenset[str] | None = None) -> list[ConfigError]:
    """Every problem of the runbooks at ``paths`` and of the rules' runbook links (see the module docstring).

    ``served``: the series the system under test exposes, for a server other than the bundled target (a profile's
    ``series_names()``); None: the bundled target's."""
    cls = _platform_class(platform)
    try:
        alerts = _alerts(rules_file)
        metrics = known_metrics(rules_file, served)
    except ConfigError as exc:
        return [exc]
    errors: list[ConfigError] = []
    for path in paths:
        path = Path(path)
        try:
            text = read_text(path, what="runbook")  # at most MAX_TEXT_BYTES, UTF-8
        except OSError as exc:
            errors.append(ConfigError(f"cannot read the runbook: {exc.strerror or exc}", file=str(path)))
            continue
        except ConfigError as exc:
            errors.append(exc)
            continue
        runbook, found = parse_runbook_text(text, file=str(path))
        errors.extend(found)
        if runbook is not None:
            errors.extend(_semantic(runbook, alerts, metrics, cls, platform))
    errors.extend(_rule_links(rules_file, alerts))
    return sorted(errors, key=lambda e: (e.file or "", e.line or 0))


def _semantic(rb: Runbook, alerts: dict[str, dict[str, str]], metrics: frozenset[str], cls: type | None,
              platform: str) -> list[ConfigError]:  # fmt: skip
    out: list[ConfigError] = []
    file = str(rb.path)

    def err(line: int | None, message: str, fld: str, choices: Iterable[str] = (), name: str = "") -> None:
        close = difflib.get_close_matches(name, list(choices), n=1) if name else []
        out.append(ConfigError(message, file=file, line=line, field=fld, suggestion=close[0] if close else None))

    for i, name in enumerate(rb.alerts):
        if name not in alerts:
            err(rb.alerts_line, f"unknown alert '{name}' (not in the rules file)", f"alerts[{i}]", alerts, name)
    for step in rb.steps:
        where = f"steps[{step.number}]"
        cmd = step.command
        if cmd is not None:
            allowed = set(VARIABLES) | (SHELL_VARIABLES if cmd.kind == "sh" else set())
            lines = _logical_lines(cmd.text) if cmd.kind == "sh" else [(0, cmd.text)]
            seen: set[str] = set()
            for offset, line in lines:
                for var in variables_in(line):
                    if var not in allowed and var not in seen and (cmd.kind != "sh" or var.isupper()):
                        seen.add(var)
                        err(cmd.line + offset, f"unknown variable ${var} (known: {', '.join(VARIABLES)})",
                            f"{where}.command", VARIABLES, var)  # fmt: skip
                for program in _programs(line) if cmd.kind == "sh" else []:
                    if "$" in program or program in _SHELL_WORDS or program in seen:
                        continue
                    seen.add(program)
                    if not ("/" in program and _path_is(Path(program), "exists")) and shutil.which(program) is None:
                        err(cmd.line + offset, f"program '{program}' is not on PATH", f"{where}.command")
            if cmd.action is not None:
                spec = ACTIONS[cmd.action.name]
                if not _supports(cls, spec.capability, spec.needs):
                    why = (f"it does not implement {spec.capability.__name__}" if spec.capability and cls
                           else "it has no platform to act on")  # fmt: skip
                    err(cmd.line, f"action '{spec.name}' is not supported on platform '{platform}' ({why})",
                        f"{where}.command")  # fmt: skip
        for check in step.checks:
            fld = f"{where}.expect[{check.index}]"
            texts = [getattr(check, f) for f in ("replica", "query", "matchers", "url") if hasattr(check, f)]
            for var in dict.fromkeys(v for t in texts for v in variables_in(t)):
                if var not in VARIABLES:
                    err(check.line, f"unknown variable ${var} (known: {', '.join(VARIABLES)})", fld, VARIABLES, var)
            if isinstance(check, AlertCheck) and check.name not in alerts:
                err(check.line, f"unknown alert '{check.name}' (not in the rules file)", fld, alerts, check.name)
            if isinstance(check, MetricCheck):
                for metric in sorted(metric_names(check.query) - metrics):
                    err(check.line, f"unknown metric '{metric}' (not exported by the target, the feature store, the "
                        "platform exporter or a recording rule)", fld, metrics, metric)  # fmt: skip
            if isinstance(check, OutputCheck) and cmd is None:
                err(check.line, "an output check needs a command in its step", fld)
    return out


def _path_is(path: Path, test: str) -> bool:
    """``path.exists()`` / ``path.is_file()`` that is False, not an exception, for a name the OS refuses
    (too long, a NUL byte): the names come from the files being checked."""
    try:
        return bool(getattr(path, test)())
    except (OSError, ValueError):
        return False


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it is below it (as a person would type it)."""
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _rule_links(rules_file: Path, alerts: dict[str, dict[str, str]]) -> list[ConfigError]:
    """Each alert's runbook_url must name an existing runbook whose Alerts: line lists the alert."""
    out: list[ConfigError] = []
    parsed: dict[Path, Runbook | None] = {}
    bases = [rules_file.resolve().parent, *rules_file.resolve().parents]
    for line, rule in _rules(rules_file):
        name = rule.get("alert")
        if not isinstance(name, str):
            continue
        annotations = rule.get("annotations")
        url = str(annotations.get("runbook_url", "")) if isinstance(annotations, dict) else ""
        if not url:
            out.append(ConfigError(f"alert '{name}' has no runbook_url annotation", file=str(rules_file), line=line,
                                   field=f"{name}.annotations.runbook_url"))  # fmt: skip
            continue
        if re.match(r"^[a-z]+://", url):
            continue  # a URL elsewhere: nothing to check here
        target = next((b / url for b in bases if _path_is(b / url, "is_file")), None)
        if target is None:
            out.append(ConfigError(f"alert '{name}': runbook_url '{url}' names no file", file=str(rules_file),
                                   line=line, field=f"{name}.annotations.runbook_url"))  # fmt: skip
            continue
        if target not in parsed:
            try:
                parsed[target] = parse_runbook_text(read_text(target, what="runbook"), file=str(target))[0]
            except (OSError, ConfigError):
                parsed[target] = None  # unreadable: the runbook check itself reports it when it is checked
        rb = parsed[target]
        if rb is not None and name not in rb.alerts:
            out.append(ConfigError(f"alert '{name}' points here (runbook_url) but the Alerts: line does not list it",
                                   file=_shown(target), line=rb.alerts_line or rb.title_line,
                                   field="alerts"))  # fmt: skip
    return out
