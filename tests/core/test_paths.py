"""Tests for robust_vae.core.paths: how reports write a path relative to their folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from robust_vae.core.paths import relative_path


def test_relative_path_under_and_outside_the_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    study = tmp_path / "study"
    (study / "runs" / "vae-seed0").mkdir(parents=True)
    assert relative_path(study / "runs" / "vae-seed0", study) == "runs/vae-seed0"
    monkeypatch.chdir(tmp_path)
    assert relative_path(Path("study/runs"), study) == "runs"  # resolved before comparing
    assert relative_path(tmp_path / "elsewhere", study) == str(tmp_path / "elsewhere")
    assert relative_path("study/runs", None) == "study/runs"  # no root: as given
