"""benchmarks/attack_speed.py end to end at --smoke sizes: the JSON it writes and the README
table it prints hold every measurement and ratio that issue "Performance" asks for; --render
of the committed results prints the README tables; benchmarks/attack_table.py makes its runs
through RunConfig / run_attack."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from robust_vae.evaluation.run_config import RunConfig

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MAIN_HEADER = "| configuration | s/example (CPU) | s/example (wall) | AS target | AS ignore-target |"

SmokeReport = tuple[dict[str, Any], str, Path]


def run_module(*args: str, env: dict[str, str] | None = None, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory: pytest.TempPathFactory) -> SmokeReport:
    out = tmp_path_factory.mktemp("bench") / "attack_speed.json"
    env = dict(os.environ, OMP_NUM_THREADS="2")
    done = run_module("benchmarks.attack_speed", "--smoke", "--out", str(out), env=env, timeout=600)
    return json.loads(out.read_text()), done.stdout, out


def test_every_configuration_is_measured(smoke_report: SmokeReport) -> None:
    report, _, _ = smoke_report
    names = [m["name"] for m in report["measurements"]]
    assert names[:2] == ["a", "b"] and "c" in names and "d" in names and "d-loop" in names
    for m in report["measurements"]:
        assert m["seconds_per_example_cpu"] > 0 and m["seconds_per_example_wall"] > 0
        if m["name"] in ("a", "b", "c"):
            assert 0.0 <= m["as_target"] <= m["as_ignore_target"] <= 1.0
    assert report["device"] == "cpu" and report["smoke"] is True
    assert report["settings"]["thesis"]["steps"] == 10   # --smoke shortens the thesis attack


def test_ratios_follow_from_the_measurements(smoke_report: SmokeReport) -> None:
    report, _, _ = smoke_report
    rows = {m["name"]: m for m in report["measurements"]}
    ratios = report["ratios"]
    assert ratios["c_over_a_cpu"] == pytest.approx(rows["a"]["seconds_per_example_cpu"]
                                                   / rows["c"]["seconds_per_example_cpu"])
    assert ratios["b_over_a_wall"] == pytest.approx(rows["a"]["seconds_per_example_wall"]
                                                    / rows["b"]["seconds_per_example_wall"])
    assert ratios["d_loop_over_torch_wall"] == pytest.approx(rows["d-loop"]["seconds_per_example_wall"]
                                                             / rows["d"]["seconds_per_example_wall"])
    assert ratios["d_fastest_loop"] == "d-loop"   # on CPU there is one loop
    assert report["targets"] == {"c_over_a": 30, "d_loop_over_torch": 10}


def test_scipy_loop_runs_with_one_thread_and_matches_the_batched_solver(smoke_report: SmokeReport) -> None:
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


def test_printed_table_is_the_readme_table(smoke_report: SmokeReport) -> None:
    report, stdout, _ = smoke_report
    assert MAIN_HEADER in stdout
    assert "(target 30×)" in stdout and "(target 10×)" in stdout
    assert len([line for line in stdout.splitlines() if line.startswith("| d")]) == 2


def test_render_reprints_the_tables_of_a_results_file(smoke_report: SmokeReport) -> None:
    report, stdout, out = smoke_report
    done = run_module("benchmarks.attack_speed", "--render", str(out))
    # the progress lines before the tables never start with "|"
    table = stdout[stdout.index("\n|") + 1:stdout.index("\nwrote ")].strip()
    assert done.stdout.strip() == table
    # one candidates row per (c) configuration, plus the header, the rule and (a)
    candidates = done.stdout[done.stdout.index("| configuration ("):].strip().splitlines()
    assert len(candidates) == 3 + len(report["c_candidates"])


@pytest.mark.parametrize("name", ["attack_speed.json", "attack_speed_cuda.json"])
def test_render_of_the_committed_results_prints_the_readme_tables(name: str) -> None:
    path = RESULTS / name
    report = json.loads(path.read_text())
    printed = run_module("benchmarks.attack_speed", "--render", str(path)).stdout
    assert printed.strip()
    lines = printed.splitlines()
    assert MAIN_HEADER in lines[0]
    for row in report["measurements"]:
        assert any(line.startswith(f"| {row['name']} | {row['what']} |") for line in lines), row["name"]
    for row in report["c_candidates"]:
        assert any(line.startswith(f"| {row['what']} |") for line in lines), row["what"]
    assert f"| configuration ({report['measurements'][0]['examples_scored']} pairs) |" in printed
    assert "(target 30×)" in printed and "(target 10×)" in printed


def test_attack_table_runs_through_run_attack(tmp_path: Path) -> None:
    """A tiny attack table (one model, the fast recipe, one pair per cell): its runs are
    RunConfig runs (the run folder's fingerprint is the config's) and the caption counts the
    cells of the runs."""
    env = dict(os.environ, ROBUST_VAE_CACHE=str(tmp_path / "cache"))
    out = tmp_path / "out"
    run_module("benchmarks.attack_table", "--per-pair", "1", "--models", "vae", "--recipes", "thesis-fast",
               "--out", str(out), env=env, timeout=300)
    table = json.loads((out / "attack_table.json").read_text())
    (row,) = table["rows"]
    assert row["model"] == "vae" and row["recipe"] == "thesis-fast" and row["n"] > 0
    run = tmp_path / "cache" / "benchmarks" / "attack-table" / "per-pair-1-seed-0" / "vae" / "thesis-fast"
    config = RunConfig.create("vae", recipe="thesis-fast", per_pair=1, seed=0)
    assert json.loads((run / "config.json").read_text()) == config.fingerprint()
    assert row["command"] == config.command()
    assert row["cells"] == len((run / "cells.csv").read_text().strip().splitlines()) - 1
    text = (out / "attack_table.md").read_text()
    assert text.startswith("| attack (recipe) | optimises | `vae` AS target (ignore-target) |")
    assert f"a mean over {row['cells']} cells" in text and f"over the {row['cells']} ordered" in table["note"]


def test_readme_lbfgsb_precision_table_is_the_committed_result() -> None:
    """The README's objective-cost table is `python -m benchmarks.lbfgsb_precision --render`."""
    readme = (ROOT / "README.md").read_text()
    start, end = "<!-- lbfgsb-precision:start -->\n", "<!-- lbfgsb-precision:end -->"
    pasted = readme[readme.index(start) + len(start):readme.index(end)]
    report = json.loads((RESULTS / "lbfgsb_precision.json").read_text())
    assert pasted.strip() == run_module("benchmarks.lbfgsb_precision", "--render").stdout.strip()
    assert {(r["precision"], r["row_by_row"]) for r in report["results"]} == {
        (p, b) for p in ("float32", "float64") for b in (False, True)}


WARM_START_TABLES = [
    ("lbfgsb-warm-start", "lbfgsb_warm_start", "scipy", {"none", "descending", "ascending"}),
    ("lbfgsb-warm-start-torch", "lbfgsb_warm_start_torch", "torch", {"none", "descending", "ascending"}),
    ("lbfgsb-warm-start-torch-factr", "lbfgsb_warm_start_torch_factr1e7", "torch", {"none", "descending"}),
    ("lbfgsb-warm-start-torch-200", "lbfgsb_warm_start_torch_200", "torch", {"none", "descending"}),
]


@pytest.mark.parametrize(("marker", "name", "solver", "modes"), WARM_START_TABLES)
def test_readme_lbfgsb_warm_start_table_is_the_committed_result(marker: str, name: str, solver: str,
                                                                modes: set[str]) -> None:
    """The README's warm-start tables are `python -m benchmarks.lbfgsb_warm_start --render`."""
    readme = (ROOT / "README.md").read_text()
    start, end = f"<!-- {marker}:start -->\n", f"<!-- {marker}:end -->"
    pasted = readme[readme.index(start) + len(start):readme.index(end)]
    report = json.loads((RESULTS / f"{name}.json").read_text())
    assert report["solver"] == solver
    rendered = run_module("benchmarks.lbfgsb_warm_start", "--render", "--out", str(RESULTS / f"{name}.json"))
    assert pasted.strip() == rendered.stdout.strip()
    assert report["command"] in readme and report["max_iter"] is None  # the recipe's full length
    assert set(report["modes"]) == modes
    for mode, result in report["modes"].items():  # the cold start always has the recipe's values
        if mode == "none" and "overrides" in result:
            assert set(result["overrides"]) == {"precision", "solver"}


def test_readme_lbfgsb_per_c_table_is_the_committed_result() -> None:
    """The per-C table is `--render --per-c` of its report, and it shows what the README says:
    cold and warm start alike spend most of the 500-iteration cap per problem in the mid-range."""
    readme = (ROOT / "README.md").read_text()
    start, end = "<!-- lbfgsb-warm-start-per-c:start -->\n", "<!-- lbfgsb-warm-start-per-c:end -->"
    pasted = readme[readme.index(start) + len(start):readme.index(end)]
    name = RESULTS / "lbfgsb_warm_start_torch_per_c.json"
    report = json.loads(name.read_text())
    rendered = run_module("benchmarks.lbfgsb_warm_start", "--render", "--per-c", "--out", str(name))
    assert pasted.strip() == rendered.stdout.strip()
    assert report["command"] in readme
    pairs = report["pairs"]
    for mode in ("none", "descending"):
        per_c = report["modes"][mode]["evaluations_per_c"]
        assert sum(per_c) == report["modes"][mode]["evaluations"]
        mid = [e / pairs for e, c in zip(per_c, report["modes"][mode]["c"]) if 2.0 ** -8 <= c <= 1.0]
        assert min(mid) > 350
