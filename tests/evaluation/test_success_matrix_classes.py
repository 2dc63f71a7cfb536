"""Success matrices for any number of classes K (robust_vae.evaluation.success_matrix).

A real run on dSprites (K = 3 shapes) through the whole code path: the pixel-identity model, a
nearest-neighbour classifier over the split (every clean image is labelled right), the thesis
latent attack for a few steps. It must give a 3 × 3 matrix of 6 cells whose reports say
"shape" and name the shapes, record K, the noun and the names in run.json, and re-render with K
from run.json. The per-example seeds must stay the old ones for K ≤ 10 and be distinct across
the cells for K > 10.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from robust_vae.attacks import load_attack
from robust_vae.cli.app import main
from robust_vae.data import Dataset, load_dataset
from robust_vae.evaluation.classifier_robustness import IdentityModel
from robust_vae.evaluation.success_matrix import PairPlan, SuccessMatrix, example_seeds, plan_pairs, success_matrix

SHAPES = ["square", "ellipse", "heart"]
KEY = "Classes: 0 = square, 1 = ellipse, 2 = heart."


class NearestNeighbour(nn.Module):
    """Logits = −squared pixel distance to each class's nearest image of ``images``."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> None:
        super().__init__()
        self.register_buffer("images", images.flatten(1).clone())
        self.labels = labels.clone()
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        distances = torch.cdist(x.flatten(1), self.images) ** 2  # (N, M)
        logits = torch.stack([-distances[:, self.labels == c].min(1).values for c in range(self.num_classes)], 1)
        return logits


@pytest.fixture(scope="module")
def shapes() -> Dataset:
    return load_dataset("dsprites", "test", samples=60)


@pytest.fixture(scope="module")
def run_dir(shapes: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dsprites-run")
    classifier = NearestNeighbour(shapes.images, shapes.labels, 3)
    model = IdentityModel(shapes.image_shape)
    result = success_matrix(model, classifier, shapes, load_attack("thesis", steps=3), per_pair=2, seed=0,
                            progress=False, metadata={"label": "identity", "model": "identity"})
    result.save(out, html=True)
    return out


def test_a_dsprites_run_is_3_by_3_with_6_cells(run_dir: Path) -> None:
    cells = pd.read_csv(run_dir / "cells.csv")
    assert len(cells) == 6 and set(zip(cells["source"], cells["target"])) == {
        (s, t) for s in range(3) for t in range(3) if s != t}
    assert (cells["n"] == 2).all()  # the nearest neighbour of a clean image is itself: every source kept
    matrix = pd.read_csv(run_dir / "matrix.csv", index_col="source", keep_default_na=False)
    assert matrix.shape == (3, 3) and list(matrix.columns) == ["0", "1", "2"]
    assert [matrix.iloc[i, i] for i in range(3)] == ["-", "-", "-"]
    marginals = pd.read_csv(run_dir / "marginals.csv")
    assert sorted(marginals.loc[marginals["kind"] == "source", "cls"]) == [0, 1, 2]


def test_run_json_records_k_the_noun_and_the_names(run_dir: Path) -> None:
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["dataset"] == "dsprites" and meta["pairs"] == 6
    assert (meta["num_classes"], meta["class_noun"], meta["class_names"]) == (3, "shape", SHAPES)


def test_the_reports_say_shape_and_name_the_shapes(run_dir: Path) -> None:
    matrix_tex = (run_dir / "matrix.tex").read_text()
    assert "\\begin{tabular}{cccc}" in matrix_tex and "Source $\\backslash$ Target & 0 & 1 & 2 \\\\" in matrix_tex
    assert KEY in matrix_tex
    marginals_tex = (run_dir / "marginals.tex").read_text()
    assert "per source shape, identity." in marginals_tex and KEY in marginals_tex
    assert "digit" not in matrix_tex + marginals_tex
    summary = (run_dir / "summary.md").read_text()
    assert summary.count(KEY) == 2  # under the per-source table and under the matrix
    assert "over 6 cells" in summary
    page = (run_dir / "index.html").read_text()
    assert KEY in page and "digit" not in page
    assert (run_dir / "heatmaps.png").stat().st_size > 0 and (run_dir / "examples.png").stat().st_size > 0


def test_rerendering_takes_k_from_run_json(run_dir: Path, tmp_path: Path) -> None:
    """A class without cells keeps its row and column: K comes from run.json, not from cells.csv."""
    folder = tmp_path / "run"
    folder.mkdir()
    for name in ("cells.csv", "run.json", "examples.csv.gz", "samples.npz"):
        (folder / name).write_bytes((run_dir / name).read_bytes())
    cells = pd.read_csv(folder / "cells.csv")
    cells[(cells["source"] != 2) & (cells["target"] != 2)].to_csv(folder / "cells.csv", index=False)
    assert main(["report", str(folder)]) == 0
    matrix = pd.read_csv(folder / "matrix.csv", index_col="source", keep_default_na=False)
    assert matrix.shape == (3, 3) and matrix.loc[2, "0"] == "n/a" and matrix.loc[0, "2"] == "n/a"
    assert "& 0 & 1 & 2 \\\\" in (folder / "matrix.tex").read_text()

    meta = json.loads((folder / "run.json").read_text())  # a run.json written before K was recorded
    for key in ("num_classes", "class_noun", "class_names"):
        del meta[key]
    (folder / "run.json").write_text(json.dumps(meta))
    assert main(["report", str(folder)]) == 0
    matrix = pd.read_csv(folder / "matrix.csv", index_col="source", keep_default_na=False)
    assert matrix.shape == (2, 2)  # the old fallback: the largest class in cells.csv plus one
    marginals_tex = (folder / "marginals.tex").read_text()
    assert "per source shape" in marginals_tex  # the noun and names from the dataset registry
    assert "Classes: 0 = square, 1 = ellipse." in marginals_tex


def test_comparison_of_two_runs_says_shape(run_dir: Path, tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for file in ("cells.csv", "run.json"):
            (tmp_path / name / file).write_bytes((run_dir / file).read_bytes())
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "both")]) == 0
    assert "per source shape." in (tmp_path / "both" / "marginals.tex").read_text()
    assert (tmp_path / "both" / "marginals.md").read_text().rstrip().endswith(KEY)


# ----------------------------------------------------------------- per-example seeds
def _plans(k: int, per_class: int = 4) -> list[PairPlan]:
    labels = torch.arange(k).repeat_interleave(per_class)
    return plan_pairs(labels, labels.numpy(), k, None, seed=3)


def test_seeds_of_up_to_ten_classes_are_the_old_ones() -> None:
    for k in (2, 3, 10):
        for plan in _plans(k):
            old = ((3 * 10 + plan.source) * 10 + plan.target) * 100_000 + np.nonzero(plan.kept)[0]
            assert example_seeds(3, plan, k).tolist() == old.tolist()


def test_seeds_of_twelve_classes_are_distinct_across_cells() -> None:
    plans = _plans(12)
    assert len(plans) == 132
    seeds = torch.cat([example_seeds(3, plan, 12) for plan in plans])
    assert len(seeds) == 132 * 4 and len(set(seeds.tolist())) == len(seeds)
    other_seed = torch.cat([example_seeds(4, plan, 12) for plan in plans])
    assert not set(seeds.tolist()) & set(other_seed.tolist())  # and distinct from the next run seed's


def test_a_class_outside_k_is_refused() -> None:
    plan = _plans(12)[-1]  # (11, 10)
    with pytest.raises(ValueError, match="outside the 10 classes"):
        example_seeds(0, plan, 10)


def test_a_twelve_class_run_plans_132_cells_and_saves_a_12_by_12_matrix(tmp_path: Path) -> None:
    """SuccessMatrix of K = 12 (no dataset registry entry: unnamed classes, noun "class")."""
    plans = _plans(12, per_class=1)
    rows = [{"source": p.source, "target": p.target, "n_pairs": 1, "n": 1, "hits_target": int(p.source % 2),
             "hits_ignore_target": 1, "as_target": 0.0, "as_ignore_target": 0.0, "mean_l2": 1.0,
             "mean_linf": 0.1, "mean_latent_distance": 0.5} for p in plans if p.source != 11]
    matrix = SuccessMatrix(pd.DataFrame(rows), pd.DataFrame(), metadata={"num_classes": 12, "label": "k12"})
    matrix.to_csv(tmp_path)
    matrix.to_latex(tmp_path)
    strings = pd.read_csv(tmp_path / "matrix.csv", index_col="source", keep_default_na=False)
    assert strings.shape == (12, 12) and (strings.loc[11].drop("11") == "n/a").all()
    tex = (tmp_path / "matrix.tex").read_text()
    assert f"\\begin{{tabular}}{{c{'c' * 12}}}" in tex and "& 10 & 11 \\\\" in tex
    assert "per source class, k12." in (tmp_path / "marginals.tex").read_text()
    assert "over 121 cells" in matrix.to_markdown()  # 11 sources × 11 targets
