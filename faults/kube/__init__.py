"""Faults through the Kubernetes API: the same fault ``type:`` names, another mechanism.

The built-in fault classes are decorated with :func:`faults.kube.dispatch.kube_dispatch`: when
the service a fault aims at is a Kubernetes object (its :class:`~faults.topology.ServiceHandle`
carries a ``kube`` reference) or the ledger record says ``platform: kubernetes``, the calls go to
:mod:`faults.kube.actions` instead of the local implementation. Only ``dispatch`` is imported by
the local path; the ``kubernetes`` client is imported lazily in ``client.py``.
"""
