"""``robust-vae attack``/``report``/``evaluate``/``traverse`` run as a user runs them (subprocesses)
on the small zoo: every report file, kill-and-resume, one-line errors that change nothing."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

SCRIPT = Path(sys.executable).parent / "robust-vae"
COMMAND = [str(SCRIPT)] if SCRIPT.is_file() else [sys.executable, "-m", "robust_vae"]
BASE_ARGS = ["attack", "--model", "vae", "--dataset", "mnist", "--per-pair", "2", "--set", "steps=20"]
REPORT_FILES = ("cells.csv", "matrix.csv", "marginals.csv", "matrix.tex", "marginals.tex",
                "summary.md", "heatmaps.png", "examples.png", "run.json")
RUN_KEYS = ("model", "model_seed", "weights_sha256", "hyperparameters", "per_pair", "seed",
            "versions", "device", "attack_seconds")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"



@pytest.fixture(scope="module")
def env(small_zoo: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The session's environment plus the small zoo, a private cache and one torch thread."""
    return dict(os.environ, ROBUST_VAE_MODELS=str(small_zoo),
                ROBUST_VAE_CACHE=str(tmp_path_factory.mktemp("cli-cache")), OMP_NUM_THREADS="1")


def run_cli(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COMMAND, *args], capture_output=True, text=True, env=env, timeout=timeout)


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder``: its bytes and mtime."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def base_run(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    out = tmp_path_factory.mktemp("attack") / "run"
    result = run_cli([*BASE_ARGS, "--out", str(out)], env)
    assert result.returncode == 0, result.stderr
    return out, result


# ----------------------------------------------------------------- the files of a run
def test_attack_writes_every_report_file(base_run, small_zoo: Path) -> None:  # type: ignore[no-untyped-def]
    out, result = base_run
    for name in REPORT_FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for name in ("heatmaps.png", "examples.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC, name

    cells = pd.read_csv(out / "cells.csv")
    assert len(cells) == 90
    assert list(zip(cells["source"], cells["target"])) == [(s, t) for s in range(10) for t in range(10) if s != t]
    assert (cells["n_pairs"] == 2).all() and (cells["n"] <= 2).all()
    nonempty = cells[cells["n"] > 0]
    np.testing.assert_allclose(nonempty["as_target"], nonempty["hits_target"] / nonempty["n"], atol=1e-6)

    matrix = pd.read_csv(out / "matrix.csv", index_col="source", dtype=str, keep_default_na=False)
    assert matrix.shape == (10, 10)
    assert list(matrix.index.astype(int)) == list(range(10)) and list(matrix.columns) == [str(t) for t in range(10)]
    for s in range(10):
        assert matrix.iloc[s, s] == "-"
    for row in cells.itertuples():
        text = matrix.iloc[row.source, row.target]
        if row.n:
            assert text == f"{100 * row.as_ignore_target:.2f}% ({100 * row.as_target:.2f}%)"
        else:
            assert text == "n/a"

    tex = (out / "matrix.tex").read_text()
    assert tex.count("\\makecell{") == len(nonempty)
    for row in nonempty.itertuples():
        assert f"\\makecell{{{100 * row.as_ignore_target:.2f}\\% \\\\ ({100 * row.as_target:.2f}\\%)}}" in tex

    marginals = pd.read_csv(out / "marginals.csv")
    sources = marginals[marginals["kind"] == "source"].set_index("cls")
    for s in range(10):
        own = cells.loc[cells["source"] == s, "as_target"]
        if own.notna().any():
            assert sources.loc[s, "as_target"] == pytest.approx(own.mean(), abs=2e-6)
    overall = marginals[marginals["kind"] == "overall"].iloc[0]
    assert overall["as_ignore_target"] == pytest.approx(cells["as_ignore_target"].mean(), abs=2e-6)
    marginals_tex = (out / "marginals.tex").read_text()
    assert "\\begin{tabular}" in marginals_tex and "Mean" in marginals_tex
    summary = (out / "summary.md").read_text()
    assert summary.startswith("# vae") and "AS ignore-target" in summary

    run = json.loads((out / "run.json").read_text())
    for key in RUN_KEYS:
        assert key in run, key
    card = json.loads((small_zoo / "mnist" / "vae-seed0.json").read_text())
    assert (run["model"], run["model_seed"], run["weights_sha256"]) == ("vae", 0, card["sha256"])
    assert (run["per_pair"], run["seed"], run["device"]) == (2, 0, "cpu")
    assert run["hyperparameters"]["steps"] == 20 and run["hyperparameters"]["epsilon"] == 0.1
    assert {"torch", "numpy", "robust_vae"} <= set(run["versions"])
    assert run["attack_seconds"] >= 0
    assert 0 < run["cpu_seconds_this_call"] <= run["cpu_seconds_process"] and run["peak_rss_mb"] > 0
    assert run["wall_seconds_this_call"] >= run["attack_seconds"]

    # stdout: the marginals table, the same numbers as marginals.csv
    lines = result.stdout.splitlines()
    assert any(line.startswith("Marginal attack success per source") for line in lines)
    printed = {}
    for line in lines:
        match = re.fullmatch(r"\s*(\d|mean)\s+([\d.]+|nan)%\s+([\d.]+|nan)%", line)
        if match:
            printed[match.group(1)] = (match.group(2), match.group(3))
    assert set(printed) == {*map(str, range(10)), "mean"}
    for s in range(10):
        expected = sources.loc[s, ["as_target", "as_ignore_target"]].to_numpy(float)
        assert printed[str(s)] == tuple(f"{100 * v:.2f}" for v in expected)
    assert printed["mean"] == (f"{100 * overall['as_target']:.2f}", f"{100 * overall['as_ignore_target']:.2f}")


# ----------------------------------------------------------------- kill and resume
# about 20 units of work, a few seconds of attacking after the start-up
RESUME_ARGS = ["attack", "--model", "vae", "--dataset", "mnist", "--per-pair", "3",
               "--set", "steps=80", "--batch-size", "8"]


@pytest.fixture(scope="module")
def straight_run(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run of RESUME_ARGS (labelled vae-b: the label is not configuration)."""
    out = tmp_path_factory.mktemp("straight") / "run"
    result = run_cli([*RESUME_ARGS, "--label", "vae-b", "--out", str(out)], env)
    assert result.returncode == 0, result.stderr
    return out


def finished_units(run: Path) -> dict[str, int]:
    """name -> mtime of every finished unit (``unit-NNNNN.npz``, not ``*.partial.npz``)."""
    return {p.name: p.stat().st_mtime_ns for p in (run / "progress").glob("unit-*.npz")
            if re.fullmatch(r"unit-\d{5}\.npz", p.name)}


def test_killed_attack_resumes_to_the_same_cells(env: dict[str, str], straight_run: Path, tmp_path: Path,
                                                 kill_process_when) -> None:  # type: ignore[no-untyped-def]
    killed = tmp_path / "killed"
    process = kill_process_when([*COMMAND, *RESUME_ARGS, "--out", str(killed)], env,
                                lambda: (killed / "progress").is_dir() and finished_units(killed),
                                "progress unit")
    assert process.returncode == -signal.SIGKILL
    assert not (killed / "cells.csv").exists()
    done_at_kill = finished_units(killed)
    assert done_at_kill

    resumed = run_cli([*RESUME_ARGS, "--out", str(killed)], env)
    assert resumed.returncode == 0, resumed.stderr
    units = json.loads((killed / "run.json").read_text())["units"]
    done = finished_units(killed)
    assert len(done_at_kill) < units == len(done) == len(list((killed / "progress").iterdir()))
    # the units finished before the kill were reused, not recomputed
    assert {name: done[name] for name in done_at_kill} == done_at_kill

    for name in ("cells.csv", "matrix.csv", "marginals.csv", "examples.csv.gz"):
        assert (killed / name).read_bytes() == (straight_run / name).read_bytes(), name


# ----------------------------------------------------------------- bad input
def _corrupt_zoo(small_zoo: Path, tmp_path: Path) -> Path:
    zoo = tmp_path / "zoo"
    shutil.copytree(small_zoo, zoo)
    weights = zoo / "mnist" / "vae-seed0.safetensors"
    content = bytearray(weights.read_bytes())
    content[len(content) // 2] ^= 0x01
    weights.write_bytes(bytes(content))
    return zoo


# id -> (arguments after BASE_ARGS and --out; the last value of an option wins, and
#        a substring of the error line)
BAD = {
    "unknown-model": (["--model", "nosuchmodel"], "'nosuchmodel'"),
    "unknown-seed": (["--seed-model", "7"], "vae-seed7"),
    "unknown-recipe": (["--attack", "nosuchrecipe"], "unknown attack recipe"),
    "unknown-dataset": (["--dataset", "cifar99"], "unknown dataset"),
    "per-pair-0": (["--per-pair", "0"], "--per-pair"),
    "negative-epsilon": (["--set", "epsilon=-0.1"], "epsilon must be >= 0"),
    "missing-data": (["--data-dir", "{empty}"], "files not found"),
    "unwritable-out": (["--out", "{run}/cells.csv/sub"], "cannot write"),
    "corrupt-weights": ([], "sha256"),  # ROBUST_VAE_MODELS -> a copy with a flipped byte
    "other-configuration": (["--per-pair", "3"], "different configuration"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_and_changes_nothing(
    case: str, base_run, env: dict[str, str], small_zoo: Path, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    args, expected = BAD[case]
    run = tmp_path / "existing"
    shutil.copytree(base_run[0], run)  # copy2: bytes and mtimes
    before = snapshot(run)
    (tmp_path / "empty").mkdir()
    args = [a.format(run=run, empty=tmp_path / "empty") for a in args]
    command = [*BASE_ARGS, "--out", str(run), *args]
    if case == "corrupt-weights":
        env = dict(env, ROBUST_VAE_MODELS=str(_corrupt_zoo(small_zoo, tmp_path)))
    result = run_cli(command, env)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("robust-vae attack: error: ")
    assert expected in lines[0], lines[0]
    assert snapshot(run) == before


# ----------------------------------------------------------------- report
def test_report_re_renders_in_place(base_run, env: dict[str, str], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run = tmp_path / "run"
    shutil.copytree(base_run[0], run)
    original = {name: (run / name).read_bytes() for name in REPORT_FILES}
    (run / "matrix.tex").unlink()
    (run / "marginals.csv").unlink()
    result = run_cli(["report", str(run)], env)
    assert result.returncode == 0, result.stderr
    for name in ("matrix.tex", "matrix.csv", "cells.csv", "marginals.tex", "summary.md", "run.json"):
        assert (run / name).read_bytes() == original[name], name
    # marginals are recomputed from cells.csv, whose floats carry 6 decimals: the last digit
    # of a mean may differ from the one computed from the unrounded cells
    again = pd.read_csv(run / "marginals.csv")
    before = pd.read_csv(io.BytesIO(original["marginals.csv"]))
    pd.testing.assert_frame_equal(again, before, check_exact=False, atol=1.5e-6, rtol=0)
    for name in ("heatmaps.png", "examples.png"):
        assert (run / name).read_bytes()[:8] == PNG_MAGIC


def test_report_compares_two_runs(base_run, straight_run: Path, env: dict[str, str], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # the default layout reports/<dataset>/<model>/<recipe>: both runs' folders are named "thesis"
    first, second = tmp_path / "vae" / "thesis", tmp_path / "vae-b" / "thesis"
    shutil.copytree(base_run[0], first)
    shutil.copytree(straight_run, second)
    out = tmp_path / "comparison"
    result = run_cli(["report", str(first), str(second), "--out", str(out)], env)
    assert result.returncode == 0, result.stderr
    for name in ("marginals.csv", "marginals.tex", "marginals.md"):
        assert (out / name).is_file(), name
    table = pd.read_csv(out / "marginals.csv")
    assert list(table.columns) == ["source", "vae AS target", "vae AS ignore-target",
                                   "vae-b AS target", "vae-b AS ignore-target"]
    assert list(table["source"].astype(str)) == [*map(str, range(10)), "Mean"]
    for label, run in (("vae", first), ("vae-b", second)):
        own = pd.read_csv(run / "marginals.csv")
        rows = pd.concat([own[own["kind"] == "source"].sort_values("cls"), own[own["kind"] == "overall"]])
        for rate, name in (("as_target", "AS target"), ("as_ignore_target", "AS ignore-target")):
            np.testing.assert_allclose(table[f"{label} {name}"], (100 * rows[rate]).round(2), atol=0.006)
    tex = (out / "marginals.tex").read_text()
    assert "\\multicolumn{2}{c}{vae}" in tex and "\\multicolumn{2}{c}{vae-b}" in tex
    md = (out / "marginals.md").read_text()
    assert "vae AS target" in md and "vae-b AS target" in md
    # each run is re-rendered into its own folder of the comparison folder too
    assert (out / "vae" / "thesis" / "cells.csv").read_bytes() == (first / "cells.csv").read_bytes()
    assert (out / "vae-b" / "thesis" / "cells.csv").read_bytes() == (second / "cells.csv").read_bytes()


# ----------------------------------------------------------------- evaluate, traverse
def test_evaluate_reproduces_the_card(env: dict[str, str], small_zoo: Path) -> None:
    result = run_cli(["evaluate", "--model", "vae", "--dataset", "mnist", "--json"], env)
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    card = json.loads((small_zoo / "mnist" / "vae-seed0.json").read_text())
    assert printed["card_metrics"] == card["metrics"]
    assert printed["metrics"]["recon_accuracy"] == card["metrics"]["recon_accuracy"]
    assert printed["metrics"]["recon_confusion"] == card["metrics"]["recon_confusion"]
    table = run_cli(["evaluate", "--model", "vae", "--dataset", "mnist"], env).stdout.splitlines()
    accuracies = [float(line.split()[-1]) for line in table if line[:1].isdigit()]
    confusion = np.array(card["metrics"]["recon_confusion"])
    np.testing.assert_allclose(accuracies, np.diag(confusion) / confusion.sum(axis=1), atol=5e-5)
    for key in ("recon_bce", "elbo", "kl_gaussian", "kl_categorical"):
        assert printed["metrics"][key] == pytest.approx(card["metrics"][key], rel=1e-4), key
    np.testing.assert_allclose(printed["metrics"]["kl_per_dim"], card["metrics"]["kl_per_dim"], rtol=1e-3, atol=1e-5)


def test_evaluate_update_card_rewrites_metrics_only(env: dict[str, str], small_zoo: Path, tmp_path: Path) -> None:
    zoo = tmp_path / "zoo"
    shutil.copytree(small_zoo, zoo)
    card_path = zoo / "mnist" / "vae-seed0.json"
    before = json.loads(card_path.read_text())
    before["metrics"]["recon_accuracy"] = 0.0  # a stale value, as after a new classifier
    card_path.write_text(json.dumps(before, indent=2) + "\n")
    result = run_cli(["evaluate", "--model", "vae", "--dataset", "mnist", "--update-card"],
                     dict(env, ROBUST_VAE_MODELS=str(zoo)))
    assert result.returncode == 0, result.stderr
    after = json.loads(card_path.read_text())
    assert after["metrics"]["recon_accuracy"] > 0.5
    classifier = json.loads((zoo / "mnist" / "classifier.json").read_text())
    assert after["recon_classifier_sha256"] == classifier["sha256"]
    assert {k: v for k, v in after.items() if k not in ("metrics", "recon_classifier_sha256")} == {
        k: v for k, v in before.items() if k not in ("metrics", "recon_classifier_sha256")}


def test_traverse_writes_a_png(env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "t.png"
    result = run_cli(["traverse", "--model", "vae", "--dataset", "mnist", "--out", str(out)], env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"wrote {out}"
    assert out.read_bytes()[:8] == PNG_MAGIC
    from matplotlib.image import imread

    image = imread(out)
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 300  # 11 rows of 10 tiles
    assert image[..., :3].std() > 0.05  # not blank
