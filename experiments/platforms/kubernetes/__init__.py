"""The kubernetes platform: the bundled target deployed on a cluster, behind the same contract.

``platform`` (``KubernetesPlatform``), ``manifests`` (render ``target_service/deploy``), ``events`` (pod
watch → timeline), ``forward`` (a readiness-aware local endpoint through port-forward), ``load``
(in-cluster Locust).
"""
