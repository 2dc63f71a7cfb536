"""benchmarks/attack_speed.py end to end at --smoke sizes: the JSON it writes and the README
table it prints hold every measurement and ratio that issue "Performance" asks for."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, Path]:
    out = tmp_path_factory.mktemp("bench") / "attack_speed.json"
    env = dict(os.environ, OMP_NUM_THREADS="2")
    done = subprocess.run([sys.executable, "-m", "benchmarks.attack_speed", "--smoke", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text()), done.stdout, out


def test_every_configuration_is_measured(smoke_report: tuple[dict, str, Path]) -> None:
    report, _, _ = smoke_report
    names = [m["name"] for m in report["measurements"]]
    assert names[:2] == ["a", "b"] and "c" in names and "d" in names and "d-loop" in names
    for m in report["measurements"]:
        assert m["seconds_per_example_cpu"] > 0 and m["seconds_per_example_wall"] > 0
        if m["name"] in ("a", "b", "c"):
            assert 0.0 <= m["as_target"] <= m["as_ignore_target"] <= 1.0
    assert report["device"] == "cpu" and report["smoke"] is True


def test_ratios_follow_from_the_measurements(smoke_report: tuple[dict, str, Path]) -> None:
    report, _, _ = smoke_report
    rows = {m["name"]: m for m in report["measurements"]}
    ratios = report["ratios"]
    assert ratios["c_over_a_cpu"] == pytest.approx(rows["a"]["seconds_per_example_cpu"]
                                                   / rows["c"]["seconds_per_example_cpu"])
    assert ratios["d_loop_over_torch_wall"] == pytest.approx(rows["d-loop"]["seconds_per_example_wall"]
                                                             / rows["d"]["seconds_per_example_wall"])
    assert ratios["d_fastest_loop"] == "d-loop"   # on CPU there is one loop
    assert report["targets"] == {"c_over_a": 30, "d_loop_over_torch": 10}


def test_scipy_loop_runs_with_one_thread_and_matches_the_batched_solver(smoke_report: tuple[dict, str, Path]) -> None:
    report, _, _ = smoke_report
    loop = next(m for m in report["measurements"] if m["name"] == "d-loop")
    assert loop["extra"]["torch_threads"] == 1
    assert report["machine"]["OPENBLAS_NUM_THREADS"] == os.environ.get("OPENBLAS_NUM_THREADS", "1")
    assert "(1 torch thread)" in loop["what"]
    # the batched solver ran its own threads again, not the loop's one
    batched = next(m for m in report["measurements"] if m["name"] == "d")
    assert batched["extra"]["torch_threads"] == 2
    # same problems, same algorithm: ours is no worse than SciPy's on the median example
    assert report["d_objectives"]["ours_le_loop_on_median_within_1e-3"] is True
    assert len(report["d_objectives"]["relative_difference_per_example"]) == report["settings"]["lbfgsb"]["loop_examples"]


def test_printed_table_is_the_readme_table(smoke_report: tuple[dict, str, Path]) -> None:
    report, stdout, _ = smoke_report
    assert "| | configuration | s/example (CPU) | s/example (wall) | AS target | AS ignore-target |" in stdout
    assert "(target 30×)" in stdout and "(target 10×)" in stdout
    assert len([line for line in stdout.splitlines() if line.startswith("| d")]) == 2


def test_render_reprints_the_tables_of_a_results_file(smoke_report: tuple[dict, str, Path]) -> None:
    report, stdout, out = smoke_report
    done = subprocess.run([sys.executable, "-m", "benchmarks.attack_speed", "--render", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    table = stdout[stdout.index("| | configuration"):stdout.index("\nwrote ")].strip()
    assert done.stdout.strip() == table
    # one candidates row per (c) configuration, plus the header, the rule and (a)
    candidates = done.stdout[done.stdout.index("| configuration ("):].strip().splitlines()
    assert len(candidates) == 3 + len(report["c_candidates"])
