"""Observers: everything that watches a run and writes what it sees to the timeline.

``load`` (Locust, every request's outcome), ``scraper`` (each replica's ``/metrics``), ``traces``
(example traces per window) and ``observers`` (probes, breakers, processes).
"""
