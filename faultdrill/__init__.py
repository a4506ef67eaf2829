"""faultdrill: chaos engineering and game days for GPU inference services."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("faultdrill")  # one source: pyproject.toml's [project] version
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
__all__ = ["__version__"]
