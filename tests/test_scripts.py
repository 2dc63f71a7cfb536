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
