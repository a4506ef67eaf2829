"""JSON: the journal itself, with a published, up-to-date JSON Schema that pins the version."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from faultdrill.cli import app
from faultdrill.experiments.journal import JOURNAL_VERSION
from faultdrill.reports.jsonout import SCHEMA_PATH, journal_schema, render_json, schema_text


def test_checked_in_schema_is_up_to_date():
    assert json.loads(SCHEMA_PATH.read_text()) == journal_schema(), (
        "reports/schema/journal.schema.json is stale: faultdrill report --schema > reports/schema/journal.schema.json")
    assert SCHEMA_PATH.read_text() == schema_text()


def test_schema_pins_the_version_and_validates_journals(journal_factory, smoke_journal):
    import jsonschema

    schema = journal_schema()
    assert schema["properties"]["version"]["const"] == JOURNAL_VERSION
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    # the real run with a sample of its events (one of each kind and source): all 10k would take seconds
    sample = list({(e.kind, e.source): e for e in smoke_journal.events}.values())
    # (a version 1 journal: version 2 only added the ``requests`` kind, so it validates as one)
    real = smoke_journal.model_copy(update={"events": sample, "version": JOURNAL_VERSION})
    for journal in (journal_factory(), journal_factory("error", events=False), real):
        validator.validate(json.loads(render_json(journal)))
    bad = json.loads(render_json(journal_factory()))
    bad["version"] = JOURNAL_VERSION + 1
    assert not validator.is_valid(bad)


def test_json_round_trips(journal_factory):
    from faultdrill.experiments.journal import Journal

    journal = journal_factory("halted", reason="stopped")
    assert Journal.model_validate_json(render_json(journal)) == journal


def test_cli_prints_the_schema():
    result = CliRunner().invoke(app, ["report", "--schema"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == journal_schema()
