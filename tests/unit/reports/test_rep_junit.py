"""JUnit XML: valid against the checked-in JUnit schema and read back by a real consumer (junitparser)."""

from __future__ import annotations

import pytest

from faultdrill.reports.junit import render_junit
from faultdrill.reports.model import RunView


@pytest.fixture(scope="module")
def schema(xsd_path):
    import xmlschema

    return xmlschema.XMLSchema(str(xsd_path))


def _read(tmp_path, text):
    from junitparser import JUnitXml

    path = tmp_path / "junit.xml"
    path.write_text(text, encoding="utf-8")
    return JUnitXml.fromfile(str(path))


@pytest.mark.parametrize("outcome", ["passed", "failed", "halted", "error"])
def test_valid_for_every_outcome(journal_factory, schema, outcome):
    journal = journal_factory(outcome, reason="" if outcome in ("passed", "failed") else f"{outcome}: why",
                              events=outcome != "error")  # fmt: skip
    schema.validate(render_junit([RunView.of(journal)]))


def test_failures_and_errors_read_back(journal_factory, schema, tmp_path):
    from junitparser import Error, Failure

    views = [RunView.of(journal_factory("failed", name="first")),
             RunView.of(journal_factory("halted", name="second", reason="halt_if availability: below 0.5"))]
    text = render_junit(views)
    schema.validate(text)
    suites = list(_read(tmp_path, text))
    assert [s.name for s in suites] == ["first", "second"]
    first, second = suites
    assert (first.tests, first.failures, first.errors) == (2, 1, 0)
    cases = {c.name: c for c in first}
    failed = cases["availability at least 0.95 during hog"]
    (failure,) = failed.result
    assert isinstance(failure, Failure)
    assert failure.message == ("expected availability at least 0.95 during hog; observed availability during hog "
                               "was 0.800 over 100 requests (expected at least 0.95)")  # fmt: skip
    assert cases["readiness of replica-0 becomes false within 3 s after hog.start"].is_passed
    assert (second.tests, second.failures, second.errors) == (3, 1, 1)
    run = next(c for c in second if c.name == "run")
    (error,) = run.result
    assert isinstance(error, Error) and error.message == "halt_if availability: below 0.5" and error.type == "Halted"


def test_error_run_without_verdicts_is_one_error(journal_factory, schema, tmp_path):
    text = render_junit([RunView.of(journal_factory("error", events=False, reason="preflight: no root"))])
    schema.validate(text)
    (suite,) = list(_read(tmp_path, text))
    assert (suite.tests, suite.failures, suite.errors) == (1, 0, 1)


def test_real_run_and_control_characters(smoke_view, journal_factory, schema, tmp_path):
    text = render_junit([smoke_view])
    schema.validate(text)
    (suite,) = list(_read(tmp_path, text))
    assert suite.tests == 11 and suite.failures == 0 and all(c.is_passed for c in suite)
    weird = journal_factory("failed", verdicts=[{"name": "x\x00\x1b[31m", "passed": False, "expected": "e\x07",
                                                 "observed": "o"}])  # fmt: skip
    schema.validate(render_junit([RunView.of(weird)]))


def test_the_schema_rejects_what_ci_would_reject(schema):
    assert not schema.is_valid('<testsuites><testsuite name="x"/></testsuites>')  # counts are required
    assert not schema.is_valid('<testsuites><testsuite name="x" tests="one" failures="0" errors="0"/></testsuites>')
