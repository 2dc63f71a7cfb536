"""A study's ``[robustness]`` (robust_vae.analysis.study_robustness): the table's checks and defaults,
then ``robust-vae study`` making, reusing, resuming and refusing a tiny report card of the small zoo's
VAE, and the ``[analysis]`` frame reading ``robustness:margin`` from it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from robust_vae.analysis import study_robustness
from robust_vae.analysis.study import read_study, robustness_status
from robust_vae.analysis.study_robustness import CARD_TEMPLATE
from robust_vae.attacks.latent_classifier import cached_latent_classifier
from robust_vae.cli.app import main as cli_main
from robust_vae.core.errors import ConfigError
from robust_vae.evaluation import robustness
from robust_vae.evaluation.robustness import CARD_FILES, RobustnessSettings
from robust_vae.zoo import load_model

RUNS = """
[study]
main_recipe = "thesis-fast"

[[runs]]
models = ["vae", "betavae"]
seeds = [0, 1]

[[runs]]
models = ["vae"]
seeds = [2]

[[runs]]
models = ["cond-betavae"]
label_sources = ["true"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("table", "expected"), [
    ("colour = 'red'", "unknown [robustness] key(s) ['colour']; known: models, seeds, latent_accuracy, examples, norm"),
    ("models = ['vae', 'cond-betavae']", "[robustness] models ['cond-betavae'] are conditional"),
    ("models = ['vae', 'nope']", "models ['nope'] are not models of the study's [[runs]]; known: vae, betavae"),
    ("models = []", "[robustness] models must be a non-empty list of names"),
    ("seeds = [-1]", "[robustness] seeds must be a non-empty list of whole numbers >= 0"),
    ("latent_accuracy = 'yes'", "[robustness] latent_accuracy must be true or false"),
    ("examples = 0", "[robustness] examples must be at least 1, got 0"),
    ("examples = 'many'", "[robustness] examples must be a whole number, got 'many'"),
    ("steps = 2.5", "[robustness] steps must be a whole number"),
    ("threshold = true", "[robustness] threshold must be a number"),
    ("norm = 'l3'", "[robustness] norm must be one of l2, linf"),
    ("radii = []", "[robustness] radii must be a non-empty list of numbers"),
    ("radii = [1.0, 0.5]", "[robustness] radii must be increasing and distinct"),
    ("metric_radius = 0.7", "[robustness] the metric radius 0.7 must be one of the radii"),
])
def test_a_bad_robustness_table_is_a_one_line_error(tmp_path: Path, table: str, expected: str) -> None:
    path = write(tmp_path, f"{RUNS}\n[robustness]\n{table}\n")
    with pytest.raises(ConfigError) as error:
        read_study(path)
    message = str(error.value)
    assert "\n" not in message and expected in message and str(path) in message, message


def test_a_study_of_conditional_models_only_has_no_card_to_make(tmp_path: Path) -> None:
    path = write(tmp_path, "[[runs]]\nmodels = ['cond-betavae']\nlabel_sources = ['true']\n[robustness]\n")
    with pytest.raises(ConfigError, match="no model to make a card of"):
        read_study(path)


def test_defaults_every_unconditional_model_at_its_seeds(tmp_path: Path) -> None:
    path = write(tmp_path, f"{RUNS}\n[robustness]\n[analysis]\nrobustness = ['robustness:margin']\n")
    study = read_study(path, out_dir=tmp_path / "out")
    plan = study.robustness
    assert plan is not None and plan.settings == RobustnessSettings() and plan.latent_accuracy
    assert [(c.model, c.seed) for c in plan.cards] == [("vae", 0), ("vae", 1), ("vae", 2), ("betavae", 0),
                                                       ("betavae", 1)]
    assert plan.cards[0].folder == tmp_path / "out" / "robustness" / "vae-seed0"
    # the analysis reads the study's own cards: the card columns validate without robustness_cards
    assert study.analysis is not None and study.analysis.robustness_cards == CARD_TEMPLATE


def test_chosen_models_seeds_and_settings(tmp_path: Path) -> None:
    path = write(tmp_path, f"{RUNS}\n[robustness]\nmodels = ['betavae']\nseeds = [3, 1]\nradii = [0.5, 1]\n"
                           "metric_radius = 1\nexamples = 4\nlatent_accuracy = false\n"
                           "[analysis]\nrobustness = ['robustness:margin']\nrobustness_cards = '../{model_dir}'\n")
    study = read_study(path)
    plan = study.robustness
    assert plan is not None and not plan.latent_accuracy
    assert plan.settings == RobustnessSettings(examples=4, radii=(0.5, 1.0), metric_radius=1.0)
    assert [(c.model, c.seed) for c in plan.cards] == [("betavae", 3), ("betavae", 1)]
    assert study.analysis is not None and study.analysis.robustness_cards == "../{model_dir}"  # its own stands


# ----------------------------------------------------------------------------- making the cards
CARDS_STUDY = """
[study]
name = "cards"
main_recipe = "no-such-recipe"    # the runs are skipped: this study only makes report cards

[[runs]]
models = ["vae"]

[robustness]
seeds = [0, 1]                    # the small zoo has no vae seed 1
examples = 4
radii = [0.5, 1.0]
metric_radius = 1.0
samples = 4
max_budget = 4.0
steps = 2
restarts = 1
bisection_steps = 2
power_iterations = 2
unit_size = 2
latent_accuracy = false

[analysis]
disentanglement = ["mig"]
robustness = ["robustness:margin", "robustness:damage_r1"]
"""


def test_the_study_makes_reuses_and_resumes_its_report_cards(
    small_zoo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ROBUST_VAE_MODELS", str(small_zoo))
    toml = str(write(tmp_path, CARDS_STUDY))
    folder = tmp_path / "robustness" / "vae-seed0"

    assert cli_main(["study", toml, "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "1 new, 1 skipped robustness card(s)" in printed
    assert "model vae seed 1 is not in the zoo yet (train it: robust-vae train --model vae --dataset mnist --seed 1)" \
        in printed
    assert not (tmp_path / "robustness").exists()
    assert cli_main(["study", toml, "--report-only"]) == 0
    capsys.readouterr()
    assert not folder.exists()

    assert cli_main(["study", toml]) == 0
    captured = capsys.readouterr()
    assert "making the robustness card of vae seed 0" in captured.out and "robustness" in captured.err  # the bar
    assert "skipped the robustness card of vae seed 1" in captured.out
    assert {p.name for p in folder.iterdir() if p.is_file()} == {*CARD_FILES, "config.json", ".lock"}
    record = json.loads((folder / "card.json").read_text())
    assert record["num_examples"] == 4 and record["command"] == f"robust-vae study {toml}"
    assert record["settings"]["unit_size"] == 2 and "latent_classifier" not in record
    examples = pd.read_csv(folder / "examples.csv")
    results = (tmp_path / "results.md").read_text()
    section = results[results.index("## Robustness report cards"):]
    assert "| vae | 0 | done | 4 | `robustness/vae-seed0` |" in section and "not in the zoo yet" in section
    assert "max damage at r=1" in section and "latent acc." not in section
    cards = pd.read_csv(tmp_path / "robustness" / "cards.csv")
    margin = cards[cards["metric"] == "margin"].iloc[0]
    assert (margin["model"], margin["seed"], margin["n"]) == ("vae", 0, 4)
    assert margin["mean"] == pytest.approx(examples["margin"].mean(), abs=1e-6)
    # the [analysis] frame reads the study's own card
    models = pd.read_csv(tmp_path / "analysis" / "models.csv").set_index("model")
    assert models.loc["vae", "robustness:margin"] == pytest.approx(examples["margin"].mean())
    assert models.loc["vae", "robustness:damage_r1"] == pytest.approx(examples["damage_r1"].mean())

    # a finished card of the same fingerprint is reused: nothing is computed or rewritten
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a finished card was recomputed")

    written = {name: (folder / name).stat().st_mtime_ns for name in CARD_FILES}
    with monkeypatch.context() as patch:
        patch.setattr(study_robustness, "zoo_robustness", refuse)
        assert cli_main(["study", toml]) == 0
    assert "every available robustness report card is already done: nothing to make" in capsys.readouterr().out
    assert {name: (folder / name).stat().st_mtime_ns for name in CARD_FILES} == written

    # a card whose files are gone resumes from its saved units without measuring any again
    (folder / "card.json").unlink()
    assert cli_main(["study", toml, "--dry-run"]) == 0
    assert "partial   2 unit(s) saved" in capsys.readouterr().out
    monkeypatch.setattr(robustness, "measure_unit", refuse)
    assert cli_main(["study", toml]) == 0
    assert "resuming the robustness card of vae seed 0" in capsys.readouterr().out
    pd.testing.assert_frame_equal(pd.read_csv(folder / "examples.csv"), examples)
    assert json.loads((folder / "card.json").read_text())["num_examples"] == 4

    # other settings conflict with the finished card: one line, exit 2, nothing changed
    (tmp_path / "study.toml").write_text(CARDS_STUDY.replace("examples = 4", "examples = 6"))
    assert cli_main(["study", toml]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "robustness card with a different configuration (differs in: settings)" in err[0]
    assert cli_main(["study", toml, "--dry-run"]) == 0
    assert "1 skipped, 1 conflict robustness card(s)" in capsys.readouterr().out
    assert np.array_equal(pd.read_csv(folder / "examples.csv")["index"], examples["index"])


def test_a_card_state_follows_its_fingerprint_and_latent_classifier(
    small_zoo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """done / partial / conflict from a card folder laid out by hand (nothing is computed): a
    latent classifier no longer cached leaves the card's own standing, a cached one must match."""
    monkeypatch.setenv("ROBUST_VAE_MODELS", str(small_zoo))
    study = read_study(write(tmp_path, CARDS_STUDY.replace("latent_accuracy = false", "latent_accuracy = true")))
    assert study.robustness is not None
    folder, settings = study.robustness.cards[0].folder, study.robustness.settings
    assert [st.state for st in robustness_status(study)] == ["new", "skipped"]
    plain = robustness.zoo_card_fingerprint("vae", "mnist", 0, settings, latent_accuracy=False)

    def lay_out(fingerprint: dict[str, Any]) -> None:
        (folder / "progress").mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(fingerprint))
        for name in CARD_FILES:
            (folder / name).write_text("")
        (folder / "card.json").write_text(json.dumps({"settings": settings.to_dict(), "num_examples": 4}))
        for unit in (0, 1):
            (folder / "progress" / f"unit-{unit:05d}.npz").write_bytes(b"")

    def state() -> tuple[str, str]:
        first = robustness_status(study)[0]
        return first.state, first.reason

    lay_out({**plain, "latent_classifier_sha256": "abc"})
    assert cached_latent_classifier(load_model("vae"), "mnist", cache_dir=tmp_path / "no-cache") is None
    monkeypatch.setattr(robustness, "cached_latent_classifier", lambda model, dataset: None)
    assert state() == ("done", "")  # the cache holds no classifier of the model: the card's own stands
    cached = SimpleNamespace(data={"sha256": "abc", "metrics": {"test_accuracy": 0.9}})
    monkeypatch.setattr(robustness, "cached_latent_classifier", lambda model, dataset: (None, cached))
    assert state() == ("done", "")
    cached.data["sha256"] = "def"
    assert state()[0] == "conflict" and "differs in: latent_classifier_sha256" in state()[1]
    monkeypatch.setattr(robustness, "cached_latent_classifier", lambda model, dataset: None)
    lay_out(plain)  # made without the latent-classifier accuracy
    assert state()[0] == "conflict" and "differs in: latent_classifier_sha256" in state()[1]
    lay_out({**plain, "latent_classifier_sha256": "abc"})
    (folder / "progress" / "unit-00001.npz").unlink()
    assert state() == ("done", "")  # a finished card stands without its resume units
    shutil.rmtree(folder / "progress")  # as in a clean checkout: progress/ is not committed
    assert state() == ("done", "")
    (folder / "card.json").unlink()
    assert state() == ("new", "")  # nothing to resume from and no card


def test_a_card_finished_meanwhile_by_another_process_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A card listed as new that another process (a second study, a hand run) finished before this
    loop reaches it is not made again: re-saving it would overwrite its recorded seconds."""
    study = read_study(write(tmp_path, f"{RUNS}\n[robustness]\nmodels = ['vae']\nseeds = [0, 1]\n"))
    assert study.robustness is not None
    first, second = (study_robustness.CardStatus(spec, "new") for spec in study.robustness.cards)
    finished = {second.spec}
    monkeypatch.setattr(study_robustness, "card_status", lambda plan, spec, *a, **k: study_robustness.CardStatus(
        spec, "done" if spec in finished else "new"))
    made: list[Any] = []
    monkeypatch.setattr(study_robustness, "zoo_robustness", lambda model, dataset, seed, *a, **k: made.append(seed) or "card")
    monkeypatch.setattr(study_robustness, "save_card", lambda *a, **k: None)
    lines: list[str] = []
    assert study_robustness.make_missing_cards(study.robustness, [first, second], "mnist", "cmd",
                                               log=lines.append) == [first.spec]
    assert made == [0]
    assert lines[-1].endswith("vae seed 1: finished meanwhile, kept")
