"""Chaos Toolkit: faultdrill inside Chaos Toolkit, and Chaos Toolkit inside faultdrill.

``target`` (the bundled target for ``chaos run``, in a background process), ``probes`` (faultdrill's
probes as Chaos Toolkit probes), ``embed`` and ``steps`` (plain Chaos Toolkit experiments run inside a
faultdrill run). ``examples/`` holds a Chaos Toolkit experiment that uses them.
"""
