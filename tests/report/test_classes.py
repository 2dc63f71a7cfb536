"""Reports for any number of classes K (robust_vae.report.classes, .success, .html).

Synthetic cells tables of K = 3 (dSprites' shapes) and K = 12 (named and unnamed classes) go
through every renderer: matrix strings, LaTeX, Markdown, marginals, figures (their tick labels
read back from the matplotlib figure) and the HTML run page (its key lines).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from robust_vae.report import html
from robust_vae.report import success as rep
from robust_vae.report.classes import ClassLabels, for_dataset, from_metadata, shared_classes

TWELVE = tuple(f"class-{chr(ord('a') + i)}" for i in range(12))


def make_cells(k: int, seed: int = 0) -> pd.DataFrame:
    """One row per ordered pair s != t: binomial hits, random distances (rendering input only)."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(k):
        for t in range(k):
            if s != t:
                n = int(rng.integers(20, 40))
                ignore = int(rng.binomial(n, 0.5))
                target = int(rng.binomial(ignore, 0.5))
                rows.append(dict(source=s, target=t, n_pairs=n, n=n, hits_target=target, hits_ignore_target=ignore,
                                 as_target=target / n, as_ignore_target=ignore / n, mean_l2=float(rng.uniform(1, 3)),
                                 mean_linf=0.1, mean_latent_distance=1.0))
    return pd.DataFrame(rows)


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> list[Figure]:
    """The figures the plot functions save, kept for their tick labels."""
    saved: list[Figure] = []
    real = rep.save_figure

    def keep(fig: Figure, path: Any, dpi: int = 120) -> None:
        saved.append(fig)
        real(fig, path, dpi)

    monkeypatch.setattr(rep, "save_figure", keep)
    return saved


def _ticks(labels: Any) -> list[str]:
    return [label.get_text() for label in labels]


# ------------------------------------------------------------------------- ClassLabels
def test_datasets_give_their_noun_and_names() -> None:
    assert for_dataset("mnist") == ClassLabels("digit", tuple("0123456789"), 10)
    assert for_dataset("dsprites") == ClassLabels("shape", ("square", "ellipse", "heart"), 3)
    fashion = for_dataset("fashion-mnist")
    assert fashion.noun == "class" and fashion.names[0] == "T-shirt/top" and fashion.named
    assert for_dataset("imagefolder") == ClassLabels()  # named by its files, recorded by each run
    assert for_dataset("no-such-dataset") == ClassLabels() == for_dataset(None)


def test_the_key_line_only_when_names_are_not_the_indices() -> None:
    assert not for_dataset("mnist").named and for_dataset("mnist").key() == ""
    shapes = for_dataset("dsprites")
    assert shapes.key() == "Classes: 0 = square, 1 = ellipse, 2 = heart."
    assert shapes.key([2, 0]) == "Classes: 0 = square, 2 = heart."
    assert shapes.ticks([0, 2]) == ["square", "heart"] and shapes.rotate_ticks([0]) and not shapes.rotate_ticks([])
    assert for_dataset("mnist").ticks(range(3)) == ["0", "1", "2"]
    with pytest.raises(ValueError, match="3 class names for 2 classes"):
        ClassLabels("shape", ("a", "b", "c"), 2)


def test_run_json_fields_and_the_fallback_for_older_runs() -> None:
    recorded = ClassLabels("shape", ("a", "b", "c"), 3)
    assert from_metadata(recorded.metadata()) == recorded
    assert from_metadata(json.loads(json.dumps({"dataset": "mnist", **recorded.metadata()}))) == recorded
    old = from_metadata({"dataset": "mnist", "model": "vae"})  # before run.json recorded the classes
    assert old == ClassLabels("digit", tuple("0123456789"), None)  # K: counted from the cells, as before
    assert from_metadata({}, {"dataset": "dsprites"}).noun == "shape"  # the dataset from config.json
    assert from_metadata({"model": "vae"}) == ClassLabels()
    assert from_metadata({"num_classes": 12}) == ClassLabels("class", (), 12)
    assert shared_classes([recorded, recorded]) == recorded
    assert shared_classes([recorded, ClassLabels("shape")]) == ClassLabels("shape")
    assert shared_classes([recorded, for_dataset("mnist")]) == ClassLabels() == shared_classes([])


# ------------------------------------------------------------------------- K = 3
def test_three_shapes_give_a_3_by_3_matrix_of_6_cells_with_shape_captions(figures: list[Figure],
                                                                          tmp_path: Path) -> None:
    cells, shapes = make_cells(3), for_dataset("dsprites")
    assert len(cells) == 6
    strings = rep.matrix_strings(cells, shapes.num_classes)
    assert strings.shape == (3, 3) and [strings.loc[i, i] for i in range(3)] == ["-"] * 3
    tex = rep.matrix_latex(cells, caption=f"Success per source {shapes.noun}.", classes=shapes)
    assert "\\begin{tabular}{cccc}" in tex and "Target & 0 & 1 & 2 \\\\" in tex
    assert "\\caption{Success per source shape. Classes: 0 = square, 1 = ellipse, 2 = heart.}" in tex
    marg = rep.marginals(cells)
    assert list(marg["kind"]).count("source") == 3 and list(marg["kind"]).count("target") == 3
    m_tex = rep.marginals_latex({"run": marg}, caption="Per source shape.", classes=shapes)
    assert "\\caption{Per source shape. Classes: 0 = square, 1 = ellipse, 2 = heart.}" in m_tex
    assert rep.marginals_markdown({"run": marg}, shapes).endswith("\n\nClasses: 0 = square, 1 = ellipse, 2 = heart.")
    summary = rep.summary_markdown(cells, marg, "dsprites", {}, classes=shapes)
    assert summary.count("Classes: 0 = square, 1 = ellipse, 2 = heart.") == 2 and "over 6 cells" in summary
    rep.plot_heatmaps(cells, tmp_path / "heat.png", classes=shapes)
    rep.plot_marginal_bars({"run": marg}, tmp_path / "bars.png", classes=shapes)
    heat, bars = figures
    for ax in heat.axes[:2]:
        assert _ticks(ax.get_xticklabels()) == ["square", "ellipse", "heart"]
        assert _ticks(ax.get_yticklabels()) == ["square", "ellipse", "heart"]
        assert ax.get_xticklabels()[0].get_rotation() == 45  # longer than 3 characters: rotated
    assert _ticks(bars.axes[0].get_xticklabels()) == ["square", "ellipse", "heart"]


def test_unnamed_classes_keep_their_indices_and_no_key(figures: list[Figure], tmp_path: Path) -> None:
    cells, digits = make_cells(3), for_dataset("mnist")
    marg = rep.marginals(cells)
    assert "Classes" not in rep.summary_markdown(cells, marg, "mnist", {}, classes=digits)
    assert rep.marginals_markdown({"run": marg}, digits) == rep.marginals_markdown({"run": marg})
    assert rep.matrix_latex(cells, classes=digits) == rep.matrix_latex(cells, num_classes=10)  # K = 10, no key
    rep.plot_heatmaps(cells, tmp_path / "heat.png", classes=digits)
    assert _ticks(figures[0].axes[0].get_xticklabels()) == [str(c) for c in range(10)]
    assert figures[0].axes[0].get_xticklabels()[0].get_rotation() == 0


# ------------------------------------------------------------------------- K = 12
@pytest.mark.parametrize("names", [(), TWELVE], ids=["unnamed", "named"])
def test_twelve_classes_give_a_12_by_12_matrix_of_132_cells(names: tuple[str, ...], figures: list[Figure],
                                                            tmp_path: Path) -> None:
    cells, classes = make_cells(12), ClassLabels("class", names, 12)
    assert len(cells) == 12 * 11
    strings = rep.matrix_strings(cells, 12)
    assert strings.shape == (12, 12) and list(strings.columns) == list(range(12))
    assert [strings.loc[i, i] for i in range(12)] == ["-"] * 12 and (strings != "n/a").all().all()
    tex = rep.matrix_latex(cells, classes=classes)
    assert f"\\begin{{tabular}}{{c{'c' * 12}}}" in tex
    assert "Target & " + " & ".join(map(str, range(12))) + " \\\\" in tex
    assert sum(line.startswith(f"{s} & ") for line in tex.splitlines() for s in range(12)) == 12
    marg = rep.marginals(cells)
    assert sorted(marg.loc[marg["kind"] == "source", "cls"]) == list(range(12))
    frame = rep.marginals_csv_frame({"run": marg})
    assert list(frame["source"]) == [str(c) for c in range(12)] + ["Mean"]
    summary = rep.summary_markdown(cells, marg, "twelve", {}, classes=classes)
    assert "| source \\ target | " + " | ".join(map(str, range(12))) + " |" in summary
    assert "over 132 cells" in summary
    key = "Classes: 0 = class-a, 1 = class-b, " if names else "Classes"
    assert (summary.count(key) == 2) if names else key not in summary
    assert ("class-l" in tex) == bool(names)
    rep.plot_heatmaps(cells, tmp_path / "heat.png", classes=classes)
    rep.plot_marginal_bars({"run": marg}, tmp_path / "bars.png", classes=classes)
    expected = list(names) if names else [str(c) for c in range(12)]
    heat, bars = figures
    assert _ticks(heat.axes[0].get_xticklabels()) == expected == _ticks(bars.axes[0].get_xticklabels())
    assert len(heat.axes[0].texts) == 132  # every off-diagonal cell annotated


def test_k_from_the_classes_when_a_class_has_no_cells() -> None:
    cells = make_cells(12)
    cells = cells[(cells["source"] != 11) & (cells["target"] != 11)]
    assert rep.matrix_strings(cells).shape == (11, 11)  # without K: the largest class seen plus one
    classes = ClassLabels("class", (), 12)
    assert rep.matrix_strings(cells, classes.num_classes).shape == (12, 12)
    assert "& 10 & 11 \\\\" in rep.matrix_latex(cells, classes=classes)
    summary = rep.summary_markdown(cells, rep.marginals(cells), "t", {}, classes=classes)
    assert "| 11 | n/a | n/a |" in summary


# ------------------------------------------------------------------------- the HTML page
def _run_folder(folder: Path, cells: pd.DataFrame, meta: dict[str, Any]) -> Path:
    folder.mkdir()
    cells.to_csv(folder / "cells.csv", index=False)
    rep.matrix_strings(cells, meta.get("num_classes")).to_csv(folder / "matrix.csv", index_label="source")
    rep.marginals(cells).to_csv(folder / "marginals.csv", index=False)
    (folder / "run.json").write_text(json.dumps(meta))
    return folder


def test_the_run_page_keys_named_classes_and_takes_k_from_run_json(tmp_path: Path) -> None:
    cells = make_cells(3)
    cells = cells[(cells["source"] != 2) & (cells["target"] != 2)]
    shapes = for_dataset("dsprites")
    folder = _run_folder(tmp_path / "shapes", cells, {"dataset": "dsprites", **shapes.metadata()})
    page = html.build_page(folder, folder)
    tables = {b.id: b for s in page.sections for b in s.blocks if isinstance(b, html.Table)}
    assert tables["marginals-source"].notes == ("Classes: 0 = square, 1 = ellipse.",)
    assert tables["matrix"].notes == ("Classes: 0 = square, 1 = ellipse, 2 = heart.",)
    target = tables["as-target-matrix"]
    assert target.header == ("source \\ target", "0", "1", "2") and len(target.rows) == 3  # K = 3 from run.json
    assert "Classes: 0 = square, 1 = ellipse, 2 = heart." in html.render_page(page)

    digits = _run_folder(tmp_path / "digits", cells, {"dataset": "mnist"})  # an older MNIST run.json
    tables = {b.id: b for s in html.build_page(digits, digits).sections for b in s.blocks
              if isinstance(b, html.Table)}
    assert tables["matrix"].notes == () and tables["marginals-source"].notes == ()
    assert len(tables["as-target-matrix"].rows) == 2  # K counted from the cells, as before


def test_the_study_page_says_the_noun_of_its_dataset(tmp_path: Path) -> None:
    for dataset, noun in (("dsprites", "shape"), ("mnist", "digit"), ("fashion-mnist", "class")):
        folder = tmp_path / dataset
        folder.mkdir()
        (folder / "study.toml").write_text(f'[study]\nname = "s"\ndataset = "{dataset}"\n')
        (folder / "marginals.csv").write_text("source,m AS target\n0,1.00\n1,2.00\nMean,1.50\n")
        page = html.build_page(folder, folder)
        table = next(b for s in page.sections for b in s.blocks if isinstance(b, html.Table) and b.id == "marginals")
        assert table.caption == f"Marginals per source {noun} (main recipe, mean over seeds), %"
        named = for_dataset(dataset).named
        assert table.notes == ((for_dataset(dataset).key([0, 1]),) if named else ())
