"""Training: resumable VAE training with the thesis schedule, and the evaluation classifier."""

from robust_vae.training.classifier import ClassifierConfig, train_classifier
from robust_vae.training.vae import TrainResult, evaluate_vae, train_vae

__all__ = ["ClassifierConfig", "train_classifier", "TrainResult", "evaluate_vae", "train_vae"]
