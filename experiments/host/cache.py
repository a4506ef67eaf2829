"""Where runs share what they only read: the bundled target's default models, built once per machine.

A run whose faults leave the model registry alone (``Fault.writes_models``, no canary rollout) points its
replicas at :func:`shared_model_registry` instead of publishing ``digits`` and ``heavy`` (~21 MB, a training run)
into its own folder. The registry publishes each version by renaming a finished staging folder, so runs that
build it at the same time never see half a version; nothing a run does writes it afterwards (a fault that
would — ``model_load_failure``, ``bad_canary`` — gets the run a private copy instead, and the fault scope
never includes the shared folder).

Example::

    shared_model_registry()      # PosixPath('/root/.cache/faultdrill/models')
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir", "shared_model_registry"]


def cache_dir() -> Path:
    """``$FAULTDRILL_CACHE_DIR``, else ``$XDG_CACHE_HOME/faultdrill``, else ``~/.cache/faultdrill``."""
    if explicit := os.environ.get("FAULTDRILL_CACHE_DIR"):
        return Path(explicit).absolute()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).absolute() / "faultdrill"


def shared_model_registry() -> Path:
    """The read-only model registry runs share (created on first use)."""
    return cache_dir() / "models"
