"""Tests for robust_vae.report.success: statistics, tables and figures from a synthetic cells table.

The cells table is synthetic rendering input (random counts with a fixed seed), not MNIST.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from robust_vae.core.errors import DataError
from robust_vae.report import success as rep

K = 10


def make_cells(k: int = K, seed: int = 0) -> pd.DataFrame:
    """One row per ordered pair s != t with binomial hit counts and random distances."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(k):
        for t in range(k):
            if s == t:
                continue
            n_pairs = int(rng.integers(850, 1150))
            n = n_pairs - int(rng.integers(0, 30))
            ignore = int(rng.binomial(n, rng.uniform(0.05, 0.9)))
            target = int(rng.binomial(ignore, rng.uniform(0.1, 0.8)))
            rows.append(dict(source=s, target=t, n_pairs=n_pairs, n=n, hits_target=target,
                             hits_ignore_target=ignore, mean_l2=float(rng.uniform(1, 4)),
                             mean_linf=0.1, mean_latent_distance=float(rng.uniform(0, 5))))
    cells = pd.DataFrame(rows)
    _set_cell(cells, 3, 8, n=200, hits_target=20, hits_ignore_target=50)
    _set_cell(cells, 7, 1, n=3, hits_target=0, hits_ignore_target=1)
    return cells


def _set_cell(cells: pd.DataFrame, s: int, t: int, n: int, hits_target: int,
              hits_ignore_target: int) -> None:
    """Overwrite one cell's counts in place and recompute every cell's rates."""
    where = (cells["source"] == s) & (cells["target"] == t)
    cells.loc[where, ["n", "hits_target", "hits_ignore_target"]] = [n, hits_target,
                                                                     hits_ignore_target]
    with np.errstate(divide="ignore", invalid="ignore"):
        cells["as_target"] = cells["hits_target"] / cells["n"].where(cells["n"] > 0)
        cells["as_ignore_target"] = cells["hits_ignore_target"] / cells["n"].where(cells["n"] > 0)
    if n == 0:
        cells.loc[where, ["mean_l2", "mean_linf", "mean_latent_distance"]] = np.nan


@pytest.fixture(scope="module")
def cells() -> pd.DataFrame:
    return make_cells()


@pytest.fixture(scope="module")
def cells_with_empty() -> pd.DataFrame:
    """Same table with cell (2, 5) empty: n = 0, rates and distances NaN."""
    table = make_cells()
    _set_cell(table, 2, 5, n=0, hits_target=0, hits_ignore_target=0)
    return table


# ------------------------------------------------------------------------- Wilson
def test_wilson_hand_computed_values() -> None:
    # 5/20: published Wilson 95% interval (0.1119, 0.4687).
    lo, hi = rep.wilson_interval(np.array([5, 0, 10]), np.array([20, 10, 10]))
    z2 = 1.959963984540054**2
    assert lo[0] == pytest.approx(0.111862, abs=1e-6)
    assert hi[0] == pytest.approx(0.468701, abs=1e-6)
    # 0/n: lo = 0, hi = z²/(n + z²); n/n: lo = n/(n + z²), hi = 1.
    assert lo[1] == pytest.approx(0.0, abs=1e-12)
    assert hi[1] == pytest.approx(z2 / (10 + z2), abs=1e-12)
    assert hi[1] == pytest.approx(0.277533, abs=1e-6)
    assert lo[2] == pytest.approx(10 / (10 + z2), abs=1e-12)
    assert lo[2] == pytest.approx(0.722467, abs=1e-6)
    assert hi[2] == pytest.approx(1.0, abs=1e-12)


def test_wilson_zero_trials_is_nan_and_bounds_bracket_p() -> None:
    lo, hi = rep.wilson_interval([0, 3, 7], [0, 10, 9])
    assert np.isnan(lo[0]) and np.isnan(hi[0])
    p = np.array([3 / 10, 7 / 9])
    assert np.all(lo[1:] < p) and np.all(p < hi[1:])


def test_wilson_other_z_is_narrower() -> None:
    lo95, hi95 = rep.wilson_interval(30, 100)
    lo68, hi68 = rep.wilson_interval(30, 100, z=1.0)
    assert lo95 < lo68 < 0.3 < hi68 < hi95


def test_add_intervals_adds_bounds_and_leaves_input(cells_with_empty: pd.DataFrame) -> None:
    before = cells_with_empty.copy()
    out = rep.add_intervals(cells_with_empty)
    pd.testing.assert_frame_equal(cells_with_empty, before)
    for col in ("as_target_lo", "as_target_hi", "as_ignore_target_lo", "as_ignore_target_hi"):
        assert col in out.columns
    row = out[(out.source == 3) & (out.target == 8)].iloc[0]
    assert row.as_target_lo < 0.10 < row.as_target_hi
    assert row.as_ignore_target_lo < 0.25 < row.as_ignore_target_hi
    empty = out[(out.source == 2) & (out.target == 5)].iloc[0]
    assert np.isnan(empty.as_target_lo) and np.isnan(empty.as_ignore_target_hi)


def test_add_intervals_rejects_missing_columns(cells: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="hits_target"):
        rep.add_intervals(cells.drop(columns="hits_target"))


# ------------------------------------------------------------------------- marginals
def _loop_mean(cells: pd.DataFrame, key: str | None, cls: int, column: str) -> float:
    total, count = 0.0, 0
    for row in cells.itertuples():
        value = getattr(row, column)
        if (key is None or getattr(row, key) == cls) and not math.isnan(value):
            total += value
            count += 1
    return total / count


@pytest.mark.parametrize("table", ["cells", "cells_with_empty"])
def test_marginals_match_loop_means(table: str, request: pytest.FixtureRequest) -> None:
    data = request.getfixturevalue(table)
    marg = rep.marginals(data)
    assert list(marg.columns) == ["kind", "cls", "as_target", "as_ignore_target",
                                  "mean_l2", "mean_linf"]
    assert (marg.kind == "source").sum() == K and (marg.kind == "target").sum() == K
    for column in ("as_target", "as_ignore_target", "mean_l2"):
        for kind in ("source", "target"):
            for c in range(K):
                got = marg.loc[(marg.kind == kind) & (marg.cls == c), column].item()
                assert got == pytest.approx(_loop_mean(data, kind, c, column), rel=1e-12)
        overall = marg.loc[marg.kind == "overall"]
        assert overall.cls.item() == -1
        assert overall[column].item() == pytest.approx(_loop_mean(data, None, -1, column))


def test_marginals_are_unweighted(cells: pd.DataFrame) -> None:
    # Cell (7, 1) has n = 3; a pooled (weighted) mean would barely notice it.
    marg = rep.marginals(cells)
    seven = cells[cells.source == 7]
    unweighted = seven.as_ignore_target.mean()
    pooled = seven.hits_ignore_target.sum() / seven.n.sum()
    got = marg.loc[(marg.kind == "source") & (marg.cls == 7), "as_ignore_target"].item()
    assert got == pytest.approx(unweighted)
    assert got != pytest.approx(pooled, abs=1e-6)


def test_marginal_intervals_are_mean_cell_bounds(cells: pd.DataFrame) -> None:
    bands = rep.marginal_intervals(cells, "as_target", kind="source")
    framed = rep.add_intervals(cells)
    three = framed[framed.source == 3]
    row = bands[bands.cls == 3].iloc[0]
    assert row.lo == pytest.approx(three.as_target_lo.mean())
    assert row.hi == pytest.approx(three.as_target_hi.mean())


# ------------------------------------------------------------------------- matrices
def test_matrix_strings(cells_with_empty: pd.DataFrame) -> None:
    strings = rep.matrix_strings(cells_with_empty)
    assert strings.shape == (K, K)
    assert list(strings.index) == list(range(K)) and list(strings.columns) == list(range(K))
    assert strings.loc[3, 8] == "25.00% (10.00%)"
    assert strings.loc[7, 1] == "33.33% (0.00%)"
    assert strings.loc[2, 5] == "n/a"
    assert all(strings.loc[i, i] == "-" for i in range(K))
    pattern = re.compile(r"^\d{1,3}\.\d\d% \(\d{1,3}\.\d\d%\)$")
    off = [strings.loc[s, t] for s in range(K) for t in range(K) if s != t and (s, t) != (2, 5)]
    assert all(pattern.match(text) for text in off)


def test_matrix_strings_any_k_and_padding() -> None:
    small = make_cells(k=4, seed=1)
    assert rep.matrix_strings(small).shape == (4, 4)
    padded = rep.matrix_strings(small, num_classes=5)
    assert padded.loc[4, 0] == "n/a" and padded.loc[4, 4] == "-"


def test_matrix_latex(cells: pd.DataFrame) -> None:
    tex = rep.matrix_latex(cells, caption="My caption", label="tab:m")
    assert tex.count("\\makecell{") == K * (K - 1)
    assert "\\makecell{25.00\\% \\\\ (10.00\\%)}" in tex
    assert "\\usepackage{makecell}" in tex.splitlines()[0]
    assert "Source $\\backslash$ Target & 0 & 1" in tex
    assert "\\toprule" in tex and "\\bottomrule" in tex
    assert "\\caption{My caption}" in tex and "\\label{tab:m}" in tex
    row3 = next(line for line in tex.splitlines() if line.startswith("3 & "))
    assert row3.split(" & ")[4] == "-"  # column of target 3


def test_matrix_latex_empty_cell_is_not_a_makecell(cells_with_empty: pd.DataFrame) -> None:
    tex = rep.matrix_latex(cells_with_empty)
    assert tex.count("\\makecell{") == K * (K - 1) - 1
    assert "n/a" in tex


# ------------------------------------------------------------------------- marginal tables
@pytest.fixture(scope="module")
def two_runs(cells: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return {"vae": rep.marginals(cells), "joint_vae": rep.marginals(make_cells(seed=2))}


def test_marginals_latex_two_runs(two_runs: dict[str, pd.DataFrame]) -> None:
    tex = rep.marginals_latex(two_runs)
    assert "\\multicolumn{2}{c}{vae}" in tex
    assert "\\multicolumn{2}{c}{joint\\_vae}" in tex
    lines = tex.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Source &"))
    end = lines.index("\\bottomrule")
    data = [line for line in lines[start + 1:end] if line.endswith("\\\\")]
    assert len(data) == K + 1
    assert data[-1].startswith("Mean & ")
    assert all(len(line.split(" & ")) == 5 for line in data)
    mean = two_runs["vae"].query("kind == 'overall'").as_target.item()
    assert data[-1].split(" & ")[1] == f"{100 * mean:.2f}\\%"


def test_marginals_latex_single_run(cells: pd.DataFrame) -> None:
    tex = rep.marginals_latex({"vae": rep.marginals(cells)})
    assert "\\multicolumn" not in tex
    assert "Source & AS target & AS ignore-target \\\\" in tex


def test_marginals_markdown_and_csv(two_runs: dict[str, pd.DataFrame]) -> None:
    md = rep.marginals_markdown(two_runs)
    lines = md.splitlines()
    assert len(lines) == 2 + K + 1
    assert "vae AS target" in lines[0] and "joint_vae AS ignore-target" in lines[0]
    frame = rep.marginals_csv_frame(two_runs)
    assert list(frame.columns) == ["source", "vae AS target", "vae AS ignore-target",
                                   "joint_vae AS target", "joint_vae AS ignore-target"]
    assert list(frame.source) == [str(c) for c in range(K)] + ["Mean"]
    vae = two_runs["vae"]
    four = vae.loc[(vae.kind == "source") & (vae.cls == 4), "as_ignore_target"].item()
    assert frame.loc[4, "vae AS ignore-target"] == round(100 * four, 2)
    assert f"| {100 * four:.2f}% |" in lines[2 + 4]


def test_summary_markdown(cells_with_empty: pd.DataFrame) -> None:
    marg = rep.marginals(cells_with_empty)
    text = rep.summary_markdown(cells_with_empty, marg, "Attack on vae",
                                {"model": "vae", "seed": 0, "attack": {"eps": 0.1}})
    assert text.startswith("# Attack on vae\n")
    assert "- **seed**: 0" in text and '{"eps": 0.1}' in text
    overall = marg.query("kind == 'overall'").as_target.item()
    assert f"**AS target**: {100 * overall:.2f}%" in text
    assert "| 3 |" in text and "25.00% (10.00%)" in text and "n/a" in text
    assert text.count("| Mean |") == 1


# ------------------------------------------------------------------------- figures
def _read_png(path) -> np.ndarray:
    assert path.exists() and path.stat().st_size > 0
    return imread(path)


def test_plot_heatmaps(cells_with_empty: pd.DataFrame, tmp_path) -> None:
    path = tmp_path / "figs" / "heat.png"
    rep.plot_heatmaps(cells_with_empty, path, title="synthetic")
    image = _read_png(path)
    assert image.ndim == 3 and image.shape[1] > image.shape[0] > 100


def test_plot_examples(tmp_path) -> None:
    rng = np.random.default_rng(0)
    rows = []
    for i, (s, t) in enumerate([(3, 8), (1, 7)]):
        shape = (32, 32) if i == 0 else (1, 32, 32)
        images = {key: rng.uniform(0, 1, shape)
                  for key in ("source", "adversarial", "reconstruction", "target")}
        rows.append({"source": s, "target": t, "images": images, **({"predicted": 8} if i == 0 else {})})
    path = tmp_path / "examples.png"
    rep.plot_examples(rows, path, title="examples")
    image = _read_png(path)
    assert image.ndim == 3 and min(image.shape[:2]) > 100
    assert rep._example_label(rows[0]) == "3 → 8 (pred 8)"
    assert rep._example_label(rows[1]) == "1 → 7"


def test_plot_examples_rejects_bad_shape(tmp_path) -> None:
    images = {key: np.zeros((2, 32, 32)) for key in ("source", "adversarial", "reconstruction",
                                                     "target")}
    with pytest.raises(ValueError, match="shape"):
        rep.plot_examples([{"source": 0, "target": 1, "images": images}], tmp_path / "x.png")


def test_plot_marginal_bars(cells: pd.DataFrame, two_runs: dict[str, pd.DataFrame],
                            tmp_path) -> None:
    path = tmp_path / "bars.png"
    bands = {"vae": rep.marginal_intervals(cells, "as_target")}
    rep.plot_marginal_bars(two_runs, path, metric="as_target", intervals=bands)
    image = _read_png(path)
    assert image.ndim == 3 and image.shape[1] > image.shape[0]
    with pytest.raises(ValueError, match="metric"):
        rep.plot_marginal_bars(two_runs, tmp_path / "y.png", metric="accuracy")
