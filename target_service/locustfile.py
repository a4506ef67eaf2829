"""Locust load for the bundled target: real digit rows POSTed to ``/v2/models/{model}/infer``.

Runs headless in its own process (gevent must never meet an orchestrator's threads)::

    python -m locust -f target_service/locustfile.py --headless -H http://127.0.0.1:8000 \\
        -u 8 -r 8 -t 30s --json-file out/stats

Every answer is checked (``target_service/answers.py``): a 2xx whose outputs are not OIP v2 JSON, do not fill
their shape (or, with known answers, have another shape), hold a non-finite number (the JSON ``null`` of a NaN)
or fail a known answer is a failed request (``WrongAnswer: <why>``, counted ``wrong`` on its line).

Every request is also counted on a line of the file named by ``FAULTDRILL_LOAD_EVENTS`` (one file per Locust
process): per 100 ms of send time and endpoint/client/version/replica, counts by status, an HDR histogram of
the ok requests' latency and the failures kept raw, written once those 100 ms are over and at exit (the format
is ``target_service/loadkit.py``'s), so a watcher puts the requests on a run's timeline as they happen.

Environment (all optional):

==============================  ==========================================================
``FAULTDRILL_LOAD_EVENTS``      per-process file of request buckets (unset: none written)
``FAULTDRILL_LOAD_MODEL``       model name in the path (default ``digits``)
``FAULTDRILL_LOAD_TIMEOUT_S``   connect and read timeout per request (default 10)
``FAULTDRILL_LOAD_WAIT_S``      think time between a user's requests (default 0: closed loop)
``FAULTDRILL_LOAD_SHAPE``       ``steady`` (default), ``ramp``, ``step`` or ``spike``
``FAULTDRILL_LOAD_RAMP_S``      ramp: seconds from 1 user to ``--users`` (default 10)
``FAULTDRILL_LOAD_STEP_USERS``  step: users added per step (default 1)
``FAULTDRILL_LOAD_STEP_S``      step: seconds per step (default 5)
``FAULTDRILL_LOAD_SPIKE_USERS`` spike: users during the spike (default 4 × ``--users``)
``FAULTDRILL_LOAD_SPIKE_AT_S``  spike: when it starts (default 5)
``FAULTDRILL_LOAD_SPIKE_S``     spike: how long it lasts (default 5)
``FAULTDRILL_LOAD_ENTITIES``    end users the requests are for, in turn (``parameters.entity_id``; default 1)
``FAULTDRILL_LOAD_KNOWN_ANSWERS`` a known-answer file (``target_service/answers.py``): every 4th request
                                sends one of its requests, in turn, and must get its answer
``FAULTDRILL_LOAD_CLIENTS``     clients the users act for, JSON ``[{"id": "tenant-a", "weight": 1}]``:
                                each user sends ``X-Client-Id`` of one, assigned by weight
                                (smooth weighted round robin); its events carry ``"client"``
==============================  ==========================================================

The shape reads ``--users``, ``--spawn-rate`` and ``--run-time`` (Locust's common options)
and stops the test when the run time is over. This module imports nothing from faultdrill's
framework packages: the target stays deployable, and load-testable, alone. The shape, the
clients and the event lines are ``target_service/loadkit.py``, shared with the locustfile of
``load.protocol`` (``experiments/observe/protocol_locustfile.py``).
"""

from __future__ import annotations

import functools
import json
import os
import random
import sys
import time
from typing import Any

from locust import FastHttpUser, events, task

# Loaded by path, its grandparent on PYTHONPATH (or the working directory): ``target_service`` is top-level.
from target_service.answers import KNOWN_EVERY, Expected, check_outputs, read
from target_service.loadkit import (
    FaultdrillShape,
    NotSent,
    Pacer,
    ShapeSettings,
    WrongAnswer,
    client_cycle,
    on_init,
    users_at,
)

try:  # the framework installs orjson; the target alone parses with the standard library
    from orjson import loads as _loads
except ImportError:  # pragma: no cover
    _loads = json.loads  # type: ignore[assignment]

__all__ = ["FaultdrillShape", "InferUser", "ShapeSettings", "client_cycle", "users_at"]

_PAYLOAD_ROWS = 256
_ENTITIES = max(1, int(os.environ.get("FAULTDRILL_LOAD_ENTITIES", "1")))


@functools.cache
def _bodies(model_rows: int) -> tuple[str, ...]:
    """Pre-serialised OIP v2 request bodies of real digit rows (JSON encoding off the hot path)."""
    from target_service.models import example_inputs  # torch: ~2 s

    rows = example_inputs(model_rows)
    inputs = ({"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [round(float(v), 6) for v in row]}
              for row in rows)  # fmt: skip
    # Requests on behalf of _ENTITIES end users (``parameters.entity_id``, ``load.entities``): the target's
    # per-entity feature cache then refreshes about _ENTITIES entities a second, so a dependency that hangs
    # is felt by the requests that refresh — unless a breaker fails them fast.
    return tuple(json.dumps({"inputs": [one], "parameters": {"entity_id": f"user-{i % _ENTITIES}"}})
                 for i, one in enumerate(inputs))  # fmt: skip



@functools.cache
def _payloads(model_rows: int) -> tuple[tuple[str, Expected | None], ...]:
    """The bodies with what each must be answered with: with ``FAULTDRILL_LOAD_KNOWN_ANSWERS``, every
    ``KNOWN_EVERY``-th body carries a known request's inputs (the rest of the body as it was), in turn."""
    bodies = _bodies(model_rows)
    path = os.environ.get("FAULTDRILL_LOAD_KNOWN_ANSWERS")
    if not path:
        return tuple((b, None) for b in bodies)
    known = read(path).answers
    out: list[tuple[str, Expected | None]] = []
    for i, body in enumerate(bodies):
        if i % KNOWN_EVERY:
            out.append((body, None))
            continue
        expected = known[(i // KNOWN_EVERY) % len(known)]
        out.append((json.dumps({**json.loads(body), "inputs": list(expected.inputs)}), expected))
    return tuple(out)


@functools.cache
def _shapes() -> dict[str, tuple[int, ...]] | None:
    """The shape every answer's outputs must have: the known answers' (one row a request), or None."""
    expected = next((e for _, e in _payloads(_PAYLOAD_ROWS) if e is not None), None)
    return {name: shape for name, shape, _ in expected.outputs} if expected is not None else None


def judge(response: Any, expected: Expected | None) -> None:
    """A 2xx answer whose outputs are wrong fails as a :class:`WrongAnswer` (``target_service/answers.py``);
    any other status is left to Locust (an HTTP error)."""
    if not 200 <= (response.status_code or 0) < 300:
        return
    try:
        outputs = _loads(response.content or b"")["outputs"]
    except (ValueError, KeyError, TypeError):
        response.failure(WrongAnswer("the answer is not OIP v2 JSON with outputs"))
        return
    if (why := check_outputs(outputs, _shapes(), expected)) is not None:
        response.failure(WrongAnswer(why))


events.init.add_listener(on_init)

# Load the payloads (and torch, ~2 s) while Locust imports this file: a worker connects to its
# master only afterwards, so the master's run-time clock never runs while a worker is still
# loading. The master only coordinates and skips it (it would load lazily if ever needed).
if "--master" not in sys.argv:
    _payloads(_PAYLOAD_ROWS)


_CLIENTS = client_cycle(os.environ.get("FAULTDRILL_LOAD_CLIENTS"))


class InferUser(FastHttpUser):
    """A client of the target: one inference request after another (optional think time); with
    ``FAULTDRILL_LOAD_RATE_PER_USER``, an open-model arrival process instead (``loadkit.Pacer``)."""

    concurrency = Pacer.connections()
    _pacer: Pacer | None = None
    network_timeout = float(os.environ.get("FAULTDRILL_LOAD_TIMEOUT_S", "10"))
    connection_timeout = network_timeout
    _think_s = float(os.environ.get("FAULTDRILL_LOAD_WAIT_S", "0"))
    _path = f"/v2/models/{os.environ.get('FAULTDRILL_LOAD_MODEL', 'digits')}/infer"

    def wait_time(self) -> float:
        return self._think_s

    def on_start(self) -> None:
        self._next = random.randrange(_PAYLOAD_ROWS)  # users start at different rows
        self._client = next(_CLIENTS)
        self._headers = {"Content-Type": "application/json"}
        if self._client is not None:
            self._headers["X-Client-Id"] = self._client

    @task
    def infer(self) -> None:
        if (pacer := Pacer.from_env()) is not None:  # open model: this user's arrivals, on schedule, until stop
            self._pacer = pacer
            pacer.run(self._paced, self._refused)
            return
        payloads = _payloads(_PAYLOAD_ROWS)
        body, expected = payloads[self._next % len(payloads)]
        self._next += 1
        with self.client.post(self._path, data=body, headers=self._headers, name=self._path, catch_response=True,
                              context={"client": self._client}) as response:  # fmt: skip
            judge(response, expected)

    def _paced(self, intended: float) -> None:
        """One arrival, timed from its scheduled moment (``intended``, wall time), however late it is sent."""
        payloads = _payloads(_PAYLOAD_ROWS)
        body, expected = payloads[self._next % len(payloads)]
        self._next += 1
        with self.client.post(self._path, data=body, headers=self._headers, name=self._path, catch_response=True,
                              context={"client": self._client}) as response:  # fmt: skip
            judge(response, expected)
            response.request_meta["start_time"] = intended
            response.request_meta["response_time"] = (time.time() - intended) * 1000.0

    def _refused(self, intended: float, in_flight: int) -> None:
        self.environment.events.request.fire(
            request_type="POST", name=self._path, response_time=(time.time() - intended) * 1000.0, response_length=0,
            response=None, exception=NotSent(f"{in_flight} requests in flight: the target is not keeping up"),
            start_time=intended, context={"client": self._client})  # fmt: skip

    def on_stop(self) -> None:
        if self._pacer is not None:
            self._pacer.stop()
