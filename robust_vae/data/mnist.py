"""MNIST and Fashion-MNIST: the same four IDX files, the same 32×32 resize, 10 classes each."""

from __future__ import annotations

from robust_vae.data.base import register_dataset
from robust_vae.data.idx import IDXDataset


@register_dataset
class MNIST(IDXDataset):
    """Handwritten digits (LeCun et al.), the reference study's dataset."""

    name = "mnist"
    class_noun = "digit"
    description = "handwritten digits 0-9, 60,000 train / 10,000 test, 28×28 resized to 32×32"
    torchvision_class = "MNIST"


@register_dataset
class FashionMNIST(IDXDataset):
    """Zalando's clothing images (Xiao et al. 2017), a drop-in replacement for MNIST."""

    name = "fashion-mnist"
    description = "10 clothing classes, 60,000 train / 10,000 test, 28×28 resized to 32×32"
    torchvision_class = "FashionMNIST"
    # the label order of Xiao et al.'s README
    class_names = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                   "Bag", "Ankle boot")
