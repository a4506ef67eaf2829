"""experiments."""

from typing import Any


def discover(discover_system: bool = True) -> dict[str, Any]:
    """What ``chaos discover faultdrill`` lists (``faults.chaostoolkit.discover``).

    Chaos Toolkit imports the distribution's first top-level package — this one, as
    ``top_level.txt`` is sorted — and calls its ``discover``; the import is deferred so that
    ``import experiments`` stays free.
    """
    from faults.chaostoolkit import discover as discover_faultdrill

    return discover_faultdrill(discover_system=discover_system)
