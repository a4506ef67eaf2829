"""The record of a run: its timeline of events, and the journal file that keeps it.

``events`` (one typed model per event kind), ``timeline`` (the run's events in time order), ``models``
(verdicts, faults, load, alerting, traces as the journal keeps them) and ``file`` (the journal: one JSON
file per run). Reports import this package and nothing else of ``experiments``; it imports nothing else
of ``experiments`` (import-linter contracts). Everything a reader needs is importable from here::

    from faultdrill.experiments.journal import Journal
    journal = Journal.read(Path("runs/latest-smoke/journal.json"))
"""

from __future__ import annotations

from faultdrill.experiments.journal.file import *  # noqa: F403 (the journal's public names, listed in file.__all__)
from faultdrill.experiments.journal.file import __all__ as __all__
