"""Pod watch events → the timeline's ``process`` events, the same vocabulary as the local platform.

:class:`PodTracker` is fed every pod watch event as the API serialises it (``{"type":
"ADDED|MODIFIED|DELETED", "object": <V1Pod JSON>}``, camelCase) and returns the timeline
events it implies, remembering the last state of each pod:

- first sight of a running container → ``start`` (``pod``, ``restarts``);
- ``restartCount`` went up → ``exit`` from ``lastState.terminated`` (``reason`` as the kubelet
  says: ``OOMKilled``, ``Error``, ``Completed``…; ``code`` = ``exitCode``; ``signal`` = code − 128
  when above 128; ``ran_s`` from ``startedAt``/``finishedAt``) then ``restart``;
- a container now terminated (``state.terminated``) → ``exit`` once; waiting in
  ``CrashLoopBackOff`` is carried as ``waiting`` on that exit's restart;
- the pod's ``Ready`` condition flips → ``ready`` / ``unready``;
- ``DELETED`` → ``exit`` (``cause: deleted``) unless the container's exit was already seen.

Service names: pods of the target Deployment take stable replica slots, the description's replica names
in order (``SystemDescription.replica_slot``: ``replica-0``… in the bundled system; a replacement
pod takes the slot its predecessor freed, so ``target: replica-0`` keeps meaning "a replica"),
pods of another Deployment the service ``apps`` maps its ``app.kubernetes.io/name`` label to (the
label itself when unmapped).
Pure and thread-free: the platform's watch thread feeds it; tests feed recorded responses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from faultdrill.experiments.spec.bundled import BUNDLED_PROCESSES
from faultdrill.experiments.spec.system import bundled_system

__all__ = ["NAME_LABEL", "PodTracker", "TimelineEvent"]

NAME_LABEL = "app.kubernetes.io/name"
TimelineEvent = tuple[str, dict[str, Any]]  # (service name, attrs of a "process" event)


_BUNDLED_SLOTS = bundled_system(replicas=0).replica_slot


@dataclass
class _Seen:
    service: str
    uid: str
    replica: bool = False
    restarts: int = -1
    ready: bool | None = None
    exited: bool = False
    running: bool = False


@dataclass
class PodTracker:
    """State of every pod seen; see the module docstring."""

    replica_app: str = "target"
    container: str = BUNDLED_PROCESSES["replica"].container
    max_replicas: int = 64
    slot: Callable[[int], str] = _BUNDLED_SLOTS
    """The name of replica slot ``i`` (``SystemDescription.replica_slot``)."""
    apps: dict[str, str] = field(default_factory=dict)
    """``app.kubernetes.io/name`` of another Deployment → the described service its pods are."""
    pods: dict[str, _Seen] = field(default_factory=dict)

    def service_of(self, pod: str) -> str | None:
        seen = self.pods.get(pod)
        return seen.service if seen else None

    def replicas(self) -> dict[str, str]:
        """Replica slot → pod name, for pods not deleted."""
        return {s.service: name for name, s in self.pods.items() if s.replica}

    def _seen(self, pod: dict[str, Any], uid: str) -> _Seen:
        app = str((pod["metadata"].get("labels") or {}).get(NAME_LABEL, pod["metadata"]["name"]))
        if app != self.replica_app:
            return _Seen(service=self.apps.get(app, app), uid=uid)
        taken = {s.service for s in self.pods.values()}
        slot = next(name for name in map(self.slot, range(self.max_replicas)) if name not in taken)
        return _Seen(service=slot, uid=uid, replica=True)

    def feed(self, event: dict[str, Any]) -> list[TimelineEvent]:
        pod = event["object"]
        name, uid = pod["metadata"]["name"], pod["metadata"].get("uid", "")
        seen = self.pods.get(name)
        if seen is None or seen.uid != uid:
            if event["type"] == "DELETED":
                return []
            seen = self.pods[name] = self._seen(pod, uid)
        out: list[TimelineEvent] = []
        cs = _container(pod, self.container)
        if cs is not None:
            out.extend(self._container(name, seen, cs))
        if event["type"] == "DELETED":
            if seen.running and not seen.exited:
                term = (cs or {}).get("state", {}).get("terminated") or {}
                out.append((seen.service, _exit(name, term, seen.restarts, cause="deleted")))
            if seen.ready:
                out.append((seen.service, {"event": "unready", "pod": name}))
            del self.pods[name]
            return out
        ready = _ready(pod)
        if ready != seen.ready and (ready or seen.ready is not None):
            out.append((seen.service, {"event": "ready" if ready else "unready", "pod": name}))
        seen.ready = ready
        return out

    def _container(self, name: str, seen: _Seen, cs: dict[str, Any]) -> list[TimelineEvent]:
        out: list[TimelineEvent] = []
        state, restarts = cs.get("state") or {}, int(cs.get("restartCount") or 0)
        if seen.restarts < 0:  # first sight: adopt its count, report it as started if it runs
            seen.restarts = restarts
            if "running" in state:
                seen.running = True
                out.append((seen.service, {"event": "start", "pod": name, "pid": None, "restarts": restarts}))
            return out
        if restarts > seen.restarts:
            last = (cs.get("lastState") or {}).get("terminated") or {}
            if not seen.exited:
                out.append((seen.service, _exit(name, last, seen.restarts)))
            waiting = (state.get("waiting") or {}).get("reason")
            out.append((seen.service, {"event": "restart", "pod": name, "pid": None, "restarts": restarts,
                                       "reason": last.get("reason"), "backoff_s": None,
                                       "waiting": waiting}))  # fmt: skip
            seen.restarts, seen.exited, seen.running = restarts, False, "running" in state
        elif "terminated" in state and not seen.exited:
            out.append((seen.service, _exit(name, state["terminated"], restarts)))
            seen.exited = True
        elif "running" in state and not seen.running:
            seen.running = True
            out.append((seen.service, {"event": "start", "pod": name, "pid": None, "restarts": restarts}))
        return out


def _container(pod: dict[str, Any], container: str) -> dict[str, Any] | None:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return next((c for c in statuses if c.get("name") == container), statuses[0] if statuses else None)


def _ready(pod: dict[str, Any]) -> bool:
    conds = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


def _exit(pod: str, term: dict[str, Any], restarts: int, *, cause: str | None = None) -> dict[str, Any]:
    code = term.get("exitCode")
    signal = code - 128 if isinstance(code, int) and code > 128 else term.get("signal")
    ran = None
    if term.get("startedAt") and term.get("finishedAt"):
        ran = round((_ts(term["finishedAt"]) - _ts(term["startedAt"])).total_seconds(), 3)
    return {"event": "exit", "pod": pod, "pid": None, "code": code, "signal": signal,
            "reason": term.get("reason") or ("Signal" if cause else None), "cause": cause, "ran_s": ran,
            "restarts": restarts, "backoff_s": None}  # fmt: skip


def _ts(value: str | datetime) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
