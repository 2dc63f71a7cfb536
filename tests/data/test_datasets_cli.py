"""``robust-vae datasets``: the listing, run as a user runs it, with and without the data files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from robust_vae.data import DATASETS

SCRIPT = Path(sys.executable).parent / "robust-vae"
COMMAND = [str(SCRIPT)] if SCRIPT.is_file() else [sys.executable, "-m", "robust_vae.cli.app"]


def robust_vae(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COMMAND, *args], capture_output=True, text=True, timeout=120,
                          env=env if env is not None else dict(os.environ))


def test_json_lists_every_dataset() -> None:
    result = robust_vae("datasets", "--json")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert set(rows) == set(DATASETS.names()) >= {"mnist", "fashion-mnist", "dsprites", "imagefolder"}
    assert rows["mnist"]["split_sizes"] == {"train": 60_000, "test": 10_000}
    assert rows["mnist"]["image_shape"] == [1, 32, 32] and rows["mnist"]["num_classes"] == 10
    assert rows["mnist"]["files"].startswith("found in") and rows["mnist"]["class_names"] == list("0123456789")
    dsprites = rows["dsprites"]
    assert dsprites["split_sizes"] == {"train": 663_552, "test": 73_728} and dsprites["num_classes"] == 3
    assert dsprites["class_names"] == ["square", "ellipse", "heart"]
    assert dsprites["factor_names"] == ["shape", "scale", "orientation", "posX", "posY"]
    assert dsprites["factor_sizes"] == [3, 6, 40, 32, 32] and dsprites["files"] == "none needed (rendered)"
    assert rows["imagefolder"]["num_classes"] is None and rows["imagefolder"]["options"] == {
        "image_size": 32, "channels": None}


def test_markdown_table_without_any_files(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ROBUST_VAE_DATA"}
    result = robust_vae("datasets", "--data-dir", str(tmp_path), env=env)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "| dataset | train | test | image (C×H×W) | classes | factors | options | files |"
    rows = {line.split(" | ")[0].strip("| `"): line for line in lines[2:] if line.startswith("| `")}
    assert set(rows) == set(DATASETS.names())
    for name in ("mnist", "fashion-mnist", "imagefolder"):
        assert f"files not found in {tmp_path / name}" in rows[name]
    assert "| 60,000 | 10,000 | 1×32×32 | 10 |" in rows["mnist"]
    assert "| 663,552 | 73,728 | 1×32×32 | 3 | shape (3), scale (6), orientation (40), posX (32), posY (32) |" in rows[
        "dsprites"]
    assert "| – | – | from files | – |" in rows["imagefolder"]
    assert any(line.startswith("- `dsprites`: dSprites (Matthey et al. 2017)") for line in lines)


def test_help_lists_the_command() -> None:
    result = robust_vae("--help")
    assert result.returncode == 0 and "datasets" in result.stdout
