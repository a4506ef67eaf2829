"""latest-/previous- links to the newest run directories (experiments.engine.runlinks)."""

from __future__ import annotations

import os
from pathlib import Path

from faultdrill.experiments.engine.runlinks import update_links


def test_links_move_on_with_each_run_and_are_relative(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    out = Path("runs")
    first, second, third = (out / f"smoke-2026120{i}-000000" for i in (1, 2, 3))
    for d in (first, second, third):
        d.mkdir(parents=True)
    assert [p.name for p in update_links(out, first, "smoke")] == ["latest-smoke"]
    assert not (out / "previous-smoke").exists()
    update_links(out, second, "smoke")
    update_links(out, third, "smoke")
    assert os.readlink(out / "latest-smoke") == third.name  # relative: the folder may move
    assert os.readlink(out / "previous-smoke") == second.name
    assert (out / "latest-smoke" / ".").resolve() == third.resolve()
    update_links(out, third, "smoke")  # the same run twice never makes previous == latest
    assert os.readlink(out / "previous-smoke") == second.name
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [], "no temporary link left"


def test_other_names_and_nested_runs_are_left_alone(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    (out / "oom-1").mkdir(parents=True)
    (out / "day" / "01-x").mkdir(parents=True)
    update_links(out, out / "oom-1", "oom")
    assert update_links(out, out / "day" / "01-x", "x") == []  # a game day's scenario: not directly under out
    assert sorted(p.name for p in out.iterdir()) == ["day", "latest-oom", "oom-1"]


def test_an_unwritable_folder_is_not_an_error(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    (out / "a-1").mkdir(parents=True)
    (out / "latest-a").mkdir()  # a directory squats the link's name: os.replace fails, nothing raised
    assert update_links(out, out / "a-1", "a") == []
    assert sorted(p.name for p in out.iterdir()) == ["a-1", "latest-a"], "no temporary link left behind"
