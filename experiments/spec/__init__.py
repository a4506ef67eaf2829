"""The experiment spec: typed models, the located YAML loader, and the system under test as data.

``experiment`` (the ``Experiment`` models), ``loader`` (YAML → ``Experiment`` or located errors),
``system`` (the services of the system under test and their roles), and one module per spec
section that has its own vocabulary: ``alerting``, ``canary``, ``kubernetes``.
"""
