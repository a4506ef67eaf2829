"""faultdrill: chaos engineering and game days for GPU inference services."""

__version__ = "0.1.0"
__all__ = ["__version__"]
