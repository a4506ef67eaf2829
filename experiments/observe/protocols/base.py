"""What every protocol client is: the requests it makes and how it judges an answer.

A client (one per Locust process, shared by its users) hands out :class:`Call` s and judges each
answer into an :class:`Outcome`. It knows nothing of Locust or sockets — the locustfile
(``experiments/observe/protocol_locustfile.py``) sends the calls — so each protocol's requests and
judgements are plain functions of bytes, tested without a server as well as against real ones.

Judging is the point: an answer that is HTTP 200 but wrong for its protocol (no outputs, a NaN,
a shape the model's metadata rules out, a completion without choices) is ``Outcome(ok=False,
reason=…)``, a failed request on the timeline (``error: "WrongAnswer: <reason>"``). A status the
protocol does not accept is left to Locust's own verdict (``reason`` None), so such failures read
as they do for the bundled target's load.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["OK", "STATUS_FAILED", "Call", "Outcome", "ProtocolClient", "WrongAnswer", "finite_problem", "json_answer",
           "server_error", "value_at"]

_SHOWN = 160  # characters of a server's own message quoted in a reason


class WrongAnswer(Exception):
    """An answer the server sent successfully that is wrong for its protocol (the request's ``error``)."""


@dataclass(frozen=True)
class Call:
    """One HTTP request to make: ``name`` is its endpoint in Locust's stats and on the timeline."""

    method: str
    path: str
    body: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    name: str = ""
    stream: bool = False
    """Read the answer as server-sent events (:meth:`ProtocolClient.stream_reader`)."""
    expected: Any = None
    """A known answer this call's answer must hold (``target_service.answers.Expected``), or None."""


@dataclass(frozen=True)
class Outcome:
    """A judged answer. ``ok`` False with ``reason`` None: the status alone failed it (Locust says so)."""

    ok: bool
    reason: str | None = None
    ttft_s: float | None = None
    """Streamed answers: seconds from sending the request to the first token."""
    itl_s: float | None = None
    """Streamed answers: mean seconds between consecutive tokens (None with fewer than two)."""

    @classmethod
    def wrong(cls, reason: str) -> Outcome:
        return cls(False, reason)


OK = Outcome(True)
STATUS_FAILED = Outcome(False)  # not 2xx: Locust's own error names the status


class ProtocolClient(ABC):
    """The requests of one protocol and the judgement of their answers."""

    ready: bool = True
    """Whether :meth:`call` may be used (an OIP v2 client with generated inputs waits for the metadata)."""

    def setup_call(self, now: float) -> Call | None:
        """A request to make before (or beside) the load — the model's metadata — or None; ``now`` is
        ``time.monotonic()`` (a client retries at most once a second)."""
        return None

    def set_up(self, status: int, headers: Mapping[str, str], body: bytes) -> Outcome:
        """Take the answer to :meth:`setup_call` (judged like any answer)."""
        return OK

    @abstractmethod
    def call(self, index: int) -> Call:
        """The ``index``-th request (clients cycle through their payloads)."""

    @abstractmethod
    def check(self, status: int, headers: Mapping[str, str], body: bytes) -> Outcome:
        """Judge a whole (not streamed) answer; ``headers`` have lower-case names."""

    def judge_of(self, call: Call) -> Callable[[int, Mapping[str, str], bytes], Outcome]:
        """How the answer to ``call`` is judged: :meth:`check`, unless a client judges a call by what it sent."""
        return self.check

    def stream_reader(self, headers: Mapping[str, str]) -> Any:
        """A reader of a streamed answer (``line(raw, t)`` per line, then ``end(t, leftover)`` → Outcome)."""
        raise NotImplementedError(f"{type(self).__name__} does not stream")


def json_answer(body: bytes | memoryview) -> tuple[Any, str | None]:
    """``(document, None)``, or ``(None, why it is not JSON)``."""
    try:
        return json.loads(bytes(body)), None
    except RecursionError:
        return None, "the answer is not JSON: nested too deeply"
    except ValueError as exc:  # also UnicodeDecodeError
        return None, f"the answer is not JSON ({str(exc)[:_SHOWN]})"


def server_error(doc: Any) -> str | None:
    """The server's own error in a JSON answer (``{"error": "…"}`` or ``{"error": {"message": "…"}}``)."""
    if not isinstance(doc, dict) or doc.get("error") in (None, "", {}):
        return None
    err = doc["error"]
    message = err.get("message", err) if isinstance(err, dict) else err
    return f"the server answered an error: {str(message)[:_SHOWN]}"


def value_at(doc: Any, parts: tuple[str | int, ...]) -> tuple[bool, Any]:
    """``(found, value)`` at a JSON path (``experiments.spec.load.json_path_parts``)."""
    node = doc
    for part in parts:
        indexed = isinstance(part, int) and isinstance(node, list) and part < len(node)
        if not indexed and not (isinstance(part, str) and isinstance(node, dict) and part in node):
            return False, None
        node = node[part]
    return True, node


def finite_problem(doc: Any, where: str) -> str | None:
    """The first number in ``doc`` that is not finite (JSON's non-standard NaN, Infinity), by its path."""
    stack: list[tuple[Any, str]] = [(doc, where)]
    while stack:
        node, at = stack.pop()
        if isinstance(node, float) and not math.isfinite(node):
            return f"{at} is {node} (not a finite number)"
        if isinstance(node, list):
            stack.extend((v, f"{at}[{i}]") for i, v in reversed(list(enumerate(node))))
        elif isinstance(node, dict):
            stack.extend((v, f"{at}.{k}") for k, v in reversed(list(node.items())))
    return None
