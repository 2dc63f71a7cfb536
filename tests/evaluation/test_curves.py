"""Distortion–distance curves and AUDDC (evaluation/curves.py): hand-made curves, the two
limiting models, and a real swept run on the small VAE that re-renders from its folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from robust_vae.attacks import load_attack
from robust_vae.attacks.base import AttackResult
from robust_vae.data import Dataset
from robust_vae.evaluation.curves import auddc, auddc_of_table, auddc_summary, normalised, sweep_curve_arrays
from robust_vae.evaluation.success_matrix import SuccessMatrix, success_matrix
from robust_vae.models.classifier import LeNet
from robust_vae.zoo.cards import load_state, read_card


def test_auddc_of_a_hand_made_curve() -> None:
    # kept points (0.2, 0.6), (0.5, 0.1); (1.3, 0.0) is beyond x = 1 and (0.4, -0.2) clips to 0.
    x = np.array([[0.5, 0.2, 1.3, 0.4]])
    y = np.array([[0.1, 0.6, 0.0, -0.2]])
    # curve: (0, 1) (0.2, 0.6) (0.4, 0) (0.5, 0.1) then (0.5, 0) and (1, 0)
    expected = 0.2 * (1 + 0.6) / 2 + 0.2 * (0.6 + 0) / 2 + 0.1 * (0 + 0.1) / 2 + 0 + 0
    assert auddc(x, y)[0] == pytest.approx(expected, abs=1e-12)


def test_auddc_of_a_straight_line_and_of_no_movement() -> None:
    grid = np.linspace(0.05, 1.0, 20)[None]
    assert auddc(grid, 1.0 - grid)[0] == pytest.approx(0.5, abs=1e-12)
    assert auddc(grid, np.ones_like(grid))[0] == pytest.approx(1.0, abs=1e-12)
    assert np.isnan(auddc(grid, np.full_like(grid, np.nan))[0])
    # no point with x <= 1: nothing moved within the distortion budget
    assert auddc(grid + 2.0, np.zeros_like(grid))[0] == pytest.approx(1.0)


def test_normalisation_is_zero_at_the_target_reconstruction_and_one_at_the_source() -> None:
    x, y = normalised(np.array([[0.0, 3.0]]), np.array([[5.0, 1.0]]), np.array([6.0]), np.array([5.0]),
                      np.array([1.0]))
    np.testing.assert_allclose(x, [[0.0, 0.5]])
    np.testing.assert_allclose(y, [[1.0, 0.0]])
    _, undefined = normalised(np.ones((1, 2)), np.ones((1, 2)), np.ones(1), np.ones(1), np.ones(1))
    assert np.isnan(undefined).all()


class Constant(nn.Module):
    """A 'model' whose reconstruction is the same image whatever the input."""

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x, 0.5)


class Identity(nn.Module):
    """An autoencoder that reconstructs its input exactly."""

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()


def _interpolation_sweep(source: torch.Tensor, target: torch.Tensor, steps: torch.Tensor) -> AttackResult:
    """Adversarials x_s + a (x_t − x_s) for every a of ``steps``: (K, N, ...)."""
    adversarial = torch.stack([torch.lerp(source, target, float(a)) for a in steps])  # exact at a = 0 and 1
    d = (adversarial - source).flatten(2)
    k, n = adversarial.shape[:2]
    zeros = torch.zeros(k, n)
    return AttackResult(adversarial, d.norm(dim=2), d.abs().amax(dim=2), zeros, zeros,
                        torch.zeros(k, n, dtype=torch.int64), "c", [float(a) for a in steps])


@pytest.mark.parametrize("model, expected", [(Identity(), 0.5), (Constant(), None)])
def test_limiting_models(model: nn.Module, expected: float | None) -> None:
    """The identity autoencoder follows the diagonal (AUDDC 0.5, the least any attack can reach
    on it with the distortion it needs); a reconstruction that cannot move has no AUDDC at all
    (its source and target reconstructions coincide)."""
    generator = torch.Generator().manual_seed(0)
    source = torch.rand(4, 1, 8, 8, generator=generator, dtype=torch.float64)
    target = torch.rand(4, 1, 8, 8, generator=generator, dtype=torch.float64)
    arrays = sweep_curve_arrays(model.reconstruct, _interpolation_sweep(source, target, torch.linspace(0, 1, 11)), source, target)
    x, y = normalised(arrays["curve_distortion"], arrays["curve_distance"], arrays["curve_input_distance"],
                      arrays["curve_source_distance"], arrays["curve_target_distance"])
    areas = auddc(x, y)
    if expected is None:
        assert np.isnan(areas).all()
    else:
        np.testing.assert_allclose(areas, expected, atol=1e-9)


def test_a_decoder_that_ignores_the_input_scores_one() -> None:
    """Reconstructions far from the target that do not change with the input: y = 1, AUDDC 1."""

    class Stuck(nn.Module):
        def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
            return torch.zeros_like(x)

    source = torch.full((3, 1, 4, 4), 0.2)
    target = torch.full((3, 1, 4, 4), 0.9)
    arrays = sweep_curve_arrays(Stuck().reconstruct, _interpolation_sweep(source, target, torch.linspace(0.1, 1, 10)),
                                source, target)
    arrays["curve_target_distance"] = np.zeros(3)  # a target the model would reconstruct perfectly
    x, y = normalised(arrays["curve_distortion"], arrays["curve_distance"], arrays["curve_input_distance"],
                      arrays["curve_source_distance"], arrays["curve_target_distance"])
    np.testing.assert_allclose(auddc(x, y), 1.0)


def test_summary_averages_cells_unweighted_and_brackets_the_means() -> None:
    import pandas as pd

    rng = np.random.default_rng(0)
    # cell (0, 1): 20 examples around 0.3; cell (1, 0): 5 examples around 0.6 (one undefined)
    frame = pd.DataFrame({"source": np.repeat([0, 1], [20, 5]), "target": np.repeat([1, 0], [20, 5]),
                          "auddc": np.concatenate([rng.uniform(0.2, 0.4, 20), rng.uniform(0.5, 0.7, 5)])})
    frame.loc[22, "auddc"] = np.nan
    table = auddc_summary(frame, resamples=300)
    assert list(table["scope"]) == ["cell", "cell", "source", "source", "target", "target", "all"]
    assert table["n"].tolist() == [20, 4, 20, 4, 4, 20, 24]
    assert table["n_undefined"].tolist() == [0, 1, 0, 1, 1, 0, 1]
    assert (table["auddc_lo"] <= table["auddc"]).all() and (table["auddc"] <= table["auddc_hi"]).all()
    cell_means = [frame["auddc"][:20].mean(), np.nanmean(frame["auddc"][20:])]
    run = table[table["scope"] == "all"].iloc[0]
    assert run["auddc"] == pytest.approx(np.mean(cell_means))  # not the example mean, which cell (0, 1) dominates
    assert run["auddc"] != pytest.approx(np.nanmean(frame["auddc"]), abs=1e-3)
    assert table["auddc"].iloc[2] == pytest.approx(cell_means[0]) and table["auddc"].iloc[3] == pytest.approx(cell_means[1])
    again = auddc_summary(frame, resamples=300)
    pd.testing.assert_frame_equal(table, again)  # seeded


@pytest.fixture(scope="module")
def swept_run(small_vae: nn.Module, small_zoo: Path, mnist_test: Dataset) -> SuccessMatrix:
    classifier = load_state(read_card(small_zoo / "mnist" / "classifier.json"), LeNet())
    head = Dataset(mnist_test.name, mnist_test.split, mnist_test.images[:1000], mnist_test.labels[:1000])
    attack = load_attack("tabacof", c=[0.01, 1.0, 100.0], max_iter=15, solver="torch")  # the faster solver on CPU
    return success_matrix(small_vae, classifier, head, attack, per_pair=1, seed=0, progress=False)


def test_a_swept_run_writes_its_curves_and_rerenders_them(swept_run: SuccessMatrix, tmp_path: Path) -> None:
    curves = swept_run.curves
    assert curves is not None
    n = len(swept_run.examples)
    assert len(curves) == 3 * n and sorted(curves["sweep_value"].unique()) == [0.01, 1.0, 100.0]
    # a larger C penalises distortion more: the solution's ‖d‖ shrinks along the sweep
    distortion = curves["distortion"].to_numpy().reshape(n, 3)
    assert (np.median(distortion[:, 0]) > np.median(distortion[:, 1]) > np.median(distortion[:, 2]))
    areas = swept_run.examples["auddc"].to_numpy()
    assert np.isfinite(areas).mean() > 0.9 and ((areas[np.isfinite(areas)] >= 0) & (areas[np.isfinite(areas)] <= 1)).all()
    np.testing.assert_allclose(auddc_of_table(curves)["auddc"].to_numpy(), areas, atol=1e-6)
    swept_run.save(tmp_path / "run")
    for name in ("curves.csv", "auddc.csv", "curve.png"):
        assert (tmp_path / "run" / name).is_file(), name
    assert "AUDDC" in (tmp_path / "run" / "summary.md").read_text()
    SuccessMatrix.load(tmp_path / "run").save(tmp_path / "again")
    for name in ("curves.csv", "auddc.csv", "examples.csv.gz", "summary.md", "curve.png"):
        assert (tmp_path / "run" / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name


def test_an_unswept_run_has_no_curves(small_vae: nn.Module, small_zoo: Path, mnist_test: Dataset,
                                      tmp_path: Path) -> None:
    classifier = load_state(read_card(small_zoo / "mnist" / "classifier.json"), LeNet())
    head = Dataset(mnist_test.name, mnist_test.split, mnist_test.images[:500], mnist_test.labels[:500])
    run = success_matrix(small_vae, classifier, head, load_attack("thesis", steps=3), per_pair=1, progress=False)
    assert run.curves is None and "auddc" not in run.examples.columns
    run.save(tmp_path)
    assert not (tmp_path / "curves.csv").exists() and not (tmp_path / "auddc.csv").exists()


def test_report_and_compare_put_swept_runs_side_by_side(swept_run: SuccessMatrix, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    import pandas as pd

    from robust_vae.cli.app import main

    for name in ("a", "b"):
        swept_run.save(tmp_path / name / "tabacof")
    run_value = swept_run.auddc()
    assert run_value is not None
    mean = float(run_value.loc[run_value["scope"] == "all", "auddc"].iloc[0])
    assert main(["report", str(tmp_path / "a" / "tabacof"), str(tmp_path / "b" / "tabacof"), "--out",
                 str(tmp_path / "side")]) == 0
    table = pd.read_csv(tmp_path / "side" / "auddc.csv")
    assert table["source"].iloc[-1] == "Mean" and len(table) == swept_run.examples["source"].nunique() + 1
    assert table.filter(like=" AUDDC").shape[1] == 6
    assert table.iloc[-1, 1] == pytest.approx(mean, abs=1e-4)
    assert "AUDDC" in (tmp_path / "side" / "auddc.md").read_text()
    capsys.readouterr()
    assert main(["compare", "--a", str(tmp_path / "a" / "tabacof"), "--b", str(tmp_path / "b" / "tabacof"),
                 "--bootstrap", "100", "--out", str(tmp_path / "cmp")]) == 0
    comparison = pd.read_csv(tmp_path / "cmp" / "comparison.csv")
    row = comparison[comparison["metric"] == "auddc"].iloc[0]
    assert row["difference_pp"] == 0 and row["mean_a_pct"] == pytest.approx(100 * mean, abs=1e-2)


def test_readme_tabacof_example_is_the_committed_run() -> None:
    """The README's tabacof example quotes the committed run: its AUDDC line, AS target, size."""
    import json
    from pathlib import Path

    import pandas as pd

    root = Path(__file__).resolve().parents[2]
    run = root / "reports" / "mnist" / "vae" / "tabacof"
    readme = (root / "README.md").read_text()
    overall = pd.read_csv(run / "auddc.csv").query("scope == 'all'").iloc[0]
    assert f"AUDDC {overall.auddc:.4f} [{overall.auddc_lo:.4f}, {overall.auddc_hi:.4f}]" in readme
    info = json.loads((run / "run.json").read_text())
    assert info["per_pair"] == 2 and info["recipe"] == "tabacof" and f"{info['examples_attacked']} pairs" in readme
    summary = (run / "summary.md").read_text()
    as_target = summary.split("**AS target**: ")[1].split("%")[0]
    assert f"AS target\n{as_target} %" in readme or f"AS target {as_target} %" in readme
