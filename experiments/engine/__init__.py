"""The engine: a spec becomes a Plan, a Plan becomes a run.

``plan`` (``build_plan``: params parsed once, bound to their plugins), ``run`` (the stages of a run, in
order), ``runtime`` (the parts a run is built from), ``schedule`` (when each fault starts and ends),
``runbook_hook`` (runbooks launched by fault triggers), ``liveview`` and ``runlinks``.
"""
