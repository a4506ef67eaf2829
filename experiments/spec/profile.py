"""Profiles of known inference servers: what faultdrill must know to drill a server it did not ship.

Bringing your own inference service starts with facts about the server it runs on: which protocol it
speaks, on which ports, which HTTP paths say it is alive, ready and has a model loaded, where its
Prometheus metrics are and what its key series are called. Those facts differ per server and change
between versions (vLLM renamed ``vllm:gpu_cache_usage_perc`` to ``vllm:kv_cache_usage_perc``), so
they are data, checked here once, not strings scattered through rules and runbooks.

A profile is one YAML file, ``experiments/systems/<name>/profile.yaml``, beside the server's own
Prometheus rules (``rules.yml``), their promtool unit tests (``rules_test.yml``) and a runbook per
alert (``runbooks/*.md``); ``experiments/systems/README.md`` explains every field and how to write
one for another server. Every metric carries ``source``: where its name was verified (the server's
docs or source, at a commit), so a rule never selects a name somebody guessed.

Loading is strict (unknown keys are errors) and located: a bad profile is a
:class:`~faults.errors.ConfigError` naming the file, line, column and field, with what was expected
and a did-you-mean, never a traceback. Files are read within the bounds of :mod:`faults.inputlimits`.
This module imports only the bottom layer (``faults.errors``, ``faults.inputlimits``), pydantic and
PyYAML, so anything above ``experiments.spec`` may use it.

Example::

    profile = load_profile("vllm")                      # a shipped profile, by name
    profile = load_profile("my-server/profile.yaml")    # or your own, by path (a folder works too)
    profile.metrics.series.kv_cache_usage.name          # 'vllm:kv_cache_usage_perc'
    profile.rules_file, profile.runbooks_dir            # its rules.yml and runbooks/, beside it
    shipped_profiles()                                  # ('kserve', 'mlserver', 'tgi', …)
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from faultdrill.faults.errors import ConfigError
from faultdrill.faults.inputlimits import MAX_YAML_DEPTH, one_line, read_text, yaml_error, yaml_loader

__all__ = [
    "PROFILE_FILE",
    "PROTOCOLS",
    "SYSTEMS_DIR",
    "Endpoint",
    "Health",
    "KeyMetrics",
    "Metric",
    "Metrics",
    "Ports",
    "Profile",
    "check_profile",
    "load_profile",
    "profile_path",
    "shipped_profiles",
]

SYSTEMS_DIR = Path(__file__).resolve().parent.parent / "systems"
"""Where the shipped profiles live: one folder per server."""
PROFILE_FILE = "profile.yaml"
"""The profile's file name inside its folder (``rules.yml``, ``rules_test.yml``, ``runbooks/`` beside it)."""

Protocol = Literal["oip_v2", "openai", "kserve_v1", "torchserve", "tgi"]
PROTOCOLS: dict[str, str] = {
    "oip_v2": "Open Inference Protocol v2 (KServe v2): /v2/health/…, /v2/models/{model}/infer",
    "openai": "OpenAI-compatible HTTP API: /v1/models, /v1/completions, /v1/chat/completions",
    "kserve_v1": "KServe v1 (TensorFlow Serving style): /v1/models/{model}, /v1/models/{model}:predict",
    "torchserve": "TorchServe inference API: /ping, /predictions/{model}",
    "tgi": "Text Generation Inference native API: /health, /info, /generate, /generate_stream",
}
"""The protocols a profile may name, with what they mean."""

_NAME = r"^[a-z][a-z0-9_-]{0,62}$"
_METRIC = r"^[a-zA-Z_:][a-zA-Z0-9_:]*$"
_LABEL = r"^[a-zA-Z_][a-zA-Z0-9_]*$"
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
MetricName = Annotated[str, Field(pattern=_METRIC, max_length=200)]
LabelName = Annotated[str, Field(pattern=_LABEL, max_length=100)]
Port = Annotated[int, Field(ge=1, le=65535)]
Text = Annotated[str, Field(min_length=1, max_length=2000)]
Url = Annotated[str, Field(pattern=r"^https://\S+$", max_length=500)]
HttpPath = Annotated[str, Field(pattern=r"^/[^\s?#]*$", max_length=300)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Metric(_Strict):
    """One series the server exports, under the name PromQL selects (a counter with its ``_total`` where
    the server's client library adds one; a histogram or summary by its base name)."""

    name: MetricName
    type: Literal["counter", "gauge", "histogram", "summary"]
    unit: Text | None = None
    labels: list[LabelName] = []
    aliases: list[MetricName] = []
    """The same series under another name in other versions (a rule matches either with ``or``)."""
    requires: Text | None = None
    """The server setting without which the series does not exist (``--metrics-config …``)."""
    source: Url
    """Where the name was verified: the server's docs or source, at a commit."""
    note: Text | None = None

    def series(self) -> frozenset[str]:
        """Every series name PromQL may select for this metric, aliases and histogram/summary parts included."""
        parts = {"histogram": ("", "_bucket", "_sum", "_count"), "summary": ("", "_sum", "_count")}.get(self.type)
        parts = parts or ("",)
        return frozenset(name + part for name in (self.name, *self.aliases) for part in parts)


class KeyMetrics(_Strict):
    """The server's key series by role; a role the server does not export stays empty."""

    requests: Metric | None = None
    """Requests received (all outcomes)."""
    request_success: Metric | None = None
    request_failure: Metric | None = None
    http_requests: Metric | None = None
    """The HTTP layer's request counter, with a status label (availability as clients see it)."""
    request_latency: Metric | None = None
    """End-to-end request latency (a histogram where the server has one)."""
    http_request_latency: Metric | None = None
    preprocess_latency: Metric | None = None
    postprocess_latency: Metric | None = None
    compute_time: Metric | None = None
    queue_time: Metric | None = None
    queue_size: Metric | None = None
    running_requests: Metric | None = None
    batch_size: Metric | None = None
    inference_count: Metric | None = None
    """Inferences performed (a batch of n counts n): with ``execution_count``, the mean batch size."""
    execution_count: Metric | None = None
    time_to_first_token: Metric | None = None
    inter_token_latency: Metric | None = None
    kv_cache_usage: Metric | None = None
    """Fraction of the KV cache in use (0–1): the saturation signal of an LLM server."""
    batch_tokens: Metric | None = None
    """Tokens the current batch may hold (an LLM server's KV-cache demand)."""
    batch_token_budget: Metric | None = None
    """The most tokens a batch may hold (its KV-cache capacity)."""
    preemptions: Metric | None = None
    gpu_utilization: Metric | None = None
    gpu_memory_used: Metric | None = None
    gpu_memory_total: Metric | None = None
    gpu_memory_utilization: Metric | None = None
    other: dict[Annotated[str, Field(pattern=_LABEL)], Metric] = {}
    """Further verified series the rules or runbooks use, by a name of your choosing."""

    def items(self) -> list[tuple[str, Metric]]:
        """(role, metric) for every role the server exports, in declaration order (``other.<key>`` last)."""
        roles = [(role, m) for role in type(self).model_fields
                 if role != "other" and (m := getattr(self, role)) is not None]  # fmt: skip
        return [*roles, *((f"other.{key}", m) for key, m in self.other.items())]


class Ports(_Strict):
    """Default ports; ``metrics`` only where the metrics have a port of their own."""

    http: Port
    grpc: Port | None = None
    metrics: Port | None = None
    management: Port | None = None


class Endpoint(_Strict):
    """An HTTP path on one of the profile's ports (a bare string is a path on the ``http`` port)."""

    path: HttpPath
    port: Literal["http", "metrics", "management"] = "http"
    note: Text | None = None
    """How to read the answer where the status code alone does not say it."""

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"path": value} if isinstance(value, str) else value


class Health(_Strict):
    """Where the server says it is alive, ready, and has a given model loaded (``{model}``, ``{version}``)."""

    liveness: Endpoint | None = None
    readiness: Endpoint | None = None
    model_ready: Endpoint | None = None
    """A path template naming ``{model}`` (and optionally ``{version}``): 200 when that model can serve."""
    models: Endpoint | None = None
    """Where the server lists the models it serves (for servers without a per-model readiness path)."""
    source: Url

    @field_validator("model_ready")
    @classmethod
    def _template(cls, value: Endpoint | None) -> Endpoint | None:
        if value is not None:
            names = _PLACEHOLDER.findall(value.path)
            unknown = sorted(set(names) - {"model", "version"})
            if unknown:
                raise ValueError(f"unknown placeholder {{{unknown[0]}}}: only {{model}} and {{version}} are filled in")
            if "model" not in names:
                raise ValueError(f"a model-ready path is a template naming {{model}} (got '{value.path}')")
        return value


class Metrics(_Strict):
    """Where Prometheus scrapes the server, the ``job`` its rules select, and its key series."""

    path: HttpPath = "/metrics"
    job: Annotated[str, Field(pattern=_NAME)]
    """The scrape job name the profile's rules select (``job="<this>"``): name your scrape job so."""
    requires: Text | None = None
    """The server setting without which there is no Prometheus endpoint at all."""
    source: Url
    series: KeyMetrics


class Profile(_Strict):
    """One known inference server (see the module docstring and ``experiments/systems/README.md``)."""

    name: Annotated[str, Field(pattern=_NAME)]
    server: Text
    versions: Text
    """Which versions the names and paths were verified against (and what changed between them)."""
    docs: Url
    protocol: Protocol
    other_protocols: list[Protocol] = []
    ports: Ports
    health: Health
    metrics: Metrics
    _file: Path | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _consistent(self) -> Profile:
        for role in ("liveness", "readiness", "model_ready", "models"):
            endpoint = getattr(self.health, role)
            if endpoint is not None and getattr(self.ports, endpoint.port) is None:
                raise _located_problem(f"served on the '{endpoint.port}' port, but ports.{endpoint.port} is not set",
                                       "health", role)  # fmt: skip
        if self.protocol in self.other_protocols:
            raise _located_problem(f"'{self.protocol}' is the protocol already; other_protocols lists the others",
                                   "other_protocols", self.other_protocols.index(self.protocol))  # fmt: skip
        return self

    @property
    def metrics_port(self) -> int:
        """The port Prometheus scrapes: ``ports.metrics`` where the server has one, else ``ports.http``."""
        return self.ports.metrics if self.ports.metrics is not None else self.ports.http

    def series_names(self) -> frozenset[str]:
        """Every series name of the key metrics (aliases, ``_bucket``/``_sum``/``_count`` included)."""
        return frozenset(s for _role, metric in self.metrics.series.items() for s in metric.series())

    @property
    def file(self) -> Path | None:
        """The profile's file (None for a profile built in memory)."""
        return self._file

    def _beside(self, name: str) -> Path:
        if self._file is None:
            raise ValueError(f"profile '{self.name}' was not loaded from a file: it has no {name}")
        return self._file.parent / name

    @property
    def rules_file(self) -> Path:
        """``rules.yml`` beside the profile."""
        return self._beside("rules.yml")

    @property
    def rules_test_file(self) -> Path:
        """``rules_test.yml`` (promtool unit tests) beside the profile."""
        return self._beside("rules_test.yml")

    @property
    def runbooks_dir(self) -> Path:
        """``runbooks/`` beside the profile."""
        return self._beside("runbooks")


def _located_problem(message: str, *where: str | int) -> PydanticCustomError:
    """A whole-profile problem that names the field it is about (the loader locates it there)."""
    return PydanticCustomError("profile_problem", message, {"where": where})


# -- finding and loading --------------------------------------------------------------------------


def shipped_profiles() -> tuple[str, ...]:
    """Names of the shipped profiles, sorted (each a folder of ``SYSTEMS_DIR`` holding ``profile.yaml``)."""
    if not SYSTEMS_DIR.is_dir():
        return ()
    return tuple(sorted(p.name for p in SYSTEMS_DIR.iterdir() if (p / PROFILE_FILE).is_file()))


def profile_path(name_or_path: str | Path) -> Path:
    """The file ``load_profile`` reads: a shipped profile's by name, else the path (a folder: its ``profile.yaml``).

    A bare word is a shipped name first, then a path; neither is an unknown name, with a did-you-mean.
    """
    text = str(name_or_path)
    if "\0" in text:
        raise ConfigError("not a profile name or path: it contains a NUL byte", file=one_line(text))
    path = Path(text)
    if not (isinstance(name_or_path, Path) or "/" in text or text.endswith((".yaml", ".yml"))):
        known = shipped_profiles()
        if text in known:  # a shipped name wins over a folder of the same name in the working directory
            return SYSTEMS_DIR / text / PROFILE_FILE
        if _path_is(path, "exists"):
            return path / PROFILE_FILE if _path_is(path, "is_dir") else path
        close = difflib.get_close_matches(text, list(known), n=1)
        raise ConfigError(f"unknown profile '{one_line(text, 80)}'", field="profile",
                          expected="a shipped profile (" + ", ".join(known) + ") or the path of a profile file",
                          suggestion=close[0] if close else None)  # fmt: skip
    return path / PROFILE_FILE if _path_is(path, "is_dir") else path


def _path_is(path: Path, test: str) -> bool:
    """``path.exists()`` / ``path.is_dir()``, False rather than an exception for a name the OS refuses (too long)."""
    try:
        return bool(getattr(path, test)())
    except (OSError, ValueError):
        return False


def load_profile(name_or_path: str | Path) -> Profile:
    """A shipped profile by name (``"vllm"``), or a profile file or folder by path; the first problem of a
    bad one as a located :class:`ConfigError` (:func:`check_profile` lists them all)."""
    path = profile_path(name_or_path)
    profile, errors = _check(path)
    if profile is None:
        raise errors[0]
    return profile


def check_profile(name_or_path: str | Path) -> list[ConfigError]:
    """Every problem of a profile (empty when it is valid), sorted by position."""
    try:
        return _check(profile_path(name_or_path))[1]
    except ConfigError as exc:
        return [exc]


def _check(path: Path) -> tuple[Profile | None, list[ConfigError]]:
    file = str(path)
    try:
        text = read_text(path, what="profile")
    except OSError as exc:
        return None, [ConfigError(f"cannot read the profile: {exc.strerror or exc}", file=file)]
    except ConfigError as exc:
        return None, [exc]
    try:
        data, marks = _compose(text, file)
    except ConfigError as exc:
        return None, [exc]
    try:
        profile = Profile.model_validate(data)
    except ValidationError as exc:
        return None, sorted(_errors(exc, data, marks, file), key=lambda e: (e.line or 0, e.column or 0))
    profile._file = path.resolve()
    return profile, []


# -- positions: YAML nodes → line and column of every key and value --------------------------------

_Marks = dict[tuple[Any, ...], tuple[Any, Any]]
_EXPECTED = "a profile: a mapping of name, server, versions, docs, protocol, ports, health, metrics"


def _compose(text: str, file: str) -> tuple[dict[str, Any], _Marks]:
    """The document as plain data, and path → (mark of its key, mark of its value); every problem located."""
    loader = yaml_loader(text, file)
    try:
        node = loader.get_single_node()
        if node is None:
            raise ConfigError("empty file", file=file, line=1, column=1, expected=_EXPECTED)
        marks: _Marks = {}
        _walk(node, (), marks, file, 0)
        data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise yaml_error(exc, file, "not valid YAML", text=text) from None
    except RecursionError:  # the bounds make this unreachable; never a traceback all the same
        raise ConfigError("nested too deeply", file=file, expected=f"at most {MAX_YAML_DEPTH} levels") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise ConfigError(f"the document is {_kind(data)}", file=file, line=node.start_mark.line + 1,
                          column=node.start_mark.column + 1, expected=_EXPECTED)  # fmt: skip
    return data, marks


def _walk(node: yaml.Node, path: tuple[Any, ...], marks: _Marks, file: str, depth: int) -> None:
    if depth > MAX_YAML_DEPTH:  # composing refuses deeper documents already
        raise ConfigError("nested too deeply", file=file, line=node.start_mark.line + 1)
    marks.setdefault(path, (node.start_mark, node.start_mark))
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else repr(key_node)
            at = key_node.start_mark
            if key in seen:  # PyYAML would silently keep the last one
                raise ConfigError(f"key '{one_line(str(key), 80)}' appears twice (first on line {seen[key].line + 1})",
                                  file=file, line=at.line + 1, column=at.column + 1)  # fmt: skip
            seen[key] = at
            marks.setdefault((*path, key), (at, value_node.start_mark))
            _walk(value_node, (*path, key), marks, file, depth + 1)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, (*path, i), marks, file, depth + 1)


def _errors(exc: ValidationError, data: dict[str, Any], marks: _Marks, file: str) -> list[ConfigError]:
    out: list[ConfigError] = []
    for err in exc.errors(include_url=False)[:50]:
        kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
        path, at_key = _data_path(data, (*err["loc"], *ctx.get("where", ())))
        expected = suggestion = None
        at_key = at_key or kind in ("extra_forbidden", "missing")
        if kind == "extra_forbidden":
            fields = _fields_at(path[:-1])
            message, suggestion = f"unknown key '{path[-1]}'", _closest(str(path[-1]), fields)
            expected = "one of " + ", ".join(fields) if fields else None
        elif kind == "missing":
            message = f"missing required key '{path[-1]}'" if path else "missing required key"
        elif kind == "literal_error":
            expected, shown = str(ctx.get("expected")), value
            message = f"unknown value {shown!r}"
            suggestion = _closest(str(shown), re.findall(r"'([^']*)'", expected))
        elif kind in ("model_type", "model_attributes_type", "dict_type"):
            message = f"expected a mapping, got {_kind(value)}"
        elif kind == "list_type":
            message = f"expected a list, got {_kind(value)}"
        elif kind == "string_pattern_mismatch":
            message = f"{value!r} is not valid here" if isinstance(value, str) else "not valid here"
            expected = _PATTERNS.get(str(ctx.get("pattern")), f"text matching {ctx.get('pattern')}")
        else:
            message = err["msg"].removeprefix("Value error, ")
            if isinstance(value, str | int | float) and repr(value) not in message and str(value) not in message:
                message += f" (got {one_line(repr(value), 80)})"
        out.append(_located(marks, file, path, message, expected, suggestion, at_key))
    return out


_PATTERNS = {
    _NAME: "a lower-case name: letters, digits, '-' and '_', starting with a letter",
    _METRIC: "a Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)",
    _LABEL: "a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)",
    r"^https://\S+$": "an https:// URL",
    r"^/[^\s?#]*$": "an HTTP path starting with '/'",
}


def _located(marks: _Marks, file: str, path: tuple[Any, ...], message: str, expected: str | None,
             suggestion: str | None, at_key: bool) -> ConfigError:  # fmt: skip
    found = next((marks[path[:end]] for end in range(len(path), -1, -1) if path[:end] in marks), None)
    mark = found[0 if at_key else 1] if found else None
    fld = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
    return ConfigError(one_line(message), file=file, line=mark.line + 1 if mark else None,
                       column=mark.column + 1 if mark else None, field=one_line(fld) if fld else None,
                       expected=one_line(expected, 600) if expected else None,
                       suggestion=one_line(suggestion) if suggestion else None)  # fmt: skip


def _data_path(data: Any, loc: tuple[Any, ...]) -> tuple[tuple[Any, ...], bool]:
    """Pydantic's location → (a path in the document, whether the problem is the key itself)."""
    path: list[Any] = []
    node = data
    for part in loc:
        if part == "[key]":  # a mapping key that is not valid: point at the key
            return tuple(path), True
        if isinstance(node, dict) and isinstance(part, str):
            path.append(part)
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            path.append(part)
            node = node[part]
        else:
            break
    return tuple(path), False


def _fields_at(path: tuple[Any, ...]) -> list[str]:
    """The keys the model at ``path`` accepts (empty where there is no model)."""
    model: Any = Profile
    for part in path:
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return []
        model = next(iter(_models(model.model_fields[part].annotation)), None)
    return list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []


def _models(annotation: Any) -> list[Any]:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Annotated, Union, UnionType):
        return [m for a in (args[:1] if origin is Annotated else args) for m in _models(a)]
    return [annotation] if isinstance(annotation, type) and issubclass(annotation, BaseModel) else []


def _closest(name: str, options: list[str]) -> str | None:
    return next(iter(difflib.get_close_matches(name, options, n=1)), None)


def _kind(value: Any) -> str:
    return {"dict": "a mapping", "list": "a list", "str": "a string", "NoneType": "nothing"}.get(
        type(value).__name__, one_line(repr(value), 80))
