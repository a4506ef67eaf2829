"""Observers: everything that watches a run and writes what it sees to the timeline.

``load`` (Locust, every request's outcome; ``protocols`` and ``protocol_locustfile`` for ``load.protocol``:
OIP v2, OpenAI, KServe V1 and plain HTTP requests, each answer judged by its protocol), ``scraper`` (each
replica's ``/metrics``), ``traces`` (example traces per window) and ``observers`` (probes, breakers, processes).
"""
