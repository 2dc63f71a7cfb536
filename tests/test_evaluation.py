"""success_matrix (protocol §4) on the small real VAE: counts, marginals, filtering, resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from robust_vae.attacks import load_attack
from robust_vae.core.errors import ConfigError
from robust_vae.data import Dataset, class_pairs
from robust_vae.evaluation.attack_metrics import METRIC_COLUMNS
from robust_vae.evaluation.success_matrix import CELL_COLUMNS, EXAMPLE_COLUMNS, SuccessMatrix, success_matrix
from robust_vae.models.classifier import LeNet
from robust_vae.report.success import Z_95
from robust_vae.zoo.cards import load_state, read_card

PER_PAIR, STEPS = 3, 20



@pytest.fixture(scope="module")
def classifier(small_zoo: Path) -> nn.Module:
    return load_state(read_card(small_zoo / "mnist" / "classifier.json"), LeNet())


@pytest.fixture(scope="module")
def attack():  # type: ignore[no-untyped-def]
    return load_attack("thesis", steps=STEPS)


def _run(small_vae: nn.Module, classifier: nn.Module, mnist_test: Dataset, attack, **kwargs) -> SuccessMatrix:  # type: ignore[no-untyped-def]
    kwargs.setdefault("per_pair", PER_PAIR)
    kwargs.setdefault("seed", 0)
    return success_matrix(small_vae, classifier, mnist_test, attack, progress=False, **kwargs)


@pytest.fixture(scope="module")
def head(mnist_test: Dataset) -> Dataset:
    """The first 2,000 test images (about 200 per class): cheaper clean predictions."""
    return Dataset(mnist_test.name, mnist_test.split, mnist_test.images[:2000], mnist_test.labels[:2000])


@pytest.fixture(scope="module")
def result(small_vae: nn.Module, classifier: nn.Module, mnist_test: Dataset, attack) -> SuccessMatrix:  # type: ignore[no-untyped-def]
    return _run(small_vae, classifier, mnist_test, attack)


def clean_labels(model: nn.Module, classifier: nn.Module, images: torch.Tensor) -> np.ndarray:
    """The classifier's labels of the clean reconstructions of ``images``, recomputed here."""
    with torch.no_grad():
        return classifier(model.reconstruct(images)).argmax(-1).numpy()


# ----------------------------------------------------------------- the cells table
def test_cells_counts_and_rates(result: SuccessMatrix) -> None:
    cells = result.cells
    assert len(cells) == 90
    assert list(cells.columns[:len(CELL_COLUMNS)]) == CELL_COLUMNS
    pairs = list(zip(cells["source"], cells["target"]))
    assert pairs == [(s, t) for s in range(10) for t in range(10) if s != t]
    assert (cells["n_pairs"] == PER_PAIR).all()  # every class has far more than 3 test images
    assert ((cells["n"] >= 0) & (cells["n"] <= cells["n_pairs"])).all()
    assert ((cells["hits_target"] <= cells["hits_ignore_target"]) & (cells["hits_ignore_target"] <= cells["n"])).all()
    full = cells[cells["n"] > 0]
    assert len(full) > 45
    np.testing.assert_array_equal(full["as_target"], full["hits_target"] / full["n"])
    np.testing.assert_array_equal(full["as_ignore_target"], full["hits_ignore_target"] / full["n"])
    assert cells.loc[cells["n"] == 0, ["as_target", "as_ignore_target"]].isna().all().all()
    # the examples table is what the cells count
    examples = result.examples
    # the saved layout first, then the classifier-free metrics (written to metrics.csv)
    assert list(examples.columns) == EXAMPLE_COLUMNS + METRIC_COLUMNS
    assert len(examples) == cells["n"].sum() == result.metadata["examples_attacked"]
    for (s, t), frame in examples.groupby(["source", "target"]):
        row = cells[(cells["source"] == s) & (cells["target"] == t)].iloc[0]
        assert len(frame) == row["n"]
        assert (frame["prediction"] == t).sum() == row["hits_target"]
        assert (frame["prediction"] != s).sum() == row["hits_ignore_target"]
    # the ε-ball of the thesis recipe holds
    assert (examples["linf"] <= 0.1 + 1e-6).all()
    # the attack did something: some reconstructions changed class
    assert cells["hits_ignore_target"].sum() > 0


def test_marginals_are_unweighted_means_of_the_cells(result: SuccessMatrix) -> None:
    cells, marginals = result.cells, result.marginals()
    for rate in ("as_target", "as_ignore_target", "mean_l2", "mean_linf"):
        for s in range(10):
            own = cells.loc[cells["source"] == s, rate].to_numpy(float)
            assert len(own) == 9
            # the mean over that source's cells (skipping empty ones), not over examples
            expected = np.nanmean(own) if np.isfinite(own).any() else np.nan
            got = marginals.loc[(marginals["kind"] == "source") & (marginals["cls"] == s), rate]
            assert len(got) == 1
            assert got.iloc[0] == pytest.approx(expected, abs=1e-12, nan_ok=True), (rate, s)
        for t in range(10):
            own = cells.loc[cells["target"] == t, rate].to_numpy(float)
            expected = np.nanmean(own) if np.isfinite(own).any() else np.nan
            got = marginals.loc[(marginals["kind"] == "target") & (marginals["cls"] == t), rate].iloc[0]
            assert got == pytest.approx(expected, abs=1e-12, nan_ok=True), (rate, t)
        overall = marginals.loc[marginals["kind"] == "overall", rate]
        assert len(overall) == 1
        assert overall.iloc[0] == pytest.approx(np.nanmean(cells[rate].to_numpy(float)), abs=1e-12)


def test_wilson_bounds_bracket_the_rates(result: SuccessMatrix) -> None:
    cells = result.cells
    full = cells[cells["n"] > 0]
    for rate in ("as_target", "as_ignore_target"):
        lo, hi = full[f"{rate}_lo"], full[f"{rate}_hi"]
        assert ((lo <= full[rate] + 1e-12) & (full[rate] <= hi + 1e-12)).all()
        assert ((lo >= 0) & (hi <= 1) & (hi > lo)).all()
        assert cells.loc[cells["n"] == 0, [f"{rate}_lo", f"{rate}_hi"]].isna().all().all()
    # one value by hand: 0 hits of n -> upper bound z² / (n + z²)
    zero = full[full["hits_target"] == 0].iloc[0]
    n = zero["n"]
    assert zero["as_target_lo"] == pytest.approx(0.0, abs=1e-12)
    assert zero["as_target_hi"] == pytest.approx(Z_95 ** 2 / (n + Z_95 ** 2), rel=1e-9)


# ----------------------------------------------------------------- sampling and filtering
def test_pairs_come_from_the_sampler_and_are_kept_only_when_clean_is_right(
    result: SuccessMatrix, mnist_test: Dataset, small_vae: nn.Module, classifier: nn.Module
) -> None:
    examples, cells = result.examples, result.cells
    labels = mnist_test.labels.numpy()
    np.testing.assert_array_equal(labels[examples["source_index"]], examples["source"])
    np.testing.assert_array_equal(labels[examples["target_index"]], examples["target"])
    # every attacked source's clean reconstruction is classified as its source
    attacked = torch.from_numpy(examples["source_index"].to_numpy(copy=True))
    np.testing.assert_array_equal(clean_labels(small_vae, classifier, mnist_test.images[attacked]),
                                  examples["source"])
    # exactly the kept ones of the sampler's first PER_PAIR pairs, in the sampler's order
    dropped = 0
    for s in range(10):
        for t in range(10):
            if s == t:
                continue
            src, tgt = class_pairs(mnist_test.labels, s, t, seed=0)
            src, tgt = src[:PER_PAIR].numpy(), tgt[:PER_PAIR].numpy()
            kept = clean_labels(small_vae, classifier, mnist_test.images[torch.from_numpy(src)]) == s
            dropped += int((~kept).sum())
            frame = examples[(examples["source"] == s) & (examples["target"] == t)]
            np.testing.assert_array_equal(frame["source_index"], src[kept])
            np.testing.assert_array_equal(frame["target_index"], tgt[kept])
            row = cells[(cells["source"] == s) & (cells["target"] == t)].iloc[0]
            assert row["n"] == kept.sum()
    assert dropped > 0  # the filter is not vacuous for this model
    assert dropped == (cells["n_pairs"] - cells["n"]).sum()


# ----------------------------------------------------------------- determinism and resume
def test_two_runs_are_identical(small_vae, classifier, head, attack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    once = _run(small_vae, classifier, head, attack)
    again = _run(small_vae, classifier, head, attack)
    assert again.cells.equals(once.cells)
    assert again.examples.equals(once.examples)
    assert once.examples["prediction"].nunique() > 1
    once.to_csv(tmp_path / "a")
    again.to_csv(tmp_path / "b")
    for name in ("cells.csv", "matrix.csv", "marginals.csv", "examples.csv.gz"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_resume_in_process(small_vae, classifier, head, attack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "run"
    kwargs = {"per_pair": 2, "batch_size": 16}
    first = _run(small_vae, classifier, head, attack, out_dir=out, **kwargs)
    units = sorted((out / "progress").glob("unit-*.npz"))
    assert len(units) == first.metadata["units"] >= 6
    assert (out / "config.json").is_file()
    first.to_csv(tmp_path / "first")

    # an interrupted run: some units never finished
    removed = [units[1], units[4], units[-1]]
    for path in removed:
        path.unlink()
    kept_before = {p.name: p.stat().st_mtime_ns for p in units if p not in removed}
    resumed = _run(small_vae, classifier, head, attack, out_dir=out, **kwargs)
    resumed.to_csv(tmp_path / "resumed")
    assert (tmp_path / "resumed" / "cells.csv").read_bytes() == (tmp_path / "first" / "cells.csv").read_bytes()
    assert resumed.examples.equals(first.examples)
    assert all(p.exists() for p in removed)
    assert {p.name: p.stat().st_mtime_ns for p in units if p not in removed} == kept_before  # reused

    # the same as a run that never wrote anything
    plain = _run(small_vae, classifier, head, attack, **kwargs)
    assert plain.cells.equals(first.cells)
    # while another seed samples other pairs
    other = _run(small_vae, classifier, head, attack, **(kwargs | {"seed": 1}))
    assert not np.array_equal(other.examples["source_index"], first.examples["source_index"])

    # a different configuration in the same folder is refused, and nothing changes
    before = _snapshot(out)
    for change in ({"seed": 1}, {"per_pair": 3}, {"batch_size": 17}):
        with pytest.raises(ConfigError, match="different configuration") as info:
            _run(small_vae, classifier, head, attack, out_dir=out, **(kwargs | change))
        assert str(out) in str(info.value)
    with pytest.raises(ConfigError, match="hyperparameters"):
        _run(small_vae, classifier, head, load_attack("thesis", steps=STEPS + 1), out_dir=out, **kwargs)
    assert _snapshot(out) == before


def test_bad_arguments(small_vae, classifier, head, attack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    for kwargs in ({"per_pair": 0}, {"batch_size": 0}):
        with pytest.raises(ConfigError):
            _run(small_vae, classifier, head, attack, out_dir=tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()
