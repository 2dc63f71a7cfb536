"""A run folder on disk: its fingerprint (``config.json``) and its finished units (``progress/``).

Each finished unit of pairs is written at once (atomically, through a temporary file), so an
interrupted run resumes where it stopped and ends with the same files as an uninterrupted one.
A folder holding another configuration's run is refused unless ``restart`` discards it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from robust_vae.core.errors import ConfigError


class RunStore:
    """A run folder: ``config.json`` (the fingerprint) and ``progress/unit-XXXXX.npz`` files."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        self.progress = self.out_dir / "progress"

    def check_or_start(self, fingerprint: dict[str, Any], restart: bool = False) -> None:
        """Create the run, or check that the existing one has the same configuration."""
        config_path = self.out_dir / "config.json"
        text = json.dumps(fingerprint, indent=2, sort_keys=True, default=str) + "\n"
        if config_path.exists() and not restart:
            old = json.loads(config_path.read_text())
            new = json.loads(text)
            if old != new:
                differs = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
                raise ConfigError(
                    f"{self.out_dir} holds a run with a different configuration (differs in: "
                    f"{', '.join(differs)}); nothing was changed: pass another --out, or --restart "
                    "to discard that run"
                )
            return
        if restart and self.progress.exists():
            for path in self.progress.glob("unit-*.npz"):
                path.unlink()
        self.progress.mkdir(parents=True, exist_ok=True)
        config_path.write_text(text)

    def unit_path(self, unit: int) -> Path:
        return self.progress / f"unit-{unit:05d}.npz"

    def done(self, unit: int) -> bool:
        return self.unit_path(unit).exists()

    def save_unit(self, unit: int, arrays: dict[str, np.ndarray]) -> None:
        path = self.unit_path(unit)
        tmp = path.with_name(path.stem + ".partial.npz")
        np.savez_compressed(tmp, **dict[str, Any](arrays))
        tmp.replace(path)

    def load_unit(self, unit: int) -> dict[str, np.ndarray]:
        with np.load(self.unit_path(unit)) as data:
            return {key: data[key] for key in data.files}
