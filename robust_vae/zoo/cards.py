"""The model zoo: shipped weights (safetensors) with a JSON card each.

A card records what produced the weights (family, config, seed, steps), the weights file's
sha256 and the metrics. Loading checks the sha256 and every tensor shape against the
architecture built from the card, and never unpickles anything.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from robust_vae.core.errors import ZooError
from robust_vae.core.hashing import sha256_of
from robust_vae.data import dataset_source

MODELS_ENV = "ROBUST_VAE_MODELS"
SHIPPED_MODELS = Path(__file__).resolve().parent / "weights"  # package data: <dataset>/<stem>.{json,safetensors}


def models_root() -> Path:
    """Folder of the zoo: ``$ROBUST_VAE_MODELS``, else the weights shipped inside the package
    (``robust_vae/zoo/weights/``), so an installed wheel finds them from any folder."""
    return Path(os.environ.get(MODELS_ENV) or SHIPPED_MODELS)


# The reconstruction-accuracy floors of issue "Families" (fraction of reconstructions the
# evaluation classifier labels as their source): a card below its floor is listed with a mark.
RECON_ACCURACY_FLOORS: dict[str, dict[str, float]] = {"mnist": {"ae": 0.95, "*": 0.86}}


def recon_accuracy_floor(family: str, dataset: str) -> float | None:
    """The floor for ``family`` on ``dataset`` (None where the project sets none)."""
    floors = RECON_ACCURACY_FLOORS.get(dataset, {})
    return floors.get(family, floors.get("*"))


def model_stem(name: str, seed: int | None) -> str:
    """File stem of a zoo entry: ``classifier`` or ``<family>-seed<S>``."""
    return name if seed is None else f"{name}-seed{seed}"


@dataclass(frozen=True)
class Card:
    """A model card as stored next to its weights (``<stem>.json``)."""

    path: Path  # the card file
    data: dict[str, Any]

    @property
    def weights_path(self) -> Path:
        return self.path.with_name(self.data["weights"])

    @property
    def name(self) -> str:
        return str(self.data["name"])

    @property
    def seed(self) -> int | None:
        return self.data.get("seed")

    def summary(self) -> dict[str, Any]:
        """The fields ``robust-vae models --json`` prints."""
        return {
            "name": self.data["name"],
            "dataset": self.data["dataset"],
            "family": self.data["family"],
            "seed": self.data.get("seed"),
            "path": str(self.weights_path),
            "metrics": self.data.get("metrics", {}),
        } | ({"disentanglement": self.disentanglement_scores} if self.disentanglement_scores else {}) \
          | ({"below_floor": self.below_floor} if self.below_floor is not None else {}) \
          | ({"notes": self.notes} if self.notes else {})

    @property
    def notes(self) -> list[str]:
        """Free-text notes recorded with :func:`add_note` (e.g. why a model misses its floor)."""
        notes = self.data.get("notes")
        return [str(n) for n in notes] if isinstance(notes, list) else []

    @property
    def recon_floor(self) -> float | None:
        """The ``recon_accuracy`` floor of the card's family on its dataset (None: none set)."""
        return recon_accuracy_floor(str(self.data["family"]), str(self.data["dataset"]))

    @property
    def below_floor(self) -> bool | None:
        """Whether ``recon_accuracy`` is under :attr:`recon_floor` (None: no floor or no
        accuracy recorded)."""
        accuracy = self.data.get("metrics", {}).get("recon_accuracy")
        floor = self.recon_floor
        if floor is None or not isinstance(accuracy, (int, float)):
            return None
        return float(accuracy) < floor

    @property
    def disentanglement_scores(self) -> dict[str, float]:
        """The scores ``robust-vae disentanglement`` recorded in the card (empty if none)."""
        record = self.data.get("disentanglement")
        scores = record.get("scores") if isinstance(record, dict) else None
        return {k: v for k, v in scores.items() if isinstance(v, float)} if isinstance(scores, dict) else {}

    @property
    def disentanglement_factors(self) -> str | None:
        """What the recorded scores measure against: ``"ground truth"`` (dSprites' factors) or
        ``"class"`` (the class as the only factor); None without scores."""
        record = self.data.get("disentanglement")
        if not isinstance(record, dict) or not self.disentanglement_scores:
            return None
        return str(record.get("factors", "ground truth"))


def save_weights(module: nn.Module, weights_path: Path, card: dict[str, Any]) -> Card:
    """Write ``module``'s state as safetensors plus its card (with the file's sha256)."""
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    tmp = weights_path.with_suffix(".tmp")
    save_file(state, str(tmp))
    os.replace(tmp, weights_path)
    card = dict(card, weights=weights_path.name, sha256=sha256_of(weights_path))
    card_path = weights_path.with_suffix(".json")
    card_path.write_text(json.dumps(card, indent=2, sort_keys=False) + "\n")
    return Card(card_path, card)


# what identifies the weights: a card update may add results but never change these
IDENTITY_FIELDS = ("name", "dataset", "family", "seed", "weights", "sha256", "config_class", "config", "steps")


def update_card(card: Card, **fields: Any) -> Card:
    """Add or replace top-level ``fields`` (results such as ``disentanglement=...``) in the card
    file and return the new card. Only the JSON is rewritten (atomically, in the format
    :func:`save_weights` writes); the weights file is not touched, so its sha256 stays valid.
    The fields that identify the weights (:data:`IDENTITY_FIELDS`) cannot be changed.
    """
    fixed = sorted(set(fields) & set(IDENTITY_FIELDS))
    if fixed:
        raise ZooError(f"update_card cannot change {', '.join(fixed)} of {card.path}: they identify the weights")
    current = read_card(card.path)  # the file as it is now, not as it was when ``card`` was read
    if current.data["sha256"] != card.data["sha256"]:
        raise ZooError(f"model card {card.path} changed since it was read (its sha256 differs): rerun the command")
    data = dict(current.data, **fields)
    text = json.dumps(data, indent=2, sort_keys=False) + "\n"
    tmp = card.path.with_name(f".{card.path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, card.path)
    finally:
        tmp.unlink(missing_ok=True)
    return Card(card.path, data)


def add_note(card: Card, note: str) -> Card:
    """Append ``note`` (one line of prose) to the card's ``notes``; a note already there is kept once."""
    note = " ".join(note.split())
    if not note:
        raise ZooError("a card note must not be empty")
    notes = card.notes
    return update_card(card, notes=notes if note in notes else [*notes, note])


def read_card(card_path: Path) -> Card:
    try:
        data = json.loads(card_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ZooError(f"model card {card_path} cannot be read ({error}): restore it from git") from None
    if not isinstance(data, dict):
        raise ZooError(f"model card {card_path} is not a JSON object: restore it from git")
    for key in ("name", "dataset", "family", "weights", "sha256"):
        if key not in data:
            raise ZooError(f"model card {card_path} lacks the field {key!r}: restore it from git")
        if not isinstance(data[key], str) or not data[key]:
            raise ZooError(f"model card {card_path}: {key!r} must be a non-empty string: restore it from git")
    weights = data["weights"]
    if Path(weights).name != weights or weights in (".", "..") or not weights.endswith(".safetensors"):
        raise ZooError(f"model card {card_path}: 'weights' must name a .safetensors file next to the card, "
                       f"got {weights!r}: restore it from git")
    if "config" in data and not isinstance(data["config"], dict):
        raise ZooError(f"model card {card_path}: 'config' must be a JSON object of the family's config fields, "
                       f"got {type(data['config']).__name__}: restore it from git or retrain")
    return Card(card_path, data)


def list_cards(dataset: str | None = None, root: Path | None = None) -> list[Card]:
    """Every card under ``root/<dataset>/`` (all datasets when ``dataset`` is None)."""
    root = root or models_root()
    folders = [root / dataset] if dataset else sorted(p for p in root.glob("*") if p.is_dir())
    cards = []
    for folder in folders:
        for card_path in sorted(folder.glob("*.json")):
            card = read_card(card_path)
            if card.weights_path.exists():
                cards.append(card)
    return cards


def find_card(name: str, dataset: str, seed: int | None, root: Path | None = None) -> Card:
    """The card of model ``name`` (seed ``seed``) for ``dataset``; an unknown dataset is named as such."""
    dataset_source(dataset)
    root = root or models_root()
    card_path = root / dataset / f"{model_stem(name, seed)}.json"
    if not card_path.exists():
        available = [
            f"{c.name}" + ("" if c.seed is None else f" (seed {c.seed})")
            for c in list_cards(dataset, root)
        ]
        listing = ", ".join(available) if available else "none"
        raise ZooError(
            f"no shipped model {model_stem(name, seed)!r} for dataset {dataset!r} in {root / dataset}: "
            f"available: {listing} (train one with `robust-vae train --model {name} --dataset {dataset}`)"
        )
    return read_card(card_path)


def load_state(card: Card, module: nn.Module) -> nn.Module:
    """Verify the weights file against the card and the module's architecture, then load it."""
    weights = card.weights_path
    if not weights.exists():
        raise ZooError(f"weights file {weights} named by {card.path} is missing: restore it from git")
    actual = sha256_of(weights)
    if actual != card.data["sha256"]:
        raise ZooError(
            f"weights file {weights} does not match the sha256 in its card "
            f"(expected {card.data['sha256'][:12]}..., got {actual[:12]}...): the file is corrupt "
            f"or was modified; restore it with `git checkout -- {weights}` or retrain it"
        )
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as error:
        raise ZooError(f"weights file {weights} cannot be read ({error}): restore it from git") from None
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise ZooError(
            f"weights file {weights} does not fit the architecture in its card "
            f"(missing {missing[:3]}, unexpected {extra[:3]}): retrain it"
        )
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise ZooError(
                f"weights file {weights}: tensor {key} has shape {tuple(state[key].shape)}, "
                f"the architecture needs {tuple(tensor.shape)}: retrain it"
            )
    module.load_state_dict(state)
    return module.eval()
