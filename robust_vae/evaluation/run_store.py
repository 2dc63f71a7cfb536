"""A run folder on disk: its fingerprint (``config.json``), its finished units (``progress/``)
and the lock (``.lock``) that gives it one writer at a time.

Each finished unit of pairs is written at once (atomically, through a temporary file with a
per-process name), so an interrupted run resumes where it stopped and ends with the same
files as an uninterrupted one. A folder holding another configuration's run is refused unless
``restart`` discards it; a folder whose run computed nothing yet takes the new configuration.

The lock is an OS lock (``fcntl.lockf``) on ``<run>/.lock``, which also records the holder's
pid, host and start time: the kernel releases it when the holder dies, so a lock left by a
killed process is taken over (with a message naming it), and a live holder makes the second
writer stop with a one-line error. ``lockf`` locks are POSIX record locks, which NFS clients
share across hosts.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import socket
import sys
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from robust_vae.core.errors import ConfigError, RobustVAEError

LOCK_NAME = ".lock"
_HELD: dict[str, int] = {}  # resolved run folder -> file descriptor of the lock this process holds


class RunLockedError(RobustVAEError):
    """Another live process is writing the run folder."""


def _holder(fd: int) -> dict[str, Any]:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 4096).decode(errors="replace").strip()
    if not text:
        return {}
    try:
        holder = json.loads(text)
    except json.JSONDecodeError:
        return {"unreadable": text[:80]}
    return holder if isinstance(holder, dict) else {}


def _describe(holder: dict[str, Any]) -> str:
    return (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, "
            f"started {holder.get('started', '?')}")


@contextlib.contextmanager
def run_lock(folder: Path, log: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the exclusive lock of ``folder`` (made if missing) inside the ``with`` block.

    Re-entrant within a process. Raises :class:`RunLockedError` when a live process holds it.
    """
    key = str(Path(folder).resolve())
    if key in _HELD:
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        holder = _holder(fd)
        os.close(fd)
        if error.errno not in (errno.EACCES, errno.EAGAIN):
            raise
        raise RunLockedError(
            f"{folder} is being written by another run ({_describe(holder)}): wait for it to finish, "
            "or choose another --out"
        ) from None
    previous = _holder(fd)
    if previous:
        (log or (lambda m: print(m, file=sys.stderr)))(
            f"taking over the lock of {folder} from {_describe(previous)}, which is no longer running")
    me = {"pid": os.getpid(), "host": socket.gethostname(),
          "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(me) + "\n").encode())
    os.fsync(fd)
    _HELD[key] = fd
    try:
        yield
    finally:
        del _HELD[key]
        os.ftruncate(fd, 0)  # an empty lock file: released cleanly (the file stays: see module doc)
        fcntl.lockf(fd, fcntl.LOCK_UN)
        os.close(fd)


class RunStore:
    """A run folder: ``config.json`` (the fingerprint) and ``progress/unit-XXXXX.npz`` files."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        self.progress = self.out_dir / "progress"
        self.config_path = self.out_dir / "config.json"

    def lock(self) -> contextlib.AbstractContextManager[None]:
        """The run folder's exclusive lock (see :func:`run_lock`)."""
        return run_lock(self.out_dir)

    def _stored_fingerprint(self) -> dict[str, Any] | None:
        if not self.config_path.exists():
            return None
        try:
            stored = json.loads(self.config_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ConfigError(f"{self.config_path} cannot be read ({type(error).__name__}): the run folder is "
                              "damaged; pass --restart to discard it, or another --out") from None
        if not isinstance(stored, dict):
            raise ConfigError(f"{self.config_path} is not a run fingerprint: pass --restart or another --out")
        return stored

    def has_results(self) -> bool:
        """Whether anything was computed in this folder (a unit or the final tables)."""
        return any(self.progress.glob("unit-*.npz")) or (self.out_dir / "cells.csv").exists()

    def differences(self, fingerprint: dict[str, Any]) -> list[str]:
        """The keys in which the stored fingerprint differs from ``fingerprint``, sorted ([] when
        none is stored or they agree); ConfigError for an unreadable ``config.json``."""
        stored = self._stored_fingerprint()
        new = json.loads(json.dumps(fingerprint, sort_keys=True, default=str))
        if stored is None or stored == new:
            return []
        return sorted(k for k in set(stored) | set(new) if stored.get(k) != new.get(k))

    def check(self, fingerprint: dict[str, Any], restart: bool = False) -> None:
        """Refuse (one line, nothing changed) when the folder holds another configuration's run."""
        if restart:
            return
        differs = self.differences(fingerprint)
        if differs and self.has_results():
            raise ConfigError(
                f"{self.out_dir} holds a run with a different configuration (differs in: "
                f"{', '.join(differs)}); nothing was changed: pass another --out, or --restart "
                "to discard that run"
            )

    def check_or_start(self, fingerprint: dict[str, Any], restart: bool = False) -> None:
        """Create the run, or check that the existing one has the same configuration.

        Call it holding :meth:`lock`: the check is repeated under the lock, so two writers
        with different configurations cannot both pass it.
        """
        self.check(fingerprint, restart)
        text = json.dumps(fingerprint, indent=2, sort_keys=True, default=str) + "\n"
        if restart and self.progress.exists():
            for path in self.progress.glob("unit-*.npz"):
                path.unlink()
        self.progress.mkdir(parents=True, exist_ok=True)
        if not self.config_path.exists() or self.config_path.read_text() != text:
            tmp = self.config_path.with_name(f".config.{os.getpid()}.{uuid.uuid4().hex}.tmp")
            tmp.write_text(text)
            tmp.replace(self.config_path)

    def unit_path(self, unit: int) -> Path:
        return self.progress / f"unit-{unit:05d}.npz"

    def done(self, unit: int) -> bool:
        return self.unit_path(unit).exists()

    def save_unit(self, unit: int, arrays: dict[str, np.ndarray]) -> None:
        path = self.unit_path(unit)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex}.partial.npz")
        np.savez_compressed(tmp, **dict[str, Any](arrays))
        tmp.replace(path)

    def load_unit(self, unit: int) -> dict[str, np.ndarray]:
        path = self.unit_path(unit)
        try:
            with np.load(path) as data:
                return {key: data[key] for key in data.files}
        except (OSError, EOFError, ValueError, zipfile.BadZipFile) as error:
            raise ConfigError(f"{path} is damaged ({type(error).__name__}): delete it and rerun the same "
                              "command to recompute that unit") from None
