"""The conditional β-VAE and its two threat models (``true`` and ``classifier`` label sources).

A small ``cond-betavae`` is trained here on real MNIST with ``train_vae`` (the labelled
training path), then attacked through :func:`success_matrix` under each threat model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from robust_vae.attacks import load_attack
from robust_vae.core.errors import ConfigError
from robust_vae.data import Dataset
from robust_vae.evaluation.run_config import fingerprint_of
from robust_vae.evaluation.success_matrix import _batches_with_views, clean_predictions, success_matrix
from robust_vae.evaluation.traversal import traversal_grid
from robust_vae.models import get_family
from robust_vae.models.classifier import LeNet
from robust_vae.models.condbetavae import CondBetaVAE, label_one_hot
from robust_vae.models.conditional import (
    DESCRIPTIONS,
    ClassifierLabel,
    TrueLabel,
    check_label_source,
    threat_model,
)
from robust_vae.zoo import SHIPPED_MODELS
from robust_vae.zoo.cards import load_state, read_card


@pytest.fixture(scope="module")
def zoo(trained: tuple[CondBetaVAE, dict]) -> Path:  # type: ignore[type-arg]
    """The zoo root holding the trained cond-betavae and the shipped classifier in ``mnist/``."""
    return Path(trained[1]["_root"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[CondBetaVAE, dict]:  # type: ignore[type-arg]
    """A cond-betavae trained 300 steps (lr 2e-3) by ``train_vae``, with its card's data (and,
    under ``_root``, the zoo root it was written to, next to a copy of the shipped classifier)."""
    import shutil

    from robust_vae.training.vae import train_vae

    root = tmp_path_factory.mktemp("cond-zoo")
    out = root / "mnist"
    out.mkdir()
    for name in ("classifier.safetensors", "classifier.json"):
        shutil.copy(SHIPPED_MODELS / "mnist" / name, out / name)
    threads = torch.get_num_threads()
    result = train_vae("cond-betavae", "mnist", seed=0, steps=300, overrides={"lr": 2e-3}, out_dir=out,
                       progress=False, log=lambda message: None)
    torch.set_num_threads(threads)
    assert result is not None
    card = read_card(out / "cond-betavae-seed0.json")
    family = get_family("cond-betavae")
    model = load_state(card, family(family.config_class.from_dict(card.data["config"])))
    assert isinstance(model, CondBetaVAE)
    return model, {**card.data, "_root": str(root)}


@pytest.fixture(scope="module")
def classifier() -> nn.Module:
    return load_state(read_card(SHIPPED_MODELS / "mnist" / "classifier.json"), LeNet())


@pytest.fixture(scope="module")
def head(mnist_test: Dataset) -> Dataset:
    return Dataset(mnist_test.name, mnist_test.split, mnist_test.images[:1000], mnist_test.labels[:1000])


# ----------------------------------------------------------------- the model
def test_label_one_hot_takes_classes_or_soft_rows() -> None:
    like = torch.zeros(3, 2)
    assert torch.equal(label_one_hot(torch.tensor([0, 2, 1]), 3, 3, like),
                       torch.tensor([[1.0, 0, 0], [0, 0, 1], [0, 1, 0]]))
    soft = torch.tensor([[0.2, 0.3, 0.5]] * 3)
    assert torch.equal(label_one_hot(soft, 3, 3, like), soft)
    for bad in (torch.tensor([0, 3, 1]), torch.tensor([-1, 0, 0]), torch.tensor([0, 1]), torch.zeros(3, 4)):
        with pytest.raises(ConfigError, match="labels"):
            label_one_hot(bad, 3, 3, like)


def test_the_plain_interface_needs_a_threat_model() -> None:
    model = CondBetaVAE().eval()
    x = torch.rand(2, 1, 32, 32)
    assert (model.config.beta, model.config.num_classes, model.config.categorical_dim) == (10.0, 10, 0)
    with pytest.raises(ConfigError, match="threat model"):
        model.encode(x)
    with pytest.raises(ConfigError, match="labels"):
        model.loss_terms(x)
    terms = model.batch_terms(x, torch.tensor([1, 2]))
    assert {"recon", "kl_z", "kl_c"} <= set(terms) and float(terms["kl_c"]) == 0.0
    # the encoder sees 1 + 10 channels, the decoder 10 latents + 10 label values
    assert model.encoder_channels() == 11 and model.decoder_inputs() == 20


def test_the_label_reaches_both_sides(trained: tuple[CondBetaVAE, dict], mnist_test: Dataset) -> None:  # type: ignore[type-arg]
    model, card = trained
    assert card["family"] == "cond-betavae" and 0.0 <= card["metrics"]["recon_accuracy"] <= 1.0
    x = mnist_test.images[:8]
    with torch.no_grad():
        three, five = torch.full((8,), 3), torch.full((8,), 5)
        assert not torch.allclose(model.encode_with(x, three).mean, model.encode_with(x, five).mean)
        z = model.encode_with(x, three).mean
        assert (model.decode_with(z, three) - model.decode_with(z, five)).abs().mean() > 0.01


def test_true_label_view(trained: tuple[CondBetaVAE, dict], mnist_test: Dataset) -> None:  # type: ignore[type-arg]
    model, _ = trained
    x = mnist_test.images[:6]
    view = TrueLabel(model, 3, target_label=5)
    with torch.no_grad():
        assert torch.equal(view.encode(x).mean, model.encode_with(x, torch.full((6,), 3)).mean)
        assert torch.equal(view.attack_code(x), view.encode(x).mean)
        assert torch.equal(view.decode(view.attack_code(x)), view.reconstruct(x))
        assert torch.equal(view.reconstruct(x), model.reconstruct_with(x, torch.full((6,), 3)))
        targets = view.for_targets()
        assert isinstance(targets, TrueLabel) and targets.label == 5
        assert torch.equal(targets.attack_code(x), model.encode_with(x, torch.full((6,), 5)).mean)
        # one bound class is right for any chunking of the rows
        torch.testing.assert_close(torch.cat([view.reconstruct(x[:2]), view.reconstruct(x[2:])]),
                                   view.reconstruct(x), atol=1e-5, rtol=0)
    per_row = TrueLabel(model, mnist_test.labels[:6])
    with torch.no_grad():
        assert torch.equal(per_row.reconstruct(x), model.reconstruct_with(x, mnist_test.labels[:6]))
    with pytest.raises(ConfigError, match="per-row labels"):
        per_row.reconstruct(x[:4])
    with pytest.raises(ConfigError, match="outside"):
        TrueLabel(model, 10)
    with pytest.raises(ConfigError, match="not a conditional model"):
        TrueLabel(get_family("vae")(), 3)


def test_classifier_label_view(trained: tuple[CondBetaVAE, dict], classifier: nn.Module,
                               mnist_test: Dataset) -> None:  # type: ignore[type-arg]
    model, _ = trained
    x = mnist_test.images[:6].clone()
    view = ClassifierLabel(model, classifier)
    with torch.no_grad():
        predicted = classifier(x).argmax(-1)
        params = view.encode(x)
        assert params.logits is not None and torch.equal(params.logits, classifier(x))
        assert torch.equal(params.mean, model.encode_with(x, predicted).mean)
        code = view.deterministic_code(params)
        assert code.shape == (6, 20) and torch.equal(code[:, 10:].argmax(-1), predicted)
        assert torch.equal(view.reconstruct(x), model.reconstruct_with(x, predicted))
        assert view.attack_code(x).shape == (6, 20)
    # gradients reach the classifier: an attack on this view has to move its prediction too
    x.requires_grad_(True)
    view.relaxed_reconstruct(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    first = next(classifier.parameters())
    assert first.grad is not None and first.grad.abs().sum() > 0
    classifier.zero_grad()
    view.encode(x).mean.sum().backward()  # straight-through: the argmax forward, the softmax's gradient
    assert first.grad is not None and first.grad.abs().sum() > 0
    classifier.zero_grad()


def test_threat_model_choice_is_checked() -> None:
    model = CondBetaVAE()
    with pytest.raises(ConfigError, match="--label-source true"):
        check_label_source(True, None, "cond-betavae")
    with pytest.raises(ConfigError, match="conditional models only"):
        check_label_source(False, "true", "vae")
    with pytest.raises(ConfigError, match="must be one of"):
        check_label_source(True, "oracle", "cond-betavae")
    with pytest.raises(ConfigError, match="needs the source's label"):
        threat_model(model, "true")
    with pytest.raises(ConfigError, match="needs the classifier"):
        threat_model(model, "classifier")
    assert isinstance(threat_model(model, "true", label=2), TrueLabel)


# ----------------------------------------------------------------- under attack
def test_true_label_batches_never_straddle_a_cell(trained: tuple[CondBetaVAE, dict],
                                                   classifier: nn.Module) -> None:  # type: ignore[type-arg]
    model, _ = trained
    sources = np.array([0, 0, 0, 0, 0, 1, 1, 2, 2, 2])
    targets = np.array([1, 1, 1, 2, 2, 0, 0, 0, 0, 1])
    batches = list(_batches_with_views(model, classifier, "true", sources, targets, 2))
    assert np.array_equal(np.concatenate([rows for rows, _ in batches]), np.arange(10))
    for rows, view in batches:
        assert isinstance(view, TrueLabel) and len(rows) <= 2
        assert set(sources[rows]) == {view.label} and set(targets[rows]) == {view.target_label}
    assert [len(rows) for rows, _ in batches] == [2, 1, 2, 2, 2, 1]
    unconditional = list(_batches_with_views(model, classifier, None, sources, targets, 4))
    assert [len(rows) for rows, _ in unconditional] == [4, 4, 2] and all(v is model for _, v in unconditional)


def test_clean_predictions_follow_the_threat_model(trained: tuple[CondBetaVAE, dict], classifier: nn.Module,
                                                   head: Dataset) -> None:  # type: ignore[type-arg]
    model, _ = trained
    images, labels = head.images[:300], head.labels[:300]
    with torch.no_grad():
        true = clean_predictions(model, classifier, images, 64, labels=labels, label_source="true")
        expected = classifier(model.reconstruct_with(images, labels)).argmax(-1).numpy()
        assert np.array_equal(true, expected)
        by_classifier = clean_predictions(model, classifier, images, 64, label_source="classifier")
        predicted = classifier(images).argmax(-1)
        assert np.array_equal(by_classifier, classifier(model.reconstruct_with(images, predicted)).argmax(-1).numpy())
    with pytest.raises(ConfigError, match="needs the images' labels"):
        clean_predictions(model, classifier, images, label_source="true")


@pytest.mark.parametrize("label_source", ["true", "classifier"])
def test_success_matrix_under_each_threat_model(trained: tuple[CondBetaVAE, dict], classifier: nn.Module,
                                                head: Dataset, label_source: str, tmp_path: Path) -> None:  # type: ignore[type-arg]
    model, _ = trained
    attack = load_attack("thesis", steps=5)
    result = success_matrix(model, classifier, head, attack, per_pair=1, seed=0, progress=False,
                            label_source=label_source, out_dir=tmp_path, metadata={"model": "cond-betavae"})
    assert result.metadata["label_source"] == label_source
    assert result.metadata["label_source_description"] == DESCRIPTIONS[label_source]
    assert len(result.cells) == 90 and len(result.examples) > 0
    # the fingerprint records the threat model; an unconditional run's has no such key
    config = (tmp_path / "config.json").read_text()
    assert f'"label_source": "{label_source}"' in config
    plain = fingerprint_of(model="vae", model_seed=0, weights_sha256=None, dataset="mnist", attack=attack,
                           per_pair=1, seed=0, batch_size=512, classifier_sha256=None)
    assert "label_source" not in plain


def test_success_matrix_refuses_a_missing_or_needless_threat_model(trained: tuple[CondBetaVAE, dict],
                                                                    classifier: nn.Module,
                                                                    head: Dataset) -> None:  # type: ignore[type-arg]
    model, _ = trained
    unconditional = get_family("vae")().eval()
    attack = load_attack("thesis", steps=2)
    with pytest.raises(ConfigError, match="--label-source"):
        success_matrix(model, classifier, head, attack, per_pair=1, progress=False)
    with pytest.raises(ConfigError, match="conditional models only"):
        success_matrix(unconditional, classifier, head, attack, per_pair=1, progress=False, label_source="true")


def test_traversal_switches_the_label(trained: tuple[CondBetaVAE, dict], mnist_test: Dataset) -> None:  # type: ignore[type-arg]
    model, _ = trained
    rows = traversal_grid(model, mnist_test.images[0], steps=4, label=int(mnist_test.labels[0]))
    assert len(rows) == 11 and all(r.shape == (4, 32, 32) for r in rows[:10]) and rows[10].shape == (10, 32, 32)
    assert np.abs(rows[10][3] - rows[10][5]).mean() > 0.01
    with pytest.raises(ConfigError, match="label"):
        traversal_grid(model, mnist_test.images[0])


# ----------------------------------------------------------------- the attack CLI
def test_attack_cli_takes_the_label_source(zoo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    from robust_vae.cli.app import main

    monkeypatch.chdir(tmp_path)
    assert main(["attack", "--model", "vae", "--per-pair", "1", "--label-source", "true"]) == 2  # the shipped vae
    assert "conditional models only" in capsys.readouterr().err
    monkeypatch.setenv("ROBUST_VAE_MODELS", str(zoo))
    base = ["attack", "--model", "cond-betavae", "--per-pair", "1", "--set", "steps=3"]
    assert main(base) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--label-source true" in err and not (tmp_path / "reports").exists()
    assert main(base + ["--label-source", "classifier"]) == 0
    out = tmp_path / "reports" / "mnist" / "cond-betavae-classifier-label" / "thesis"
    run = json.loads((out / "run.json").read_text())
    assert run["label_source"] == "classifier" and "--label-source classifier" in run["command"]
    assert (out / "cells.csv").is_file() and (out / "heatmaps.png").is_file()


def test_commands_that_need_a_plain_encoder_refuse_it(zoo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from robust_vae.cli.app import main

    monkeypatch.setenv("ROBUST_VAE_MODELS", str(zoo))
    monkeypatch.chdir(tmp_path)
    assert main(["robustness", "--model", "cond-betavae", "--out", str(tmp_path / "card")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "threat model" in err and not (tmp_path / "card").exists()
    assert main(["traverse", "--model", "cond-betavae", "--out", str(tmp_path / "t.png")]) == 0
    assert (tmp_path / "t.png").is_file()
