"""Locust load in the protocol a server speaks (``load.protocol``): the locustfile ``load.py`` starts when
a spec names one (``target_service/locustfile.py`` otherwise).

Why a second locustfile, here: the bundled target's locustfile may import nothing of the framework
(import-linter: the target stays deployable alone), while a protocol's requests and judgements are
the framework's (``experiments.observe.protocols``, typed by ``experiments.spec.load``). What both
share — load shape, load clients, one JSON line per request — is ``target_service/loadkit.py``, which
imports only Locust, so both files write the same lines and follow the same ``FAULTDRILL_LOAD_*``
settings. This file loads no torch: a Locust process against a third-party server stays small.

``FAULTDRILL_LOAD_PROTOCOL`` names the protocol file ``load.py`` wrote (``protocols.Runtime``: the
spec's protocol with its payload file already read and checked). Each process builds one client that
its users share. A user sends the client's setup request when it has one (an OIP v2 model's
metadata: a request on the timeline like any other), then the client's calls, each judged by the
client: ``success()``, ``failure(WrongAnswer(reason))`` (``error: "WrongAnswer: …"``), or, for a
status the protocol does not accept, Locust's own verdict. A streamed answer (OpenAI ``stream:
true``) is read line by line as it arrives; its latency is the whole stream's, and its time to first
token and mean inter-token latency go on its line (``ttft_s``, ``itl_s``).

    python -m locust -f experiments/observe/protocol_locustfile.py --headless -H http://127.0.0.1:8000 \\
        -u 4 -t 10s     # with FAULTDRILL_LOAD_PROTOCOL=load-protocol.json
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

import gevent
from locust import FastHttpUser, events, task

from faultdrill.experiments.observe.protocols import Call, Outcome, Runtime, WrongAnswer, client_of
from faultdrill.target_service.loadkit import FaultdrillShape, NotSent, Pacer, client_cycle, on_init

__all__ = ["FaultdrillShape", "ProtocolUser"]

_NOT_READY_S = 0.2  # a user's pause while its client waits for the model's metadata

events.init.add_listener(on_init)

_RUNTIME = os.environ.get("FAULTDRILL_LOAD_PROTOCOL")
if not _RUNTIME:
    raise SystemExit("FAULTDRILL_LOAD_PROTOCOL is not set: the protocol file load.py writes (protocols.Runtime)")
_CLIENT = client_of(Runtime.read(_RUNTIME))
_CLIENTS = client_cycle(os.environ.get("FAULTDRILL_LOAD_CLIENTS"))

Judge = Callable[[int, Mapping[str, str], bytes], Outcome]


def _headers(response: Any) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in (getattr(response, "headers", None) or {}).items()}


class ProtocolUser(FastHttpUser):
    """A client of the server in its protocol: one request after another (optional think time); with
    ``FAULTDRILL_LOAD_RATE_PER_USER``, an open-model arrival process instead (``loadkit.Pacer``)."""

    concurrency = Pacer.connections()
    _pacer: Pacer | None = None
    network_timeout = float(os.environ.get("FAULTDRILL_LOAD_TIMEOUT_S", "10"))
    connection_timeout = network_timeout
    _think_s = float(os.environ.get("FAULTDRILL_LOAD_WAIT_S", "0"))

    def wait_time(self) -> float:
        return self._think_s

    def on_start(self) -> None:
        self._next = random.randrange(1 << 16)  # users start at different payloads
        self._client = next(_CLIENTS)
        self._extra = {"X-Client-Id": self._client} if self._client is not None else {}

    @task
    def send(self) -> None:
        if _CLIENT.ready and (pacer := Pacer.from_env()) is not None:  # open model: arrivals on schedule until stop
            self._pacer = pacer
            pacer.run(self._paced, self._refused)
            return
        if (setup := _CLIENT.setup_call(time.monotonic())) is not None:
            self._send(setup, _CLIENT.set_up)
        if not _CLIENT.ready:
            gevent.sleep(_NOT_READY_S)
            return
        call = _CLIENT.call(self._next)
        self._next += 1
        self._send(call, _CLIENT.judge_of(call))

    def _paced(self, intended: float) -> None:
        """One arrival, timed from its scheduled moment (``intended``, wall time), however late it is sent."""
        call = _CLIENT.call(self._next)
        self._next += 1
        self._send(call, _CLIENT.judge_of(call), intended)

    def _refused(self, intended: float, in_flight: int) -> None:
        call = _CLIENT.call(self._next)
        self.environment.events.request.fire(
            request_type=call.method, name=call.name, response_time=(time.time() - intended) * 1000.0,
            response_length=0, response=None, start_time=intended, context={"client": self._client},
            exception=NotSent(f"{in_flight} requests in flight: the server is not keeping up"))  # fmt: skip

    def on_stop(self) -> None:
        if self._pacer is not None:
            self._pacer.stop()

    def _send(self, call: Call, judge: Judge, intended: float | None = None) -> None:
        headers = {**call.headers, **self._extra}
        started = time.perf_counter()
        body: Any = call.body  # bytes: Locust's annotation says str | dict, geventhttpclient sends bytes as they are
        with self.client.request(call.method, call.path, data=body, headers=headers, name=call.name,
                                 catch_response=True, stream=call.stream,
                                 context={"client": self._client}) as response:  # fmt: skip
            status = int(response.status_code or 0)
            if status == 0:  # never answered: Locust's own error (connection refused, reset, timeout)
                if intended is not None:
                    response.request_meta["start_time"] = intended
                    response.request_meta["response_time"] = (time.time() - intended) * 1000.0
                return
            try:
                if call.stream and 200 <= status < 300:
                    outcome = self._read_stream(response, started)
                else:
                    outcome = judge(status, _headers(response), response.content or b"")
            except Exception as exc:  # a broken stream or body read (or a bug in a check): this request failed
                response.failure(exc)
                return
            if outcome.ttft_s is not None or outcome.itl_s is not None:
                response.request_meta["context"] |= {"ttft_s": outcome.ttft_s, "itl_s": outcome.itl_s}
            if outcome.ok:
                response.success()
            elif outcome.reason is not None:
                response.failure(WrongAnswer(outcome.reason))
            if intended is not None:  # open model: the line counts from the scheduled moment
                response.request_meta["start_time"] = intended
                response.request_meta["response_time"] = (time.time() - intended) * 1000.0

    def _read_stream(self, response: Any, started: float) -> Outcome:
        """Read server-sent events line by line (geventhttpclient's ``readline`` returns each line as it
        arrives); the request's latency becomes the whole stream's."""
        reader = _CLIENT.stream_reader(_headers(response))
        raw = response._response  # geventhttpclient's response: Locust's own iter_content reads it too
        received = 0
        while line := raw.readline(b"\n"):
            received += len(line)
            reader.line(line, time.perf_counter() - started)
        leftover = raw.read()
        ended = time.perf_counter() - started
        response.request_meta["response_time"] = ended * 1000.0
        response.request_meta["response_length"] = received + len(leftover)
        return reader.end(ended, leftover)
