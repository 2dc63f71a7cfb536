"""scripts/train_many.sh: many trainings side by side, one summary line each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_train_many_trains_every_spec_and_reports_failures(tmp_path: Path, isolated_environment: Path) -> None:
    out = tmp_path / "out"
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "train_many.sh"), "-j", "2", "-o", str(out), "-p", sys.executable,
         "vae mnist 3 --steps 10", "betavae mnist 4 --steps 10 --set beta=8 --name betavae-b8",
         "nosuchfamily mnist 0"],
        capture_output=True, text=True, env=dict(os.environ), timeout=600)
    assert result.returncode != 0  # one spec failed
    lines = sorted(result.stdout.split("\n")[:-1])
    assert len(lines) == 3, result.stdout + result.stderr
    assert any(line.startswith("rc=0 ") and line.endswith("vae-mnist-3.log") for line in lines)
    assert any(line.startswith("rc=0 ") and line.endswith("betavae-b8-mnist-4.log") for line in lines)
    assert any(not line.startswith("rc=0 ") and line.endswith("nosuchfamily-mnist-0.log") for line in lines)
    card = json.loads((out / "mnist" / "betavae-b8-seed4.json").read_text())
    assert (card["name"], card["family"], card["config"]["beta"], card["steps"]) == ("betavae-b8", "betavae", 8.0, 10)
    assert (out / "mnist" / "vae-seed3.safetensors").is_file()
    assert "nosuchfamily" in (out / "logs" / "nosuchfamily-mnist-0.log").read_text()  # the one-line error


def test_train_many_writes_logs_where_told(tmp_path: Path, isolated_environment: Path) -> None:
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "train_many.sh"), "-j", "1", "-o", str(tmp_path / "out"),
         "-l", str(tmp_path / "logs"), "-p", sys.executable, "vae mnist 3 --steps 5"],
        capture_output=True, text=True, env=dict(os.environ), timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "logs" / "vae-mnist-3.log").is_file() and not (tmp_path / "out" / "logs").exists()


def test_dsprites_zoo_specs_are_the_issue_grid_and_valid() -> None:
    """The dSprites zoo script's specs (-n): the families, β values and seeds the study needs, each
    with settings its family has (a typo would fail only hours into a run otherwise)."""
    from robust_vae.models import get_family
    from robust_vae.training.vae import check_variant

    result = subprocess.run(["bash", str(ROOT / "reports" / "dsprites" / "study" / "train_zoo.sh"), "-n"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    names: dict[str, set[int]] = {}
    for spec in result.stdout.splitlines():
        family, dataset, seed, *rest = spec.split()
        assert dataset == "dsprites"
        assert rest[:6] == ["--steps", "50000", "--recon-scale", "4", "--data-option", "samples=0"]
        settings = {rest[i + 1].split("=")[0]: float(rest[i + 1].split("=")[1])
                    for i, word in enumerate(rest) if word == "--set"}
        name = rest[rest.index("--name") + 1] if "--name" in rest else family
        check_variant(family, get_family(family).config_class, settings, None if name == family else name)
        get_family(family).config_class(**settings)  # values its validate() accepts
        names.setdefault(name, set()).add(int(seed))
    three = {"vae", "betavae", "betatcvae"}
    assert {n for n, seeds in names.items() if seeds == {0, 1, 2}} == three
    assert set(names) - three == {"betavae-b2", "betavae-b8", "betavae-b16", "factorvae", "lvae", "ae",
                                  "controlvae-kl18", "jointvae-c3"}
    assert all(seeds == {0, 1} for n, seeds in names.items() if n not in three)
