"""A real run's HTML report in headless Chromium: no console errors, the figure drawn, a screenshot.

The journal is a real ``faultdrill run experiments/catalog/smoke.yaml`` run, kept gzipped in
``tests/fixtures/reports/``. Chromium is the Debian package (``make setup`` installs it); a
missing browser fails the test — it is how the report is proven to render.

Set ``FAULTDRILL_UPDATE_SCREENSHOT=1`` to rewrite ``docs/report-screenshot.png`` from this run.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
JOURNAL = ROOT / "tests" / "fixtures" / "reports" / "smoke_journal.json.gz"
SCREENSHOT = ROOT / "docs" / "report-screenshot.png"
# Chromium's own console log lines: `[…:INFO:CONSOLE:1] "message", source: file:///… (1)`
CONSOLE = re.compile(r":CONSOLE(?:\(\d+\)|:\d+)\]\s*(.*)")
SIZE = (1280, 2400)


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("chromium is not installed: run make setup (it installs the Debian package chromium)")
    return found


def _run(url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
           "--no-first-run", "--disable-extensions", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}",
           # no network: the report must not need it (anything it tried to fetch would fail and log)
           "--host-resolver-rules=MAP * ~NOTFOUND", *args, url]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


def _console(stderr: str) -> list[str]:
    return [m.group(1) for m in map(CONSOLE.search, stderr.splitlines()) if m]


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from faultdrill.reports import write_all

    run_dir = tmp_path_factory.mktemp("run")
    return write_all(JOURNAL, run_dir)["html"]


def test_console_errors_are_detected(tmp_path):
    """The control: a page that logs and throws shows up, so a clean report really is clean."""
    page = tmp_path / "control.html"
    page.write_text('<!DOCTYPE html><p>x</p><script>console.error("boom"); throw new Error("bang")</script>')
    messages = _console(_run(page.as_uri(), tmp_path, "--dump-dom").stderr)
    assert any("boom" in m for m in messages) and any("Uncaught Error: bang" in m for m in messages), messages


def test_report_renders_without_console_errors_and_with_the_figure(report, tmp_path):
    done = _run(report.as_uri(), tmp_path, "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    assert _console(done.stderr) == []
    dom = done.stdout
    assert '<svg id="timeline-figure"' in dom and "</svg>" in dom
    assert "11 of 11 expectations held" in dom and "resilience score" in dom
    for section in ("Timeline", "Expectations", "Faults: MTTD and MTTR", "Environment", "The spec that ran"):
        assert f">{section}</h2>" in dom


def test_screenshot_shows_the_drawn_figure(report, tmp_path):
    from matplotlib.image import imread

    shot = tmp_path / "report.png"
    done = _run(report.as_uri(), tmp_path, f"--screenshot={shot}", f"--window-size={SIZE[0]},{SIZE[1]}")
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    assert _console(done.stderr) == []
    assert _png_size(shot) == SIZE
    pixels = imread(str(shot))[:, :, :3]
    # the lanes' "ready/closed" green (#2b9348) is drawn only by the figure: thousands of pixels of it
    green = (abs(pixels[:, :, 0] - 0x2B / 255) < 0.03) & (abs(pixels[:, :, 1] - 0x93 / 255) < 0.03) & (
        abs(pixels[:, :, 2] - 0x48 / 255) < 0.03)  # fmt: skip
    assert int(green.sum()) > 5000
    if os.environ.get("FAULTDRILL_UPDATE_SCREENSHOT"):
        shutil.copyfile(shot, SCREENSHOT)
    assert SCREENSHOT.exists() and _png_size(SCREENSHOT) == SIZE, "docs/report-screenshot.png is missing"
