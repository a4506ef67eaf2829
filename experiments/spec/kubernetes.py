"""The ``target.kubernetes`` section: where the target runs on a cluster, and what may be touched.

Used when ``target.platform: kubernetes`` (defaults apply when the section is left out)::

    target:
      platform: kubernetes
      kubernetes:
        namespace: faultdrill          # must be in `namespaces` (the allow-list)
        namespaces: [faultdrill]
        context: kind-faultdrill       # kubeconfig context (default: current; in a pod: in-cluster)
        selector: faultdrill.io/chaos-target=true

Pods without the opt-in label (``selector``) are never chaos targets; a namespace not in the
allow-list is refused at load time, located (``target.kubernetes.namespace``).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationInfo, field_validator

__all__ = ["KubernetesSettings"]

DnsLabel = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")]


class KubernetesSettings(BaseModel):
    """``target.kubernetes``: namespace and its allow-list, kubeconfig/context, opt-in selector, names."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    namespaces: list[DnsLabel] = Field(default_factory=lambda: ["faultdrill"], min_length=1)
    """The allow-list: the only namespaces faults may touch."""
    namespace: DnsLabel = "faultdrill"
    context: str | None = None
    kubeconfig: str | None = None
    """A kubeconfig file (default: ``$KUBECONFIG``, then ``~/.kube/config``; in a pod: in-cluster)."""
    selector: str = "faultdrill.io/chaos-target=true"
    """Label selector of the chaos opt-in; pods without it are refused."""
    target_app: DnsLabel = "target"
    feature_store_app: DnsLabel = "feature-store"
    tls_secret: DnsLabel = "feature-store-tls"
    service_url: str | None = None
    """How this machine reaches the target Service (NodePort, Ingress…); default: a local
    readiness-aware forwarder through the API server's pod port-forward."""
    locust: bool = True
    """Load from the in-cluster Locust master/workers (``locust-master``/``locust-worker``)."""

    @field_validator("namespace")
    @classmethod
    def _allow_listed(cls, value: str, info: ValidationInfo) -> str:
        allowed = info.data.get("namespaces") or []
        if value not in allowed:
            raise ValueError(f"namespace '{value}' is not allow-listed (target.kubernetes.namespaces: "
                             f"{', '.join(allowed) or 'none'})")  # fmt: skip
        return value
