"""benchmarks/dsprites_render.py at a tiny size, and the committed result it keeps."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULT = ROOT / "benchmarks" / "results" / "dsprites_render.json"
KEYS = {"render_64", "render_32", "vae_step"}


def test_benchmark_writes_every_measurement(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    done = subprocess.run([sys.executable, "-m", "benchmarks.dsprites_render", "--repeats", "2", "--warmup", "1",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert set(report["measurements"]) == KEYS and report["torch_threads"] == 1 and report["batch"] == 64
    step = report["measurements"]["vae_step"]
    for name in ("render_64", "render_32"):
        row = report["measurements"][name]
        assert 0 < row["cpu_min_s"] <= row["cpu_median_s"] and 0 < row["wall_min_s"] <= row["wall_median_s"]
        assert report["ratios"][f"{name}_over_step_cpu"] == row["cpu_median_s"] / step["cpu_median_s"]
    assert done.stdout.startswith("| measurement (CPU, 1 thread) |") and f"wrote {out}" in done.stdout


def test_committed_result_meets_the_target() -> None:
    report = json.loads(RESULT.read_text())
    assert set(report["measurements"]) == KEYS and report["repeats"] >= 30
    assert report["meets_target"] is True and report["target_fraction"] == 0.1
    assert all(report["ratios"][f"{n}_over_step_cpu"] < 0.1 for n in ("render_64", "render_32"))
