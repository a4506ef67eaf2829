"""The kubernetes platform: the bundled target — or a workload of your own — on a cluster, the LocalPlatform contract.

A workload of your own (``target.service: {kind: kubernetes, app, container, port}``) is found the same way:
its pods are those labelled ``app.kubernetes.io/name=<app>`` (with the opt-in label), its container and port
are the spec's; it has no admin API, so faults that need the bundled server inside the pod refuse it (their
preflight), a kill deletes the pod, and the load is Locust on this machine speaking the workload's protocol
through the port-forward (the in-cluster Locust sends the bundled target's request only).

:class:`KubernetesPlatform` does not start processes: it finds what ``target_service/deploy``
deployed, in one allow-listed namespace, and observes and controls it through the official
``kubernetes`` client (imported only in the ``kube_*`` modules and ``faults/kube``). Which services
those are, by name and role, is its :class:`~experiments.spec.system.SystemDescription` (``system``; the
bundled system of ``replicas`` when none is given); the replicas are the ``target_app`` Deployment, the
feature store the ``feature_store_app`` one, and the bundled programs' containers, ports and admin token env
come from ``experiments.spec.bundled`` by role:

- discovery: pods labelled ``app.kubernetes.io/name=<target_app>`` are the replicas (stable slots
  named after the description's replicas: ``replica-0``… in the bundled system), ``<feature_store_app>``
  is the described feature store; a pod of either without the chaos opt-in label (``selector``) is
  refused with an error naming it. Described services of a role ``target_service/deploy`` does not
  deploy (a fault proxy, the cache) are not in the topology;
- the watch API feeds :class:`~experiments.platforms.kubernetes.events.PodTracker`: ``process`` events
  ``start``/``exit`` (``OOMKilled``, ``Error``…, ``exitCode``)/``restart``/``ready``/``unready``,
  and a ``probe`` readiness sample on each Ready change (the kubelet's verdict, not our probe);
- :attr:`service_url`: ``target.kubernetes.service_url`` when given, else a local forwarder
  through the API's pod port-forward to a *ready* replica (``kube_forward.py``);
- Supervisor: ``kill`` = exec ``kill -<sig> <server pid>`` in the pod (``faults.kube.pods.MAIN_PID``);
  ``stop`` of a replica deletes its pod (a Deployment cannot hold one pod down), of the feature
  store (by role) scales it to 0 (held);
  ``start`` restores the recorded replica count; ``restart`` deletes the pod (with ``env``: a
  PATCH of the Deployment's env, which rolls every replica — as a real cluster would).
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from faultdrill.experiments.host.process import ServiceError
from faultdrill.experiments.journal.timeline import Timeline
from faultdrill.experiments.platforms.kubernetes.events import NAME_LABEL, PodTracker
from faultdrill.experiments.spec.bundled import BUNDLED_PROCESSES
from faultdrill.experiments.spec.kubernetes import KubernetesSettings
from faultdrill.experiments.spec.service import KubernetesWorkload
from faultdrill.experiments.spec.system import SystemDescription, bundled_system
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

_REPLICA, _STORE = BUNDLED_PROCESSES["replica"], BUNDLED_PROCESSES["feature_store"]
"""The bundled programs in their pods (container, port, admin API, token env): ``target_service/deploy``."""


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
                 ready_timeout_s: float = 300.0, system: SystemDescription | None = None) -> None:  # fmt: skip
        """``system``: the deployed services; None: the bundled system of ``replicas``."""
        self.system = system if system is not None else bundled_system(replicas=replicas)
        self.settings, self.replicas, self.ready_timeout_s = settings, len(self.system.replicas()), ready_timeout_s
        self.timeline = timeline if timeline is not None else Timeline()
        self.namespace = settings.namespace
        stores = self.system.with_role("feature_store")
        self.store: str | None = stores[0] if stores else None
        """The described feature store (the ``feature_store_app`` Deployment), if any."""
        program = self.system.program
        self.workload: KubernetesWorkload | None = program if isinstance(program, KubernetesWorkload) else None
        """A workload of your own; None: the bundled target."""
        self.app = self.workload.app if self.workload else settings.target_app
        self.container = self.workload.container if self.workload else _REPLICA.container
        self.port = self.workload.port if self.workload else _REPLICA.port
        self.tracker = PodTracker(replica_app=self.app, container=self.container,
                                  slot=self.system.replica_slot,
                                  apps={settings.feature_store_app: self.store} if self.store else {})  # fmt: skip
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

                self._forwarder = PortForwarder(self.api, self.namespace, self._ready_pods, self.port)
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
        for app in self._apps():
            pods = core(self.api).list_namespaced_pod(self.namespace, label_selector=f"{NAME_LABEL}={app}").items
            if not pods:
                what = "is the workload deployed, its pods labelled so?" if self.workload else \
                    "deploy target_service/deploy first (docs/kubernetes.md)"  # fmt: skip
                raise ServiceError(f"no pod {NAME_LABEL}={app} in namespace {self.namespace}: {what}")
            for pod in pods:
                if (pod.metadata.labels or {}).get(key) != value:
                    raise ConfigError(f"pod {self.namespace}/{pod.metadata.name} lacks the chaos opt-in label "
                                      f"{self.settings.selector}: refusing to use it",
                                      field="target.kubernetes.selector")  # fmt: skip

    def _apps(self) -> list[str]:
        """The Deployments the described services are: the replicas', and the feature store's if described."""
        return [self.app, *([self.settings.feature_store_app] if self.store else [])]

    def _run_watch(self) -> None:
        from kubernetes import watch

        selector = f"{NAME_LABEL} in ({','.join(self._apps())}),{self.settings.selector}"
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
            return [n for n, s in self.tracker.pods.items() if s.replica and s.ready]

    def ready_replicas(self) -> list[str]:
        with self._lock:
            return sorted(s.service for s in self.tracker.pods.values() if s.replica and s.ready)

    def restarts(self, name: str) -> int:
        with self._lock:
            return max([s.restarts for s in self.tracker.pods.values() if s.service == name] or [0])

    def topology(self) -> Topology:
        s, services = self.settings, {}
        common = {"namespace": self.namespace, "context": s.context, "kubeconfig": s.kubeconfig}
        with self._lock:
            pods = self.tracker.replicas()
        admin = {} if self.workload else {"admin_url": _REPLICA.admin_url, "admin_token_env": _REPLICA.admin_token_env}
        for service, pod in sorted(pods.items()):
            ref = KubeRef(**common, deployment=self.app, pod=pod, pod_uid=self._uids.get(pod), container=self.container,
                          **admin)  # fmt: skip
            model = self.workload.model.name if self.workload and self.workload.model else None
            services[service] = ServiceHandle(name=service, role="replica", kube=ref, port=self.port, model_name=model)
        if self.store is not None:
            store = KubeRef(**common, deployment=s.feature_store_app, container=_STORE.container,
                            tls_secret=s.tls_secret, admin_url=_STORE.admin_url,
                            admin_token_env=_STORE.admin_token_env)  # fmt: skip
            store_url = f"https://{s.feature_store_app}.{self.namespace}.svc:{_STORE.port}"
            services[self.store] = ServiceHandle(name=self.store, role="feature_store", kube=store, port=_STORE.port,
                                                 url=store_url)  # fmt: skip
        if self._forwarder is not None or s.service_url:
            services["service"] = ServiceHandle(name="service", role="other", url=self.service_url)
        return Topology(services=services)

    def scope(self) -> Scope:
        return Scope(namespaces=frozenset({self.namespace}))

    def environment(self, device: str) -> PlatformEnvironment:
        from faultdrill.experiments.platforms.base import PlatformEnvironment

        what = f"a workload of your own (pods {NAME_LABEL}={self.app}, container {self.container})" if self.workload \
            else "the bundled target"  # fmt: skip
        return PlatformEnvironment(device=device, emulated=False, notes=(
            f"platform kubernetes: {what} in namespace {self.namespace}, pods observed through the "
            "watch API, faults through the Kubernetes API (faults/kube)",))  # fmt: skip

    def load_generator(self, load: LoadSpec, *, shape: LoadShape, run_time_s: float, workdir: Path, model: str,
                       owner: Owner | None) -> Load:  # fmt: skip
        """The in-cluster Locust (``kube_load.py``) with ``settings.locust``, else Locust here against
        :attr:`service_url`."""
        if self.settings.locust and self.workload is None:  # the in-cluster Locust sends the bundled request only
            from faultdrill.experiments.platforms.kubernetes.load import KubeLoad

            return KubeLoad(self.api, self.namespace, self.timeline, users=load.users,
                            spawn_rate=float(load.spawn_rate or load.users), run_time_s=run_time_s,
                            workers=load.workers or 2)  # fmt: skip
        from faultdrill.experiments.observe.load import LoadGenerator

        return LoadGenerator.of_spec(self.service_url, self.timeline, workdir, load, shape=shape, run_time=run_time_s,
                                     model=model, owner=owner)

    # -- Supervisor protocol ---------------------------------------------------------------
    def handle(self, name: str) -> ServiceHandle:
        return self.topology().get(name)

    def _pod(self, name: str) -> str:
        ref = self.handle(name).kube
        if ref is None or ref.pod is None:
            raise ServiceError(f"'{name}' is not a pod")
        return ref.pod

    def kill(self, name: str, sig: int) -> None:
        if self.workload is not None:  # its main process is not known: the pod goes (SIGKILL: no grace period)
            from kubernetes import client

            grace = 0 if sig == signal.SIGKILL else None
            core(self.api).delete_namespaced_pod(self._pod(name), self.namespace,
                                                 body=client.V1DeleteOptions(grace_period_seconds=grace))
            return
        pod_exec(self.api, self.namespace, self._pod(name), _REPLICA.container, main_sh(f'kill -{int(sig)} "$p"'))

    def stop(self, name: str, *, hold: bool = True) -> int | None:
        if name == self.store:
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
        if name == self.store:
            apps(self.api).patch_namespaced_deployment_scale(self.settings.feature_store_app, self.namespace,
                                                             {"spec": {"replicas": self._store_replicas}})  # fmt: skip
        if wait:
            self._wait_ready(name)

    def restart(self, name: str, *, env: dict[str, str] | None = None, wait: bool = True) -> None:
        if env:
            self._patch_env(env)  # a new ReplicaSet replaces every pod
        elif name != self.store:
            core(self.api).delete_namespaced_pod(self._pod(name), self.namespace)
        if wait:
            self._wait_ready(name)

    def set_env(self, name: str, env: Mapping[str, str | None]) -> dict[str, str | None]:
        """PATCH the Deployment's pod template (``kubectl set env``): every pod it makes from now on, the
        replacement of a deleted one included, has it; a rollout replaces the running pods. None deletes a variable.
        The feature store's Deployment is not changed here (its spec is the cluster's)."""
        if name == self.store:
            raise ServiceError(f"'{name}': set_env changes the replicas' Deployment ({self.app}) only")
        dep = apps(self.api).read_namespaced_deployment(self.app, self.namespace)
        current = {e.name: e.value for c in dep.spec.template.spec.containers if c.name == self.container
                   for e in c.env or []}  # fmt: skip
        previous = {k: current.get(k) for k in env}
        self._patch_env(env)
        return previous

    def _patch_env(self, env: Mapping[str, str | None]) -> None:
        """Strategic-merge PATCH of the container's env in the Deployment's template (None deletes a variable)."""
        items = [{"name": k, "value": v} if v is not None else {"name": k, "$patch": "delete"} for k, v in env.items()]
        body = {"spec": {"template": {"spec": {"containers": [{"name": self.container, "env": items}]}}}}
        apps(self.api).patch_namespaced_deployment(self.app, self.namespace, body)

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

