"""JUnit XML: each experiment a ``<testsuite>``, each expectation a ``<testcase>``.

The format is the one Jenkins, GitLab, GitHub Actions reporters and pytest read (Ant's
``XMLJUnitResultFormatter`` lineage; ``tests/fixtures/reports/junit.xsd`` describes it and a
test validates every output against it). A failed expectation's ``<failure>`` message is the
verdict's explanation (expected … ; observed …). A halted or errored run adds a testcase
``run`` with an ``<error>`` carrying the reason, so CI shows it even when no verdict exists.

Example::

    Path("junit.xml").write_text(render_junit([RunView.of(journal)]))
"""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from faultdrill.reports.model import RunView

__all__ = ["render_junit"]


def _clean(text: str) -> str:
    """XML 1.0 cannot carry most control characters: drop them rather than write a broken file."""
    return "".join(c for c in text if c in "\t\n\r" or ord(c) >= 0x20)


def _suite(view: RunView) -> ET.Element:
    j = view.journal
    cases: list[ET.Element] = []
    failures = errors = 0
    classname = _clean(f"faultdrill.{j.name}")
    for v in view.verdicts:
        took = (v.window[1] - v.window[0]) if v.window else 0.0
        case = ET.Element("testcase", name=_clean(v.name), classname=classname, time=f"{max(took, 0):.3f}")
        if not v.evaluated:  # the run aborted before it could be judged: an error, never a pass or a skip
            errors += 1
            error = ET.SubElement(case, "error", message=_clean(v.observed), type="NotEvaluated")
            error.text = _clean(f"expected {v.expected}; {v.observed}")
        elif not v.passed:
            failures += 1
            message = _clean(f"expected {v.expected}; observed {v.observed}")
            failure = ET.SubElement(case, "failure", message=message, type="ExpectationFailed")
            failure.text = message + (f"\nmeasured: {json.dumps(v.measured)}" if v.measured else "")
        cases.append(case)
    if j.outcome in ("halted", "error") or j.outcome is None:
        errors += 1
        case = ET.Element("testcase", name="run", classname=classname, time=f"{view.duration:.3f}")
        reason = _clean(j.reason or "the run did not finish")
        err = ET.SubElement(case, "error", message=reason, type=(j.outcome or "unfinished").capitalize())
        err.text = f"{j.outcome or 'unfinished'} (exit {j.exit_code}): {reason}"
        cases.append(case)
    suite = ET.Element("testsuite", name=_clean(j.name), tests=str(len(cases)), failures=str(failures),
                       errors=str(errors), skipped="0", time=f"{view.duration:.3f}",
                       timestamp=time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(j.started_at)),
                       hostname=_clean(j.environment.host or "localhost"), id=j.run_id)  # fmt: skip
    props = ET.SubElement(suite, "properties")
    for name, value in (("run_id", j.run_id), ("outcome", j.outcome or "unfinished"), ("exit_code", j.exit_code),
                        ("resilience_score", view.score.value if view.score.value is not None else "n/a"),
                        ("score_formula", view.score.formula), ("device", j.environment.device_label),
                        ("time_scale", j.environment.time_scale)):  # fmt: skip
        ET.SubElement(props, "property", name=name, value=_clean(str(value)))
    for f in view.faults:
        ET.SubElement(props, "property", name=f"fault.{f.id}",
                      value=_clean(f"{f.type} on {f.target}; MTTD {f.mttd_s} s; MTTR {f.mttr_s} s"))  # fmt: skip
    suite.extend(cases)
    out = ET.SubElement(suite, "system-out")
    out.text = _clean(view.headline + "".join(f"\n{n}" for n in j.environment.notes))
    return suite


def render_junit(views: Sequence[RunView], *, name: str = "faultdrill") -> str:
    """One ``<testsuites>`` document over the given runs."""
    suites = [_suite(v) for v in views]
    root = ET.Element("testsuites", name=name, tests=str(sum(int(s.get("tests", 0)) for s in suites)),
                      failures=str(sum(int(s.get("failures", 0)) for s in suites)),
                      errors=str(sum(int(s.get("errors", 0)) for s in suites)),
                      time=f"{sum(v.duration for v in views):.3f}")  # fmt: skip
    root.extend(suites)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
