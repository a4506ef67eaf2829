"""A refusal without ``Retry-After`` is told apart on the load's lines: the shed answers of a replica that does not
say when to come back carry ``(no Retry-After)`` in their error (``target_service/loadkit.py``'s ``EventWriter``,
run in a subprocess as the locustfiles import it: Locust monkey-patches on import)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

_WRITE = r"""
import sys, time
from target_service.loadkit import EventWriter

class Answer:
    def __init__(self, status, headers):
        self.status_code, self.headers = status, headers

w = EventWriter(sys.argv[1])
now = time.time() - 5
for status, headers in ((503, {"retry-after": "1"}), (503, {}), (429, {}), (500, {}), (504, {})):
    w.on_request("POST", "/infer", 3.0, 0, response=Answer(status, headers),
                 exception=RuntimeError(f"code={status}"), start_time=now)
w.flush(everything=True)
w.close()
"""


def test_shed_answers_without_retry_after_are_named(tmp_path: Path) -> None:
    out = tmp_path / "lines.jsonl"
    subprocess.run([sys.executable, "-c", _WRITE, str(out)], check=True, cwd=ROOT, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    [line] = [json.loads(x) for x in out.read_text().splitlines()]
    assert line["statuses"] == {"503": 2, "429": 1, "500": 1, "504": 1} and line["count"] == 5
    assert set(line["errors"]) == {"RuntimeError: code=503", "RuntimeError: code=503 (no Retry-After)",
                                   "RuntimeError: code=429 (no Retry-After)"} | {"(further errors)"}  # fmt: skip
