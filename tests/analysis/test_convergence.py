"""Scores over training snapshots (robust_vae.analysis.convergence, robust_vae.report.convergence
and ``robust-vae convergence``) on a small zoo of cards written here: the cards' recorded scores
are what is read, so no model is trained or scored."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.image import imread

from robust_vae.analysis.convergence import (
    HEADLINE_SCORES,
    last_changes,
    score_trajectory,
    settling_frame,
    training_checkpoints,
)
from robust_vae.core.errors import ZooError
from robust_vae.report.convergence import plot_score_trajectories, settling_markdown


def write_card(folder: Path, name: str, step: int, mig: float | None, snapshot_of: str | None = None) -> None:
    """A card (and a stand-in weights file: only cards are read here) of ``name`` at ``step``."""
    stem = f"{name}-seed0"
    (folder / f"{stem}.safetensors").write_bytes(b"not read")
    card: dict[str, object] = {"name": name, "dataset": "dsprites", "family": "vae", "seed": 0, "steps": step,
                               "weights": f"{stem}.safetensors", "sha256": "0" * 64,
                               "metrics": {"recon_bce": 100.0 - step / 1000}}
    if snapshot_of:
        card |= {"snapshot_of": snapshot_of, "snapshot_step": step}
    if mig is not None:
        card["disentanglement"] = {"scores": {"mig": mig, "sap": 0.05}}
    (folder / f"{stem}.json").write_text(json.dumps(card))


@pytest.fixture
def zoo(tmp_path: Path) -> Path:
    """vae: snapshots at 10k (unscored), 20k, 30k, final 40k; MIG 0.10 → 0.20 → 0.21; other: no snapshots."""
    folder = tmp_path / "zoo" / "dsprites"
    folder.mkdir(parents=True)
    write_card(folder, "vae-step20000", 20000, 0.10, "vae")
    write_card(folder, "vae-step10000", 10000, None, "vae")
    write_card(folder, "vae", 40000, 0.21)
    write_card(folder, "vae-step30000", 30000, 0.20, "vae")
    write_card(folder, "other", 40000, 0.3)
    return folder.parent


def test_checkpoints_come_in_step_order_with_the_final_last(zoo: Path) -> None:
    cards = training_checkpoints("vae", "dsprites", 0, zoo)
    assert [c.name for c in cards] == ["vae-step10000", "vae-step20000", "vae-step30000", "vae"]


def test_a_model_without_snapshots_or_unknown_is_refused(zoo: Path) -> None:
    with pytest.raises(ZooError, match="no training snapshots"):
        training_checkpoints("other", "dsprites", 0, zoo)
    with pytest.raises(ZooError, match="no shipped model 'nope'"):
        training_checkpoints("nope", "dsprites", 0, zoo)


def test_trajectory_reads_recorded_scores_and_leaves_unmeasured_as_nan(zoo: Path) -> None:
    frame = score_trajectory("vae", "dsprites", 0, root=zoo)
    assert list(frame["step"]) == [10000, 20000, 30000, 40000]
    assert math.isnan(frame["mig"].iloc[0]) and list(frame["mig"].iloc[1:]) == [0.10, 0.20, 0.21]
    assert frame["dci_disentanglement"].isna().all()  # not recorded in any card
    assert list(frame["recon_bce"]) == [90.0, 80.0, 70.0, 60.0]


def test_settling_compares_the_last_two_checkpoints(zoo: Path) -> None:
    frame = score_trajectory("vae", "dsprites", 0, root=zoo)
    changes = {c.score: c for c in last_changes(frame)}
    mig = changes["mig"]
    assert (mig.step_before, mig.step_last) == (30000, 40000)
    assert mig.change == pytest.approx(0.01)
    assert mig.settled(0.02) and not mig.settled(0.005)
    assert not changes["dci_disentanglement"].settled(1.0)  # unmeasured is never settled
    table = settling_frame(list(changes.values()), 0.02)
    assert set(table["score"]) == set(HEADLINE_SCORES)
    assert table.set_index("score").loc["mig", "settled"]
    markdown = settling_markdown(table, 0.02)
    assert "| `vae` | 0 | mig | 30,000 → 40,000 | 0.2000 | 0.2100 | +0.0100 | yes |" in markdown


def test_figure_has_a_panel_per_measured_score(zoo: Path, tmp_path: Path) -> None:
    frame = score_trajectory("vae", "dsprites", 0, root=zoo)
    fig = plot_score_trajectories(frame, HEADLINE_SCORES, tmp_path / "c.png", tolerance=0.02)
    assert [ax.get_title() for ax in fig.axes] == ["mig", "sap"]
    assert imread(tmp_path / "c.png").shape[2] in (3, 4)


def test_cli_writes_the_tables_and_figure(zoo: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "robust_vae", "convergence", "--dataset", "dsprites",
                             "--model", "vae", "--tolerance", "0.02", "--out", str(out)],
                            capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, ROBUST_VAE_MODELS=str(zoo)))
    assert result.returncode == 0, result.stderr
    assert "2 of 6 scores settled within ±0.02" in result.stdout  # mig and sap; the other four are unmeasured
    settling = pd.read_csv(out / "settling.csv")
    assert settling.set_index("score").loc["sap", "change"] == pytest.approx(0.0)
    assert (out / "convergence.png").is_file() and (out / "convergence.md").is_file()
