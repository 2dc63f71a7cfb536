"""Threat models of a conditional VAE: wrappers that bind where the label comes from.

A conditional family (``needs_labels``, e.g. ``cond-betavae``) is only defined on an (image,
label) pair, so an attack on it must say who supplies the label. Each wrapper here binds one
rule and exposes the plain model interface (``encode(x)``, ``decode(z)``, ``reconstruct``,
``relaxed_reconstruct``, ``attack_code``, ``deterministic_code``), so every attack and every
evaluation runs on it unchanged.

``true`` (:class:`TrueLabel`)
    The label is the source image's true label, supplied by a trusted channel: the attacker
    changes pixels only, and the adversarial is encoded and decoded with the source's class.
    The target's code and reconstruction use the target's own label (:meth:`TrueLabel.for_targets`).
    The code is the 10 Gaussian means; the label is context, not part of it. *What it says
    about robustness*: the decoder is told the class, so moving the reconstruction to another
    class means overriding the label through the style code alone; a low success rate is
    expected by construction and is an upper bound on the pipeline's robustness, which holds
    only where a label oracle exists (the attacker can still change the appearance within the
    class: latent distance, MS-SSIM and KL show that).

``classifier`` (:class:`ClassifierLabel`)
    The label is the evaluation classifier's prediction on the (attacked) image, as in a
    deployed pipeline without labels: the attack has to fool both the classifier and the VAE.
    The classifier plays the role of a categorical encoder: ``encode`` returns its logits as the
    categorical logits, ``attack_code`` is means ⊕ classifier logits, ``deterministic_code`` and
    ``reconstruct`` use the argmax one-hot (the measured reconstruction), ``relaxed_reconstruct``
    the softmax as a soft one-hot (for gradients). In ``encode`` the encoder sees the argmax
    one-hot forward with the softmax's gradient (straight-through), so what an attack
    optimises is what is measured. *What it says about robustness*: the pipeline is at most as
    robust as its classifier, since flipping the label makes the decoder draw the target class;
    a success may be mostly a classifier attack (the same classifier also judges success).

Batches: :class:`TrueLabel` binds either one class (an ``int``: right for any rows, so attacks
may split or re-chunk them freely; a success matrix builds one per cell, whose sources share one
class and whose targets share another) or one label per row (an (N,) tensor, for a caller that
feeds exactly those N rows, e.g. clean reconstructions of a labelled split; any other row count is
refused). :class:`ClassifierLabel` labels each row from its own pixels, so it is right for any
chunking.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robust_vae.core.errors import ConfigError
from robust_vae.models.base import LatentParams
from robust_vae.models.condbetavae import label_one_hot

LABEL_SOURCES = ("true", "classifier")
TRUE, CLASSIFIER = LABEL_SOURCES

#: What run.json records about each threat model (the ``label_source`` convention).
DESCRIPTIONS = {
    TRUE: "the source's true label (the attacker changes pixels only); targets encoded with their own label",
    CLASSIFIER: "the evaluation classifier's prediction on the attacked image (argmax for the measured "
                "reconstruction, softmax for gradients); the attack has to fool both",
}


def is_conditional(model: object) -> bool:
    """Whether ``model`` (or a family class) takes the class label (its ``needs_labels``)."""
    return bool(getattr(model, "needs_labels", False))


def check_label_source(conditional: bool, label_source: str | None, what: str) -> str | None:
    """``label_source`` checked for a model that is (not) conditional; a one-line error when a
    conditional model has none, an unconditional one has one, or the value is unknown."""
    if label_source is not None and label_source not in LABEL_SOURCES:
        raise ConfigError(f"label_source must be one of {', '.join(map(repr, LABEL_SOURCES))}, got {label_source!r}")
    if conditional and label_source is None:
        raise ConfigError(f"{what} is conditioned on the class label: choose a threat model with "
                          "--label-source true (the source's true label) or --label-source classifier "
                          "(the classifier's prediction)")
    if not conditional and label_source is not None:
        raise ConfigError(f"--label-source applies to conditional models only; {what} takes no label")
    return label_source


def _check_conditional(model: nn.Module) -> None:
    missing = [n for n in ("encode_with", "decode_with") if not callable(getattr(model, n, None))]
    if missing or not isinstance(getattr(model, "num_classes", None), int):
        raise ConfigError(f"{type(model).__name__} is not a conditional model (it lacks "
                          f"{', '.join(missing) or 'num_classes'}): a threat model wraps e.g. cond-betavae")


def _fixed_one_hot(label: int, num_classes: int, like: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(like.shape[0], num_classes, dtype=like.dtype, device=like.device)
    out[:, label] = 1.0
    return out


class TrueLabel(nn.Module):
    """Threat model ``true``: every row is encoded and decoded under the bound true label.

    ``label``: one class (``int``) for any rows, or (N,) int64 classes for exactly N rows.
    ``target_label``: the class under which :meth:`for_targets` encodes target images (default:
    ``label``).
    """

    def __init__(self, model: nn.Module, label: int | torch.Tensor, target_label: int | None = None) -> None:
        super().__init__()
        _check_conditional(model)
        self.model: Any = model
        self.num_classes = int(model.num_classes)  # type: ignore[arg-type]
        for value in (label, target_label):
            if isinstance(value, int) and not 0 <= value < self.num_classes:
                raise ConfigError(f"label {value} outside the {self.num_classes} classes")
        self.label = label
        self.target_label = target_label

    def one_hot(self, rows: torch.Tensor) -> torch.Tensor:
        """The bound label of each row of ``rows`` as an (N, K) one-hot."""
        if isinstance(self.label, int):
            return _fixed_one_hot(self.label, self.num_classes, rows)
        if self.label.shape[0] != rows.shape[0]:
            raise ConfigError(f"this TrueLabel holds {self.label.shape[0]} per-row labels but got {rows.shape[0]} "
                              "rows: bind one class (an int) where rows may be chunked differently")
        return label_one_hot(self.label, self.num_classes, rows.shape[0], rows)

    def for_targets(self) -> TrueLabel:
        """The model as it sees target images: the same network under the target's label."""
        if self.target_label is None:
            return self
        return TrueLabel(self.model, self.target_label)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        shape: tuple[int, int, int] = self.model.image_shape
        return shape

    def encode(self, x: torch.Tensor) -> LatentParams:
        params: LatentParams = self.model.encode_with(x, self.one_hot(x))
        return params

    def deterministic_code(self, params: LatentParams) -> torch.Tensor:
        """The Gaussian means (the label is context, not code)."""
        return params.mean

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(N, D) means -> images under the bound label."""
        out: torch.Tensor = self.model.decode_with(z, self.one_hot(z))
        return out

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        y = self.one_hot(x)
        out: torch.Tensor = self.model.decode_with(self.model.encode_with(x, y).mean, y)
        return out

    def relaxed_reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction itself: nothing discrete to relax (the label is fixed)."""
        return self.reconstruct(x)

    def attack_code(self, x: torch.Tensor) -> torch.Tensor:
        """φ(x): the Gaussian means under the bound label, (N, D)."""
        return self.encode(x).mean


class ClassifierLabel(nn.Module):
    """Threat model ``classifier``: each row's label is ``classifier``'s prediction on it
    (see the module docstring for what each method uses)."""

    def __init__(self, model: nn.Module, classifier: nn.Module) -> None:
        super().__init__()
        _check_conditional(model)
        self.model: Any = model
        self.classifier = classifier
        self.num_classes = int(model.num_classes)  # type: ignore[arg-type]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        shape: tuple[int, int, int] = self.model.image_shape
        return shape

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.classifier(x)
        if out.dim() != 2 or out.shape[1] != self.num_classes:
            raise ConfigError(f"the classifier gives {tuple(out.shape)} logits but the model takes "
                              f"{self.num_classes} classes")
        return out

    def encode(self, x: torch.Tensor) -> LatentParams:
        """q(z | x, argmax) with the softmax's gradient; the classifier logits as the categorical logits."""
        logits = self.logits(x)
        soft = F.softmax(logits, dim=-1)
        hard = F.one_hot(logits.argmax(-1), self.num_classes).to(soft.dtype)
        params: LatentParams = self.model.encode_with(x, hard + soft - soft.detach())  # straight-through
        return LatentParams(params.mean, params.logvar, logits)

    def deterministic_code(self, params: LatentParams) -> torch.Tensor:
        """Means ⊕ one-hot argmax of the classifier logits (what the decoder sees when measured)."""
        if params.logits is None:
            raise ConfigError("ClassifierLabel.deterministic_code needs the logits its encode() returns")
        one_hot = F.one_hot(params.logits.argmax(-1), self.num_classes).to(params.mean.dtype)
        return torch.cat([params.mean, one_hot], dim=-1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(N, D + K) means ⊕ (soft) one-hot label -> images."""
        d = z.shape[1] - self.num_classes
        out: torch.Tensor = self.model.decode_with(z[:, :d], z[:, d:])
        return out

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Decoded under the classifier's argmax label (what success matrices judge)."""
        return self.decode(self.deterministic_code(self.encode(x)))

    def relaxed_reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Encoded and decoded under the classifier's softmax as a soft one-hot (for gradients)."""
        soft = F.softmax(self.logits(x), dim=-1)
        out: torch.Tensor = self.model.decode_with(self.model.encode_with(x, soft).mean, soft)
        return out

    def attack_code(self, x: torch.Tensor) -> torch.Tensor:
        """φ(x): Gaussian means ⊕ the classifier's logits, (N, D + K)."""
        params = self.encode(x)
        assert params.logits is not None
        return torch.cat([params.mean, params.logits], dim=-1)


def threat_model(model: nn.Module, label_source: str, *, classifier: nn.Module | None = None,
                 label: int | torch.Tensor | None = None, target_label: int | None = None) -> nn.Module:
    """``model`` under the threat model ``label_source``: :class:`TrueLabel` (needs ``label``;
    ``target_label`` for the targets) or :class:`ClassifierLabel` (needs ``classifier``)."""
    check_label_source(True, label_source, type(model).__name__)
    if label_source == TRUE:
        if label is None:
            raise ConfigError("the 'true' threat model needs the source's label (label=...)")
        return TrueLabel(model, label, target_label)
    if classifier is None:
        raise ConfigError("the 'classifier' threat model needs the classifier (classifier=...)")
    return ClassifierLabel(model, classifier)
