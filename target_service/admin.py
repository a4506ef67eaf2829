"""The chaos admin API: the realistic in-process levers that faults pull.

Served on its own port, bound to 127.0.0.1 whatever the inference API binds to, and only
when a bearer token is configured; the token is compared in constant time
(``hmac.compare_digest``) and never logged.

=======================================  ==============================================
``GET  /admin/state``                    held/leaked memory, worker, readiness
``POST /admin/device-memory/hold``       ``{"bytes": N}`` or ``{"leave_free_mib": M}``
``POST /admin/device-memory/release``    ``{"bytes": N}`` (omit for all)
``POST /admin/host-memory/leak``         ``{"rate_mib_s": R, "max_mib": M}``
``DELETE /admin/host-memory/leak``       stop leaking and free it
``POST /admin/worker/freeze``            ``{"seconds": S}``: the worker blocks (liveness fails)
``POST /admin/worker/unfreeze``
``POST /admin/device/sticky-error``      ``{"why": "..."}``: poison the device (until exit); the GPU
                                         state records the Xid 43 the driver logs for it
``POST /admin/device/slowdown``          ``{"factor": F, "seconds": S}``: every forward pass
                                         F× as long (for S seconds when given)
``DELETE /admin/device/slowdown``        back to full speed
``POST /admin/device/corrupt``           ``{"mode": "bitflip"|"scale", "layer", "count",
                                         "bit", "factor", "seed"}``: corrupt the weights
``POST /admin/device/restore``           write the corrupted weights back, bit for bit
``POST /admin/device/inject``            ``{"field": "DCGM_FI_DEV_XID_ERRORS", "value": 79}``: a DCGM
                                         field injected with its effect (``gpu_state.py``)
=======================================  ==============================================

The device levers are ``gpu_faults.py``'s; the sticky error has no undo route on purpose: a
poisoned CUDA context lives as long as its process, so the only repair is a restart.

Example::

    curl -H "Authorization: Bearer $TOKEN" -d '{"leave_free_mib": 16}' \\
         http://127.0.0.1:9001/admin/device-memory/hold
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .gpu_state import STICKY_XID
from .replica import Replica

__all__ = ["create_admin"]

log = logging.getLogger("target.admin")
MIB = 1024 * 1024
Handler = Callable[[Request], Awaitable[Response]]


def _json(doc: object, status: int = 200) -> Response:
    return Response(orjson.dumps(doc), status_code=status, media_type="application/json")


class _BadRequest(Exception):
    pass


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _BadRequest(f"malformed JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise _BadRequest("body must be a JSON object")
    return doc


def _number(doc: dict[str, Any], key: str, *, minimum: float = 0) -> float | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or value < minimum:
        raise _BadRequest(f"{key!r} must be a number >= {minimum}")
    return float(value)


def create_admin(replica: Replica, token: str) -> Starlette:
    """Build the admin app; every route requires ``Authorization: Bearer <token>``."""
    expected = f"Bearer {token}".encode()

    def guarded(handler: Handler) -> Handler:
        async def wrapper(request: Request) -> Response:
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return _json({"error": "missing or wrong bearer token"}, 401)
            try:
                return await handler(request)
            except _BadRequest as exc:
                return _json({"error": str(exc)}, 400)

        return wrapper

    def loaded_or_409() -> Any:
        if replica.loaded is None:
            raise _BadRequest(f"model not loaded ({replica.readiness_reason()})")
        return replica.loaded

    def state_doc() -> dict[str, Any]:
        doc: dict[str, Any] = {
            "ready": replica.ready(),
            "live": replica.live(),
            "readiness_reason": replica.readiness_reason(),
            "host_memory_leaked_bytes": replica.leaked_bytes(),
        }
        if replica.loaded is not None:
            dev = replica.loaded.device
            used, total = dev.memory()
            doc.update(
                device=dev.kind,
                emulated=dev.emulated,
                device_memory_used_bytes=used,
                device_memory_total_bytes=total,
                device_memory_held_bytes=dev.held_bytes,
                worker_heartbeat_age_s=round(replica.loaded.engine.heartbeat_age(), 3),
                **replica.loaded.engine.faults.state(),
            )
            if replica.gpu is not None:
                gpu = replica.gpu.read()
                doc["gpu"] = {k: gpu[k] for k in ("xid_last", "reset_required", "lost", "clocks_event_reasons",
                                                  "ecc_dbe_vol", "ecc_sbe_vol")}  # fmt: skip
                doc["gpu"]["xid_codes"] = [e.get("xid") for e in gpu["xid_events"] if isinstance(e, dict)]
            verdict = replica.loaded.engine.health_verdict
            doc["compute_check"] = None if verdict is None else {"kind": verdict.kind, "reason": verdict.reason}
        return doc

    async def state(_: Request) -> Response:
        return _json(state_doc())

    async def hold(request: Request) -> Response:
        doc = await _body(request)
        loaded = loaded_or_409()
        dev = loaded.device
        nbytes = _number(doc, "bytes")
        leave = _number(doc, "leave_free_mib")
        if (nbytes is None) == (leave is None):
            raise _BadRequest("give exactly one of 'bytes' or 'leave_free_mib'")
        try:
            held = dev.hold(int(nbytes)) if nbytes is not None else dev.hold_leaving(int((leave or 0) * MIB))
        except Exception as exc:  # a real CUDA allocation can fail: say so, keep serving
            return _json({"error": f"could not hold memory: {exc}", **state_doc()}, 507)
        replica.metrics.admin_held.set(held)
        log.warning("chaos: holding device memory", extra={"fields": {"held_bytes": held}})
        return _json(state_doc())

    async def release(request: Request) -> Response:
        doc = await _body(request)
        loaded = loaded_or_409()
        nbytes = _number(doc, "bytes")
        held = loaded.device.release(None if nbytes is None else int(nbytes))
        loaded.device.empty_cache()
        replica.metrics.admin_held.set(held)
        log.warning("chaos: released device memory", extra={"fields": {"held_bytes": held}})
        return _json(state_doc())

    async def leak(request: Request) -> Response:
        doc = await _body(request)
        rate = _number(doc, "rate_mib_s", minimum=0.001)
        limit = _number(doc, "max_mib", minimum=1)
        if rate is None or limit is None:
            raise _BadRequest("give 'rate_mib_s' and 'max_mib'")
        replica.start_leak(int(rate * MIB), int(limit * MIB))
        log.warning("chaos: leaking host memory", extra={"fields": {"rate_mib_s": rate}})
        return _json(state_doc())

    async def stop_leak(_: Request) -> Response:
        replica.stop_leak(free=True)
        return _json(state_doc())

    async def freeze(request: Request) -> Response:
        doc = await _body(request)
        seconds = _number(doc, "seconds", minimum=0.001)
        if seconds is None:
            raise _BadRequest("give 'seconds'")
        loaded_or_409().engine.freeze(seconds)
        log.warning("chaos: inference worker frozen", extra={"fields": {"seconds": seconds}})
        return _json(state_doc())

    async def unfreeze(_: Request) -> Response:
        loaded_or_409().engine.unfreeze()
        return _json(state_doc())

    def device_doc(doc: dict[str, Any], key: str) -> Any:
        value = doc.get(key)
        if (value is not None and not isinstance(value, str | int | float)) or isinstance(value, bool):
            raise _BadRequest(f"{key!r} must be a string or a number")
        return value

    async def sticky(request: Request) -> Response:
        doc = await _body(request)
        why = device_doc(doc, "why")
        faults = loaded_or_409().engine.faults
        message = faults.poison(str(why) if why else "out-of-bounds index in a kernel", xid=STICKY_XID)
        log.warning("chaos: device poisoned (sticky error)", extra={"fields": {"error": message}})
        return _json(state_doc())

    async def slowdown(request: Request) -> Response:
        doc = await _body(request)
        factor = _number(doc, "factor", minimum=1)
        seconds = _number(doc, "seconds", minimum=0.001)
        if factor is None:
            raise _BadRequest("give 'factor' (>= 1), and optionally 'seconds' (back to full speed then)")
        loaded_or_409().engine.faults.slow(factor, seconds)
        log.warning("chaos: device slowed down", extra={"fields": {"factor": factor}})
        return _json(state_doc())

    async def full_speed(_: Request) -> Response:
        loaded_or_409().engine.faults.slow(1.0)
        return _json(state_doc())

    async def corrupt(request: Request) -> Response:
        doc = await _body(request)
        faults = loaded_or_409().engine.faults
        unknown = sorted(set(doc) - {"mode", "layer", "count", "bit", "factor", "seed"})
        if unknown:
            raise _BadRequest(f"unknown field {unknown[0]!r} (expected mode, layer, count, bit, factor, seed)")
        layer = device_doc(doc, "layer")
        count, bit, seed = (_number(doc, k) for k in ("count", "bit", "seed"))
        factor = doc.get("factor", -1.0)
        if not isinstance(factor, int | float) or isinstance(factor, bool):
            raise _BadRequest("'factor' must be a number")
        try:
            done = faults.corrupt(doc.get("mode", "bitflip"), layer=None if layer is None else str(layer),
                                  count=int(count if count is not None else 16), bit=int(bit if bit is not None
                                  else 30), factor=float(factor), seed=int(seed or 0))  # fmt: skip
        except ValueError as exc:
            raise _BadRequest(str(exc)) from None
        log.warning("chaos: device weights corrupted", extra={"fields": done})
        return _json(state_doc())

    async def inject(request: Request) -> Response:
        doc = await _body(request)
        loaded = loaded_or_409()
        if replica.gpu is None:
            raise _BadRequest("the GPU state is not loaded yet")
        field, value = doc.get("field"), _number(doc, "value")
        if not isinstance(field, str | int) or isinstance(field, bool) or value is None:
            raise _BadRequest("give 'field' (a DCGM field name or id) and 'value' (a number >= 0)")
        try:
            effect = replica.gpu.inject(field, value)
        except ValueError as exc:
            raise _BadRequest(str(exc)) from None
        if effect.poison is not None:
            loaded.engine.faults.poison(effect.poison)
        loaded.engine.faults.throttle(replica.gpu.slowdown())
        log.warning("chaos: DCGM field injected", extra={"fields": {"field": effect.field, "value": effect.value,
                                                                    "action": effect.action}})  # fmt: skip
        return _json({**state_doc(), "effect": {"field": effect.field, "value": effect.value, "action": effect.action,
                                                "poison": effect.poison, "slowdown": effect.slowdown}})  # fmt: skip

    async def restore(_: Request) -> Response:
        loaded_or_409().engine.faults.restore()
        return _json(state_doc())

    routes = [
        Route("/admin/state", guarded(state)),
        Route("/admin/device-memory/hold", guarded(hold), methods=["POST"]),
        Route("/admin/device-memory/release", guarded(release), methods=["POST"]),
        Route("/admin/host-memory/leak", guarded(leak), methods=["POST"]),
        Route("/admin/host-memory/leak", guarded(stop_leak), methods=["DELETE"]),
        Route("/admin/worker/freeze", guarded(freeze), methods=["POST"]),
        Route("/admin/worker/unfreeze", guarded(unfreeze), methods=["POST"]),
        Route("/admin/device/sticky-error", guarded(sticky), methods=["POST"]),
        Route("/admin/device/slowdown", guarded(slowdown), methods=["POST"]),
        Route("/admin/device/slowdown", guarded(full_speed), methods=["DELETE"]),
        Route("/admin/device/corrupt", guarded(corrupt), methods=["POST"]),
        Route("/admin/device/restore", guarded(restore), methods=["POST"]),
        Route("/admin/device/inject", guarded(inject), methods=["POST"]),
    ]
    return Starlette(routes=routes)
