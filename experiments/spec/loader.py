"""Load an experiment YAML file into an :class:`~experiments.spec.experiment.Experiment`, or say exactly what
is wrong and where: each error is a ``ConfigError`` with file, line, column, field path
(``faults[1].type``), what was expected and a did-you-mean. The YAML is composed, not just
parsed, so every node keeps its position. Checks: YAML syntax, the document's shape, the
spec's models, each fault's type and ``params`` (the plugin's own ``Config``), then references.

Example::

    exp = load_experiment("experiments/catalog/smoke.yaml", registry)
    errors = check_experiment_text(text, file="exp.yaml", registry=registry)  # all of them, by position
    # exp.yaml:12:11: faults[0].type: unknown fault 'gpu_memory_exhaution' (expected one of …)
    #   (did you mean 'gpu_memory_exhaustion'?)
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, TypeAlias, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from faultdrill.experiments.expect import EXPECTATION_KEYS, alert_names
from faultdrill.experiments.spec.experiment import Experiment
from faultdrill.experiments.spec.needs import needs_problems
from faultdrill.experiments.timespec import parse_duration
from faultdrill.faults.errors import ConfigError, PluginError
from faultdrill.faults.inputlimits import MAX_YAML_DEPTH, one_line, read_text, yaml_error, yaml_loader
from faultdrill.faults.registry import FaultRegistry

__all__ = ["Located", "check_experiment", "check_experiment_text", "load_experiment",
           "load_experiment_text", "validate_document"]

_Errors: TypeAlias = list[ConfigError]
MAX_REPORTED_ERRORS = 50
"""Model errors reported per document; a file of thousands of unknown keys gets 50 and a count, quickly."""


def load_experiment(path: str | Path, registry: FaultRegistry | None = None) -> Experiment:
    """Read and validate ``path``; raise the first error as a ``ConfigError``. None = the installed faults."""
    return load_experiment_text(_read(path), file=str(path), registry=registry)


def load_experiment_text(text: str, file: str = "<string>", registry: FaultRegistry | None = None) -> Experiment:
    """Like :func:`load_experiment`, for YAML already in memory."""
    exp, errors = _check(text, file, registry)
    if exp is None:
        raise errors[0]
    return exp


def check_experiment(path: str | Path, registry: FaultRegistry | None = None) -> list[ConfigError]:
    """Every error in ``path`` (empty when it is valid), sorted by position."""
    try:
        return _check(_read(path), str(path), registry)[1]
    except ConfigError as exc:
        return [exc]


def check_experiment_text(text: str, file: str = "<string>", registry: FaultRegistry | None = None) -> _Errors:
    """Every error in ``text`` (empty when it is valid), sorted by position."""
    return _check(text, file, registry)[1]


def _read(path: str | Path) -> str:
    """The file's text: at most ``MAX_TEXT_BYTES``, UTF-8 (``faults.inputlimits``)."""
    try:
        return read_text(path, what="YAML file")
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", file=str(path)) from None


def _check(text: str, file: str, registry: FaultRegistry | None) -> tuple[Experiment | None, list[ConfigError]]:
    try:
        data, marks = _compose(text, file)
        if registry is None:
            registry = FaultRegistry.installed()
    except ConfigError as exc:
        return None, [exc]
    except PluginError as exc:
        return None, [ConfigError(f"fault plugins failed to load: {exc}", file=file)]
    errors, exp = _fault_errors(data, marks, registry), None
    try:
        exp = Experiment.model_validate(data, context=_context(file))
    except ValidationError as exc:
        errors += _config_errors(exc, data, marks)
    if exp is not None and not errors:  # references only make sense in a well-formed document
        problems = exp.reference_problems(registry.target_roles())
        for p in problems or needs_problems(exp, _planned(exp, registry)):  # needs: of services that exist
            errors.append(_located(marks, p.path, p.message, expected=p.expected, suggestion=p.suggestion))
        errors += _alert_errors(exp, file, marks)
    return (exp if not errors else None), sorted(errors, key=lambda e: (e.line or 0, e.column or 0))


def _context(file: str) -> dict[str, str]:
    """What validation may read beyond the document: the spec's folder (``target.service.profile`` paths)."""
    return {} if file.startswith("<") else {"spec_dir": str(Path(file).parent)}


def _planned(exp: Experiment, registry: FaultRegistry) -> list[tuple[int, Any, Any]]:
    """Each fault's plugin and parsed config (already checked by ``_fault_errors``), for the needs check."""
    out = []
    for i, fault in enumerate(exp.faults):
        try:
            plugin = registry.get(fault.type)()
            out.append((i, plugin, plugin.parse_config(fault.config_input())))
        except (ConfigError, PluginError):
            continue
    return out


class Located:
    """A YAML document's positions, for models other than experiments (game-day plans) to locate errors."""

    def __init__(self, marks: _Marks) -> None:
        self._marks = marks

    def error(self, path: tuple[Any, ...], message: str, *, expected: str | None = None,
              suggestion: str | None = None) -> ConfigError:  # fmt: skip
        return _located(self._marks, path, message, expected=expected, suggestion=suggestion)


def validate_document(text: str, file: str, model: type[BaseModel]) -> tuple[Any, Any, Located, list[ConfigError]]:
    """Compose YAML with positions and validate it against ``model``: ``(object | None, raw data,
    positions, located errors)``; YAML syntax errors come back as the single error."""
    try:
        data, marks = _compose(text, file)
    except ConfigError as exc:
        return None, None, Located(_Marks(file)), [exc]
    try:
        return model.model_validate(data, context=_context(file)), data, Located(marks), []
    except ValidationError as exc:
        return None, data, Located(marks), _config_errors(exc, data, marks, model)


def _alert_errors(exp: Experiment, file: str, marks: _Marks) -> _Errors:
    """Alert names in expectations must be alerts of the rules file the run will load."""
    from faultdrill.experiments.spec.rules import alert_rules, rules_path

    wanted = exp.alert_expectations()
    if not wanted:
        return []
    if not exp.alerting.enabled:
        return [_located(marks, ("expect", wanted[0]), "an alert expectation needs alerting, but alerting.enabled "
                         "is false", expected="alerting.enabled: true, or no alert expectations")]  # fmt: skip
    path = rules_path(exp.alerting.rules, spec_file=file, service_rules=exp.service_rules())
    try:
        known = sorted({*alert_rules(path), *(alert_rules(extra) if (extra := exp.platform_rules()) else ())})
    except ConfigError as exc:
        return [_located(marks, ("alerting", "rules"), f"{exc} ({path})", expected="a Prometheus rules file")]
    errors: _Errors = []
    for i in wanted:
        for where, name in alert_names(exp.expect[i]):
            if name not in known:
                errors.append(_located(marks, ("expect", i, *where), f"no alert named '{name}' in {path.name}",
                                       expected=f"an alert of {path} (faultdrill alerts list)",
                                       suggestion=_closest(name, known)))  # fmt: skip
    return errors


def _compose(text: str, file: str) -> tuple[Any, _Marks]:
    """YAML → (plain data, path → mark); syntax errors are located ConfigErrors, and so is a document over
    the limits of ``faults.inputlimits`` (depth, nodes with aliases expanded), refused while it is composed."""
    loader = yaml_loader(text, file)
    try:
        node = loader.get_single_node()
        if node is None:
            raise ConfigError("empty file", file=file, line=1, column=1, expected="apiVersion, kind, metadata, …")
        marks = _Marks(file)
        _walk(node, (), marks, 0)
        data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise yaml_error(exc, file, text=text) from None
    except RecursionError:  # unreachable within the bounds; never a traceback all the same
        raise ConfigError("nested too deeply", file=file, expected=f"at most {MAX_YAML_DEPTH} levels") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise ConfigError(f"the document is {_type_name(data)}", file=file, line=node.start_mark.line + 1,
                          column=node.start_mark.column + 1, expected="a mapping with apiVersion, kind, metadata")
    return data, marks


def _walk(node: yaml.Node, path: tuple[Any, ...], marks: _Marks, depth: int) -> None:
    # Keys are located at the key: where an editor should jump, for "unknown key" too.
    if depth > MAX_YAML_DEPTH:  # composing refuses deeper documents already; a guard for hand-made nodes
        raise ConfigError("nested too deeply (recursive anchor?)", file=marks.file, line=node.start_mark.line + 1)
    marks.setdefault(path, (node.start_mark, node.start_mark))
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, yaml.Mark] = {}
        for key_node, value_node in node.value:
            key, at = (key_node.value if isinstance(key_node, yaml.ScalarNode) else repr(key_node)), key_node.start_mark
            if key in seen and key != "<<":  # PyYAML would silently keep the last one
                raise ConfigError(f"key '{key}' appears twice (first on line {seen[key].line + 1})",
                                  file=marks.file, line=at.line + 1, column=at.column + 1)  # fmt: skip
            seen[key] = marks.setdefault((*path, key), (at, value_node.start_mark))[0]
            _walk(value_node, (*path, key), marks, depth + 1)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, (*path, i), marks, depth + 1)


def _fault_errors(data: dict[str, Any], marks: _Marks, registry: FaultRegistry) -> list[ConfigError]:
    """Each fault's ``type`` is registered and its ``params`` fit the plugin's ``Config`` (on the raw
    data, so a misspelled fault type is reported even when other parts are invalid too)."""
    errors: list[ConfigError] = []
    faults = data.get("faults")
    for i, raw in enumerate(faults if isinstance(faults, list) else []):
        ok = isinstance(raw, dict) and isinstance(raw.get("type"), str) and isinstance(raw.get("target"), str | None)
        if not ok or not isinstance(raw.get("params", {}), dict):
            continue  # the model reports these
        params, target, found = raw.get("params", {}), raw.get("target"), len(errors)
        try:
            cls = registry.get(raw["type"])
        except PluginError as exc:
            errors.append(_located(marks, ("faults", i, "type"), f"unknown fault '{raw['type']}'",
                                   expected="one of " + ", ".join(registry.names()), suggestion=exc.suggestion))
            continue
        for key, home in (("target", "target"), ("duration_s", "duration")):
            if key in params:
                errors.append(_located(marks, ("faults", i, "params", key),
                                       f"'{key}' belongs on the fault, not in params", expected=f"faults[{i}].{home}"))
        fields = cls.Config.model_fields
        if target is None and "target" in fields and fields["target"].is_required():
            errors.append(_located(marks, ("faults", i), f"fault '{cls.name}' needs a 'target'",
                                   expected="a service such as replica-0 or feature-store"))  # fmt: skip
        elif target is not None and "target" not in fields:
            errors.append(_located(marks, ("faults", i, "target"), f"fault '{cls.name}' takes no target"))
        if len(errors) > found:
            continue
        try:  # the spec's ``duration: 15s`` arrives as seconds
            duration = parse_duration(raw.get("duration", 10.0))
            cls().parse_config({**params, "duration_s": duration, **({"target": target} if target else {})})
        except ValueError:
            continue  # an invalid duration is the model's error
        except ConfigError as exc:
            errors.append(_relocate(exc, i, marks, [f for f in fields if f not in ("target", "duration_s")]))
    return errors


def _relocate(exc: ConfigError, index: int, marks: _Marks, names: list[str]) -> ConfigError:
    """A plugin's error names a ``params`` field: point at it in the experiment file."""
    parts: list[Any] = [int(p) if p.isdigit() else p for p in (exc.field or "").split(".") if p]
    tail = {"target": ("target",), "duration_s": ("duration",)}.get(parts[0] if parts else "", ("params", *parts))
    unknown = exc.message.startswith("unknown key")
    message = exc.message.removeprefix("Value error, ")
    message = f"missing required param '{parts[-1]}'" if message == "Field required" and parts else message
    expected = exc.expected or ("one of " + (", ".join(names) or "no params") if unknown else None)
    return _located(marks, ("faults", index, *tail), message, expected=expected, suggestion=exc.suggestion,
                    at_key=unknown)


class _Marks(dict[tuple[Any, ...], tuple[Any, Any]]):
    """Document path (``("faults", 1, "type")``) → YAML marks of its key and its value."""

    def __init__(self, file: str) -> None:
        super().__init__()
        self.file = file

    def find(self, path: tuple[Any, ...], at_key: bool) -> Any:
        # A missing key has no node: fall back to the closest enclosing one.
        found = next((self[path[:end]] for end in range(len(path), -1, -1) if path[:end] in self), None)
        return found[0 if at_key else 1] if found else None


def _field_path(path: tuple[Any, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def _located(marks: _Marks, path: tuple[Any, ...], message: str, *, expected: str | None = None,
             suggestion: str | None = None, at_key: bool = False) -> ConfigError:  # fmt: skip
    mark = marks.find(path, at_key)
    field = _field_path(path)  # user text (keys, values) in an error stays on its one line: one_line
    return ConfigError(one_line(message), file=marks.file, line=mark.line + 1 if mark else None,
                       column=mark.column + 1 if mark else None, field=one_line(field) if field else None,
                       expected=one_line(expected, 600) if expected else None,
                       suggestion=one_line(suggestion) if suggestion else None)  # fmt: skip


def _config_errors(exc: ValidationError, data: Any, marks: _Marks, root: type[BaseModel] = Experiment,
                   ) -> list[ConfigError]:  # fmt: skip
    """Each pydantic error as a located ``ConfigError`` with what was expected and a did-you-mean; past
    ``MAX_REPORTED_ERRORS`` one last error (at the next problem) says how many more there are."""
    out = []
    errs = exc.errors(include_url=False)
    if len(errs) > MAX_REPORTED_ERRORS:
        rest = errs[MAX_REPORTED_ERRORS]
        path = _data_path(data, rest["loc"], False)
        out.append(_located(marks, path, f"… and {len(errs) - MAX_REPORTED_ERRORS} more problems from here on "
                            f"(only the first {MAX_REPORTED_ERRORS} are reported)", at_key=True))  # fmt: skip
    for err in errs[:MAX_REPORTED_ERRORS]:
        kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
        # A model-level error's input is the whole mapping: locate it there, not at a union tag.
        path = _data_path(data, err["loc"], isinstance(value, dict) and kind not in ("missing", "extra_forbidden"))
        expected = suggestion = None
        if kind == "spec_problem":  # a model's own check: it says where below the model, what fits, what is close
            path = (*_data_path(data, err["loc"], isinstance(value, dict)), *ctx.get("where", ()))
            message, expected, suggestion = err["msg"], ctx.get("expected"), ctx.get("suggestion")
        elif kind == "extra_forbidden":
            fields = _fields_at(path[:-1], data, root)
            message, suggestion = f"unknown key '{path[-1]}'", _closest(str(path[-1]), fields)
            expected = "one of " + ", ".join(fields) if fields else None
        elif kind in ("missing", "union_tag_not_found"):
            message = f"missing required key {ctx.get('discriminator') or repr(path[-1])}"
        elif kind in ("literal_error", "union_tag_invalid"):
            expected, shown = str(ctx.get("expected") or ctx.get("expected_tags")), ctx.get("tag", value)
            message = f"unknown value {shown!r}"
            suggestion = _closest(str(shown), re.findall(r"'([^']*)'", expected))
        elif kind == "unknown_expectation":
            message = err["msg"]
            keys = [str(k) for k in value] if isinstance(value, dict) else []
            suggestion = next((g for k in keys if (g := _closest(k, list(EXPECTATION_KEYS)))), None)
        elif (shape := {"model_type": "a mapping", "dict_type": "a mapping", "list_type": "a list"}.get(kind)):
            message = f"expected {shape}, got {_type_name(value)}"
        else:
            message = err["msg"].removeprefix("Value error, ")
            if isinstance(value, str | int | float) and repr(value) not in message:
                message += f" (got {_short(repr(value))})"
        at_key = kind in ("extra_forbidden", "missing")  # an unknown key: point at the key, else at the value
        out.append(_located(marks, path, message, expected=expected, suggestion=suggestion, at_key=at_key))
    return out


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _closest(name: str, options: list[str]) -> str | None:
    return next(iter(difflib.get_close_matches(name, options, n=1)), None)


def _type_name(value: Any) -> str:
    return {"dict": "a mapping", "list": "a list", "str": "a string"}.get(type(value).__name__, repr(value))


def _data_path(data: Any, loc: tuple[Any, ...], whole: bool) -> tuple[Any, ...]:
    """Pydantic's error location → a path in the document, union tags dropped as they are not
    keys: ``("expect", 0, "probe_becomes", "within")`` → ``("expect", 0, "within")``."""
    path, node = list[Any](), data
    for k, part in enumerate(loc):
        rest = loc[k + 1 :]
        into_dict = isinstance(node, dict) and part in node and (
            (not rest and not whole) or rest == ("[key]",) or isinstance(node[part], dict | list))
        if into_dict or (isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)):
            path.append(part)
            node = node[part]
        elif isinstance(node, dict) and not rest and not whole and isinstance(part, str) and part != "[key]":
            path.append(part)  # a missing or unknown key
    return tuple(path)


def _fields_at(path: tuple[Any, ...], data: Any, root: type[BaseModel] = Experiment) -> list[str]:
    """The keys the model at ``path`` accepts (of a union, the member sharing most keys with the data)."""
    types: list[Any] = [root]
    node = data
    for part in path:
        node, nxt = node[part], []
        for t in types:
            args = get_args(t)
            if isinstance(part, str) and isinstance(t, type) and issubclass(t, BaseModel):
                nxt += [_unwrap(f.annotation) for n, f in t.model_fields.items() if part in (n, f.alias)]
            elif args and (get_origin(t) is dict or (get_origin(t) in (list, tuple) and isinstance(part, int))):
                nxt.append(_unwrap(args[-1] if get_origin(t) is dict else args[0]))
        types = [u for group in nxt for u in group]
    keys = set(node) if isinstance(node, dict) else set()
    options = [[f.alias or n for n, f in t.model_fields.items()] for t in types
               if isinstance(t, type) and issubclass(t, BaseModel)]  # fmt: skip
    return max(options, key=lambda fields: len(keys & set(fields)), default=[])


def _unwrap(annotation: Any) -> list[Any]:
    """``Annotated[X | None, …]`` → ``[X]`` (unions flattened, None dropped)."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Annotated, Union, UnionType):
        return [u for a in (args[:1] if origin is Annotated else args) for u in _unwrap(a)]
    return [] if annotation is type(None) else [annotation]
