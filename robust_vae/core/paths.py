"""Folders outside the package: the cache for downloads and resumable state."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "ROBUST_VAE_CACHE"


def default_cache_dir() -> Path:
    """``$ROBUST_VAE_CACHE``, else ``$XDG_CACHE_HOME/robust-vae``, else ``~/.cache/robust-vae``:
    downloads, resume checkpoints and latent classifiers live here, never in a checkout."""
    base = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "robust-vae"
    )
    return Path(base)
