"""Latent traversals: one row per latent, the categorical last (as in the thesis figures).

A conditional model (``cond-betavae``) is traversed under the image's label, and its last row
switches the label through every class with the image's Gaussian code fixed (style kept, class
changed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn

from robust_vae.core.devices import model_device
from robust_vae.core.errors import ConfigError
from robust_vae.models import attackable
from robust_vae.models.conditional import TrueLabel, is_conditional


@torch.no_grad()
def code_scale(model: nn.Module, images: torch.Tensor, batch: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-latent mean and standard deviation, (D,) each, of the deterministic codes of
    ``images`` (N, C, H, W): the units a model without a prior (``ae``) is traversed in, since
    its codes are on no fixed scale."""
    net = attackable(model)
    device = model_device(model)
    means = torch.cat([net.encode(images[i:i + batch].to(device)).mean for i in range(0, len(images), batch)])
    return means.mean(dim=0), means.std(dim=0)


@torch.no_grad()
def traversal_grid(model: nn.Module, image: torch.Tensor, span: float = 3.0, steps: int = 10,
                   label: int | None = None,
                   scale: tuple[torch.Tensor, torch.Tensor] | None = None) -> list[np.ndarray]:
    """Decoded images for each latent varied around the deterministic code of ``image``.

    image: (1, 32, 32) in [0, 1]. Returns one (steps, 32, 32) array per Gaussian latent
    (values linspace(-span, span, steps) in the prior's units, or with ``scale`` = (mean, std)
    of (D,) each, mean + linspace(-span, span)·std: :func:`code_scale`; others fixed at the
    image's means) and, when the
    model has a categorical, a (K, 32, 32) array with each category switched on in turn. A
    conditional model needs the image's ``label``; its last row is the label switched through
    the K classes.
    """
    device = model_device(model)
    if is_conditional(model):
        if label is None:
            raise ConfigError(f"{getattr(model, 'family', 'this model')} is conditioned on the class label: "
                              "pass the image's label to traverse it")
        view = TrueLabel(model, label)
        rows = traversal_grid(view, image, span, steps)
        mean = view.encode(image.unsqueeze(0).to(device)).mean
        conditional: Any = model
        k = int(conditional.num_classes)
        labels = torch.arange(k, device=device)
        rows.append(conditional.decode_with(mean.repeat(k, 1), labels)[:, 0].cpu().numpy())
        return rows
    net = attackable(model)
    params = net.encode(image.unsqueeze(0).to(device))
    code = net.deterministic_code(params)[0]
    latent_dim = params.mean.shape[1]
    rows = []
    values = torch.linspace(-span, span, steps, device=device)
    for dim in range(latent_dim):
        codes = code.repeat(steps, 1)
        codes[:, dim] = values if scale is None else scale[0][dim].to(device) + values * scale[1][dim].to(device)
        rows.append(net.decode(codes)[:, 0].cpu().numpy())
    if params.logits is not None:
        k = params.logits.shape[1]
        codes = code.repeat(k, 1)
        codes[:, latent_dim:] = F.one_hot(torch.arange(k, device=device), k).to(codes)
        rows.append(net.decode(codes)[:, 0].cpu().numpy())
    return rows


def plot_traversal(model: nn.Module, image: torch.Tensor, path: str | Path, span: float = 3.0,
                   steps: int = 10, title: str = "", label: int | None = None,
                   scale: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
    """Write the traversal grid as a PNG: rows z1..zD, then the categorical (or label) row;
    the subtitle says the rows' range."""
    rows = traversal_grid(model, image, span, steps, label, scale)
    columns = max(len(r) for r in rows)
    conditional = is_conditional(model)
    has_categorical = conditional or attackable(model).encode(
        image.unsqueeze(0).to(model_device(model))).logits is not None
    last_name, last_text = ("y", "last row: the label 0..K-1") if conditional else ("c", "last row: categorical one-hot 0..K-1")
    fig = Figure(figsize=(0.9 * columns + 1.2, 0.9 * len(rows) + 0.8))
    axes = fig.subplots(len(rows), columns, squeeze=False)
    for r, row in enumerate(rows):
        for c in range(columns):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(row):
                ax.imshow(row[c], cmap="gray", vmin=0, vmax=1)
        is_cat = has_categorical and r == len(rows) - 1
        axes[r][0].set_ylabel(last_name if is_cat else f"z{r + 1}", rotation=0, labelpad=14, va="center")
    if title:
        ranges = f"Gaussian rows: {-span:g} → {span:g}" if scale is None else \
            f"rows: test codes' mean {-span:g} → {span:g} standard deviations"
        fig.suptitle(f"{title}\n{ranges}" + (f"; {last_text}" if has_categorical else ""), fontsize=9)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
