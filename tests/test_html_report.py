"""Tests for robust_vae.report.html (``robust-vae report --html``): pages of runs, comparisons, studies.

The unit tests parse the pages with ``html.parser`` and compare them with the CSVs they come
from: the committed standalone run (reports/mnist/jointvae/thesis-fast), the committed MNIST
study, a synthetic run whose labels and Markdown carry HTML that must come out escaped, and a
small study whose ``analysis/`` and ``robustness/`` files are written by the study's own writers
(``write_analysis``, ``save_card``, ``write_cards_table``) so that their layouts cannot drift.
The browser test drives Debian's ``chromium`` through ``chromedriver`` with Selenium (installed
by ``.ci/browser-deps.sh``); it skips, saying so, only when either binary is missing. Its
screenshots are kept in the pytest tmp folder and copied to build/test-artifacts/.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
from collections.abc import Iterator
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pytest

from robust_vae.analysis.models_frame import ModelsFrame
from robust_vae.analysis.study_analysis import Analysis, write_analysis
from robust_vae.analysis.study_robustness import (
    CARD_TEMPLATE,
    CardSpec,
    CardStatus,
    card_summaries,
    write_cards_table,
)
from robust_vae.cli.app import main
from robust_vae.core.errors import DataError
from robust_vae.evaluation.robustness import (
    RobustnessCard,
    RobustnessSettings,
    example_columns,
    per_class_means,
    save_card,
    summarise,
)
from robust_vae.report import html
from robust_vae.report.correlation import format_interval
from robust_vae.report.robustness import interval
from robust_vae.report.success import marginals, matrix_strings, plot_heatmaps
from robust_vae.report.tables import format_p

REPO = Path(__file__).resolve().parent.parent
RUN_DIR = REPO / "reports" / "mnist" / "jointvae" / "thesis-fast"
STUDY_DIR = REPO / "reports" / "mnist" / "study"
# The committed pages of the disentanglement-against-robustness studies (issue "Does disentanglement
# predict robustness?"); each is rerendered and compared, and loaded in the browser.
ANALYSIS_STUDIES = {"dsprites-study": REPO / "reports" / "dsprites" / "study",
                    "mnist-families": REPO / "reports" / "mnist" / "families",
                    "fashion-mnist-families": REPO / "reports" / "fashion-mnist" / "families"}
ARTIFACTS = REPO / "build" / "test-artifacts"
EVIL = '<script>alert("x")</script> & \'quoted\''


# ------------------------------------------------------------------------- parsing
class PageParser(HTMLParser):
    """Tables (by id: header, rows of cell text, attributes), images, links, scripts and ids."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, dict[str, Any]] = {}
        self.images: list[str] = []
        self.hrefs: list[str] = []
        self.ids: set[str] = set()
        self.scripts: list[dict[str, str | None]] = []
        self._table: dict[str, Any] | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._head = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            assert a["id"] not in self.ids, f"duplicate id {a['id']!r}"
            self.ids.add(str(a["id"]))
        if tag == "table":
            self._table = {"attrs": a, "header": [], "rows": []}
            self.tables[str(a.get("id"))] = self._table
        elif tag == "thead":
            self._head = True
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "img":
            self.images.append(str(a.get("src")))
        elif tag == "a":
            self.hrefs.append(str(a.get("href")))
        elif tag == "script":
            self.scripts.append(a)

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            if self._head:
                self._table["header"] = self._row
            else:
                self._table["rows"].append(self._row)
            self._row = None
        elif tag == "thead":
            self._head = False
        elif tag == "table":
            self._table = None


def parse(text: str) -> PageParser:
    parser = PageParser()
    parser.feed(text)
    return parser


def csv_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    return list(frame.columns), frame.to_numpy().tolist()


def as_percent(text: str) -> str:
    return format(Decimal(text).scaleb(2), "f")


# ------------------------------------------------------------------------- fixtures
def make_cells(k: int = 4, seed: int = 0) -> pd.DataFrame:
    """A synthetic cells table (random counts), as ``robust-vae attack`` writes it."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(k):
        for t in range(k):
            if s != t:
                n = int(rng.integers(20, 40))
                ignore = int(rng.integers(0, n))
                target = int(rng.integers(0, ignore + 1))
                rows.append(dict(source=s, target=t, n_pairs=n + 2, n=n, hits_target=target,
                                 hits_ignore_target=ignore, as_target=target / n, as_ignore_target=ignore / n,
                                 mean_l2=float(rng.uniform(1, 3)), mean_linf=0.1,
                                 mean_latent_distance=float(rng.uniform(0, 5))))
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def evil_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder whose label, command and summary.md carry HTML and a javascript: link."""
    folder = tmp_path_factory.mktemp("evil") / "run"
    folder.mkdir()
    cells = make_cells()
    cells.to_csv(folder / "cells.csv", index=False, float_format="%.6f")
    matrix_strings(cells).to_csv(folder / "matrix.csv", index_label="source")
    marginals(cells).to_csv(folder / "marginals.csv", index=False, float_format="%.6f")
    plot_heatmaps(cells, folder / "heatmaps.png", title=EVIL)
    meta = {"label": EVIL, "recipe": "thesis", "recipe_description": EVIL, "command": f"robust-vae attack {EVIL}",
            "hyperparameters": {"lr": 0.05, "note": EVIL}, "per_pair": None, "full": True}
    (folder / "run.json").write_text(json.dumps(meta))
    (folder / "javascript:alert(1)").write_text("a file name that must not become a javascript: link")
    (folder / "summary.md").write_text(f"# {EVIL}\n\n<img src=x onerror=alert(1)>\n\n[js](javascript:alert(1))\n\n"
                                       "![remote](https://example.invalid/x.png) ![local](heatmaps.png)\n")
    return folder


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The run and study pages written into a tmp folder (the committed folders stay untouched)."""
    out = tmp_path_factory.mktemp("pages")
    return {"run": html.write_html(RUN_DIR, out / "run.html"), "study": html.write_html(STUDY_DIR, out / "study.html")}


@pytest.fixture(scope="module")
def comparison_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("compare") / "compare-jointvae-vs-vae"
    folder.mkdir()
    shutil.copy(STUDY_DIR / "comparisons.csv", folder / "comparison.csv")
    shutil.copy(STUDY_DIR / "marginals.csv", folder / "marginals.csv")
    (folder / "comparison.md").write_text("| a | b |\n|---|---|\n| 1 | <b>2</b> |\n")
    return folder


ANALYSIS_STUDY = """
[study]
name = "tiny analysis study"
description = "Seven model seeds, their [analysis] and three report cards."
dataset = "mnist"
main_recipe = "thesis-fast"

[[runs]]
models = ["vae", "betavae-b2", "betavae-b4", "betavae-b8", "ae"]
seeds = [0, 1]

[robustness]
models = ["vae", "betavae-b2"]
examples = 8
radii = [0.5, 1.0]
metric_radius = 1.0

[analysis]
disentanglement = ["mig", "sap"]
robustness = ["thesis-fast:as_target", "robustness:margin"]
control = "recon_bce"
beta_line = "betavae"
bootstrap = 50
"""
CARDS = [("vae", 0), ("vae", 1), ("betavae-b2", 0)]


def models_frame() -> ModelsFrame:
    """Seven (model, seed) rows: ``robustness:margin`` a monotone function of the control (so that
    its pairs have no partial ρ), four betavae rows with three values of β."""
    rows = [("vae", "vae", 0, 1.0), ("vae", "vae", 1, 1.0), ("betavae-b2", "betavae", 0, 2.0),
            ("betavae-b4", "betavae", 0, 4.0), ("betavae-b8", "betavae", 0, 8.0), ("betavae-b8", "betavae", 1, 8.0),
            ("ae", "ae", 0, float("nan"))]
    recon = [100.0, 104.0, 110.0, 121.0, 135.0, 131.0, 90.0]
    frame = pd.DataFrame({"model": [r[0] for r in rows], "family": [r[1] for r in rows],
                          "seed": [r[2] for r in rows], "beta": [r[3] for r in rows], "recon_bce": recon,
                          "mig": [0.05, 0.07, 0.12, 0.2, 0.31, 0.27, 0.01],
                          "sap": [0.02, 0.05, 0.03, 0.08, 0.06, 0.09, 0.04],
                          "thesis-fast:as_target": [0.31, 0.27, 0.35, 0.42, 0.36, 0.38, 0.2],
                          "robustness:margin": [2.0 * r for r in recon]})
    return ModelsFrame(frame)


def write_card(folder: Path, model: str, seed: int) -> None:
    """A finished report card of 8 examples (``save_card``), its values set by the model seed."""
    settings = RobustnessSettings(examples=8, radii=(0.5, 1.0), metric_radius=1.0)
    columns = example_columns(settings)
    rng = np.random.default_rng(len(model) + 10 * seed)
    examples = pd.DataFrame({"index": np.arange(8), "label": np.arange(8) % 4,
                             **{c: rng.uniform(0.2, 2.0, 8) for c in columns}})
    card = RobustnessCard(examples, summarise(examples, columns, resamples=20), per_class_means(examples, columns),
                          {"settings": settings.to_dict(), "model": model, "dataset": "mnist", "num_examples": 8})
    save_card(card, folder, f"robust-vae study {model}")


@pytest.fixture(scope="module")
def analysis_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A study folder with the committed study's top-level tables and figures, an ``analysis/``
    written by ``write_analysis`` and three report cards with their ``cards.csv``."""
    folder = tmp_path_factory.mktemp("analysis") / "study"
    folder.mkdir()
    (folder / "study.toml").write_text(ANALYSIS_STUDY)
    for name in ("marginals.csv", "seeds.csv", "comparisons.csv"):
        shutil.copy(STUDY_DIR / name, folder / name)
    shutil.copytree(STUDY_DIR / "figures", folder / "figures")
    (folder / "README.md").write_text("# Tiny study\n\nDoes disentanglement predict robustness? See below.\n")
    analysis = Analysis(disentanglement=("mig", "sap"), robustness=("thesis-fast:as_target", "robustness:margin"),
                        control="recon_bce", beta_line="betavae", bootstrap=50)
    made = write_analysis(analysis, models_frame(), folder)
    statuses = []
    for model, seed in CARDS:
        spec = CardSpec(model, seed, folder / CARD_TEMPLATE.format(model=model, seed=seed))
        write_card(spec.folder, model, seed)
        statuses.append(CardStatus(spec, "done"))
    assert write_cards_table(card_summaries(statuses), folder) == folder / "robustness" / "cards.csv"
    (folder / "results.md").write_text(f"# Results\n\n## Does disentanglement predict robustness?\n\n{made.markdown}")
    return folder


@pytest.fixture(scope="module")
def analysis_page(analysis_study: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return html.write_html(analysis_study, tmp_path_factory.mktemp("analysis-page") / "study.html")


# ------------------------------------------------------------------------- numbers
def test_run_matrix_table_equals_matrix_csv(pages: dict[str, Path]) -> None:
    page = parse(pages["run"].read_text())
    header, rows = csv_rows(RUN_DIR / "matrix.csv")
    table = page.tables["table-matrix"]
    assert table["rows"] == rows
    assert table["header"][1:] == header[1:]
    assert "data-verbatim" in table["attrs"]


def test_run_marginals_and_target_matrix_equal_the_csvs(pages: dict[str, Path]) -> None:
    page = parse(pages["run"].read_text())
    frame = pd.read_csv(RUN_DIR / "marginals.csv", dtype=str)
    source = frame[frame["kind"].isin(["source", "overall"])]
    expected = [[("Mean" if r.kind == "overall" else r.cls), as_percent(r.as_target), as_percent(r.as_ignore_target),
                 r.mean_l2, r.mean_linf] for r in source.itertuples()]
    assert page.tables["table-marginals-source"]["rows"] == expected
    cells = pd.read_csv(RUN_DIR / "cells.csv", dtype=str)
    target = {(r.source, r.target): as_percent(r.as_target) for r in cells.itertuples()}
    for row in page.tables["table-as-target-matrix"]["rows"]:
        assert all(v == ("-" if row[0] == t else target[(row[0], t)]) for t, v in zip(map(str, range(10)), row[1:]))


def test_every_verbatim_table_equals_its_csv(pages: dict[str, Path]) -> None:
    for name, folder in (("run", RUN_DIR), ("study", STUDY_DIR)):
        page = parse(pages[name].read_text())
        verbatim = [t for t in page.tables.values() if "data-verbatim" in t["attrs"]]
        assert len(verbatim) >= 2
        for table in verbatim:
            _, rows = csv_rows(folder / table["attrs"]["data-source"])
            assert table["rows"] == rows, table["attrs"]["id"]


def test_study_comparisons_show_the_csv_intervals(pages: dict[str, Path]) -> None:
    page = parse(pages["study"].read_text())
    frame = pd.read_csv(STUDY_DIR / "comparisons.csv", dtype=str, keep_default_na=False)
    rows = page.tables["table-comparisons"]["rows"]
    assert len(rows) == len(frame)
    for row, r in zip(rows, frame.itertuples()):
        assert row[0] == r.comparison
        assert row[2] == f"{r.mean_a_pct} [{r.mean_a_lo_pct}, {r.mean_a_hi_pct}]"
        assert row[4] == f"{r.difference_pp} [{r.difference_lo_pp}, {r.difference_hi_pp}]"
        assert row[5:7] == [r.wilcoxon_p, r.permutation_p]


def test_study_page_indexes_every_run_with_its_command(pages: dict[str, Path]) -> None:
    text = pages["study"].read_text()
    page = parse(text)
    runs = sorted(STUDY_DIR.glob("runs/*/*/run.json"))
    rows = page.tables["table-runs"]["rows"]
    assert len(rows) == len(runs) > 0
    commands = {json.loads(p.read_text())["command"] for p in runs}
    assert {row[-1] for row in rows} == commands
    assert {f"run-{html.slug(row[0])}" for row in rows} <= page.ids  # each run's section is on the page
    assert "README.md: setup and answers" in text and "Is JointVAE less robust" in text
    assert len(page.images) == len(list((STUDY_DIR / "figures").glob("*.png")))


# ------------------------------------------------------------------------- a study's analysis and cards
def test_the_analysis_section_shows_the_correlations_beta_effect_scatters_and_models(
        analysis_study: Path, analysis_page: Path) -> None:
    text = analysis_page.read_text()
    page = parse(text)
    sections = re.findall(r'<section id="([^"]+)">', text)
    assert sections[sections.index("answers") + 1] == "analysis"
    assert "<h2>Does disentanglement predict robustness?</h2>" in text
    folder = analysis_study / "analysis"
    correlation = pd.read_csv(folder / "correlation.csv", dtype=str, keep_default_na=False)
    table = page.tables["table-analysis-correlation"]
    assert table["header"] == ["disentanglement (x)", "robustness (y)", "models", "ρ [95% CI]", "p", "q",
                               "partial ρ [95% CI]", "p", "q", "controlling for", "replicates"]
    assert "sortable" in table["attrs"]["class"] and table["attrs"]["data-source"] == "analysis/correlation.csv"

    def shown(value: str) -> str:
        return format_p(float(value)) if value else "n/a"

    assert table["rows"] == [[r.x, r.y, r.n_models, format_interval(r.rho, r.rho_low, r.rho_high), shown(r.p),
                              shown(r.q), format_interval(r.partial_rho, r.partial_low, r.partial_high),
                              shown(r.partial_p), shown(r.partial_q), r.control or "–", r.replicates_used]
                             for r in correlation.itertuples()]
    assert len(table["rows"]) == 4 and any(row[6] == "n/a" and row[9] == "–" for row in table["rows"])
    assert all(row[4] != "n/a" for row in table["rows"])  # every raw ρ has its permutation p
    assert all(re.fullmatch(r"−?\d\.\d\d \[−?\d\.\d\d, −?\d\.\d\d\]", row[3]) for row in table["rows"])
    beta = pd.read_csv(folder / "beta-effect.csv", dtype=str, keep_default_na=False)
    rows = page.tables["table-analysis-beta-effect"]["rows"]
    assert [row[0] for row in rows] == list(beta["y"]) and len(rows) > 0
    assert [row[2] for row in rows] == [format_interval(*v) for v in beta[["rho", "rho_low", "rho_high"]].to_numpy()]
    assert page.tables["table-analysis-models"]["rows"] == csv_rows(folder / "models.csv")[1]
    scatters = sorted(folder.glob("scatter-*.png"))
    assert [p.name for p in scatters] == ["scatter-robustness-margin.png", "scatter-thesis-fast-as-target.png"]
    for path in scatters:  # embedded as the Figures block embeds, and results.md's image links to it
        assert "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii") in page.images
        assert f"#fig-analysis-{path.stem}" in page.hrefs and f"fig-analysis-{path.stem}" in page.ids
    assert "thesis-fast:as_target against the headline disentanglement metric" in text
    for path in folder.iterdir():  # each file of analysis/ linked
        assert path.name in {unquote(h).rsplit("/", 1)[-1] for h in page.hrefs}, path.name


def test_the_cards_section_has_one_row_per_card_and_each_cards_figures(
        analysis_study: Path, analysis_page: Path) -> None:
    page = parse(analysis_page.read_text())
    cards = pd.read_csv(analysis_study / "robustness" / "cards.csv", dtype=str, keep_default_na=False)
    table = page.tables["table-robustness-cards"]
    assert table["header"][:4] == ["model", "seed", "examples", "max damage at r=1"]
    assert "margin" in table["header"] and "latent acc." not in table["header"]  # no latent classifier
    assert [row[:3] for row in table["rows"]] == [[m, str(s), "8"] for m, s in CARDS]
    for row, (model, seed) in zip(table["rows"], CARDS):
        card = cards[(cards["model"] == model) & (cards["seed"] == str(seed))].set_index("metric")
        for header, cell in zip(table["header"][3:], row[3:]):
            metric = {"max damage at r=1": "damage_r1", "margin": "margin", "bound": "margin_bound",
                      "λ_max": "pullback_lambda_max"}.get(header)
            if metric is not None:
                assert cell == interval({k: float(card.loc[metric, k]) for k in ("mean", "low", "high")})
    for model, seed in CARDS:
        folder = analysis_study / "robustness" / f"{model}-seed{seed}"
        anchor = f"card-robustness-{html.slug(folder.name)}"
        assert anchor in page.ids and f"#{anchor}" in page.hrefs
        for name in ("damage.png", "margins.png"):
            assert "data:image/png;base64," + base64.b64encode((folder / name).read_bytes()).decode() in page.images
    assert len(page.images) == 3 + 2 + 2 * len(CARDS)  # figures/, scatters, cards


def test_card_figures_over_the_budget_are_linked_not_embedded(
        analysis_study: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(html, "CARD_FIGURES_EMBED_BYTES", 0)
    out = html.write_html(analysis_study, tmp_path / "page.html")
    text = out.read_text()
    page = parse(text)
    linked = [src for src in page.images if not src.startswith("data:")]
    assert len(linked) == 2 * len(CARDS) and all((out.parent / unquote(src)).is_file() for src in linked)
    assert f"{2 * len(CARDS)} figures (" in text and "are linked, not embedded" in text


def test_the_analysis_page_lists_each_csv_once_and_links_only_existing_files(
        analysis_study: Path, analysis_page: Path) -> None:
    page = parse(analysis_page.read_text())
    sources = [t["attrs"].get("data-source") for t in page.tables.values()]
    for name in ("analysis/models.csv", "analysis/correlation.csv", "analysis/beta-effect.csv", "robustness/cards.csv"):
        assert sources.count(name) == 1, name
    for table in (t for t in page.tables.values() if "data-verbatim" in t["attrs"]):
        assert table["rows"] == csv_rows(analysis_study / table["attrs"]["data-source"])[1]
    for href in page.hrefs:
        if href.startswith("#"):
            assert href[1:] in page.ids, href
        else:
            assert (analysis_page.parent / unquote(href)).exists(), href
    assert not [h for h in page.hrefs if h.endswith(".lock")]


def test_without_analysis_and_cards_the_study_page_is_unchanged(
        analysis_study: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The page less its two new sections is the page of the folder without analysis/ and robustness/
    (results.md left out: its figure links point at the page's scatter figures when shown)."""
    shutil.copytree(analysis_study, tmp_path / "study")
    (tmp_path / "study" / "results.md").unlink()
    monkeypatch.chdir(tmp_path)
    full = html.render_html("study")
    shutil.rmtree(tmp_path / "study" / "analysis")
    shutil.rmtree(tmp_path / "study" / "robustness")
    plain = html.render_html("study")
    assert 'id="analysis"' not in plain and 'id="robustness-cards"' not in plain
    stripped = full
    for section, title in (("analysis", "Does disentanglement predict robustness?"),
                           ("robustness-cards", "Robustness report cards")):
        stripped = stripped.replace(f'<a href="#{section}">{title}</a>', "", 1)
        stripped, count = re.subn(rf'<section id="{section}">\n.*?</section>\n', "", stripped, count=1, flags=re.S)
        assert count == 1, section
    assert stripped == plain


# ------------------------------------------------------------------------- safety
def test_values_from_files_are_escaped(evil_run: Path, tmp_path: Path) -> None:
    text = html.write_html(evil_run, tmp_path / "page.html").read_text()
    assert EVIL not in text and "<script>alert" not in text
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &#39;quoted&#39;" in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text  # raw HTML in Markdown is shown, not run
    page = parse(text)
    assert len(page.scripts) == 1 and not page.scripts[0]  # the page's own inline script only
    assert not [h for h in page.hrefs if h.lower().startswith("javascript:")]
    assert all(src.startswith("data:image/png;base64,") for src in page.images) and len(page.images) == 1


@pytest.mark.parametrize("name", ["run", "study"])
def test_pages_are_self_contained(pages: dict[str, Path], name: str) -> None:
    text = pages[name].read_text()
    page = parse(text)
    assert "http://" not in text and "https://" not in text
    assert "<link rel=\"stylesheet\"" not in text and "<script src" not in text
    assert page.images and all(src.startswith("data:image/png;base64,") for src in page.images)
    for href in page.hrefs:  # every relative link points at a file next to the page
        if href.startswith("#"):
            assert href[1:] in page.ids, href
        else:
            assert (pages[name].parent / unquote(href)).exists(), href


def test_comparison_page(comparison_dir: Path, tmp_path: Path) -> None:
    assert html.folder_kind(comparison_dir) == "comparison"
    text = html.write_html(comparison_dir, tmp_path / "c.html").read_text()
    page = parse(text)
    assert len(page.tables["table-comparison"]["rows"]) == len(pd.read_csv(comparison_dir / "comparison.csv"))
    assert page.tables["table-marginals"]["rows"] == csv_rows(comparison_dir / "marginals.csv")[1]
    assert "&lt;b&gt;2&lt;/b&gt;" in text


def test_folder_kinds_and_errors(tmp_path: Path) -> None:
    assert html.folder_kind(RUN_DIR) == "run" and html.folder_kind(STUDY_DIR) == "study"
    with pytest.raises(DataError, match="holds no run"):
        html.folder_kind(tmp_path)
    with pytest.raises(DataError, match="not a folder"):
        html.folder_kind(tmp_path / "missing")
    assert html.percent("0.027832") == "2.7832" and html.percent("nan") == "n/a"
    assert html.sort_key("12.34% (5.67%)") == 12.34 and html.sort_key("<0.0001") == 0.0001
    assert html.sort_key("vae-seed0") is None and html.sort_key("-") is None


def test_cli_report_html(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sub" / "page.html"
    assert main(["report", "--html", str(RUN_DIR), "--out", str(out)]) == 0
    assert out.read_text().startswith("<!DOCTYPE html>") and str(out) in capsys.readouterr().out
    assert main(["report", "--html", str(RUN_DIR), "--out", str(tmp_path / "folder")]) == 0
    assert (tmp_path / "folder" / html.PAGE_NAME).is_file()
    assert main(["report", "--html", str(RUN_DIR), str(STUDY_DIR), "--out", str(out)]) == 2
    assert main(["report", "--html", str(tmp_path)]) == 2
    assert "holds no run" in capsys.readouterr().err


@pytest.mark.parametrize("folder", [RUN_DIR, STUDY_DIR, *ANALYSIS_STUDIES.values()],
                         ids=["run", "study", *ANALYSIS_STUDIES])
def test_committed_page_is_current(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The committed page is what `robust-vae report --html <folder>` writes from the repository root."""
    command = f"robust-vae report --html {folder.relative_to(REPO)}"
    page = folder / html.PAGE_NAME
    assert page.is_file(), f"no {page}: run `{command}` from the repository root"
    monkeypatch.chdir(REPO)
    assert page.read_text() == html.render_html(folder.relative_to(REPO)), (
        f"{page} is stale: rerun `{command}` from the repository root")


# ------------------------------------------------------------------------- the browser
def _binaries() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Debian chromium through chromedriver, with console and network logs."""
    found = _binaries()
    if found is None:
        pytest.skip("browser test skipped: no chromium and/or chromedriver binary on PATH "
                    "(install them with `bash .ci/browser-deps.sh`: apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1280,1600", "--hide-scrollbars"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=found[1]), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _load(driver: Any, path: Path) -> None:
    driver.get(path.resolve().as_uri())
    driver.execute_script("return document.readyState")


def _problems(driver: Any) -> list[str]:
    """Console errors and failed requests since the last call."""
    errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.loadingFailed":
            errors.append(f"failed request: {message['params']}")
        elif message["method"] == "Network.responseReceived" and message["params"]["response"]["status"] >= 400:
            errors.append(f"HTTP {message['params']['response']['status']}: {message['params']['response']['url']}")
    return errors


def _column(driver: Any, table: str, col: int) -> list[str]:
    return list(driver.execute_script(
        "return Array.from(document.getElementById(arguments[0]).tBodies[0].rows)"
        ".map(r => r.cells[arguments[1]].getAttribute('data-sort') || r.cells[arguments[1]].textContent)",
        table, col))


def _screenshot(driver: Any, tmp_path: Path, name: str, at: str = "") -> None:
    """A viewport screenshot (scrolled to the element with id ``at``), kept in build/test-artifacts/."""
    driver.execute_script("const e = document.getElementById(arguments[0]); if (e) { e.scrollIntoView(); }"
                          " else { window.scrollTo(0, 0); }", at)
    path = tmp_path / name
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 10_000
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, ARTIFACTS / name)


def test_run_page_in_a_browser(browser: Any, pages: dict[str, Path], tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    _load(browser, pages["run"])
    assert _problems(browser) == []
    sizes = browser.execute_script("return Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
    assert len(sizes) == 2 and all(done and width > 0 for done, width in sizes)
    cells = browser.execute_script("return Array.from(document.querySelectorAll('#table-matrix tbody tr'))"
                                   ".map(r => Array.from(r.cells).map(c => c.textContent.trim()))")
    assert cells == csv_rows(RUN_DIR / "matrix.csv")[1]
    before = _column(browser, "table-marginals-source", 1)
    button = browser.find_element(By.CSS_SELECTOR, "#table-marginals-source thead th:nth-child(2) button")
    button.click()
    after = _column(browser, "table-marginals-source", 1)
    assert after != before and sorted(after) == sorted(before)
    assert [float(v) for v in after[:-1]] == sorted(float(v) for v in before[:-1]) and after[-1] == before[-1]
    button.click()
    assert [float(v) for v in _column(browser, "table-marginals-source", 1)[:-1]] == sorted(
        (float(v) for v in before[:-1]), reverse=True)
    _screenshot(browser, tmp_path, "html-report-run.png")
    _screenshot(browser, tmp_path, "html-report-run-matrix.png", at="matrix")
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
    assert browser.execute_script("return getComputedStyle(document.querySelector('nav.toc')).display") == "none"
    _screenshot(browser, tmp_path, "html-report-run-print.png")
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": ""})
    assert _problems(browser) == []


def test_study_page_in_a_browser(browser: Any, pages: dict[str, Path], tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    _load(browser, pages["study"])
    assert _problems(browser) == []
    sizes = browser.execute_script("return Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
    assert len(sizes) == 3 and all(done and width > 0 for done, width in sizes)
    runs = _column(browser, "table-runs", 6)  # AS target, %
    browser.find_element(By.CSS_SELECTOR, "#table-runs thead th:nth-child(7) button").click()
    assert [float(v) for v in _column(browser, "table-runs", 6)] == sorted(float(v) for v in runs) != \
        [float(v) for v in runs]
    first = browser.find_element(By.CSS_SELECTOR, "#table-runs tbody tr td a")
    target = first.get_attribute("href").split("#")[1]
    first.click()
    assert browser.execute_script("return document.getElementById(arguments[0]).open", target) is True
    _screenshot(browser, tmp_path, "html-report-study.png")
    _screenshot(browser, tmp_path, "html-report-study-runs.png", at="runs")
    _screenshot(browser, tmp_path, "html-report-study-comparisons.png", at="comparisons")
    assert _problems(browser) == []


def test_analysis_and_cards_in_a_browser(browser: Any, analysis_page: Path, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    _load(browser, analysis_page)
    assert _problems(browser) == []
    sizes = browser.execute_script("return Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
    assert len(sizes) == 3 + 2 + 2 * len(CARDS) and all(done and width > 0 for done, width in sizes)
    rho = [float(v) for v in _column(browser, "table-analysis-correlation", 3)]
    button = browser.find_element(By.CSS_SELECTOR, "#table-analysis-correlation thead th:nth-child(4) button")
    button.click()
    assert [float(v) for v in _column(browser, "table-analysis-correlation", 3)] == sorted(rho)
    button.click()
    assert [float(v) for v in _column(browser, "table-analysis-correlation", 3)] == sorted(rho, reverse=True)
    _screenshot(browser, tmp_path, "html-report-analysis.png", at="analysis")
    card = browser.find_element(By.CSS_SELECTOR, "#table-robustness-cards tbody tr td a")
    target = card.get_attribute("href").split("#")[1]
    assert browser.execute_script("return document.getElementById(arguments[0]).open", target) is False
    card.click()
    assert browser.execute_script("return document.getElementById(arguments[0]).open", target) is True
    _screenshot(browser, tmp_path, "html-report-cards.png", at="robustness-cards")
    _screenshot(browser, tmp_path, "html-report-card.png", at=target)
    assert _problems(browser) == []


@pytest.mark.parametrize("folder", ANALYSIS_STUDIES.values(), ids=ANALYSIS_STUDIES.keys())
def test_committed_analysis_study_page_in_a_browser(browser: Any, folder: Path, tmp_path: Path) -> None:
    """The committed page loads with no console error or failed request, every image decodes, and
    the runs and correlation tables sort on a click."""
    from selenium.webdriver.common.by import By

    page = folder / html.PAGE_NAME
    _load(browser, page)
    assert _problems(browser) == []
    sizes = browser.execute_script("return Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
    embedded = len(re.findall(r"<img\b", page.read_text()))
    assert len(sizes) == embedded > 0 and all(done and width > 0 for done, width in sizes)
    for table, column in (("table-runs", 6), ("table-analysis-correlation", 3)):
        values = [float(v) for v in _column(browser, table, column)]
        button = browser.find_element(By.CSS_SELECTOR, f"#{table} thead th:nth-child({column + 1}) button")
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", button)  # clear of the sticky contents bar
        button.click()
        assert [float(v) for v in _column(browser, table, column)] == sorted(values)
    _screenshot(browser, tmp_path, f"html-report-{folder.parent.name}-{folder.name}.png", at="analysis")
    assert _problems(browser) == []
