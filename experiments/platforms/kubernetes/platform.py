"""The kubernetes platform: the bundled target deployed on a cluster, the LocalPlatform contract.

:class:`KubernetesPlatform` does not start processes: it finds what ``target_service/deploy``
deployed, in one allow-listed namespace, and observes and controls it through the official
``kubernetes`` client (imported only in the ``kube_*`` modules and ``faults/kube``):

- discovery: pods labelled ``app.kubernetes.io/name=<target_app>`` are the replicas
  (``replica-0``…, stable slots), ``<feature_store_app>`` is ``feature-store``; a pod of either
  without the chaos opt-in label (``selector``) is refused with an error naming it;
- the watch API feeds :class:`~experiments.platforms.kubernetes.events.PodTracker`: ``process`` events
  ``start``/``exit`` (``OOMKilled``, ``Error``…, ``exitCode``)/``restart``/``ready``/``unready``,
  and a ``probe`` readiness sample on each Ready change (the kubelet's verdict, not our probe);
- :attr:`service_url`: ``target.kubernetes.service_url`` when given, else a local forwarder
  through the API's pod port-forward to a *ready* replica (``kube_forward.py``);
- Supervisor: ``kill`` = exec ``kill -<sig> <server pid>`` in the pod (``faults.kube.pods.MAIN_PID``);
  ``stop`` of a replica deletes its pod (a Deployment cannot hold one pod down), of the feature
  store scales it to 0 (held);
  ``start`` restores the recorded replica count; ``restart`` deletes the pod (with ``env``: a
  PATCH of the Deployment's env, which rolls every replica — as a real cluster would).
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from faultdrill.experiments.host.process import ServiceError
from faultdrill.experiments.journal.timeline import Timeline
from faultdrill.experiments.platforms.kubernetes.events import NAME_LABEL, PodTracker
from faultdrill.experiments.spec.kubernetes import KubernetesSettings
from faultdrill.faults.base import Scope
from faultdrill.faults.errors import ConfigError
from faultdrill.faults.kube.client import api_client, apps, cluster_ref, core, pod_exec
from faultdrill.faults.kube.pods import main_sh
from faultdrill.faults.owned import Owner
from faultdrill.faults.topology import KubeRef, ServiceHandle, Topology

if TYPE_CHECKING:
    from faultdrill.experiments.observe.load import LoadShape
    from faultdrill.experiments.platforms.base import Load, PlatformEnvironment
    from faultdrill.experiments.spec.experiment import LoadSpec

__all__ = ["KubernetesPlatform", "check_cluster"]


def check_cluster(settings: KubernetesSettings, timeout_s: float = 5.0) -> Any:
    """A client for a reachable cluster, or a one-line ConfigError (nothing touched)."""
    from kubernetes import client

    ref = cluster_ref(settings.namespace, settings.context, settings.kubeconfig)
    try:
        api = api_client(ref)
        client.VersionApi(api).get_code(_request_timeout=timeout_s)
    except Exception as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"no Kubernetes cluster is reachable: {msg} "
                          "(set KUBECONFIG or target.kubernetes.kubeconfig/context; see docs/kubernetes.md)",
                          field="target.platform") from None  # fmt: skip
    return api


class KubernetesPlatform:
    """The deployed target on a cluster; see the module docstring."""

    name = "kubernetes"
    own_alerting = False  # the cluster's Prometheus Operator evaluates the rules; a run does not wire its own

    def __init__(self, settings: KubernetesSettings, *, replicas: int = 1, timeline: Timeline | None = None,
                 ready_timeout_s: float = 300.0) -> None:  # fmt: skip
        self.settings, self.replicas, self.ready_timeout_s = settings, replicas, ready_timeout_s
        self.timeline = timeline if timeline is not None else Timeline()
        self.namespace = settings.namespace
        self.tracker = PodTracker(replica_app=settings.target_app, container="target")
        self.api: Any = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watch: Any = None
        self._thread: threading.Thread | None = None
        self._forwarder: Any = None
        self._uids: dict[str, str] = {}
        self._exits: dict[str, int] = {}
        self._store_replicas = 1

    # -- lifecycle ---------------------------------------------------------------------
    def __enter__(self) -> KubernetesPlatform:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def up(self, *, wait_ready: bool = True) -> None:
        if self.namespace not in self.settings.namespaces:
            raise ConfigError(f"namespace '{self.namespace}' is not allow-listed", field="target.kubernetes.namespace")
        self.api = check_cluster(self.settings)
        try:
            self._refuse_unlabelled()
            self._thread = threading.Thread(target=self._run_watch, name="kube-watch", daemon=True)
            self._thread.start()
            deadline = time.monotonic() + self.ready_timeout_s
            while wait_ready and len(self.ready_replicas()) < self.replicas:
                if time.monotonic() > deadline:
                    raise ServiceError(f"{self.replicas} ready replicas expected in {self.namespace} after "
                                       f"{self.ready_timeout_s:.0f}s, have {self.ready_replicas()}")  # fmt: skip
                time.sleep(0.2)
            if self.settings.service_url is None:
                from faultdrill.experiments.platforms.kubernetes.forward import PortForwarder

                self._forwarder = PortForwarder(self.api, self.namespace, self._ready_pods, 8000)
                self._forwarder.start()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.stop()
        if self._forwarder is not None:
            self._forwarder.stop()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _refuse_unlabelled(self) -> None:
        key, _, value = self.settings.selector.partition("=")
        for app in (self.settings.target_app, self.settings.feature_store_app):
            pods = core(self.api).list_namespaced_pod(self.namespace, label_selector=f"{NAME_LABEL}={app}").items
            if not pods:
                raise ServiceError(f"no pod {NAME_LABEL}={app} in namespace {self.namespace}: deploy "
                                   "target_service/deploy first (docs/kubernetes.md)")  # fmt: skip
            for pod in pods:
                if (pod.metadata.labels or {}).get(key) != value:
                    raise ConfigError(f"pod {self.namespace}/{pod.metadata.name} lacks the chaos opt-in label "
                                      f"{self.settings.selector}: refusing to use it",
                                      field="target.kubernetes.selector")  # fmt: skip

    def _run_watch(self) -> None:
        from kubernetes import watch

        s = self.settings
        selector = f"{NAME_LABEL} in ({s.target_app},{s.feature_store_app}),{s.selector}"
        while not self._stop.is_set():
            self._watch = watch.Watch()
            with contextlib.suppress(Exception):  # a dropped watch is re-established
                for ev in self._watch.stream(core(self.api).list_namespaced_pod, self.namespace,
                                             label_selector=selector, timeout_seconds=60):  # fmt: skip
                    self.feed({"type": ev["type"], "object": self.api.sanitize_for_serialization(ev["object"])})
            self._stop.wait(0.5)

    def feed(self, event: dict[str, Any]) -> None:
        """One watch event onto the timeline (the watch thread; tests call it with recorded events)."""
        with self._lock:
            out = self.tracker.feed(event)
            meta = event["object"]["metadata"]
            if event["type"] != "DELETED":
                self._uids[meta["name"]] = meta.get("uid", "")
        for service, attrs in out:
            self.timeline.add("process", service, **attrs)
            if attrs["event"] in ("ready", "unready"):
                self.timeline.add("probe", service, probe="readiness", value=attrs["event"] == "ready", status=None,
                                  origin="pod Ready condition")  # fmt: skip
            if attrs["event"] == "exit" and isinstance(attrs.get("code"), int):
                self._exits[service] = attrs["code"]

    # -- what runs -----------------------------------------------------------------------
    @property
    def service_url(self) -> str:
        if self.settings.service_url:
            return self.settings.service_url.rstrip("/")
        if self._forwarder is None:
            raise ServiceError("the platform is not up")
        return str(self._forwarder.url)

    def _ready_pods(self) -> list[str]:
        with self._lock:
            return [n for n, s in self.tracker.pods.items() if s.service.startswith("replica-") and s.ready]

    def ready_replicas(self) -> list[str]:
        with self._lock:
            return sorted(s.service for s in self.tracker.pods.values() if s.service.startswith("replica-") and s.ready)

    def restarts(self, name: str) -> int:
        with self._lock:
            return max([s.restarts for s in self.tracker.pods.values() if s.service == name] or [0])

    def topology(self) -> Topology:
        s, services = self.settings, {}
        common = {"namespace": self.namespace, "context": s.context, "kubeconfig": s.kubeconfig}
        with self._lock:
            pods = {seen.service: name for name, seen in self.tracker.pods.items()}
        for service, pod in sorted(pods.items()):
            if service.startswith("replica-"):
                ref = KubeRef(**common, deployment=s.target_app, pod=pod, pod_uid=self._uids.get(pod),
                              container="target", admin_url="http://127.0.0.1:9000",
                              admin_token_env="FAULTDRILL_ADMIN_TOKEN")  # fmt: skip
                services[service] = ServiceHandle(name=service, role="replica", kube=ref, port=8000)
        store = KubeRef(**common, deployment=s.feature_store_app, container="feature-store", tls_secret=s.tls_secret,
                        admin_url="https://127.0.0.1:8443", admin_token_env="FAULTDRILL_FS_ADMIN_TOKEN")  # fmt: skip
        store_url = f"https://{s.feature_store_app}.{self.namespace}.svc:8443"
        services["feature-store"] = ServiceHandle(name="feature-store", role="feature_store", kube=store, port=8443,
                                                  url=store_url)
        if self._forwarder is not None or s.service_url:
            services["service"] = ServiceHandle(name="service", role="other", url=self.service_url)
        return Topology(services=services)

    def scope(self) -> Scope:
        return Scope(namespaces=frozenset({self.namespace}))

    def environment(self, device: str) -> PlatformEnvironment:
        from faultdrill.experiments.platforms.base import PlatformEnvironment

        return PlatformEnvironment(device=device, emulated=False, notes=(
            f"platform kubernetes: namespace {self.scope().namespaces}, pods observed through the "
            "watch API, faults through the Kubernetes API (faults/kube)",))  # fmt: skip

    def load_generator(self, load: LoadSpec, *, shape: LoadShape, run_time_s: float, workdir: Path, model: str,
                       owner: Owner | None) -> Load:  # fmt: skip
        """The in-cluster Locust (``kube_load.py``) with ``settings.locust``, else Locust here against
        :attr:`service_url`."""
        if self.settings.locust:
            from faultdrill.experiments.platforms.kubernetes.load import KubeLoad

            return KubeLoad(self.api, self.namespace, self.timeline, users=load.users,
                            spawn_rate=float(load.spawn_rate or load.users), run_time_s=run_time_s,
                            workers=load.workers or 2)  # fmt: skip
        from faultdrill.experiments.observe.load import LoadGenerator

        return LoadGenerator(
            self.service_url, self.timeline, workdir, users=load.users, spawn_rate=load.spawn_rate, shape=shape,
            workers=load.workers, run_time=run_time_s, model=model, think_time_s=float(load.think_time),
            clients=[(c.id, c.weight) for c in load.clients], owner=owner,
        )  # fmt: skip

    # -- Supervisor protocol ---------------------------------------------------------------
    def handle(self, name: str) -> ServiceHandle:
        return self.topology().get(name)

    def _pod(self, name: str) -> str:
        ref = self.handle(name).kube
        if ref is None or ref.pod is None:
            raise ServiceError(f"'{name}' is not a pod")
        return ref.pod

    def kill(self, name: str, sig: int) -> None:
        pod_exec(self.api, self.namespace, self._pod(name), "target", main_sh(f'kill -{int(sig)} "$p"'))

    def stop(self, name: str, *, hold: bool = True) -> int | None:
        if name == "feature-store":
            scale = apps(self.api).read_namespaced_deployment_scale(self.settings.feature_store_app, self.namespace)
            self._store_replicas = scale.spec.replicas or self._store_replicas
            apps(self.api).patch_namespaced_deployment_scale(self.settings.feature_store_app, self.namespace,
                                                             {"spec": {"replicas": 0}})  # fmt: skip
            return None
        core(self.api).delete_namespaced_pod(self._pod(name), self.namespace)
        return None

    def start(self, name: str, *, env: dict[str, str] | None = None, wait: bool = True) -> None:
        if env:
            self._patch_env(env)
        if name == "feature-store":
            apps(self.api).patch_namespaced_deployment_scale(self.settings.feature_store_app, self.namespace,
                                                             {"spec": {"replicas": self._store_replicas}})  # fmt: skip
        if wait:
            self._wait_ready(name)

    def restart(self, name: str, *, env: dict[str, str] | None = None, wait: bool = True) -> None:
        if env:
            self._patch_env(env)  # a new ReplicaSet replaces every pod
        elif name != "feature-store":
            core(self.api).delete_namespaced_pod(self._pod(name), self.namespace)
        if wait:
            self._wait_ready(name)

    def _patch_env(self, env: dict[str, str]) -> None:
        items = [{"name": k, "value": v} for k, v in env.items()]
        body = {"spec": {"template": {"spec": {"containers": [{"name": "target", "env": items}]}}}}
        apps(self.api).patch_namespaced_deployment(self.settings.target_app, self.namespace, body)

    def _wait_ready(self, name: str) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if any(s.service == name and s.ready for s in self.tracker.pods.values()):
                    return
            time.sleep(0.2)
        raise ServiceError(f"{name} not ready within {self.ready_timeout_s:.0f}s")

    def exit_status(self, name: str) -> int | None:
        code = self._exits.get(name)
        return -(code - 128) if code is not None and code > 128 else code

    def wait_exit(self, name: str, timeout_s: float) -> int | None:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end and name not in self._exits:
            time.sleep(0.1)
        return self.exit_status(name)

