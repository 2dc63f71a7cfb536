"""The model zoo: shipped weights with JSON cards, verified on load (RobustBench style)."""

from robust_vae.core.hashing import sha256_of
from robust_vae.zoo.cards import (
    MODELS_ENV,
    RECON_ACCURACY_FLOORS,
    SHIPPED_MODELS,
    Card,
    add_note,
    find_card,
    list_cards,
    load_state,
    model_stem,
    models_root,
    read_card,
    recon_accuracy_floor,
    save_weights,
    update_card,
)
from robust_vae.zoo.loading import classifier_spec, load_classifier, load_classifier_with_card, load_model

__all__ = [
    "MODELS_ENV", "SHIPPED_MODELS", "RECON_ACCURACY_FLOORS", "Card", "add_note", "recon_accuracy_floor", "find_card", "list_cards", "load_state", "model_stem",
    "models_root", "read_card", "save_weights", "update_card", "sha256_of", "classifier_spec", "load_classifier", "load_classifier_with_card",
    "load_model",
]
