"""JSON: the journal itself, and its published JSON Schema (``reports/schema/journal.schema.json``).

The schema is generated from the pydantic models of the journal (``experiments.journal.models`` for the
verdicts, faults, load, alerting and traces sections; ``experiments.journal.events`` for each event kind's
``attrs``); ``version`` is pinned to the journal format version (a ``const``), so a consumer can check what
it reads. A test keeps the checked-in file equal to :func:`journal_schema`; regenerate it with
``faultdrill report --schema > reports/schema/journal.schema.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from faultdrill.experiments.journal import JOURNAL_VERSION, Journal

__all__ = ["SCHEMA_PATH", "journal_schema", "render_json", "schema_text"]

SCHEMA_PATH = Path(__file__).parent / "schema" / "journal.schema.json"


def render_json(journal: Journal, *, indent: int | None = 1) -> str:
    """The journal as JSON (what ``journal.json`` holds)."""
    return journal.model_dump_json(indent=indent) + "\n"


def journal_schema() -> dict[str, Any]:
    schema = Journal.model_json_schema(mode="serialization")
    schema["properties"]["version"] = {**schema["properties"]["version"], "const": JOURNAL_VERSION}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"urn:faultdrill:journal:v{JOURNAL_VERSION}",
        **schema,
        "description": "One faultdrill run: spec, environment, events, verdicts, faults, outcome "
                       f"(journal format version {JOURNAL_VERSION}).",
    }  # fmt: skip


def schema_text() -> str:
    return json.dumps(journal_schema(), indent=2, sort_keys=False) + "\n"
