"""A study's ``[analysis]`` (robust_vae.analysis.models_frame, robust_vae.analysis.study_analysis):
a tiny study written on disk with the real writers (zoo cards with stand-in weights, run folders by
``SuccessMatrix.to_csv``, report cards by ``save_card``) and values chosen so that the answers are
known: ρ = ±1 for monotone relations, a partial ρ of exactly 0 for a relation the control drives."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from robust_vae.analysis.models_frame import ModelRow, ModelsFrame, models_frame
from robust_vae.analysis.study import RunStatus, Study, read_study, report, study_models
from robust_vae.analysis.study_analysis import Analysis, write_analysis
from robust_vae.core.errors import ConfigError
from robust_vae.evaluation.robustness import (
    RobustnessCard,
    RobustnessSettings,
    example_columns,
    per_class_means,
    save_card,
    summarise,
)
from robust_vae.evaluation.success_matrix import PairPlan, SuccessMatrix, cells_from_examples

PAIRS = [(s, t) for s in range(10) for t in range(10) if s != t]  # 90 cells, one example each
# seven models m0..m6: recon_bce rises with k; as_target has ranks Y, mig the same ranks (ρ = 1),
# modularity the reversed ones (ρ = −1), sap ranks X with ρ(X, Y) = 0.75 · 0.857 = ρ(X, k) · ρ(Y, k):
# the relation of sap and as_target is exactly the one recon_bce carries, so the partial ρ is 0
Y = [1, 3, 4, 2, 5, 7, 6]
X = [1, 2, 3, 5, 7, 6, 4]
MODELS = [f"m{k}" for k in range(7)]
STUDY = """
[study]
name = "tiny analysis"
dataset = "mnist"
per_pair = 1
main_recipe = "thesis-fast"
bootstrap = 50

[[runs]]
models = ["m0", "m1", "m2", "m3", "m4", "m5", "m6", "ghost"]
recipes = ["thesis-fast", "tabacof"]

[[runs]]
models = ["cond-betavae"]
recipes = ["thesis-fast"]
label_sources = ["true", "classifier"]

[analysis]
disentanglement = ["mig", "modularity", "sap"]
robustness = ["thesis-fast:as_target", "thesis-fast:mean_symmetric_kl", "tabacof:auddc", "robustness:margin"]
control = "recon_bce"
beta_line = "betavae"
bootstrap = 200
robustness_cards = "cards/{model_dir}/robustness"
"""


def write_card(zoo: Path, name: str, family: str, recon_bce: float, beta: float,
               scores: dict[str, float] | None) -> None:
    """A zoo card (format of ``save_weights``) and a stand-in weights file: only the card is read."""
    stem = f"{name}-seed0"
    (zoo / f"{stem}.safetensors").write_bytes(b"not read")
    card: dict[str, Any] = {"name": name, "dataset": "mnist", "family": family, "seed": 0,
                            "config": {"latent_dim": 10, "beta": beta}, "steps": 100,
                            "metrics": {"recon_bce": recon_bce, "recon_accuracy": 0.9},
                            "weights": f"{stem}.safetensors", "sha256": "0" * 64}
    if scores is not None:
        card["disentanglement"] = {"scores": scores, "code": "mean", "seed": 0}
    (zoo / f"{stem}.json").write_text(json.dumps(card, indent=2) + "\n")


def write_run(folder: Path, model: str, hits: int, kl: float, auddc: list[float] | None = None) -> SuccessMatrix:
    """A finished run of 90 examples (one per cell): the first ``hits`` classified as their target,
    every example with symmetric KL ``kl``; ``auddc``: per-example values of a swept attack."""
    rows = []
    for i, (s, t) in enumerate(PAIRS):
        rows.append({"source": s, "target": t, "source_index": i, "target_index": 100 + i,
                     "prediction": t if i < hits else s, "l2": 1.0, "linf": 0.1, "latent_distance": 2.0,
                     "sweep_index": 0, "msssim_input": 0.99, "msssim_reconstruction": 0.9, "symmetric_kl": kl})
    examples = pd.DataFrame(rows)
    if auddc is not None:
        examples["auddc"] = auddc
    plans = [PairPlan(s, t, np.array([i]), np.array([100 + i]), np.array([True])) for i, (s, t) in enumerate(PAIRS)]
    metadata = {"label": model, "model": model, "model_seed": 0, "dataset": "mnist", "num_classes": 10,
                "recipe": folder.name, "per_pair": 1, "seed": 0}
    run = SuccessMatrix(cells_from_examples(plans, examples), examples, metadata=metadata)
    run.to_csv(folder)
    (folder / "run.json").write_text(json.dumps(metadata, indent=2) + "\n")
    return run


def write_report_card(folder: Path, name: str, margin: np.ndarray) -> None:
    """A report card (``save_card``) of len(margin) examples with the given margins."""
    settings = RobustnessSettings(examples=len(margin))
    columns = example_columns(settings)
    examples = pd.DataFrame({"index": np.arange(len(margin)), "label": np.arange(len(margin)) % 10,
                             **{c: np.full(len(margin), 0.5) for c in columns}})
    examples["margin"] = margin
    card = RobustnessCard(examples, summarise(examples, columns, resamples=10), per_class_means(examples, columns),
                          {"settings": settings.to_dict(), "model": name, "dataset": "mnist",
                           "num_examples": len(margin)})
    save_card(card, folder)


def auddc(k: int) -> list[float]:
    """Model k's per-example AUDDC: one example without one (NaN), the others falling with k."""
    return [0.25, float("nan")] + [0.5 - 0.01 * k] * 88


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Study, list[RunStatus]]]:
    """The study of :data:`STUDY` on disk, its zoo in ROBUST_VAE_MODELS (ghost: no card, no run)."""
    root = tmp_path_factory.mktemp("study-analysis")
    zoo = root / "zoo" / "mnist"
    zoo.mkdir(parents=True)
    folder = root / "study"
    folder.mkdir()
    (folder / "study.toml").write_text(STUDY)
    for k, name in enumerate(MODELS):
        write_card(zoo, name, "betavae", 100.0 + 10 * k, beta=k + 1.0,
                   scores={"mig": 0.1 * Y[k], "modularity": 1.0 - 0.1 * Y[k], "sap": 0.1 * X[k]})
        write_run(folder / "runs" / f"{name}-seed0" / "thesis-fast", name, hits=10 * Y[k], kl=0.5 * (k + 1))
        write_run(folder / "runs" / f"{name}-seed0" / "tabacof", name, hits=0, kl=1.0, auddc=auddc(k))
        write_report_card(folder / "cards" / name / "robustness", name, np.array([0.25, 0.5]) * (k + 1))
    write_card(zoo, "cond-betavae", "cond-betavae", 150.0, beta=10.0, scores=None)
    for source in ("true", "classifier"):
        write_run(folder / "runs" / f"cond-betavae-{source}-label-seed0" / "thesis-fast", "cond-betavae",
                  hits=45, kl=3.0)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ROBUST_VAE_MODELS", str(root / "zoo"))
        parsed = read_study(folder / "study.toml")
        statuses = [RunStatus(spec, "skipped" if spec.model == "ghost" else "done") for spec in parsed.runs]
        report(parsed, statuses, log=lambda message: None)
        yield parsed, statuses


def correlation(study: Study, x: str, y: str) -> pd.Series:
    table = pd.read_csv(study.out_dir / "analysis" / "correlation.csv")
    return table[(table["x"] == x) & (table["y"] == y)].iloc[0]


def test_the_models_frame_holds_what_was_written(study: tuple[Study, list[RunStatus]]) -> None:
    parsed, statuses = study
    assert parsed.analysis is not None
    done = {st.spec.key: st.spec.folder for st in statuses if st.state == "done"}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ROBUST_VAE_MODELS", str(parsed.out_dir.parent / "zoo"))
        models = models_frame(study_models(parsed, parsed.analysis), "mnist", ["recon_bce", "mig"],
                              parsed.analysis.robustness, done,
                              lambda row: parsed.out_dir / "cards" / row.model / "robustness")
    frame = models.frame.set_index("model")
    assert list(frame.index) == [*MODELS, "ghost", "cond-betavae@true", "cond-betavae@classifier"]
    m3 = frame.loc["m3"]
    assert (m3["family"], m3["seed"], m3["beta"], m3["recon_bce"], m3["mig"]) == ("betavae", 0, 4.0, 130.0, 0.1 * Y[3])
    assert m3["thesis-fast:as_target"] == pytest.approx(10 * Y[3] / 90)
    assert m3["thesis-fast:mean_symmetric_kl"] == pytest.approx(2.0)
    assert m3["tabacof:auddc"] == pytest.approx((0.25 + 0.47 * 88) / 89)  # the example without one left out
    assert m3["robustness:margin"] == pytest.approx(0.375 * 4)
    assert frame.loc["ghost", ["recon_bce", "thesis-fast:as_target"]].isna().all()
    conditional = frame.loc["cond-betavae@true"]
    assert conditional["family"] == "cond-betavae" and np.isnan(conditional["mig"])
    assert conditional["thesis-fast:as_target"] == pytest.approx(0.5)
    # per-example values: each row's own, averaging to the frame's value
    as_target = models.examples["thesis-fast:as_target"]
    assert sorted(as_target) == [0, 1, 2, 3, 4, 5, 6, 8, 9]  # every row with a run, ghost (7) not
    assert set(np.unique(as_target[3])) == {0.0, 1.0} and len(as_target[3]) == 90
    assert len(models.examples["tabacof:auddc"][0]) == 89
    assert any("ghost seed 0 (no zoo card)" in note for note in models.notes)


def test_a_seed_not_trained_yet_keeps_its_models_family(study: tuple[Study, list[RunStatus]]) -> None:
    """A row without a card (seed 5 of m3, not in the zoo) takes the family of m3's seed 0, not its name."""
    parsed, _ = study
    assert parsed.analysis is not None
    rows = [ModelRow("m3", "m3", 0), ModelRow("m3", "m3", 5), ModelRow("ghost", "ghost", 0)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ROBUST_VAE_MODELS", str(parsed.out_dir.parent / "zoo"))
        frame = models_frame(rows, "mnist", ["recon_bce"], [], {}).frame
    assert list(frame["family"]) == ["betavae", "betavae", "ghost"]
    assert np.isnan(frame["recon_bce"].iloc[1])


def test_a_monotone_relation_has_rank_correlation_one(study: tuple[Study, list[RunStatus]]) -> None:
    parsed, _ = study
    rising = correlation(parsed, "mig", "thesis-fast:as_target")
    assert rising["rho"] == pytest.approx(1.0) and rising["n_models"] == 7  # the conditional rows have no mig
    assert correlation(parsed, "modularity", "thesis-fast:as_target")["rho"] == pytest.approx(-1.0)
    assert correlation(parsed, "mig", "robustness:margin")["rho"] == pytest.approx(np.corrcoef(Y, range(7))[0, 1])
    assert 0 < rising["rho_low"] <= rising["rho_high"] <= 1 and rising["replicates_used"] > 0
    # as_target and the symmetric KL rise with recon_bce: no partial ρ, the raw one over the same models
    kl = correlation(parsed, "mig", "thesis-fast:mean_symmetric_kl")
    assert kl["rho"] == pytest.approx(np.corrcoef(Y, range(7))[0, 1]) and np.isnan(kl["partial_rho"])
    assert kl["n_models"] == 7 and pd.isna(kl["control"])


def test_the_partial_correlation_removes_a_relation_the_control_drives(study: tuple[Study, list[RunStatus]]) -> None:
    parsed, _ = study
    row = correlation(parsed, "sap", "thesis-fast:as_target")
    assert row["rho"] == pytest.approx(0.642857, abs=1e-6) and row["control"] == "recon_bce"
    assert row["partial_rho"] == pytest.approx(0.0, abs=1e-9)


def test_the_report_writes_tables_figures_beta_effect_and_a_results_section(
        study: tuple[Study, list[RunStatus]]) -> None:
    parsed, _ = study
    out = parsed.out_dir
    for name in ("models.csv", "correlation.csv", "correlation.md", "correlation.tex", "beta-effect.csv",
                 "beta-effect.md", "beta-effect.tex", "scatter-thesis-fast-as-target.png",
                 "scatter-robustness-margin.png"):
        assert (out / "analysis" / name).is_file(), name
    assert (out / "analysis" / "scatter-thesis-fast-as-target.png").read_bytes()[:4] == b"\x89PNG"
    table = pd.read_csv(out / "analysis" / "correlation.csv")
    assert len(table) == 3 * 4  # every (disentanglement, robustness) pair
    assert correlation(parsed, "mig", "tabacof:auddc")["rho"] == pytest.approx(-np.corrcoef(Y, range(7))[0, 1])
    beta = pd.read_csv(out / "analysis" / "beta-effect.csv").set_index("y")
    assert beta.loc["recon_bce", "rho"] == pytest.approx(1.0) and beta.loc["recon_bce", "n_models"] == 7
    results = (out / "results.md").read_text()
    section = results[results.index("## Does disentanglement predict robustness?"):]
    assert "analysis/correlation.csv" in section and "![scatter-thesis-fast-as-target]" in section
    assert "### β effect along betavae" in section and "ghost" in section
    assert "\\rho" in (out / "analysis" / "correlation.tex").read_text()


@pytest.mark.parametrize(("analysis", "expected"), [
    ("colour = 'red'", "unknown [analysis] key(s) ['colour']; known: disentanglement, robustness"),
    ("robustness = ['pgd:as_target']", "'pgd' is none of the study's recipes ['thesis-fast']"),
    ("robustness = ['thesis-fast:speed']", "unknown metric 'speed'; known: as_target, as_ignore_target, auddc"),
    ("robustness = ['robustness:margin']", "reads report cards: set robustness_cards"),
    ("robustness_cards = 'cards/{name}'\nrobustness = ['robustness:margin']",
     "unknown placeholder(s) ['name']; known: model, seed, dataset, model_dir"),
    ("robustness_cards = 'c/{model}'\nrobustness = ['robustness:colour']", "unknown report-card column 'colour'"),
    ("bootstrap = 0", "[analysis] bootstrap must be a whole number >= 1"),
    ("models = ['vae', 'nope']", "models ['nope'] are not models of the study; known: vae"),
    ("disentanglement = []", "[analysis] disentanglement must be a non-empty list of names"),
    ("control = 'mig'", "control 'mig' is also a disentanglement metric"),
    ("unit = 'seed'", "[analysis] unit must be one of 'model', 'network', got 'seed'"),
])
def test_a_bad_analysis_table_is_a_one_line_error(tmp_path: Path, analysis: str, expected: str) -> None:
    path = tmp_path / "study.toml"
    path.write_text(f"[study]\nmain_recipe = 'thesis-fast'\n[[runs]]\nmodels = ['vae']\n[analysis]\n{analysis}\n")
    with pytest.raises(ConfigError) as error:
        read_study(path)
    message = str(error.value)
    assert "\n" not in message and expected in message and str(path) in message


def test_defaults_of_an_empty_analysis_table(tmp_path: Path) -> None:
    path = tmp_path / "study.toml"
    path.write_text("[study]\nmain_recipe = 'thesis-fast'\nbootstrap = 300\n[[runs]]\nmodels = ['vae']\n[analysis]\n")
    analysis = read_study(path).analysis
    assert analysis is not None
    assert analysis.robustness == ("thesis-fast:as_target", "thesis-fast:as_ignore_target")
    assert analysis.disentanglement[0] == "mig" and analysis.control == "recon_bce" and analysis.bootstrap == 300
    assert analysis.unit == "model" and analysis.groups == "model"  # a point is a model, its seeds averaged


def test_too_few_models_counts_model_names_and_says_it_once(tmp_path: Path) -> None:
    # sap: three rows but two model names (vae's two seeds are one point); auddc: no model at all,
    # which the models frame has already said
    frame = pd.DataFrame({"model": ["vae", "vae", "betavae", "ae"], "family": ["vae", "vae", "betavae", "ae"],
                          "seed": [0, 1, 0, 0], "beta": [np.nan, np.nan, 4.0, np.nan],
                          "recon_bce": [120.0, 121.0, 130.0, 119.0], "mig": [0.05, 0.07, 0.1, 0.02],
                          "sap": [0.01, 0.02, 0.03, np.nan], "thesis-fast:as_target": [0.1, 0.12, 0.03, 0.4],
                          "tabacof:auddc": np.nan})
    missing = "`tabacof:auddc` missing for every model (no finished tabacof run)"
    analysis = Analysis(disentanglement=("mig", "sap"), robustness=("thesis-fast:as_target", "tabacof:auddc"),
                        control=None, beta_line=None, bootstrap=20)
    made = write_analysis(analysis, ModelsFrame(frame, notes=[missing]), tmp_path)
    assert "`sap` left out: 2 model(s) have it, a rank correlation needs 3" in made.markdown
    assert made.markdown.count("tabacof:auddc") == 1 and missing in made.markdown
    assert made.correlation is not None and list(made.correlation["n_models"]) == [3]  # mig: vae, betavae, ae
