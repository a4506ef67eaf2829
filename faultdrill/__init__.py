"""faultdrill: chaos engineering and game days for GPU inference services.

One installed import name. The repository's folders are its subpackages — ``faultdrill.experiments``
(spec, plan, engine), ``faultdrill.faults`` (fault plugins, ledger), ``faultdrill.gamedays``,
``faultdrill.reports`` and ``faultdrill.target_service`` (the bundled inference server) — so a project
with its own ``experiments/`` or ``reports/`` package installs faultdrill beside them without a clash.
In a checkout, ``faultdrill/experiments`` and its siblings are links to the top-level folders.
"""

from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("faultdrill")  # one source: pyproject.toml's [project] version
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
__all__ = ["__version__", "discover"]


def discover(discover_system: bool = True) -> dict[str, Any]:
    """What ``chaos discover faultdrill`` lists (``faultdrill.faults.chaostoolkit.discover``).

    Chaos Toolkit imports the distribution's top-level package — this one — and calls its
    ``discover``; the import is deferred so that ``import faultdrill`` stays free.
    """
    from faultdrill.faults.chaostoolkit import discover as discover_faultdrill

    return discover_faultdrill(discover_system=discover_system)
