"""The Markdown summary for pull-request comments."""

from __future__ import annotations

from faultdrill.reports.markdown import cell, render_markdown
from faultdrill.reports.model import RunView


def test_summary_links_the_html_and_lists_failures_first(journal_factory):
    md = render_markdown(RunView.of(journal_factory("failed")), html_href="report.html")
    assert md.startswith("### ❌ synthetic — failed (exit 1) · resilience score ")
    assert "[full report](report.html)" in md
    rows = [line for line in md.splitlines() if line.startswith("| ✅") or line.startswith("| ❌")]
    assert rows[0].startswith("| ❌ | availability at least 0.95 during hog")
    assert "| `hog` | gpu_memory_exhaustion (emulated) | replica-0 | 1.00 s | 2.00 s |" in md
    assert "error budget consumed 714 %" in md and "**Score**" in md and "= " in md
    assert "InferenceGPUMemoryPressure (hog.start + 3.0 s)" in md
    assert "<details><summary>What was emulated</summary>" in md


def test_halted_and_error_runs_say_why(journal_factory):
    md = render_markdown(RunView.of(journal_factory("halted", reason="halt_if availability: below 0.5")))
    assert "> **Halted:** halt_if availability: below 0.5" in md
    md = render_markdown(RunView.of(journal_factory("error", events=False, reason="preflight failed")),
                         html_href=None)  # fmt: skip
    assert "No expectation was judged." in md and "full report" not in md and "score n/a" in md


def test_table_cells_are_escaped():
    assert cell("a | b\nc") == "a \\| b<br>c"
