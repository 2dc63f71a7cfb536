"""Have a model's disentanglement scores stopped changing? Its scores over its training snapshots.

``robust-vae train --snapshot-every N`` writes the weights every N steps as zoo entries of their
own (``<name>-step<k>``, with ``snapshot_of`` and ``snapshot_step`` in the card) next to the
final model. This module collects a model's snapshots and final card in step order, reads the
disentanglement scores recorded in each card (``robust-vae disentanglement``), and says whether
every score moved by less than a tolerance between the last two checkpoints: the evidence that a
schedule trains long enough that a study's scores are not still drifting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from robust_vae.core.errors import ZooError
from robust_vae.zoo import Card, list_cards

# the headline scores a study compares (``robust-vae disentanglement`` records more)
HEADLINE_SCORES = ("mig", "dci_disentanglement", "sap", "modularity", "factorvae_score", "betavae_score")
DEFAULT_TOLERANCE = 0.02


def card_step(card: Card) -> int:
    """The training step a card's weights are from (a snapshot's ``snapshot_step``, else ``steps``)."""
    step = card.data.get("snapshot_step", card.data.get("steps"))
    if not isinstance(step, int):
        raise ZooError(f"model card {card.path} records no training step ('steps'): retrain it")
    return step


def training_checkpoints(name: str, dataset: str, seed: int = 0, root: Path | None = None) -> list[Card]:
    """The snapshots of zoo model ``name`` (seed ``seed``) and its final card, in step order.

    Raises :class:`ZooError` when the zoo has no such model or it was trained without snapshots.
    """
    cards = [card for card in list_cards(dataset, root)
             if card.seed == seed and (card.name == name or card.data.get("snapshot_of") == name)
             and card.data["family"] != "classifier"]
    if not any(card.name == name for card in cards):
        raise ZooError(f"no shipped model {name!r} (seed {seed}) for dataset {dataset!r}: train it with "
                       f"`robust-vae train --model FAMILY --dataset {dataset} --snapshot-every N`")
    if len(cards) < 2:
        raise ZooError(f"{name!r} (seed {seed}) of {dataset!r} has no training snapshots: retrain it with "
                       "`robust-vae train ... --snapshot-every N`")
    return sorted(cards, key=card_step)


def score_trajectory(name: str, dataset: str, seed: int = 0, scores: tuple[str, ...] = HEADLINE_SCORES,
                     root: Path | None = None) -> pd.DataFrame:
    """One row per checkpoint of ``name``: ``model, seed, step, zoo_name, recon_bce`` and ``scores``
    (NaN where the card has no recorded score yet)."""
    rows = []
    for card in training_checkpoints(name, dataset, seed, root):
        recorded = card.disentanglement_scores
        recon = card.data.get("metrics", {}).get("recon_bce")
        rows.append({"model": name, "seed": seed, "step": card_step(card), "zoo_name": card.name,
                     "recon_bce": float(recon) if isinstance(recon, (int, float)) else math.nan,
                     **{score: recorded.get(score, math.nan) for score in scores}})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Settling:
    """How far one score moved between a model's last two checkpoints."""

    model: str
    seed: int
    score: str
    step_before: int
    step_last: int
    before: float
    last: float

    @property
    def change(self) -> float:
        return self.last - self.before

    def settled(self, tolerance: float = DEFAULT_TOLERANCE) -> bool:
        """|change| < ``tolerance`` (False when either checkpoint is unmeasured)."""
        return math.isfinite(self.change) and abs(self.change) < tolerance


def last_changes(trajectory: pd.DataFrame, scores: tuple[str, ...] = HEADLINE_SCORES) -> list[Settling]:
    """Per (model, seed) of ``trajectory`` (rows of :func:`score_trajectory`) and score: the last two
    checkpoints' values."""
    out = []
    for (model, seed), rows in trajectory.sort_values("step").groupby(["model", "seed"], sort=False):
        if len(rows) < 2:
            continue
        before, last = rows.iloc[-2], rows.iloc[-1]
        for score in scores:
            out.append(Settling(str(model), int(seed), score, int(before["step"]), int(last["step"]),
                                float(before[score]), float(last[score])))
    return out


def settling_frame(changes: list[Settling], tolerance: float = DEFAULT_TOLERANCE) -> pd.DataFrame:
    """:func:`last_changes` as a table: ``model, seed, score, step_before, step_last, before, last,
    change, settled``."""
    return pd.DataFrame([{"model": c.model, "seed": c.seed, "score": c.score, "step_before": c.step_before,
                          "step_last": c.step_last, "before": c.before, "last": c.last, "change": c.change,
                          "settled": c.settled(tolerance)} for c in changes])
