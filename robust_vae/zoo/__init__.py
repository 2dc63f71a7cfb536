"""The model zoo: shipped weights with JSON cards, verified on load (RobustBench style)."""

from robust_vae.core.hashing import sha256_of
from robust_vae.zoo.cards import (
    MODELS_ENV,
    SHIPPED_MODELS,
    Card,
    find_card,
    list_cards,
    load_state,
    model_stem,
    models_root,
    read_card,
    save_weights,
)
from robust_vae.zoo.loading import load_classifier, load_model

__all__ = [
    "MODELS_ENV", "SHIPPED_MODELS", "Card", "find_card", "list_cards", "load_state", "model_stem",
    "models_root", "read_card", "save_weights", "sha256_of", "load_classifier", "load_model",
]
