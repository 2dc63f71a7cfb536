"""Evaluation: success matrices (protocol §4) and their run folders, classifier robustness."""

from robust_vae.evaluation.success_matrix import SuccessMatrix, success_matrix

__all__ = ["SuccessMatrix", "success_matrix"]
