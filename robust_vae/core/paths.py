"""Folders outside the package: the cache for downloads and resumable state."""

from __future__ import annotations

import os
from pathlib import Path

from robust_vae.core.errors import RobustVAEError

CACHE_ENV = "ROBUST_VAE_CACHE"


def default_cache_dir() -> Path:
    """``$ROBUST_VAE_CACHE``, else ``$XDG_CACHE_HOME/robust-vae``, else ``~/.cache/robust-vae``:
    downloads, resume checkpoints and latent classifiers live here, never in a checkout."""
    base = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "robust-vae"
    )
    return Path(base)


def writable(path: str | os.PathLike[str]) -> Path:
    """``path`` if its folder exists or can be made and is writable, else a one-line error.

    A path with a suffix is a file (its parent must be writable), one without a folder.
    """
    path = Path(path)
    folder = path if not path.suffix else path.parent
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not os.access(probe, os.W_OK) or (probe.exists() and not probe.is_dir()):
        raise RobustVAEError(f"cannot write to {folder} ({probe} is not a writable folder): choose another --out")
    return path
