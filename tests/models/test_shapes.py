"""Networks follow the data: image size and channels in the config, class count in the classifier,
and loading refuses a model or classifier that does not fit the data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from robust_vae.core.errors import ConfigError, DataError, ZooError
from robust_vae.data import load_dataset, load_dataset_at
from robust_vae.models import get_family
from robust_vae.models.base import VAEConfig, conv_widths
from robust_vae.models.classifier import ClassifierSpec
from robust_vae.training import ClassifierConfig, train_classifier, train_vae
from robust_vae.zoo import MODELS_ENV, SHIPPED_MODELS, load_classifier, load_model, read_card


def _convs(module: nn.Module, kind: type[nn.Module]) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, kind)]


@pytest.mark.parametrize(("size", "layers"), [(32, 3), (64, 4), (128, 5)])
@pytest.mark.parametrize("channels", [1, 3])
def test_vae_shapes_follow_the_config(size: int, layers: int, channels: int) -> None:
    model = get_family("jointvae")(get_family("jointvae").config_class(image_size=size, channels=channels))
    x = torch.rand(2, channels, size, size)
    assert model.image_shape == (channels, size, size)
    assert model.reconstruct(x).shape == x.shape
    assert model.relaxed_reconstruct(x).shape == x.shape
    assert len(_convs(model.encoder, nn.Conv2d)) == layers == len(conv_widths(size))
    assert len(_convs(model.decoder, nn.ConvTranspose2d)) == layers
    # the encoder halves down to 4×4 whatever the size (Burgess et al.'s 64×64 net has four convs)
    assert model.encoder.convs(x).shape[-2:] == (4, 4)


def test_the_thesis_network_is_unchanged_at_32() -> None:
    """The shipped MNIST weights still load into the 32×32 network (same keys and shapes)."""
    model = load_model("vae", "mnist")
    assert model.image_shape == (1, 32, 32)
    assert [tuple(m.weight.shape) for m in _convs(model.encoder, nn.Conv2d)] == [
        (32, 1, 4, 4), (32, 32, 4, 4), (64, 32, 4, 4)]


@pytest.mark.parametrize("values", [{"image_size": 48}, {"image_size": 28}, {"channels": 0}])
def test_unsupported_shapes_are_refused(values: dict[str, int]) -> None:
    with pytest.raises(ConfigError, match="image_size|channels"):
        VAEConfig(**values)


@pytest.mark.parametrize("architecture", ["lenet", "cnn"])
@pytest.mark.parametrize(("channels", "size", "classes"), [(1, 32, 10), (3, 64, 3), (1, 32, 12)])
def test_classifier_follows_the_data(architecture: str, channels: int, size: int, classes: int) -> None:
    spec = ClassifierSpec(architecture, channels, size, classes)
    net = spec.build().eval()
    assert net(torch.rand(5, channels, size, size)).shape == (5, classes)
    assert ClassifierSpec.from_dict(spec.to_dict()) == spec
    assert f"->{classes})" in spec.describe()


def test_bad_classifier_spec() -> None:
    with pytest.raises(ConfigError, match="architecture"):
        ClassifierSpec("resnet")
    with pytest.raises(ConfigError, match="num_classes"):
        ClassifierSpec(num_classes=1)


def test_mnist_classifier_card_without_spec_is_the_thesis_lenet() -> None:
    card = json.loads((SHIPPED_MODELS / "mnist" / "classifier.json").read_text())
    classifier = load_classifier("mnist")
    assert classifier(torch.rand(2, 1, 32, 32)).shape == (2, 10)
    assert card.get("classifier", ClassifierSpec().to_dict()) == ClassifierSpec().to_dict()


def test_load_dataset_at_the_model_shape() -> None:
    assert load_dataset_at("dsprites", "test", (1, 64, 64)).image_shape == (1, 64, 64)
    assert load_dataset_at("mnist", "test", (1, 32, 32)).image_shape == (1, 32, 32)
    with pytest.raises(DataError, match="1x64x64 .* mnist gives 1x32x32"):
        load_dataset_at("mnist", "test", (1, 64, 64))
    with pytest.raises(DataError, match="3x32x32"):
        load_dataset_at("dsprites", "test", (3, 32, 32))


def _copy_card(src: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for suffix in (".json", ".safetensors"):
        shutil.copy(src.with_suffix(suffix), dest / (src.stem + suffix))


def test_a_model_of_another_dataset_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _copy_card(SHIPPED_MODELS / "mnist" / "vae-seed0.json", tmp_path / "fashion-mnist")
    _copy_card(SHIPPED_MODELS / "mnist" / "classifier.json", tmp_path / "fashion-mnist")
    monkeypatch.setenv(MODELS_ENV, str(tmp_path))
    with pytest.raises(ZooError, match="trained on mnist, not fashion-mnist"):
        load_model("vae", "fashion-mnist")
    with pytest.raises(ZooError, match="trained on mnist, not fashion-mnist"):
        load_classifier("fashion-mnist")


@pytest.fixture(scope="module")
def dsprites_zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A classifier at 32×32 and a 64×64 VAE trained for a few steps on a small dSprites split."""
    root = tmp_path_factory.mktemp("zoo")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(MODELS_ENV, str(root))
        train_classifier("dsprites", ClassifierConfig(architecture="cnn", epochs=1), out_dir=root / "dsprites",
                         progress=False, dataset_options={"samples": 512})
        train_vae("vae", "dsprites", seed=0, steps=8, out_dir=root / "dsprites", progress=False,
                  log=lambda _: None, dataset_options={"image_size": 64, "samples": 512})
    return root


def test_training_follows_the_data_shape(dsprites_zoo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MODELS_ENV, str(dsprites_zoo))
    card = read_card(dsprites_zoo / "dsprites" / "vae-seed0.json")
    assert card.data["config"]["image_size"] == 64 and card.data["config"]["channels"] == 1
    assert card.data["dataset_options"] == {"image_size": 64, "samples": 512}
    assert card.data["training"]["command"].endswith("--image-size 64 --data-option samples=512")
    assert 0.0 <= card.data["metrics"]["recon_accuracy"] <= 1.0
    classifier_card = read_card(dsprites_zoo / "dsprites" / "classifier.json")
    assert classifier_card.data["classifier"] == {"architecture": "cnn", "channels": 1, "image_size": 32,
                                                  "num_classes": 3}
    model = load_model("vae", "dsprites")
    assert model.image_shape == (1, 64, 64)
    # the 32×32 classifier labels 64×64 images through 2×2 block averages: the 32×32 data exactly
    classifier = load_classifier("dsprites", image_shape=(1, 64, 64))
    small = load_classifier("dsprites")
    big_x = load_dataset("dsprites", "test", image_size=64, samples=64).images
    small_x = load_dataset("dsprites", "test", samples=64).images
    assert torch.allclose(classifier(big_x), small(small_x), atol=1e-5)
    with pytest.raises(ZooError, match="train a classifier at that size"):
        load_classifier("dsprites", image_shape=(3, 64, 64))


def test_training_refuses_a_size_the_data_does_not_have(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="follows the data"):
        train_vae("vae", "mnist", steps=2, out_dir=tmp_path, progress=False, overrides={"image_size": 64})
    with pytest.raises(DataError, match="no option 'image_size'"):
        train_vae("vae", "mnist", steps=2, out_dir=tmp_path, progress=False, dataset_options={"image_size": 64})
