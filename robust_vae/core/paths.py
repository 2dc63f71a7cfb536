"""Folders outside the package: the cache for downloads and resumable state; paths as written in reports."""

from __future__ import annotations

import os
import tempfile
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


def _first_existing(path: Path) -> Path:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def _can_create_in(folder: Path) -> bool:
    """Whether a folder can really be made inside ``folder`` (``os.access`` says yes to root
    for /proc and read-only mounts): make a probe folder and remove it again."""
    try:
        probe = tempfile.mkdtemp(prefix=".robust-vae-probe-", dir=folder)
    except OSError:
        return False
    os.rmdir(probe)
    return True


def writable_folder(path: str | os.PathLike[str]) -> Path:
    """``path`` if it is a folder that exists or can be made, else a one-line error with the fix."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RobustVAEError(f"cannot write to {path}: it is a file, not a folder; choose another --out")
    probe = _first_existing(path)
    if not probe.is_dir():
        raise RobustVAEError(f"cannot write to {path}: {probe} is a file, not a folder; choose another --out")
    if not (path.is_dir() and os.access(path, os.W_OK)) and not _can_create_in(probe):
        raise RobustVAEError(f"cannot write to {path} ({probe} is not a writable folder): choose another --out")
    return path


def writable_file(path: str | os.PathLike[str]) -> Path:
    """``path`` if it is a file that exists or can be created, else a one-line error with the fix."""
    path = Path(path)
    if path.is_dir():
        raise RobustVAEError(f"cannot write to {path}: it is a folder, not a file; choose another --out")
    writable_folder(path.parent)
    return path


def writable(path: str | os.PathLike[str]) -> Path:
    """``path`` as a folder (no suffix) or a file (a suffix such as ``.png``): see
    :func:`writable_folder` and :func:`writable_file`."""
    path = Path(path)
    return writable_file(path) if path.suffix and not path.is_dir() else writable_folder(path)


def relative_path(path: str | Path, root: str | Path | None) -> str:
    """``path`` relative to ``root`` (both resolved) as reports print it; ``path`` as given when
    it is not under ``root`` or ``root`` is None."""
    if root is not None:
        try:
            return str(Path(path).resolve().relative_to(Path(root).resolve()))
        except ValueError:
            pass
    return str(path)
