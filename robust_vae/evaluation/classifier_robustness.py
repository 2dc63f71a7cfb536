"""The discriminative baseline: the evaluation classifier's own robustness under the same foolbox
attack and ε that the classifier-guided attacks use on VAEs (``robust-vae classifier-robustness``).

The success-matrix machinery runs unchanged on :class:`IdentityModel` (x̂(x) = x): the ``e2e``
attack on it is the targeted foolbox attack on the classifier itself, and every cell means what
it means for a VAE, with "reconstruction" read as "the image": for each ordered pair (s, t),
sources the classifier labels s are attacked towards class t; AS target = #{classifier(x*) = t}/N,
AS ignore-target = #{classifier(x*) ≠ s}/N. The "latent distance" column is the pixel L2
distance to the target image. Besides the matrices, the result records the clean accuracy on the
whole test split and the robust accuracy under the same foolbox attack run untargeted
(``Misclassification(labels)``) on the distinct source images of the sample.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from robust_vae.attacks.base import Attack
from robust_vae.attacks.e2e import EndToEndAttack
from robust_vae.attacks.foolbox_base import run_foolbox
from robust_vae.core.devices import model_device
from robust_vae.core.errors import ConfigError
from robust_vae.data import Dataset
from robust_vae.evaluation.success_matrix import SuccessMatrix, library_versions, success_matrix
from robust_vae.models.base import LatentParams
from robust_vae.models.classifier import accuracy
from robust_vae.report.tables import markdown_table

SUMMARY_COLUMNS = ["epsilon", "norm", "clean_accuracy", "robust_accuracy", "robust_n",
                   "as_target", "as_ignore_target", "examples_attacked"]


class IdentityModel(nn.Module):
    """The model interface with x̂(x) = x, so that attacking "the model" attacks the classifier.

    encode(x) -> LatentParams(vec(x), 0, None); attack_code(x) = vec(x) (N, C·H·W);
    decode(z) reshapes to (N, *image_shape). Holds one empty parameter so that it has a device.
    """

    def __init__(self, image_shape: tuple[int, ...] = (1, 32, 32)) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.anchor = nn.Parameter(torch.zeros(0), requires_grad=False)

    def encode(self, x: torch.Tensor) -> LatentParams:
        flat = x.flatten(1)
        return LatentParams(flat, torch.zeros_like(flat), None)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z.view(-1, *self.image_shape)

    def deterministic_code(self, params: LatentParams) -> torch.Tensor:
        return params.mean

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def relaxed_reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def attack_code(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


@dataclass
class RobustnessResult:
    """summary: one row per ε (:data:`SUMMARY_COLUMNS`); matrices: the success matrix per ε."""

    summary: pd.DataFrame
    matrices: dict[float, SuccessMatrix]
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_markdown(self) -> str:
        header = ["ε", "norm", "clean accuracy", "robust accuracy", "AS target", "AS ignore-target"]
        rows = [[f"{row.epsilon:g}", row.norm, f"{100 * row.clean_accuracy:.2f}%",
                 f"{100 * row.robust_accuracy:.2f}% (n = {row.robust_n})", f"{100 * row.as_target:.2f}%",
                 f"{100 * row.as_ignore_target:.2f}%"] for row in self.summary.itertuples()]
        cells = (self.matrices[next(iter(self.matrices))].cells if self.matrices else pd.DataFrame())
        title = f"# Evaluation classifier under {self.metadata.get('recipe', 'the attack')}\n\n"
        note = (f"\nAS target / AS ignore-target: means over the {len(cells)} ordered class pairs of the targeted "
                "attack; robust accuracy: the same attack run untargeted on the distinct source images.\n")
        return title + markdown_table(header, rows) + "\n" + note

    def save(self, out_dir: str | Path) -> None:
        """robustness.csv, robustness.md, robustness.json and one full report per ε in eps-<ε>/."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for epsilon, matrix in self.matrices.items():
            matrix.save(out / eps_folder(epsilon))
        self.summary.to_csv(out / "robustness.csv", index=False, float_format="%.6f")
        (out / "robustness.md").write_text(self.to_markdown())
        (out / "robustness.json").write_text(json.dumps(
            self.metadata | {"summary": self.summary.to_dict(orient="records")}, indent=2, default=str) + "\n")


def eps_folder(epsilon: float) -> str:
    return f"eps-{epsilon:g}"


def robust_accuracy(classifier: nn.Module, attack: EndToEndAttack, images: torch.Tensor, labels: torch.Tensor,
                    epsilon: float, seeds: torch.Tensor, batch_size: int = 512) -> float:
    """Accuracy of ``classifier`` on the adversarials of the untargeted foolbox attack at ``epsilon``."""
    device = model_device(classifier)
    correct = 0
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].to(device)
        y = labels[start:start + batch_size].to(device)
        fb_attack = attack.foolbox_attack(seeds[start:start + batch_size])
        adversarial, _, _ = run_foolbox(classifier, fb_attack, x, y, epsilon, targeted=False)
        with torch.no_grad():
            correct += int((classifier(adversarial).argmax(-1) == y).sum())
    return correct / max(1, len(images))


def classifier_robustness(
    classifier: nn.Module,
    dataset: Dataset,
    attack: Attack,
    epsilons: list[float] | None = None,
    per_pair: int | None = 20,
    seed: int = 0,
    *,
    batch_size: int = 512,
    out_dir: str | Path | None = None,
    metadata: dict[str, Any] | None = None,
    restart: bool = False,
    progress: bool = True,
) -> RobustnessResult:
    """The classifier's clean accuracy, robust accuracy and targeted success matrix per ε.

    ``attack`` must be an ``e2e`` attack (its foolbox method and settings are used as they are,
    with ``epsilon`` replaced by each value of ``epsilons``; default: the attack's own ε). With
    ``out_dir`` each ε's success matrix is persisted under ``out_dir/eps-<ε>/`` and resumes.
    """
    if not isinstance(attack, EndToEndAttack):
        raise ConfigError(
            f"classifier-robustness attacks the classifier itself, so it needs an e2e recipe "
            f"(e2e-linf, e2e-l2, ...), not the {attack.name!r} attack")
    epsilons = [float(attack.epsilon)] if not epsilons else [float(e) for e in epsilons]
    if len(set(epsilons)) < len(epsilons):
        raise ConfigError(f"--eps values must be distinct, got {epsilons}")
    device = model_device(classifier)
    classifier = classifier.eval()
    model = IdentityModel(tuple(dataset.images.shape[1:])).to(device)
    clean = accuracy(classifier, dataset)
    meta = dict(metadata or {})
    rows, matrices = [], {}
    for epsilon in epsilons:
        eps_attack = dataclasses.replace(attack, epsilon=epsilon)  # validates ε
        started = time.perf_counter()
        matrix = success_matrix(
            model, classifier, dataset, eps_attack, per_pair=per_pair, seed=seed, batch_size=batch_size,
            out_dir=None if out_dir is None else Path(out_dir) / eps_folder(epsilon),
            metadata=meta | {"epsilon": epsilon}, restart=restart, progress=progress)
        index = np.unique(matrix.examples["source_index"].to_numpy().astype(np.int64))
        robust = robust_accuracy(classifier, eps_attack, dataset.images[index], dataset.labels[index],
                                 epsilon, seeds=torch.from_numpy(index) + 7_000_000 + seed, batch_size=batch_size)
        matrix.metadata.update({"clean_accuracy": clean, "robust_accuracy": robust, "robust_n": int(len(index)),
                                "wall_seconds_this_call": round(time.perf_counter() - started, 2)})
        overall = matrix.marginals().query("kind == 'overall'").iloc[0]
        rows.append({"epsilon": epsilon, "norm": eps_attack.budget_norm, "clean_accuracy": clean,
                     "robust_accuracy": robust, "robust_n": int(len(index)),
                     "as_target": float(overall["as_target"]), "as_ignore_target": float(overall["as_ignore_target"]),
                     "examples_attacked": int(len(matrix.examples))})
        matrices[epsilon] = matrix
    meta.update({
        "dataset": dataset.name, "attack": attack.name, "hyperparameters": attack.hyperparameters(),
        "epsilons": epsilons, "per_pair": per_pair, "seed": seed, "clean_accuracy": clean,
        "clean_accuracy_n": len(dataset), "device": str(device), "versions": library_versions(),
        "conventions": {
            "model": "identity (x̂(x) = x): the e2e attack attacks the classifier itself",
            "kept": "sources the classifier labels as the source",
            "robust_accuracy": "the same foolbox attack, untargeted (Misclassification), on the distinct "
                               "source images of the sampled pairs",
            "latent_distance": "pixel L2 distance to the target image",
        },
    })
    return RobustnessResult(pd.DataFrame(rows, columns=SUMMARY_COLUMNS), matrices, meta)
