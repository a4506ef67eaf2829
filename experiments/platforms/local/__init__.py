"""The local platform: the bundled system on this machine, with Kubernetes semantics.

``platform`` (``LocalPlatform``), ``stack`` (feature store, fault proxy, replicas), ``probes`` and
``restarts`` (kubelet behaviour), ``endpoint`` (readiness-aware service endpoint), ``exporter``
(kube-state-metrics and cAdvisor series), the canary rollout (``rollout``, ``split``, ``canary``,
``control``) and ``redis`` (the prediction cache).
"""
