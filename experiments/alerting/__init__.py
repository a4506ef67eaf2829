"""Alerting: a real Prometheus and Alertmanager per run, their rules, time scaling, and the watcher.

``stack`` (the processes), ``rules`` (where rules and the Alertmanager config come from), ``timescale``
(production durations sped up for CI), ``watch`` (alert states and notifications onto the timeline),
``session`` (the alerting half of a run, wired together).
"""
