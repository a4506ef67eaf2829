"""OpenAI-compatible completions, whole or streamed: the request, and what makes an answer right.

Whole answers (``stream: false``) must be a JSON object with a non-empty ``choices`` list whose
first choice has a ``message`` with string ``content`` (or ``tool_calls``) for ``api: chat``, a
string ``text`` for ``api: completions``; a server's ``{"error": …}`` is a wrong answer whatever
its status.

Streamed answers (``stream: true``) are read line by line as they arrive (:class:`SseReader`),
as server-sent events: ``data:`` lines joined until a blank line make one event, ``:`` lines
are comments, an event named ``error`` or a chunk with ``error`` is the server's error. Each chunk
must be JSON with a ``choices`` list (empty is allowed: a usage chunk); a chunk whose choice
carries text (``delta.content`` for chat, ``text`` for completions) is a token arrival. The stream
is right when it is ``text/event-stream``, carried at least one token and ended with
``data: [DONE]``. ``ttft_s`` is the time from sending the request to the first token;
``itl_s`` the mean time between token arrivals ((last − first) / (arrivals − 1)), as
vLLM's benchmarks and genai-perf measure them when a chunk carries one token (a chunk that
carries several counts once: the client sees them at once). A last event left without its blank
line at the end (litserve ends an error that way) is still read.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from faultdrill.experiments.observe.protocols.base import (
    OK,
    STATUS_FAILED,
    Call,
    Outcome,
    ProtocolClient,
    json_answer,
    server_error,
)
from faultdrill.experiments.spec.load import OpenAIProtocol

__all__ = ["OpenAIClient", "SseReader", "check_completion"]

_PATHS = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}


def check_completion(api: str, doc: Any) -> Outcome:
    """Judge a whole completion answer."""
    if (error := server_error(doc)) is not None:
        return Outcome.wrong(error)
    if not isinstance(doc, dict):
        return Outcome.wrong("the answer is not a JSON object")
    choices = doc.get("choices")
    if not isinstance(choices, list) or not choices:
        return Outcome.wrong("no choices in the answer")
    first = choices[0] if isinstance(choices[0], dict) else {}
    if api == "chat":
        message = first.get("message")
        if not isinstance(message, dict) or not (isinstance(message.get("content"), str)
                                                 or isinstance(message.get("tool_calls"), list)):  # fmt: skip
            return Outcome.wrong("choices[0] has no message with content")
    elif not isinstance(first.get("text"), str):
        return Outcome.wrong("choices[0] has no text")
    return OK


class SseReader:
    """One streamed answer, fed line by line with each line's arrival time (seconds since sending)."""

    def __init__(self, api: str, content_type: str | None) -> None:
        self.api = api
        self.tokens: list[float] = []  # arrival times of chunks that carried text
        self.chunks, self.done = 0, False
        self.problem = None if _is_event_stream(content_type) else (
            f"the answer is {content_type or 'untyped'}, not text/event-stream")  # fmt: skip
        self._data: list[bytes] = []
        self._event = b""

    def line(self, raw: bytes, t: float) -> None:
        line = raw.rstrip(b"\r\n")
        if not line:
            self._dispatch(t)
        elif not line.startswith(b":"):
            name, _, value = line.partition(b":")
            value = value.removeprefix(b" ")
            if name == b"data":
                self._data.append(value)
            elif name == b"event":
                self._event = value

    def end(self, t: float, leftover: bytes = b"") -> Outcome:
        """The stream ended at ``t`` (``leftover``: bytes after the last newline)."""
        if leftover.strip():
            self.line(leftover, t)
        self._dispatch(t)
        ttft = self.tokens[0] if self.tokens else None
        itl = (self.tokens[-1] - self.tokens[0]) / (len(self.tokens) - 1) if len(self.tokens) > 1 else None
        problem = self.problem
        if problem is None and not self.tokens:
            problem = "no tokens in the stream" if self.chunks else "no chunks in the stream"
        if problem is None and not self.done:
            problem = "the stream ended without data: [DONE]"
        return Outcome(problem is None, problem, ttft_s=ttft, itl_s=itl)

    def _dispatch(self, t: float) -> None:
        data, event, self._data, self._event = b"\n".join(self._data), self._event, [], b""
        if not data or self.problem is not None:
            return
        if data.strip() == b"[DONE]":
            self.done = True
            return
        doc, why = json_answer(data)
        if event == b"error" or server_error(doc) is not None:
            self.problem = f"the stream carried an error: {data[:160].decode(errors='replace')}"
        elif why is not None:
            self.problem = f"a chunk is not JSON: {data[:80].decode(errors='replace')!r}"
        elif not isinstance(doc, dict) or not isinstance(doc.get("choices"), list):
            self.problem = "a chunk without choices"
        else:
            self.chunks += 1
            if any(self._text(c) for c in doc["choices"]):
                self.tokens.append(t)

    def _text(self, choice: Any) -> bool:
        if not isinstance(choice, dict):
            return False
        if self.api == "chat":
            delta = choice.get("delta")
            return isinstance(delta, dict) and isinstance(delta.get("content"), str) and bool(delta["content"])
        return isinstance(choice.get("text"), str) and bool(choice["text"])


def _is_event_stream(content_type: str | None) -> bool:
    return (content_type or "").split(";")[0].strip().lower() == "text/event-stream"


class OpenAIClient(ProtocolClient):
    """``POST /v1/chat/completions`` or ``/v1/completions``; the same request every time."""

    def __init__(self, spec: OpenAIProtocol) -> None:
        self.spec, self.path = spec, _PATHS[spec.api]
        request: dict[str, Any] = {"model": spec.model, "max_tokens": spec.max_tokens, "stream": spec.stream}
        if spec.api == "completions":
            request["prompt"] = spec.prompt
        elif spec.messages is not None:
            request["messages"] = [m.model_dump() for m in spec.messages]
        else:
            request["messages"] = [{"role": "user", "content": spec.prompt}]
        headers = {"Content-Type": "application/json"}
        if spec.stream:  # uncompressed, so every event is readable as it arrives
            headers |= {"Accept": "text/event-stream", "Accept-Encoding": "identity"}
        self._call = Call("POST", self.path, json.dumps(request).encode(), headers, self.path, stream=spec.stream)

    def call(self, index: int) -> Call:
        return self._call

    def check(self, status: int, headers: Mapping[str, str], body: bytes) -> Outcome:
        if not 200 <= status < 300:
            return STATUS_FAILED
        doc, why = json_answer(body)
        return Outcome.wrong(why) if why is not None else check_completion(self.spec.api, doc)

    def stream_reader(self, headers: Mapping[str, str]) -> SseReader:
        return SseReader(self.spec.api, headers.get("content-type"))
