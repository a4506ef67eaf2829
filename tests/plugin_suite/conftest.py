"""An example suite that uses faultdrill's pytest plugin, as a team's CI would (docs/ci.md).

It is collected only when named on the command line — ``pytest tests/plugin_suite
--faultdrill-smoke --junitxml=chaos.xml`` — never by the project's own ``pytest tests``
(which would run the smoke experiment twice). ``tests/integration/test_plug_smoke.py`` runs it
in a subprocess.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if collection_path.parent != HERE or not collection_path.name.startswith("test_"):
        return None
    for arg in config.args:
        named = (config.invocation_params.dir / arg.split("::")[0]).resolve()
        if named == HERE or HERE in named.parents:
            return None
    return True
