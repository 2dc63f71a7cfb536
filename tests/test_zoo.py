"""The shipped classifier and the zoo's integrity checks (sha256, tensor shapes, names)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from robust_vae.core.errors import DataError, ZooError
from robust_vae.data import Dataset
from robust_vae.models.classifier import LeNet, accuracy
from robust_vae.zoo import (
    MODELS_ENV,
    SHIPPED_MODELS,
    load_classifier,
    load_model,
    load_state,
    read_card,
    save_weights,
    sha256_of,
)

SHIPPED = SHIPPED_MODELS / "mnist"


@pytest.fixture
def models_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the shipped classifier's files; ``ROBUST_VAE_MODELS`` points at it.

    Returns the copy's ``mnist/`` folder. Only the classifier is copied, so listings are fixed.
    """
    folder = tmp_path / "models" / "mnist"
    folder.mkdir(parents=True)
    for name in ("classifier.json", "classifier.safetensors"):
        shutil.copyfile(SHIPPED / name, folder / name)
    monkeypatch.setenv(MODELS_ENV, str(folder.parent))
    return folder


def rewrite_weights(folder: Path, state: dict[str, torch.Tensor]) -> None:
    """Replace the copy's weights and record their new sha256 in its card (a consistent card)."""
    weights = folder / "classifier.safetensors"
    save_file(state, str(weights))
    card_path = folder / "classifier.json"
    card = json.loads(card_path.read_text())
    card["sha256"] = sha256_of(weights)
    card_path.write_text(json.dumps(card, indent=2))


# ----------------------------------------------------------------- the shipped classifier
def test_shipped_classifier_accuracy(mnist_test: Dataset) -> None:
    model = load_classifier("mnist")
    assert isinstance(model, LeNet)
    assert not any(m.training for m in model.modules()), "load_classifier must return eval() mode"
    head = Dataset(mnist_test.name, mnist_test.split, mnist_test.images[:2000], mnist_test.labels[:2000])
    head_accuracy = accuracy(model, head)
    assert head_accuracy >= 0.985, f"accuracy on test[:2000] is {head_accuracy:.4f}"


def test_shipped_card_reports_the_real_test_accuracy(mnist_test: Dataset) -> None:
    card = read_card(SHIPPED / "classifier.json")
    assert card.data["sha256"] == sha256_of(SHIPPED / "classifier.safetensors")
    claimed = card.data["metrics"]["test_accuracy"]
    assert claimed >= 0.985
    measured = accuracy(load_classifier("mnist"), mnist_test)
    assert measured == pytest.approx(claimed, abs=5e-4)  # at most 5 of 10,000 images differ


def test_classifier_is_deterministic_in_eval_mode(mnist_test: Dataset) -> None:
    model = load_classifier("mnist")
    x = mnist_test.images[:64]
    with torch.no_grad():
        assert torch.equal(model(x), model(x))  # dropout is off


# ----------------------------------------------------------------- tampering
@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_flipped_byte_fails_the_sha256_check(models_copy: Path, where: str) -> None:
    weights = models_copy / "classifier.safetensors"
    content = bytearray(weights.read_bytes())
    position = {"start": 0, "middle": len(content) // 2, "end": len(content) - 1}[where]
    content[position] ^= 0x01
    weights.write_bytes(bytes(content))
    with pytest.raises(ZooError) as info:
        load_classifier("mnist")
    message = str(info.value)
    assert "sha256" in message and str(weights) in message
    assert "\n" not in message


def test_wrong_tensor_shape_is_named(models_copy: Path) -> None:
    state = load_file(str(models_copy / "classifier.safetensors"))
    assert tuple(state["fc1.weight"].shape) == (50, 500)
    state["fc1.weight"] = torch.zeros(50, 400)
    rewrite_weights(models_copy, state)
    with pytest.raises(ZooError) as info:
        load_classifier("mnist")
    message = str(info.value)
    assert "fc1.weight" in message
    assert "(50, 400)" in message and "(50, 500)" in message
    assert "sha256" not in message  # the card is consistent: the shape check must catch it


def test_missing_tensor_is_named(models_copy: Path) -> None:
    state = load_file(str(models_copy / "classifier.safetensors"))
    del state["fc2.bias"]
    rewrite_weights(models_copy, state)
    with pytest.raises(ZooError, match=r"missing \['fc2\.bias'\]"):
        load_classifier("mnist")


def test_card_without_sha256(models_copy: Path) -> None:
    card_path = models_copy / "classifier.json"
    card = json.loads(card_path.read_text())
    del card["sha256"]
    card_path.write_text(json.dumps(card))
    with pytest.raises(ZooError, match="lacks the field 'sha256'"):
        load_classifier("mnist")


def test_missing_weights_file(models_copy: Path) -> None:
    (models_copy / "classifier.safetensors").unlink()
    with pytest.raises(ZooError, match="is missing"):
        load_classifier("mnist")


def test_untouched_copy_loads(models_copy: Path) -> None:
    reference = load_file(str(SHIPPED / "classifier.safetensors"))
    model = load_classifier("mnist")
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, reference[key]), key


# ----------------------------------------------------------------- names
def test_unknown_family_lists_the_families() -> None:
    with pytest.raises(ZooError) as info:
        load_model("nosuchfamily", "mnist", seed=0)
    message = str(info.value)
    assert "'nosuchfamily'" in message
    for family in ("vae", "vae-wd", "jointvae", "betavae", "betavae-capacity"):
        assert family in message


def test_unshipped_model_lists_what_is_available(models_copy: Path) -> None:
    with pytest.raises(ZooError) as info:
        load_model("vae", "mnist", seed=12345)
    message = str(info.value)
    assert "'vae-seed12345'" in message
    assert "available: classifier" in message
    assert "robust-vae train --model vae --dataset mnist" in message


def test_unknown_dataset_has_no_classifier(models_copy: Path) -> None:
    with pytest.raises(DataError, match="unknown dataset 'cifar10': supported datasets are"):
        load_classifier("cifar10")
    with pytest.raises(ZooError, match="for dataset 'imagefolder'.*available: none"):
        load_classifier("imagefolder")


# ----------------------------------------------------------------- save / load
def test_save_load_round_trip_is_bit_exact(tmp_path: Path) -> None:
    torch.manual_seed(1)
    original = LeNet()
    card = save_weights(original, tmp_path / "zoo" / "lenet.safetensors",
                        {"name": "lenet", "dataset": "mnist", "family": "classifier", "seed": 1})
    assert card.path == tmp_path / "zoo" / "lenet.json"
    assert card.data["weights"] == "lenet.safetensors"
    assert card.data["sha256"] == sha256_of(card.weights_path)
    assert not list((tmp_path / "zoo").glob("*.tmp"))

    torch.manual_seed(2)
    fresh = LeNet().train()
    assert not torch.equal(fresh.conv1.weight, original.conv1.weight)
    loaded = load_state(read_card(card.path), fresh)
    assert loaded is fresh and not loaded.training
    expected, actual = original.state_dict(), loaded.state_dict()
    assert expected.keys() == actual.keys()
    for key in expected:
        assert expected[key].dtype == actual[key].dtype
        assert expected[key].numpy().tobytes() == actual[key].numpy().tobytes(), key
