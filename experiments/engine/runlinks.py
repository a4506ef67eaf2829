"""``<out>/latest-<name>`` and ``<out>/previous-<name>``: stable names for a run's newest directories.

Run directories are stamped (``runs/smoke-20261205-105440/``), so "the run I just did" has no fixed
name and a glob such as ``runs/smoke-*/`` matches every run so far. After each run the two links
are moved on — ``previous-<name>`` to what ``latest-<name>`` named, ``latest-<name>`` to the new
run — so ``faultdrill report runs/latest-smoke --format md`` and ``faultdrill report --compare
runs/previous-smoke runs/latest-smoke`` work as written (``make``'s and Bazel's convenience links
do the same). The links are relative (the folder can move) and replaced atomically (``rename``
over the old link), so concurrent runs never leave a half-written link. A link is a convenience:
failing to write one is never a run's failure.

Example::

    update_links(Path("runs"), Path("runs/smoke-20261205-105440"), "smoke")
    # runs/latest-smoke -> smoke-20261205-105440, runs/previous-smoke -> the one before
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

__all__ = ["update_links"]


def _point(link: Path, target: str) -> None:
    tmp = link.with_name(f".{link.name}.{uuid.uuid4().hex[:8]}")
    os.symlink(target, tmp)
    try:
        os.replace(tmp, link)  # atomic: readers see the old link or the new one
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def update_links(out: Path, run_dir: Path, name: str) -> list[Path]:
    """Point ``out/latest-<name>`` at ``run_dir`` and ``out/previous-<name>`` at the former latest.

    Returns the links written; an OSError (read-only folder, no symlinks) writes none and is not raised.
    """
    out, run_dir = Path(out).absolute(), Path(run_dir).absolute()
    if run_dir.parent != out:  # only a run directly under ``out`` (a game day's scenarios live deeper)
        return []
    latest, previous = out / f"latest-{name}", out / f"previous-{name}"
    written: list[Path] = []
    try:
        if latest.is_symlink():
            former = os.readlink(latest)
            if former != run_dir.name and (out / former).is_dir():
                _point(previous, former)
                written.append(previous)
        _point(latest, run_dir.name)
        written.append(latest)
    except OSError:
        return written
    return written
