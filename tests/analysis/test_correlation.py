"""Rank correlations across models (robust_vae.analysis.correlation) and their rendering
(robust_vae.report.correlation): small synthetic frames, a few seconds in all."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread
from scipy import stats

from robust_vae.analysis.correlation import (
    TABLE_COLUMNS,
    benjamini_hochberg,
    beta_effect,
    bootstrap_correlation,
    correlation_table,
    partial_spearman,
    permutation_p,
    resampled_means,
    spearman,
)
from robust_vae.core.errors import ConfigError
from robust_vae.report.correlation import (
    correlation_latex,
    correlation_markdown,
    format_interval,
    plot_correlation_scatter,
    save_correlation_tables,
)


def models_frame(n: int = 40, seed: int = 0) -> pd.DataFrame:
    """n models: mig drives as_target, recon_error is noise, dci is tied (a few levels)."""
    rng = np.random.default_rng(seed)
    mig = rng.uniform(0, 1, n)
    return pd.DataFrame({
        "model": [f"m{i // 2}" for i in range(n)],
        "family": np.where(np.arange(n) % 4 < 2, "betavae", "factorvae"),
        "seed": np.arange(n) % 2,
        "mig": mig,
        "dci": np.round(rng.uniform(0, 1, n) * 4) / 4,
        "recon_error": rng.normal(size=n),
        "as_target": np.clip(0.8 - 0.5 * mig + 0.1 * rng.normal(size=n), 0, 1),
    })


def one_line(error: pytest.ExceptionInfo[ConfigError]) -> str:
    message = str(error.value)
    assert message and "\n" not in message
    return message


# ----------------------------------------------------------------- point estimates
def test_spearman_equals_scipy_with_ties_and_drops_nan() -> None:
    rng = np.random.default_rng(1)
    x = rng.integers(0, 5, 60).astype(float)  # heavy ties on both sides
    y = x + rng.integers(0, 4, 60)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    x[[3, 10]], y[20] = np.nan, np.nan
    keep = np.isfinite(x) & np.isfinite(y)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x[keep], y[keep]).statistic, abs=1e-12)


def test_partial_spearman_equals_correlation_of_rank_residuals() -> None:
    rng = np.random.default_rng(2)
    z = rng.integers(0, 8, 50).astype(float)
    x = z + rng.normal(size=50)
    y = np.round(z - x + rng.normal(size=50))
    ranks = [stats.rankdata(v) for v in (x, y, z)]
    design = np.column_stack([np.ones(50), ranks[2]])
    residuals = [r - design @ np.linalg.lstsq(design, r, rcond=None)[0] for r in ranks[:2]]
    expected = np.corrcoef(residuals[0], residuals[1])[0, 1]
    assert partial_spearman(x, y, z) == pytest.approx(expected, abs=1e-10)
    assert abs(expected - spearman(x, y)) > 0.05  # controlling for z changed something


def test_a_common_driver_makes_the_raw_correlation_large_and_the_partial_small() -> None:
    rng = np.random.default_rng(3)
    z = rng.normal(size=200)
    x = z + 0.5 * rng.normal(size=200)
    y = z + 0.5 * rng.normal(size=200)
    assert spearman(x, y) > 0.5
    assert abs(partial_spearman(x, y, z)) < 0.2


# ----------------------------------------------------------------- bootstrap
def test_bootstrap_is_reproducible_and_its_interval_holds_the_estimate() -> None:
    frame = models_frame()
    a = bootstrap_correlation(frame, "mig", "as_target", "recon_error", replicates=400, seed=7)
    b = bootstrap_correlation(frame, "mig", "as_target", "recon_error", replicates=400, seed=7)
    c = bootstrap_correlation(frame, "mig", "as_target", "recon_error", replicates=400, seed=8)
    assert a == b and np.array_equal(a.rho_samples, b.rho_samples)
    assert np.array_equal(a.partial_samples, b.partial_samples)
    assert not np.array_equal(a.rho_samples, c.rho_samples)
    assert a.rho == pytest.approx(spearman(frame["mig"], frame["as_target"]))
    assert a.partial_rho == pytest.approx(partial_spearman(frame["mig"], frame["as_target"], frame["recon_error"]))
    assert a.rho < -0.5
    assert a.rho_low < a.rho < a.rho_high and a.partial_low < a.partial_rho < a.partial_high
    assert a.replicates_used == 400 == len(a.rho_samples)


def test_replicates_with_a_constant_column_are_dropped_and_counted() -> None:
    frame = models_frame(3)  # 3 of every 27 resamples pick one model thrice: constant
    result = bootstrap_correlation(frame, "mig", "as_target", replicates=2000, seed=0)
    assert 1500 < result.replicates_used < 2000
    assert len(result.rho_samples) == result.replicates_used and np.all(np.isfinite(result.rho_samples))


def success_arrays(rates: np.ndarray, size: int) -> dict[int, np.ndarray]:
    """Row -> 0/1 outcomes of ``size`` examples whose mean is exactly the row's rate."""
    return {i: (np.arange(size) < round(rate * size)).astype(float) for i, rate in enumerate(rates)}


def test_few_examples_per_model_widen_the_interval() -> None:
    rng = np.random.default_rng(4)
    rates = rng.integers(1, 10, 30) / 10  # exact means for 10 and for 1000 examples
    frame = pd.DataFrame({"mig": -rates + 0.2 * rng.normal(size=30), "as_target": rates})
    widths = {}
    for size in (10, 1000):
        result = bootstrap_correlation(frame, "mig", "as_target", examples={"as_target": success_arrays(rates, size)},
                                       replicates=1000, seed=0)
        widths[size] = result.rho_high - result.rho_low
    without = bootstrap_correlation(frame, "mig", "as_target", replicates=1000, seed=0)
    assert widths[10] > 1.3 * widths[1000]
    assert widths[1000] == pytest.approx(without.rho_high - without.rho_low, rel=0.25)


def test_per_example_values_are_checked_and_resampled() -> None:
    frame = models_frame(10)
    wrong = {"as_target": {0: np.zeros(5) + frame["as_target"][0] + 0.1}}
    with pytest.raises(ConfigError) as error:
        bootstrap_correlation(frame, "mig", "as_target", examples=wrong, replicates=10)
    assert "average" in one_line(error)
    values = np.random.default_rng(5).normal(size=50)  # not 0/1: resampled by index
    means = resampled_means(values, 4000, np.random.default_rng(0))
    assert means.mean() == pytest.approx(values.mean(), abs=0.02)
    assert means.std() == pytest.approx(values.std() / np.sqrt(50), rel=0.1)


def seeded_frame(models: int = 6, seeds: int = 3, seed: int = 0) -> pd.DataFrame:
    """``models`` model names with ``seeds`` rows each: a model's mig and as_target rise together,
    and its seeds scatter around the model's values."""
    rng = np.random.default_rng(seed)
    level = np.repeat(np.arange(models, dtype=float), seeds)
    return pd.DataFrame({"model": np.repeat([f"m{i}" for i in range(models)], seeds),
                         "family": "vae", "seed": np.tile(np.arange(seeds), models),
                         "mig": level + rng.normal(scale=0.8, size=models * seeds),
                         "as_target": level + rng.normal(scale=0.8, size=models * seeds),
                         "recon_error": rng.normal(size=models * seeds)})


def test_grouped_by_model_a_point_is_the_seed_mean() -> None:
    frame = seeded_frame()
    grouped = bootstrap_correlation(frame, "mig", "as_target", "recon_error", replicates=500, seed=0, groups="model")
    means = frame.groupby("model", sort=False)[["mig", "as_target", "recon_error"]].mean()
    assert grouped.n_models == 6
    assert grouped.rho == pytest.approx(spearman(means["mig"], means["as_target"]))
    assert grouped.partial_rho == pytest.approx(partial_spearman(means["mig"], means["as_target"],
                                                                 means["recon_error"]))
    networks = bootstrap_correlation(frame, "mig", "as_target", "recon_error", replicates=500, seed=0)
    assert networks.n_models == 18 and networks.rho == pytest.approx(spearman(frame["mig"], frame["as_target"]))


def test_with_one_seed_per_model_grouping_changes_nothing() -> None:
    frame = models_frame().drop_duplicates("model").reset_index(drop=True)  # one row per model name
    rates = np.clip(frame["as_target"].to_numpy(), 0.05, 0.95)
    frame = frame.assign(as_target=np.round(rates * 20) / 20)
    examples = {"as_target": success_arrays(frame["as_target"].to_numpy(), 20)}
    rows = bootstrap_correlation(frame, "mig", "as_target", "recon_error", examples, replicates=300, seed=3)
    grouped = bootstrap_correlation(frame, "mig", "as_target", "recon_error", examples, replicates=300, seed=3,
                                    groups="model")
    assert (rows.rho, rows.rho_low, rows.rho_high, rows.partial_low, rows.partial_high, rows.n_models) == (
        grouped.rho, grouped.rho_low, grouped.rho_high, grouped.partial_low, grouped.partial_high, grouped.n_models)
    np.testing.assert_array_equal(rows.rho_samples, grouped.rho_samples)


def test_grouped_bootstrap_resamples_seeds_together_and_is_wider_than_pseudo_replicates() -> None:
    # x equals y row by row: if a replicate drew different seeds for x and y, its ρ would fall below 1
    frame = seeded_frame()
    frame["as_target"] = frame["mig"]
    together = bootstrap_correlation(frame, "mig", "as_target", replicates=300, seed=1, groups="model")
    assert together.replicates_used > 250 and np.all(together.rho_samples == pytest.approx(1.0))
    # three seeds of a model are one configuration: resampling them as independent models narrows the interval
    frame = seeded_frame(models=5, seeds=8, seed=2)
    grouped = bootstrap_correlation(frame, "mig", "as_target", replicates=2000, seed=0, groups="model")
    networks = bootstrap_correlation(frame, "mig", "as_target", replicates=2000, seed=0)
    assert grouped.rho_high - grouped.rho_low > 1.5 * (networks.rho_high - networks.rho_low)
    with pytest.raises(ConfigError) as error:
        bootstrap_correlation(frame, "mig", "as_target", replicates=10, groups="config")
    assert "no column 'config'" in one_line(error)


# ----------------------------------------------------------------- permutation test, q-values
def test_permutation_p_is_exact_for_few_points_and_equals_scipy() -> None:
    # 4 points in perfect order: only the identity and the reversal are as extreme, p = 2/24
    assert permutation_p(np.arange(4.0), np.arange(4.0) ** 2)[0] == pytest.approx(2 / 24)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=7), rng.normal(size=7)
    y = y + x
    observed = abs(stats.spearmanr(x, y).statistic)
    extreme = [abs(stats.spearmanr(x, y[list(order)]).statistic) >= observed - 1e-12
               for order in itertools.permutations(range(7))]
    scipy_p = float(np.mean(extreme))  # every one of the 7! pairings, scipy's ρ for each
    assert permutation_p(x, y)[0] == pytest.approx(scipy_p)  # 7! < 40,320: enumerated, not sampled


def test_permutation_p_samples_many_points_and_tests_the_partial_against_residuals() -> None:
    rng = np.random.default_rng(1)
    z = rng.normal(size=40)
    x = z + 0.3 * rng.normal(size=40)
    driven = z + 0.3 * rng.normal(size=40)  # related to x only through z
    p_raw, p_partial = permutation_p(x, driven, z, permutations=2000, seed=0)
    assert p_raw == pytest.approx(1 / 2001)  # a strong raw ρ: no permutation reaches it
    assert p_partial > 0.05  # ... that the control explains
    linked = driven + 2.0 * (x - z)  # and now x matters given z
    assert permutation_p(x, linked, z, permutations=2000, seed=0)[1] < 0.01
    again = permutation_p(x, driven, z, permutations=2000, seed=0)
    assert again == (p_raw, p_partial)  # seeded


def test_benjamini_hochberg_equals_scipy_and_keeps_nan() -> None:
    p = np.array([0.01, 0.04, np.nan, 0.03, 0.2, 0.0005])
    q = benjamini_hochberg(p)
    finite = np.isfinite(p)
    np.testing.assert_allclose(q[finite], stats.false_discovery_control(p[finite]))
    assert np.isnan(q[2]) and np.all(q[finite] >= p[finite])


def test_a_correlation_table_has_p_and_q_values() -> None:
    table = correlation_table(models_frame(), ["mig", "dci"], ["as_target"], replicates=200, seed=0)
    assert list(table.columns) == list(TABLE_COLUMNS)
    np.testing.assert_allclose(table["q"], stats.false_discovery_control(table["p"]))
    assert table.loc[table["x"] == "mig", "p"].iloc[0] < 0.01  # mig drives as_target in the fixture


# ----------------------------------------------------------------- errors
def test_too_few_models_and_constant_columns_are_one_line_config_errors() -> None:
    with pytest.raises(ConfigError) as error:
        spearman([1.0, 2.0], [2.0, 1.0])
    assert "at least 3" in one_line(error)
    with pytest.raises(ConfigError) as error:
        spearman([1.0, 2.0, np.nan, 4.0], [1.0, np.nan, 3.0, 2.0])  # 2 rows left
    one_line(error)
    with pytest.raises(ConfigError) as error:
        partial_spearman([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0], [5.0, 5.0, 5.0, 5.0])
    assert "constant" in one_line(error)
    frame = models_frame(10).assign(mig=0.3)
    with pytest.raises(ConfigError) as error:
        correlation_table(frame, ["mig"], ["as_target"], replicates=10)
    assert "mig" in one_line(error) and "constant" in str(error.value)
    with pytest.raises(ConfigError) as error:
        correlation_table(models_frame(10), ["nope"], ["as_target"], replicates=10)
    one_line(error)


# ----------------------------------------------------------------- table and files
def test_correlation_table_and_its_files(tmp_path) -> None:
    frame = models_frame()
    table = correlation_table(frame, ["mig", "dci"], ["as_target", "recon_error"], replicates=300, seed=0)
    assert list(table.columns) == list(TABLE_COLUMNS)
    assert len(table) == 4
    assert (table["n_models"] == 40).all() and (table["replicates_used"] <= 300).all()
    # the pairs with the control as y have no partial; the others do
    has_partial = table["y"] != "recon_error"
    assert table.loc[has_partial, "partial_rho"].notna().all()
    assert table.loc[~has_partial, ["partial_rho", "partial_low", "partial_high"]].isna().all().all()
    raw = correlation_table(frame, ["mig"], ["as_target"], control=None, replicates=50)
    assert raw[["partial_rho", "partial_low", "partial_high"]].isna().all().all()
    assert raw["control"].isna().all()

    assert format_interval(-0.4213, -0.712, -0.0499) == "\u22120.42 [\u22120.71, \u22120.05]"
    paths = save_correlation_tables(table, tmp_path / "out")
    assert {p.name for p in paths.values()} == {"correlation.csv", "correlation.tex", "correlation.md"}
    assert all(p.is_file() for p in paths.values())
    first = table.iloc[0]
    expected = format_interval(first["rho"], first["rho_low"], first["rho_high"])
    assert expected.startswith("\u2212")  # mig vs as_target is negative
    markdown = paths["md"].read_text(encoding="utf-8")
    assert expected in markdown and markdown == correlation_markdown(table)
    assert "as_target" in markdown and "partial" in markdown
    latex = paths["tex"].read_text(encoding="utf-8")
    assert r"\begin{tabular}" in latex and r"as\_target" in latex and r"recon\_error" in latex
    assert correlation_latex(table, caption="My caption").count("My caption") == 1
    back = pd.read_csv(paths["csv"])
    assert list(back.columns) == list(TABLE_COLUMNS) and back["rho"].to_numpy() == pytest.approx(table["rho"])
    assert "partial" not in correlation_markdown(raw)

    # a ρ outside its own percentile interval (as ρ = ±1 over few models can be) is said under the table
    assert "outside their interval" not in markdown
    edge = table.copy()
    edge.loc[0, "rho"] = edge.loc[0, "rho_low"] - 0.05
    edge.loc[2, "partial_rho"] = edge.loc[2, "partial_high"] + 0.05  # row 1 (y = the control) has none
    assert "2 ρ lie outside their interval, which is no error" in correlation_markdown(edge)


def test_beta_effect_follows_one_family() -> None:
    rng = np.random.default_rng(6)
    beta = np.repeat([1.0, 2.0, 4.0, 8.0, 16.0], 3)
    frame = pd.DataFrame({"family": ["betavae"] * 15 + ["tcvae"] * 15, "beta": np.concatenate([beta, beta]),
                          "mig": np.concatenate([np.log(beta) + 0.1 * rng.normal(size=15), rng.normal(size=15)])})
    result = beta_effect(frame, y="mig", family="betavae", replicates=300)
    assert result.n_models == 15 and result.rho > 0.9 and result.rho_low <= result.rho <= result.rho_high
    with pytest.raises(ConfigError) as error:
        beta_effect(frame, y="mig", replicates=10)
    assert "family" in one_line(error)
    with pytest.raises(ConfigError):
        beta_effect(frame, y="mig", family="nope", replicates=10)


# ----------------------------------------------------------------- scatter
def test_scatter_is_written_with_one_legend_entry_per_family(tmp_path) -> None:
    frame = models_frame()
    frame["family"] = np.array(["betavae", "factorvae", "tcvae", "vae"] * 10)[np.arange(40) // 2 % 4]
    path = tmp_path / "fig" / "scatter.png"
    fig = plot_correlation_scatter(frame, "mig", "as_target", path, replicates=200)
    legend = fig.axes[0].get_legend()
    assert legend is not None
    assert [t.get_text() for t in legend.get_texts()] == ["betavae", "factorvae", "tcvae", "vae"]
    assert fig.axes[0].get_xlabel() == "mig" and fig.axes[0].get_ylabel() == "as_target"
    assert len(fig.axes[0].lines) == 1  # the fitted line
    assert path.is_file()
    pixels = imread(path)[..., :3]
    assert pixels.std() > 0.05  # not blank
    coloured = np.abs(pixels - pixels.mean(axis=-1, keepdims=True)).max(axis=-1) > 0.15
    assert coloured.sum() > 200  # the family colours are drawn


def test_scatter_of_a_heavy_tailed_metric_uses_a_log_axis(tmp_path) -> None:
    # λ_max-like values over three orders of magnitude: log axis, and the line fitted to log10 y
    frame = pd.DataFrame({"model": [f"m{i}" for i in range(6)], "family": ["vae"] * 6, "seed": [0] * 6,
                          "mig": np.linspace(0.0, 0.5, 6), "lam": 10.0 ** np.array([3.6, 3.1, 2.4, 2.0, 1.2, 0.9])})
    fig = plot_correlation_scatter(frame, "mig", "lam", tmp_path / "log.png", replicates=100)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and ax.get_ylabel() == "lam (log scale)"
    fit_x, fit_y = ax.lines[0].get_data()
    slope, intercept = np.polyfit(frame["mig"], np.log10(frame["lam"]), 1)
    np.testing.assert_allclose(np.log10(fit_y), intercept + slope * np.asarray(fit_x), rtol=1e-9, atol=1e-9)
    linear = plot_correlation_scatter(frame.assign(lam=frame["lam"] - 500), "mig", "lam", tmp_path / "lin.png",
                                      replicates=100)
    assert linear.axes[0].get_yscale() == "linear"  # a non-positive value keeps the linear axis


def test_scatter_of_a_heavy_tailed_x_uses_a_log_x_axis_and_keeps_the_points_in_view(tmp_path) -> None:
    # one family an order of magnitude above the rest in x (a class MIG of jointvae against the
    # Gaussian families): log x, the line fitted to log10 x, and the axes fit the points, not the band
    mig = np.array([0.008, 0.012, 0.02, 0.035, 0.05, 0.11, 0.63])
    frame = pd.DataFrame({"model": [f"m{i}" for i in range(7)], "family": ["vae"] * 6 + ["jointvae"],
                          "seed": [0] * 7, "mig": mig, "as_target": [0.02, 0.03, 0.02, 0.09, 0.13, 0.39, 0.13]})
    fig = plot_correlation_scatter(frame, "mig", "as_target", tmp_path / "logx.png", replicates=200)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "mig (log scale)" and ax.get_yscale() == "linear"
    fit_x, fit_y = ax.lines[0].get_data()
    slope, intercept = np.polyfit(np.log10(mig), frame["as_target"], 1)
    np.testing.assert_allclose(fit_y, intercept + slope * np.log10(np.asarray(fit_x)), rtol=1e-9, atol=1e-9)
    low, high = ax.get_ylim()
    span = 0.39 - 0.02
    np.testing.assert_allclose([low, high], [0.02 - 0.08 * span, 0.39 + 0.08 * span])
    decades = np.log10(0.63 / 0.008)
    np.testing.assert_allclose(np.log10(ax.get_xlim()), [np.log10(0.008) - 0.08 * decades,
                                                          np.log10(0.63) + 0.08 * decades])
    spread = plot_correlation_scatter(frame.assign(mig=np.linspace(0.01, 0.63, 7)), "mig", "as_target",
                                      tmp_path / "spread.png", replicates=10)
    assert spread.axes[0].get_xscale() == "linear"  # a wide but even spread keeps the linear axis
