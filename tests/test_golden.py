"""Golden outputs: small runs and the study's re-rendered tables must not change silently.

The files under ``tests/golden/`` were written by the commands below before the package was
restructured; every later version must reproduce them: counts, classes, indices, predictions
and every table of rates exactly, and the float columns (distortions) to within the last printed
digit, because the float kernels torch picks differ between CPUs (AVX2 and AVX-512 machines
print e.g. 2.669304 and 2.669305). Work that changes results on purpose regenerates them in
the same commit (``python -m tests.test_golden``) and says why in the commit message.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from robust_vae.cli.app import main

GOLDEN = Path(__file__).resolve().parent / "golden"
REPO_ROOT = GOLDEN.parent.parent
GOLDEN_FILES = ("cells.csv", "marginals.csv", "matrix.tex", "examples.csv.gz")

# (model, recipe, overrides): one pair per cell, seed 0, shortened where the recipe is slow.
CASES: list[tuple[str, str, tuple[str, ...]]] = [
    (model, recipe, overrides)
    for model in ("vae", "jointvae")
    for recipe, overrides in (
        ("thesis-fast", ()),
        ("tabacof-linf", ("c=[0.0625,16.0]", "max_iter=15")),
        ("e2e-linf", ("steps=20",)),
        ("kos-classifier-linf", ("steps=20", "classifier_epochs=2")),
    )
]


def golden_argv(model: str, recipe: str, overrides: tuple[str, ...], out: Path) -> list[str]:
    """The ``robust-vae attack`` line of one golden case."""
    argv = ["attack", "--model", model, "--dataset", "mnist", "--attack", recipe,
            "--per-pair", "1", "--seed", "0", "--out", str(out)]
    for item in overrides:
        argv += ["--set", item]
    return argv


FLOAT_TOLERANCE = {"rtol": 1e-4, "atol": 5e-6}  # the CSVs print 6 decimals


def assert_matches_golden(actual: Path, expected: Path) -> None:
    """Text files byte for byte; CSV tables column by column (floats to FLOAT_TOLERANCE)."""
    if not expected.name.endswith((".csv", ".csv.gz")):
        assert filecmp.cmp(actual, expected, shallow=False), f"{actual.name} differs from {expected}"
        return
    got, want = pd.read_csv(actual), pd.read_csv(expected)
    assert list(got.columns) == list(want.columns) and got.shape == want.shape, f"{actual.name}: other layout"
    for column in want.columns:
        if pd.api.types.is_float_dtype(want[column]) and not column.startswith("as_"):
            np.testing.assert_allclose(got[column], want[column], err_msg=f"{actual.name} {column}",
                                       **FLOAT_TOLERANCE)
        else:  # counts, classes, indices, predictions and rates (ratios of counts) are exact
            assert got[column].tolist() == want[column].tolist(), f"{actual.name} {column} differs from {expected}"


@pytest.mark.parametrize(("model", "recipe", "overrides"), CASES, ids=[f"{m}-{r}" for m, r, _ in CASES])
def test_attack_run_matches_golden(model: str, recipe: str, overrides: tuple[str, ...], tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(golden_argv(model, recipe, overrides, out)) == 0
    expected = GOLDEN / f"{model}-{recipe}"
    for name in GOLDEN_FILES:
        assert_matches_golden(out / name, expected / name)


def test_golden_comparison_tolerates_last_digit_only(tmp_path: Path) -> None:
    expected = tmp_path / "want.csv"
    expected.write_text("source,n,as_target,mean_l2\n0,3,0.333333,2.669304\n")
    for text, ok in (("0,3,0.333333,2.669305", True), ("0,3,0.333333,2.669904", False),
                     ("0,4,0.333333,2.669304", False), ("0,3,0.333334,2.669304", False)):
        actual = tmp_path / "got.csv"
        actual.write_text(f"source,n,as_target,mean_l2\n{text}\n")
        if ok:
            assert_matches_golden(actual, expected)
        else:
            with pytest.raises(AssertionError):
                assert_matches_golden(actual, expected)


def test_study_report_only_reproduces_committed_tables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``robust-vae study reports/mnist/study/study.toml --report-only`` rewrites every
    committed table, figure and results.md unchanged."""
    committed = REPO_ROOT / "reports" / "mnist" / "study"
    copy = tmp_path / "reports" / "mnist" / "study"
    shutil.copytree(committed, copy)
    monkeypatch.chdir(tmp_path)
    assert main(["study", "reports/mnist/study/study.toml", "--report-only"]) == 0
    for path in sorted(committed.rglob("*")):
        if path.is_file() and "runs" not in path.relative_to(committed).parts:
            other = copy / path.relative_to(committed)
            assert filecmp.cmp(path, other, shallow=False), f"{path.relative_to(REPO_ROOT)} changed"


def regenerate() -> None:  # pragma: no cover - run by hand when results change on purpose
    """Rewrite tests/golden/ from the current code."""
    import torch

    torch.set_num_threads(1)  # as the test session runs (tests/conftest.py): float sums depend on it
    os.environ["ROBUST_VAE_CACHE"] = tempfile.mkdtemp()  # fresh latent classifiers, as in a test session
    os.environ.setdefault("ROBUST_VAE_DATA", str((REPO_ROOT / ".." / "shared" / "data").resolve()))
    for model, recipe, overrides in CASES:
        out = REPO_ROOT / "build" / "golden" / f"{model}-{recipe}"
        shutil.rmtree(out, ignore_errors=True)
        assert main(golden_argv(model, recipe, overrides, out)) == 0
        target = GOLDEN / f"{model}-{recipe}"
        target.mkdir(parents=True, exist_ok=True)
        for name in GOLDEN_FILES:
            shutil.copyfile(out / name, target / name)
        print(f"wrote {target}", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    regenerate()
