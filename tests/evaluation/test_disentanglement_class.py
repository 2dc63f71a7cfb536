"""Disentanglement on a dataset without factors (MNIST): the class is the only factor.

Uses the shipped MNIST ``jointvae`` (10 Gaussian latents and a 10-valued categorical) on real
MNIST, with small metric samples (``SMALL``) to stay within seconds on one core.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from robust_vae.cli.app import main
from robust_vae.core.errors import ConfigError
from robust_vae.data import dataset_source, load_dataset
from robust_vae.evaluation.disentanglement import ModelSampler, measure_disentanglement, mig
from robust_vae.evaluation.disentanglement.model import CLASS_FACTOR_METRICS, SAMPLE_STREAM
from robust_vae.models.base import LatentVAE
from robust_vae.zoo import load_model

SMALL: dict[str, Any] = {"num_train": 300, "num_test": 150}


@pytest.fixture(scope="module")
def jointvae() -> LatentVAE:
    return load_model("jointvae", "mnist", seed=0)


@pytest.fixture(scope="module")
def by_code(jointvae: LatentVAE, mnist_root: Path) -> dict[str, dict[str, Any]]:
    return {code: measure_disentanglement(jointvae, "mnist", code=code, data_dir=str(mnist_root), **SMALL)
            for code in ("mean", "variables")}


def test_only_the_one_factor_metrics_run(by_code: dict[str, dict[str, Any]]) -> None:
    result = by_code["mean"]
    assert result["factors"] == "class"
    assert result["factor_names"] == ["digit"] and result["factor_sizes"] == [10]
    assert set(result["metrics"]) == set(CLASS_FACTOR_METRICS)
    assert "dci_disentanglement" not in result["scores"] and "modularity" not in result["scores"]
    assert {"dci_disentanglement", "modularity", "betavae_score", "factorvae_score"} <= set(result["not_applicable"])
    assert result["images_encoded"] == result["sample"]["points"] == 450
    for key in ("mig", "sap", "dci_completeness", "dci_informativeness_test", "explicitness_test"):
        assert 0.0 <= result["headline"][key] <= 1.0, key


def test_mig_is_the_mig_of_the_sampled_training_images(jointvae: LatentVAE, mnist_root: Path,
                                                         by_code: dict[str, dict[str, Any]]) -> None:
    train = load_dataset("mnist", "train", data_dir=mnist_root)
    rows = np.sort(np.random.default_rng([0, SAMPLE_STREAM]).choice(len(train.labels), 450, replace=False))
    sampler = ModelSampler(jointvae, dataset_source("mnist"), {}, "variables")
    codes = sampler.represent_images(train.images[torch.from_numpy(rows)])
    expected = mig(codes, train.labels[torch.from_numpy(rows)].numpy()[:, None], num_train=SMALL["num_train"])
    assert by_code["variables"]["scores"]["mig"] == pytest.approx(expected.scores["mig"], abs=1e-12)


def test_the_categorical_as_one_variable_holds_the_digit(by_code: dict[str, dict[str, Any]]) -> None:
    # JointVAE's categorical learns the digit: as one variable it is the digit's best dimension by far,
    # while its ten probabilities each carry one digit only
    mean, variables = by_code["mean"], by_code["variables"]
    assert variables["code"]["names"][-1] == "c" and variables["code"]["dims"] == 11
    assert mean["code"]["dims"] == 20
    assert variables["scores"]["mig"] > mean["scores"]["mig"] + 0.2


def test_rendering_options_are_refused(jointvae: LatentVAE, mnist_root: Path) -> None:
    for kwargs in ({"group_size": 8}, {"image_size": 32}):
        with pytest.raises(ConfigError, match="no factors to render"):
            measure_disentanglement(jointvae, "mnist", data_dir=str(mnist_root), **SMALL, **kwargs)
    with pytest.raises(ConfigError, match="the metrics are mig, sap, dci, explicitness"):
        measure_disentanglement(jointvae, "mnist", data_dir=str(mnist_root), options={"modularity": {}}, **SMALL)


def test_cli_writes_the_class_factor_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    with contextlib.redirect_stderr(io.StringIO()):
        code = main(["disentanglement", "--model", "jointvae", "--dataset", "mnist", "--code", "variables",
                     "--num-train", "300", "--num-test", "150", "--no-card", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| MIG | factor digit |" in printed and "modularity" not in printed
    result = json.loads((out / "disentanglement.json").read_text())
    assert result["command"].endswith("--code variables --num-train 300 --num-test 150")
    assert "the class is the only factor" in (out / "disentanglement.md").read_text()


def test_the_card_and_the_zoo_table_name_class_scores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    from robust_vae.zoo import MODELS_ENV, SHIPPED_MODELS

    (tmp_path / "mnist").mkdir()
    for suffix in (".json", ".safetensors"):
        shutil.copy(SHIPPED_MODELS / "mnist" / f"jointvae-seed0{suffix}", tmp_path / "mnist")
    monkeypatch.setenv(MODELS_ENV, str(tmp_path))
    with contextlib.redirect_stderr(io.StringIO()):
        assert main(["disentanglement", "--model", "jointvae", "--dataset", "mnist", "--code", "variables",
                     "--num-train", "300", "--num-test", "150", "--out", str(tmp_path / "out")]) == 0
    scores = json.loads((tmp_path / "out" / "disentanglement.json").read_text())["scores"]
    capsys.readouterr()
    assert main(["models", "--dataset", "mnist", "--markdown"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("| test acc. | class MIG | class DCI-C | class explicitness |")
    assert "DCI-D" not in lines[0]
    assert lines[2].endswith(f"| {scores['mig']:.4f} | {scores['dci_completeness']:.4f} | "
                             f"{scores['explicitness_test']:.4f} |")
    assert main(["models", "--dataset", "mnist"]) == 0
    assert f"class_mig={scores['mig']:.4f}" in capsys.readouterr().out
