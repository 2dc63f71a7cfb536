"""The package version (one place; ``robust_vae.__version__`` re-exports it)."""

__version__ = "0.1.0"
