"""Faults through the Kubernetes API: the same fault ``type:`` names, another mechanism.

Each built-in fault class that has one declares its Kubernetes action: ``kubernetes = KillAction``
(a :class:`~faults.kube.actions.KubeAction`). ``Fault``'s operations (``faults/base.py``) call it
when the service a fault aims at is a Kubernetes object (its :class:`~faults.topology.ServiceHandle`
carries a ``kube`` reference) or the ledger record says ``platform: kubernetes``, and the class's
own code otherwise. Importing the actions is cheap: the ``kubernetes`` client is imported lazily,
in ``client.py``, when an action runs.
"""
