"""The classifier-free report card: every column per example, intervals that contain the mean,
numbers independent of the unit size, resumable units, and the CLI's files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from robust_vae.core.errors import ConfigError
from robust_vae.evaluation.robustness import (
    CARD_FILES,
    RobustnessSettings,
    example_columns,
    robustness_card,
    save_card,
)

SMALL = RobustnessSettings(examples=6, radii=(0.5, 1.0, 2.0), metric_radius=1.0, samples=8, max_budget=4.0,
                           bisection_steps=3, steps=3, restarts=1, power_iterations=3, unit_size=4)


@pytest.fixture(scope="module")
def card(small_vae, mnist_test):  # type: ignore[no-untyped-def]
    return robustness_card(small_vae, mnist_test, SMALL)


def test_every_column_per_example(card) -> None:  # type: ignore[no-untyped-def]
    examples = card.examples
    assert list(examples.columns) == ["index", "label", *example_columns(SMALL)]
    assert len(examples) == 6 and examples["index"].is_monotonic_increasing
    assert np.isfinite(examples.drop(columns=["index", "label"]).to_numpy()).all()
    damage = examples[["damage_r0.5", "damage_r1", "damage_r2"]].to_numpy()
    assert (damage > 0).all() and (np.diff(damage, axis=1) >= -1e-4).all(), "damage must grow with r"
    assert ((examples["margin"] >= 0) & (examples["margin"] <= SMALL.max_budget)).all()
    assert (examples["margin_bound"] >= 0).all()
    assert ((examples["maxdamage_msssim_input"] > 0) & (examples["maxdamage_msssim_input"] <= 1 + 1e-6)).all()
    assert (examples["pullback_lambda_max"] > 0).all()


def test_summary_intervals_contain_the_mean(card) -> None:  # type: ignore[no-untyped-def]
    summary = card.summary.set_index("metric")
    assert list(summary.index) == example_columns(SMALL)
    finite = summary.dropna()
    assert (finite["low"] <= finite["mean"] + 1e-12).all() and (finite["mean"] <= finite["high"] + 1e-12).all()
    assert np.allclose(summary.loc["margin", "mean"], card.examples["margin"].mean())
    per_class = card.per_class
    assert per_class["n"].sum() == 6
    assert np.allclose((per_class["margin"] * per_class["n"]).sum() / 6, card.examples["margin"].mean())


def test_numbers_do_not_depend_on_the_unit_size(small_vae, mnist_test, card) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace
    other = robustness_card(small_vae, mnist_test, replace(SMALL, unit_size=6))
    columns = example_columns(SMALL)
    gap = np.abs(other.examples[columns].to_numpy() - card.examples[columns].to_numpy())
    assert float(gap.max()) <= 1e-3, f"unit size changed a number by {float(gap.max()):.2e}"


def test_units_resume_and_files(small_vae, mnist_test, tmp_path: Path, card) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "card"
    first = robustness_card(small_vae, mnist_test, SMALL, out=out, fingerprint={"model": "small"})
    units = sorted((out / "progress").glob("unit-*.npz"))
    assert len(units) == 2
    units[1].unlink()  # an interruption after the first unit
    again = robustness_card(small_vae, mnist_test, SMALL, out=out, fingerprint={"model": "small"})
    pd.testing.assert_frame_equal(first.examples, again.examples)
    with pytest.raises(ConfigError, match="different configuration"):
        robustness_card(small_vae, mnist_test, SMALL, out=out, fingerprint={"model": "another"})
    written = save_card(again, out, "robust-vae robustness --model small")
    assert [p.name for p in written] == list(CARD_FILES) and all(p.stat().st_size > 0 for p in written)
    record = json.loads((out / "card.json").read_text())
    assert record["summary"]["margin"]["n"] == 6 and record["command"].startswith("robust-vae robustness")
    assert "r-robustness margin" in (out / "card.md").read_text()


def test_latent_classifier_accuracy_clean_and_under_attack(small_vae, mnist_test, tmp_path: Path,
                                                          card) -> None:  # type: ignore[no-untyped-def]
    """With a latent classifier the card gains its per-example correctness on φ(x) and on both
    attacks' φ(x*): 0/1, the clean one equal to the classifier's own labels of the codes, the
    other columns unchanged; the accuracy at the largest budget falls below the clean one."""
    import torch

    from robust_vae.attacks.latent_classifier import LatentClassifierConfig, attack_codes, latent_classifier_for
    from robust_vae.evaluation.robustness import LATENT_COLUMNS, measure_unit

    net, _ = latent_classifier_for(small_vae, "mnist", LatentClassifierConfig(epochs=1, train_size=2000),
                                   cache_dir=tmp_path, progress=False)
    with_latent = robustness_card(small_vae, mnist_test, SMALL, latent_classifier=net)
    examples = with_latent.examples
    assert list(examples.columns) == ["index", "label", *example_columns(SMALL, latent_classifier=True)]
    assert list(examples.columns[-3:]) == list(LATENT_COLUMNS)
    assert set(np.unique(examples[list(LATENT_COLUMNS)].to_numpy())) <= {0.0, 1.0}
    index = torch.as_tensor(examples["index"].to_numpy().copy())
    with torch.no_grad():
        own = net(attack_codes(small_vae, mnist_test.images[index])).argmax(1)
    assert np.array_equal(examples["latent_correct_clean"].to_numpy(), (own == mnist_test.labels[index]).double().numpy())
    pd.testing.assert_frame_equal(examples[card.examples.columns], card.examples)
    wide = RobustnessSettings(examples=16, radii=(8.0,), metric_radius=8.0, samples=2, max_budget=1.0,
                              bisection_steps=1, steps=10, restarts=1, power_iterations=3, unit_size=16)
    unit = np.arange(16)
    values = measure_unit(small_vae, mnist_test.images[:16], unit, wide, latent_classifier=net,
                          labels=mnist_test.labels[:16])
    assert values["maxdamage_latent_correct"].mean() < values["latent_correct_clean"].mean()
    with pytest.raises(ConfigError, match="labels"):
        measure_unit(small_vae, mnist_test.images[:2], unit[:2], wide, latent_classifier=net)


@pytest.mark.parametrize(("change", "match"), [
    ({"norm": "l3"}, "norm"), ({"radii": (1.0, 0.5)}, "increasing"), ({"metric_radius": 0.7}, "metric radius"),
    ({"samples": 0}, "samples"), ({"radii": ()}, "radii"),
])
def test_bad_settings_are_one_line_errors(change, match) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import asdict
    values = {**asdict(SMALL), **change}
    with pytest.raises(ConfigError, match=match):
        RobustnessSettings(**values)


def test_cli_writes_a_card_per_model_and_the_table(small_zoo: Path, tmp_path: Path) -> None:
    env = {**os.environ, "ROBUST_VAE_MODELS": str(small_zoo)}
    command = [sys.executable, "-m", "robust_vae", "robustness", "--model", "vae", "--examples", "4",
               "--radii", "0.5", "1", "--samples", "4", "--bisection-steps", "2", "--steps", "2", "--restarts", "1",
               "--threads", "1", "--no-latent-accuracy"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "reports" / "mnist" / "vae" / "robustness"
    names = {p.name for p in folder.iterdir() if p.is_file()}
    assert names == {*CARD_FILES, "config.json", ".lock"}, names
    assert "| vae |" in done.stdout
    bad = subprocess.run([*command[:4], "--model", "vae", "--metric-radius", "0.7"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "metric radius" in bad.stderr


def test_readme_robustness_table_is_the_trio_cards() -> None:
    """The README's trio table is `reports/mnist/robustness/models.md`, and that table is what the
    three committed cards (card.json: summary and settings) give: keep both true."""
    from robust_vae.report.robustness import models_markdown

    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text()
    start, end = "<!-- robustness-table:start -->\n", "<!-- robustness-table:end -->"
    assert start in readme, "README has no robustness-table block"
    pasted = readme[readme.index(start) + len(start):readme.index(end)].strip()
    written = (root / "reports" / "mnist" / "robustness" / "models.md").read_text()
    assert pasted in written, "README's robustness table is stale: paste reports/mnist/robustness/models.md"
    cards = {}
    for name in ("vae", "vae-wd", "jointvae"):
        data = json.loads((root / "reports" / "mnist" / name / "robustness" / "card.json").read_text())
        summary = pd.DataFrame([{"metric": k, **v} for k, v in data["summary"].items()])
        cards[name] = (summary, data)
    assert pasted == models_markdown(cards).strip()
