"""``load.protocol``: what each load request is, for servers that are not the bundled target.

Without a protocol the load sends the bundled target's own request (digit rows to
``/v2/models/{model}/infer``). With one, the same users, shape, clients and think time drive any
server in the protocol it speaks, and each answer is judged by that protocol: an HTTP 200 that is
malformed for it (no outputs, a non-finite number, a shape its metadata does not allow, a chat
completion without choices) is a failed request, because a wrong answer is an SLI too.

The four kinds, told apart by ``kind``::

    protocol: {kind: oip_v2, model: digits, inputs: generated, binary: true}
    protocol: {kind: openai, api: chat, model: tiny, prompt: "Say hi", max_tokens: 16, stream: true}
    protocol: {kind: kserve_v1, model: sklearn-iris, instances_file: iris.json}
    protocol: {kind: http, method: POST, path: /predict, body: {x: [1, 2]},
               success: {status: [200], json_path: "$.y[0]"}}

Files (``inputs: {file: …}``, ``instances_file``) are read and checked when the load is built
(``experiments.observe.protocols``: a located error in the file, never a traceback); relative
paths are relative to the directory the load generator is given. Models only here: the clients
that build requests and judge answers live in ``experiments.observe.protocols``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    field_validator,
    model_validator,
)

__all__ = [
    "ChatMessage", "HttpProtocol", "HttpSuccess", "InputsFile", "KServeV1Protocol", "LoadProtocol", "OipV2Protocol",
    "OpenAIProtocol", "json_path_parts",
]  # fmt: skip


def _plain(pattern: str, what: str) -> Any:
    """A string constraint whose error says what was meant (the pattern stays in the JSON schema)."""
    compiled = re.compile(pattern)

    def check(value: Any) -> Any:
        if isinstance(value, str) and not compiled.match(value):
            raise ValueError(f"expected {what}, got {value[:80]!r}")
        return value

    return BeforeValidator(check)


ModelName = Annotated[str, StringConstraints(pattern=r"^[^\s/?#%\x00-\x1f]{1,256}$"),
                      _plain(r"^[^\s/?#%\x00-\x1f]{1,256}$", "a model name that is one URL path segment "
                             "(no /, ?, #, %, spaces or control characters)")]  # fmt: skip
OpenAIModel = Annotated[str, StringConstraints(pattern=r"^[^\x00-\x1f]{1,256}$"),
                        _plain(r"^[^\x00-\x1f]{1,256}$", "a model name (1-256 characters, no control characters)")]
"""OpenAI model names go in the JSON body and may hold ``/`` (``meta-llama/Llama-3.1-8B``)."""
HeaderName = Annotated[str, StringConstraints(pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$"),
                       _plain(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$", "an HTTP header name")]
HeaderValue = Annotated[str, StringConstraints(pattern=r"^[^\r\n\x00]{0,8192}$"),
                        _plain(r"^[^\r\n\x00]{0,8192}$", "a header value on one line")]
UrlPath = Annotated[str, StringConstraints(pattern=r"^/[^\s\x00-\x1f]{0,2047}$"),
                    _plain(r"^/[^\s\x00-\x1f]{0,2047}$", "a path that starts with / (no spaces), e.g. /predict")]
FilePath = Annotated[str, StringConstraints(min_length=1, max_length=4096)]

_JSON_STEP = re.compile(r"(\.?)([A-Za-z_][A-Za-z0-9_-]*)|\[(\d{1,9})\]")


def json_path_parts(path: str) -> tuple[str | int, ...]:
    """``$.choices[0].text`` → ``("choices", 0, "text")``; without ``$`` the first dot goes too
    (``choices[0].text``); ``$`` alone is the whole answer."""
    rooted = path.startswith("$")
    rest, parts, pos = path.removeprefix("$"), list[str | int](), 0
    while pos < len(rest):
        step = _JSON_STEP.match(rest, pos)
        dotted = step is not None and step.group(1) == "."
        if step is None or (step.group(2) is not None and dotted != (rooted or pos > 0)):
            raise ValueError(f"not a JSON path like $.outputs[0].data: {path!r}")
        parts.append(step.group(2) if step.group(2) is not None else int(step.group(3)))
        pos = step.end()
    if not parts and path != "$":
        raise ValueError(f"not a JSON path like $.outputs[0].data: {path!r}")
    return tuple(parts)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputsFile(_Model):
    """``{file: inputs.json}``: OIP v2 request bodies (``{"inputs": [...]}``, or a list of them, sent in turn)."""

    file: FilePath


class KnownAnswersFile(_Model):
    """``{file: known_answers.json}``: requests with the answers a correct server gives them
    (``target_service/answers.py``'s format, the one the bundled model is published with)."""

    file: FilePath


def _inputs_tag(value: Any) -> str:
    return "file" if isinstance(value, dict | InputsFile) else "generated"


def _inputs(value: Any) -> Any:
    if not isinstance(value, dict | InputsFile) and value != "generated":
        raise ValueError(f"expected generated or {{file: PATH}}, got {str(value)[:80]!r}")
    return value


class OipV2Protocol(_Model):
    """Open Inference Protocol v2 (KServe, Triton, MLServer, the bundled target): ``POST
    /v2/models/{model}/infer``; each answer checked against the model's metadata (``GET /v2/models/{model}``)."""

    kind: Literal["oip_v2"]
    model: ModelName
    version: ModelName | None = None
    """Infer on ``/v2/models/{model}/versions/{version}/infer``."""
    inputs: Annotated[
        Annotated[Literal["generated"], Tag("generated")] | Annotated[InputsFile, Tag("file")],
        Discriminator(_inputs_tag), BeforeValidator(_inputs),
    ] = "generated"
    """``generated``: from the metadata (each -1 dimension as 1, random values of each datatype); or a file."""
    binary: bool = False
    """Binary tensor data extension both ways: inputs as raw bytes after the JSON header, outputs asked as binary."""
    known_answers: KnownAnswersFile | None = None
    """Every 4th request is one of the file's known requests, in turn; its answer must hold the known outputs
    (class, values within the tolerance), or it is a wrong answer."""


class ChatMessage(_Model):
    """``{role: user, content: "Hello"}``"""

    role: Literal["system", "user", "assistant", "developer"]
    content: str


class OpenAIProtocol(_Model):
    """OpenAI-compatible completions (vLLM, TGI, litserve, …): ``POST /v1/chat/completions`` or ``/v1/completions``.

    ``stream: true`` reads the server-sent events as they come: each request's time to first token
    (``ttft_s``) and mean inter-token latency (``itl_s``) go on its timeline event.
    """

    kind: Literal["openai"]
    api: Literal["chat", "completions"] = "chat"
    model: OpenAIModel
    prompt: str | None = None
    """The prompt (chat: sent as one user message)."""
    messages: list[ChatMessage] | None = Field(default=None, min_length=1)
    """Chat only: the conversation to send instead of ``prompt``."""
    max_tokens: int = Field(default=16, ge=1, le=1_000_000)
    stream: bool = False

    @model_validator(mode="after")
    def _one_prompt(self) -> OpenAIProtocol:
        if self.api == "completions" and self.messages is not None:
            raise ValueError("api completions takes a prompt, not messages (messages are for api: chat)")
        if (self.prompt is None) == (self.messages is None) and self.api == "chat":
            raise ValueError("give exactly one of prompt or messages")
        if self.api == "completions" and self.prompt is None:
            raise ValueError("api completions needs a prompt")
        return self


class KServeV1Protocol(_Model):
    """KServe's V1 protocol (TensorFlow Serving's REST shape): ``POST /v1/models/{model}:predict`` with
    ``{"instances": [...]}``; an answer needs one finite prediction per instance."""

    kind: Literal["kserve_v1"]
    model: ModelName
    instances_file: FilePath
    """JSON: ``{"instances": [...]}`` or the list of instances itself."""


class HttpSuccess(_Model):
    """``{status: [200, 201], json_path: "$.result"}``: which answers count as successful."""

    status: list[Annotated[int, Field(ge=100, le=599)]] = Field(default_factory=lambda: [200], min_length=1)
    json_path: str | None = None
    """The answer must be JSON with a value at this path (``$.choices[0].text``; null counts as absent)."""

    @field_validator("json_path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None:
            json_path_parts(value)
        return value


class HttpProtocol(_Model):
    """Any HTTP endpoint: one request, repeated; success by status and, optionally, a JSON path that must exist."""

    kind: Literal["http"]
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"] = "POST"
    path: UrlPath
    headers: dict[HeaderName, HeaderValue] = Field(default_factory=dict)
    body: str | dict[str, Any] | list[Any] | None = None
    """A string is sent as it is; a mapping or list as JSON (``Content-Type: application/json`` unless given)."""
    success: HttpSuccess = Field(default_factory=HttpSuccess)

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


LoadProtocol = Annotated[OipV2Protocol | OpenAIProtocol | KServeV1Protocol | HttpProtocol, Field(discriminator="kind")]
"""What each load request is (``load.protocol``); None (absent) is the bundled target's own request."""
