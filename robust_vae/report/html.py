"""One static, self-contained HTML page for a run, a comparison or a study folder (issue 22).

The page has its CSS and script inline, embeds the folder's figures as base64 PNG and links
every other file (a study's runs, CSVs) relatively, so it opens from disk with no server and no
network. Tables show the CSV fields verbatim (rates stored as fractions are shifted to percent
exactly, with :class:`decimal.Decimal`), sort on a click and colour rate cells; a study's
correlations and report cards are rounded as its ``correlation.md`` and ``card.md`` round them
("0.42 [0.05, 0.71]"), their cells sorting on the CSV's exact value. Pages are
rendered by Jinja2 with autoescape on: every value read from a file is escaped; Markdown
(README.md, results.md, summary.md) goes through markdown-it-py with raw HTML disabled.

Only the folder's files are read (no import above ``report/``): a *run* folder holds
``matrix.csv`` or ``cells.csv`` (``robust-vae attack``), a *comparison* folder
``comparison.csv`` or ``marginals.csv`` (``robust-vae compare``, ``robust-vae report A B``), a
*study* folder ``study.toml`` or ``results.md`` (``robust-vae study``); a study's ``analysis/``
(``[analysis]``: models frame, correlations, β effect, scatter figures) and ``robustness/``
(``[robustness]``: ``cards.csv`` and one folder per report card) get a section each when present.
"""

from __future__ import annotations

import base64
import csv
import json
import os
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from functools import cache
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote, unquote

import jinja2
from markdown_it import MarkdownIt
from markdown_it.token import Token
from markupsafe import Markup

from robust_vae.core.errors import DataError
from robust_vae.core.version import __version__
from robust_vae.report.classes import ClassLabels, for_dataset, from_metadata, shared_classes
from robust_vae.report.correlation import DEFAULT_UNIT, UNIT_GROUPS, format_interval, unit_levels, unit_points
from robust_vae.report.robustness import HEADLINE, interval
from robust_vae.report.success import RATE_LABELS
from robust_vae.report.tables import format_p

PAGE_NAME = "index.html"
MAX_EMBED_BYTES = 4_000_000  # a larger PNG is linked relatively instead of embedded
CARD_FIGURES_EMBED_BYTES = 4_000_000  # report-card figures beyond this, all together, are linked instead
NOT_A_NUMBER = {"", "-", "–", "n/a", "nan", "NaN", "none", "None"}
_LEADING_NUMBER = re.compile(r"\s*[<>≤≥]?\s*([-+−]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)")
_HEAT = ((1.0, 1.0, 1.0), (0.996, 0.878, 0.565), (0.988, 0.553, 0.349), (0.843, 0.188, 0.153), (0.50, 0.0, 0.15))
FIGURE_TITLES = {
    "heatmaps": "Success heatmaps per (source, target) cell",
    "examples": "Example adversarial pairs: source, adversarial, reconstructions, target",
    "marginals-as-target": "AS target per source {noun} (bootstrap 95 % intervals)",
    "marginals-as-ignore-target": "AS ignore-target per source {noun} (bootstrap 95 % intervals)",
    "attacks": "Overall success per attack",
}
KEY_FACTS = ("label", "model", "model_seed", "model_family", "dataset", "recipe", "attack", "per_pair", "full",
             "seed", "batch_size", "pairs", "pairs_sampled", "examples_attacked", "attack_seconds", "device",
             "threads")


# ------------------------------------------------------------------------- page model
@dataclass(frozen=True)
class Cell:
    """One table cell: its text, numeric sort key, inline colour style and optional link."""

    text: str
    sort: float | None = None
    style: str = ""
    href: str = ""
    code: bool = False
    sub: str = ""  # shown on a second line after a space: "12.34%" + "(5.67%)"


@dataclass(frozen=True)
class Row:
    """A table row; a pinned row (the mean) stays last when the table is sorted."""

    cells: tuple[Cell, ...]
    pinned: bool = False


@dataclass(frozen=True)
class Table:
    """A table with the file its numbers come from; ``verbatim``: its rows are that CSV's rows."""

    id: str
    caption: str
    header: tuple[str, ...]
    rows: tuple[Row, ...]
    source: str = ""
    verbatim: bool = False
    sortable: bool = True
    notes: tuple[str, ...] = ()
    css: str = ""
    kind: ClassVar[str] = "table"


@dataclass(frozen=True)
class Figure:
    """A PNG: ``src`` is a data URI (embedded) or a path relative to the page."""

    id: str
    title: str
    src: str
    file: str
    width: int
    height: int


@dataclass(frozen=True)
class Figures:
    """A row of figures."""

    items: tuple[Figure, ...]
    kind: ClassVar[str] = "figures"


@dataclass(frozen=True)
class Prose:
    """Rendered Markdown (already escaped by markdown-it-py)."""

    html: Markup
    source: str = ""
    kind: ClassVar[str] = "prose"


@dataclass(frozen=True)
class Text:
    """A paragraph of plain text."""

    text: str
    kind: ClassVar[str] = "text"


@dataclass(frozen=True)
class Command:
    """A shell command, shown to copy."""

    text: str
    kind: ClassVar[str] = "command"


@dataclass(frozen=True)
class Links:
    """A line of links to files."""

    items: tuple[tuple[str, str], ...]  # (text, href)
    kind: ClassVar[str] = "links"


@dataclass(frozen=True)
class Details:
    """A collapsible group of blocks (opened for printing)."""

    summary: str
    blocks: tuple[Block, ...]
    id: str = ""
    kind: ClassVar[str] = "details"


Block = Table | Figures | Prose | Text | Command | Links | Details


@dataclass(frozen=True)
class Section:
    """A titled part of the page, listed in its contents bar."""

    id: str
    title: str
    blocks: tuple[Block, ...]


@dataclass(frozen=True)
class Page:
    """Everything the template renders: ``kind`` is "run", "comparison" or "study"."""

    kind: str
    title: str
    subtitle: str
    folder: str
    sections: tuple[Section, ...]
    version: str = __version__


@dataclass(frozen=True)
class Context:
    """The folder rendered, the folder the page is written to (relative links start there) and
    the classes of its runs (noun in captions, key lines under class-indexed tables)."""

    folder: Path
    out_dir: Path
    classes: ClassLabels = ClassLabels()

    def href(self, path: Path) -> str:
        """``path`` relative to the page's folder, percent-encoded (a ``:`` in a name is no URL scheme)."""
        return quote(Path(os.path.relpath(path.resolve(), self.out_dir.resolve())).as_posix())

    def name(self, path: Path) -> str:
        """``path`` relative to the rendered folder, for captions."""
        return Path(os.path.relpath(path.resolve(), self.folder.resolve())).as_posix()


# ------------------------------------------------------------------------- values
def sort_key(text: str) -> float | None:
    """The number a cell starts with (``"12.3% (4.5%)"`` -> 12.3, ``"<0.0001"`` -> 0.0001), else None."""
    if text.strip() in NOT_A_NUMBER:
        return None
    match = _LEADING_NUMBER.match(text)
    if not match:
        return None
    value = float(match.group(1).replace("−", "-"))
    return value if value == value and abs(value) != float("inf") else None


def percent(text: str) -> str:
    """A fraction written in a CSV as a percentage, exactly: ``"0.027832"`` -> ``"2.7832"``."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        return text
    return "n/a" if not value.is_finite() else format(value.scaleb(2), "f")


def heat(fraction: float | None) -> str:
    """Inline CSS colouring a rate in [0, 1] from white to dark red (text colour for contrast)."""
    if fraction is None:
        return ""
    x = min(max(fraction, 0.0), 1.0) * (len(_HEAT) - 1)
    i = min(int(x), len(_HEAT) - 2)
    rgb = [a + (b - a) * (x - i) for a, b in zip(_HEAT[i], _HEAT[i + 1])]
    luminance = 0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2]
    r, g, b = (round(255 * c) for c in rgb)
    return f"background-color:rgb({r},{g},{b});color:{'#fff' if luminance < 0.45 else '#111'}"


def slug(text: str) -> str:
    """``"runs/vae-seed0/thesis"`` -> ``"runs-vae-seed0-thesis"`` (for element ids)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def _scalar(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return ", ".join(_scalar(v) for v in value)
    return str(value)


def flatten(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """``{"a": {"b": 1}}`` -> ``[("a.b", "1")]``; lists joined with commas, null/true/false as JSON."""
    out: list[tuple[str, str]] = []
    for key, value in data.items():
        if isinstance(value, Mapping):
            out += flatten(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", _scalar(value)))
    return out


# ------------------------------------------------------------------------- files
def read_json(path: Path) -> dict[str, Any]:
    """A JSON object, ``{}`` when the file is absent; a malformed file is a one-line error."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path} is not valid JSON ({error}): rewrite it with the command that made it") from error
    return data if isinstance(data, dict) else {}


def csv_records(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of a CSV, every field the file's exact text."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            records = [{k: v or "" for k, v in row.items() if k is not None} for row in reader]
            header = list(reader.fieldnames or [])
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"cannot read {path} ({error}): rewrite it with the command that made it") from error
    return header, records


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG header; (0, 0) if ``data`` is not a PNG."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or len(data) < 24:
        return 0, 0
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def figure(ctx: Context, path: Path, title: str = "", embed: bool = True) -> Figure:
    """The PNG at ``path``, embedded as a data URI unless larger than ``MAX_EMBED_BYTES`` (or
    ``embed`` is false); ``title`` by default from its name (``FIGURE_TITLES``)."""
    data = path.read_bytes()
    width, height = png_size(data)
    embedded = embed and len(data) <= MAX_EMBED_BYTES
    src = "data:image/png;base64," + base64.b64encode(data).decode("ascii") if embedded else ctx.href(path)
    name = ctx.name(path)
    title = title or (FIGURE_TITLES[path.stem].format(noun=ctx.classes.noun) if path.stem in FIGURE_TITLES
                      else path.stem.replace("-", " ").replace("_", " "))
    return Figure(f"fig-{slug(str(Path(name).with_suffix('')))}", title, src, name, width, height)


def figures_in(ctx: Context, folder: Path, first: Sequence[str] = ()) -> Figures | None:
    """Every PNG in ``folder``, the names in ``first`` leading."""
    paths = sorted(folder.glob("*.png"), key=lambda p: (p.name not in first, first.index(p.name)
                                                       if p.name in first else 0, p.name))
    return Figures(tuple(figure(ctx, p) for p in paths)) if paths else None


# ------------------------------------------------------------------------- Markdown
@cache
def _markdown() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": False}).enable("table")


def _tokens(tokens: Sequence[Token]) -> Iterator[Token]:
    for token in tokens:
        yield token
        if token.children:
            yield from _tokens(token.children)


def _is_relative(href: str) -> bool:
    return bool(href) and ":" not in href.split("/")[0] and not href.startswith(("#", "/"))


def _image_as_link(image: Token, href: str) -> list[Token]:
    label = image.content or Path(href).name
    return [Token("link_open", "a", 1, attrs={"href": href}), Token("text", "", 0, content=f"[figure: {label}]"),
            Token("link_close", "a", -1)]


def _rewrite(token: Token, ctx: Context, base: Path, anchors: Mapping[Path, str]) -> None:
    """Headings two levels down; relative links and images re-pointed from the page's folder."""
    if token.type in ("heading_open", "heading_close"):
        token.tag = f"h{min(6, int(token.tag[1]) + 2)}"
    if token.type == "link_open" and _is_relative(str(token.attrGet("href") or "")):
        token.attrSet("href", ctx.href(base / unquote(str(token.attrGet("href")))))
    if token.children:
        children: list[Token] = []
        for child in token.children:
            src = unquote(str(child.attrGet("src") or "")) if child.type == "image" else ""
            if child.type != "image":
                children.append(child)
            elif _is_relative(src) and (base / src).resolve() in anchors:
                children += _image_as_link(child, "#" + anchors[(base / src).resolve()])
            else:  # never load an image from the page: link it
                children += _image_as_link(child, ctx.href(base / src) if _is_relative(src) else src)
        token.children = children


def markdown(ctx: Context, path: Path, anchors: Mapping[Path, str] | None = None) -> Prose:
    """``path`` rendered (raw HTML escaped); images become links, to the page's own figure if shown."""
    md = _markdown()
    tokens = md.parse(path.read_text(encoding="utf-8"))
    for token in tokens:
        _rewrite(token, ctx, path.parent, anchors or {})
    return Prose(Markup(md.renderer.render(tokens, md.options, {})), ctx.name(path))


# ------------------------------------------------------------------------- tables
@dataclass(frozen=True)
class Col:
    """A column built from CSV fields: ``fmt`` joins them; ``percent``: fractions shown ×100;
    ``heat``: the value that is full colour (100 for percentages, 1 for fractions); ``bold_if_apart``:
    bold when the interval of fields 1 and 2 excludes 0; ``bold_below``: (field, threshold), bold
    when that field of the record is below the threshold."""

    label: str
    fields: tuple[str, ...]
    fmt: str = "{0}"
    percent: bool = False
    heat: float | None = None
    code: bool = False
    bold_if_apart: bool = False
    bold_below: tuple[str, float] | None = None
    split: bool = False  # "a (b)": b on a second line (the cell's text stays "a (b)")
    show: Callable[..., str] | None = None  # the text from the fields, instead of ``fmt``


INTERVAL = "{0} [{1}, {2}]"
COMPARISON_COLUMNS = (
    Col("comparison (A vs B)", ("comparison",)), Col("rate", ("metric",)),
    Col("A, % [95% CI]", ("mean_a_pct", "mean_a_lo_pct", "mean_a_hi_pct"), INTERVAL, heat=100),
    Col("B, % [95% CI]", ("mean_b_pct", "mean_b_lo_pct", "mean_b_hi_pct"), INTERVAL, heat=100),
    Col("A − B, pp [95% CI]", ("difference_pp", "difference_lo_pp", "difference_hi_pp"), INTERVAL,
        bold_if_apart=True),
    Col("Wilcoxon p", ("wilcoxon_p",)), Col("sign-flip p", ("permutation_p",)),
    Col("cells A>B / A<B", ("cells_a_higher", "cells_b_higher", "cells"), "{0} / {1} of {2}"),
)
ATTACK_COLUMNS = (
    Col("model", ("model",)), Col("recipe", ("recipe",)), Col("seed", ("seed",)),
    Col("AS target, % [95% CI]", ("as_target_pct", "as_target_lo_pct", "as_target_hi_pct"), INTERVAL, heat=100),
    Col("AS ignore-target, % [95% CI]", ("as_ignore_target_pct", "as_ignore_target_lo_pct",
                                         "as_ignore_target_hi_pct"), INTERVAL, heat=100),
    Col("rank (AS target)", ("rank_as_target",)),
)
MARGINAL_COLUMNS = (
    Col("AS target, %", ("as_target",), percent=True, heat=100),
    Col("AS ignore-target, %", ("as_ignore_target",), percent=True, heat=100),
    Col("mean L2", ("mean_l2",)), Col("mean L∞", ("mean_linf",)),
)


def _cell(record: Mapping[str, str], col: Col) -> Cell:
    values = [record[f] for f in col.fields]
    if col.percent:
        values = [percent(v) for v in values]
    key = sort_key(values[0])
    style = heat(key / col.heat) if col.heat and key is not None else ""
    if col.bold_if_apart:
        lo, hi = sort_key(values[1]), sort_key(values[2])
        style = "font-weight:700" if lo is not None and hi is not None and (lo > 0 or hi < 0) else ""
    if col.bold_below is not None:
        field, threshold = col.bold_below
        below = sort_key(record.get(field, ""))
        style = "font-weight:700" if below is not None and below < threshold else ""
    text, sub = col.show(*values) if col.show else col.fmt.format(*values), ""
    if col.split and " (" in text:
        text, sub = text.split(" (", 1)
        sub = "(" + sub
    return Cell(text, key, style, code=col.code, sub=sub)


def build_table(records: Sequence[Mapping[str, str]], cols: Sequence[Col], *, table_id: str, caption: str,
                source: str = "", verbatim: bool = False, sortable: bool = True, notes: Sequence[str] = (),
                pinned: Callable[[Mapping[str, str]], bool] | None = None) -> Table:
    """One row per record; a record lacking a column's field is a one-line error."""
    needed = {f for c in cols for f in c.fields}
    for record in records[:1]:
        if missing := sorted(needed - set(record)):
            raise DataError(f"{source or 'table'} lacks column(s) {missing}: rewrite it with the command that made it")
    rows = tuple(Row(tuple(_cell(r, c) for c in cols), bool(pinned and pinned(r))) for r in records)
    return Table(table_id, caption, tuple(c.label for c in cols), rows, source, verbatim, sortable, tuple(notes))


def _heat_scale(column: str) -> float | None:
    """Colour for rate columns: percentages (``*_pct``, "AS ..." labels) and fractions (``as_*``)."""
    if column.endswith("_pct") and column.startswith("as_") or "AS target" in column or "AS ignore" in column:
        return 100.0
    if column.startswith("as_target") or column.startswith("as_ignore_target"):
        return 1.0
    return None


def csv_table(ctx: Context, path: Path, table_id: str, caption: str) -> Table:
    """The CSV as it is: one column per field, rates coloured, a "Mean" row pinned last."""
    header, records = csv_records(path)
    cols = [Col(h, (h,), heat=_heat_scale(h)) for h in header]
    first = header[0] if header else ""
    return build_table(records, cols, table_id=table_id, caption=caption, source=ctx.name(path), verbatim=True,
                       pinned=lambda r: r.get(first, "") in ("Mean", "overall"))


def facts_table(pairs: Sequence[tuple[str, str]], table_id: str, caption: str, source: str = "") -> Table:
    """Key/value pairs (run.json, config.json) as a two-column table."""
    cols = (Col("field", ("field",), code=True), Col("value", ("value",)))
    records = [{"field": k, "value": v} for k, v in pairs]
    return build_table(records, cols, table_id=table_id, caption=caption, source=source, sortable=False)


def comparison_table(ctx: Context, path: Path, table_id: str, caption: str) -> Table:
    """comparison.csv (``robust-vae compare``, a study's comparisons): A, B, A − B with intervals, tests."""
    _, records = csv_records(path)
    notes: dict[str, None] = {}
    for r in records:
        for warning in filter(None, (w.strip() for w in r.get("warnings", "").split(" | "))):
            notes[f"{r.get('comparison', '')}: {warning}"] = None
    shown = [{**r, "metric": RATE_LABELS.get(r.get("metric", ""), r.get("metric", ""))} for r in records]
    return build_table(shown, COMPARISON_COLUMNS, table_id=table_id, caption=caption, source=ctx.name(path),
                       notes=["A − B in bold: its 95 % interval excludes 0.", *notes])


# ------------------------------------------------------------------------- a run
def run_classes(folder: Path) -> ClassLabels:
    """The classes a run folder's ``run.json`` records (older runs: its dataset's, from
    ``run.json`` or ``config.json``)."""
    return from_metadata(read_json(folder / "run.json"), read_json(folder / "config.json"))


def key_notes(classes: ClassLabels, shown: Sequence[str] | None = None) -> tuple[str, ...]:
    """The key line of a table indexed by class index (``shown``: the indices it lists), or ()
    when the classes' names are their indices."""
    key = classes.key(None if shown is None else [int(c) for c in shown if c.strip().isdigit()])
    return (key,) if key else ()


def with_key(block: Block, classes: ClassLabels) -> Block:
    """A table whose first column lists class indices ("Mean" aside), with their key line."""
    if not isinstance(block, Table):
        return block
    return replace(block, notes=(*block.notes, *key_notes(classes, [r.cells[0].text for r in block.rows])))


def marginal_tables(ctx: Context, folder: Path, prefix: str) -> list[Table]:
    """marginals.csv as two tables, per source and per target class, the overall mean pinned last."""
    path = folder / "marginals.csv"
    if not path.is_file():
        return []
    _, records = csv_records(path)
    overall = [{**r, "cls": "Mean"} for r in records if r.get("kind") == "overall"]
    classes = run_classes(folder)
    tables = []
    for kind in ("source", "target"):
        rows = [r for r in records if r.get("kind") == kind] + overall
        cols = (Col(kind, ("cls",)), *MARGINAL_COLUMNS)
        tables.append(build_table(rows, cols, table_id=f"{prefix}marginals-{kind}", source=ctx.name(path),
                                  caption=f"Per {kind} class (unweighted mean over "
                                          f"{'targets' if kind == 'source' else 'sources'})",
                                  pinned=lambda r: r["cls"] == "Mean",
                                  notes=key_notes(classes, [r["cls"] for r in rows])))
    return tables


def matrix_table(ctx: Context, folder: Path, prefix: str) -> Table | None:
    """matrix.csv verbatim, "AS ignore-target (AS target)" per cell, coloured by AS ignore-target."""
    path = folder / "matrix.csv"
    if not path.is_file():
        return None
    header, records = csv_records(path)
    cols = [Col("source \\ target" if i == 0 else h, (h,), heat=None if i == 0 else 100.0, split=i > 0)
            for i, h in enumerate(header)]
    table = build_table(records, cols, table_id=f"{prefix}matrix", source=ctx.name(path), verbatim=True,
                        caption="Success matrix: AS ignore-target (AS target), rows source, columns target",
                        notes=key_notes(run_classes(folder), [r.get(header[0], "") for r in records]))
    return replace(table, css="matrix")


def target_matrix(ctx: Context, folder: Path, prefix: str) -> Table | None:
    """The K×K AS target matrix from cells.csv (percent), coloured by AS target."""
    path = folder / "cells.csv"
    if not path.is_file():
        return None
    _, records = csv_records(path)
    rates = {(r.get("source", ""), r.get("target", "")): percent(r.get("as_target", "")) for r in records}
    labels = run_classes(folder)
    found = {c for pair in rates for c in pair}
    if labels.num_classes is not None:  # K from run.json: a class without cells still gets its row
        found |= {str(c) for c in range(labels.num_classes)}
    classes = sorted(found, key=lambda c: (sort_key(c) is None, sort_key(c) or 0, c))
    rows = [{"source": s, **{t: "-" if s == t else rates.get((s, t), "n/a") for t in classes}} for s in classes]
    cols = [Col("source \\ target", ("source",)), *(Col(t, (t,), heat=100.0) for t in classes)]
    table = build_table(rows, cols, table_id=f"{prefix}as-target-matrix", source=ctx.name(path),
                        caption="AS target per cell, %, rows source, columns target",
                        notes=key_notes(labels, classes))
    return replace(table, css="matrix")


def key_facts(meta: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The run.json fields a reader looks for first, in ``KEY_FACTS`` order."""
    return [(k, _scalar(meta[k])) for k in KEY_FACTS if k in meta]


def file_links(ctx: Context, folder: Path) -> Links:
    """Links to every file of a folder but HTML pages (so that a page does not list itself) and
    hidden files (a run's ``.lock``)."""
    return Links(tuple((p.name, ctx.href(p)) for p in sorted(folder.iterdir())
                       if p.is_file() and p.suffix != ".html" and not p.name.startswith(".")))


def run_sections(ctx: Context) -> list[Section]:
    """A run page: facts and command, marginals, matrices, figures, cells, summary.md, files."""
    folder, meta = ctx.folder, read_json(ctx.folder / "run.json")
    about: list[Block] = [Command(str(meta["command"]))] if meta.get("command") else []
    about.append(facts_table(key_facts(meta), "run-facts", "Run facts", "run.json"))
    about.append(Details("run.json: every field", (facts_table(flatten(meta), "run-json", "run.json",
                                                               "run.json"),)))
    config = read_json(folder / "config.json")
    if config:
        about.append(Details("config.json: the run's fingerprint",
                             (facts_table(flatten(config), "config-json", "config.json", "config.json"),)))
    matrices = [t for t in (matrix_table(ctx, folder, ""), target_matrix(ctx, folder, "")) if t]
    sections = [Section("run", "Run", tuple(about)),
                Section("marginals", "Marginals", tuple(marginal_tables(ctx, folder, ""))),
                Section("matrix", "Success matrices", tuple(matrices))]
    shown = figures_in(ctx, folder, ("heatmaps.png", "examples.png"))
    if shown:
        sections.append(Section("figures", "Figures", (shown,)))
    more: list[Block] = []
    if (folder / "cells.csv").is_file():
        more.append(Details("cells.csv: one row per (source, target) cell",
                            (csv_table(ctx, folder / "cells.csv", "cells", "Cells"),)))
    if (folder / "summary.md").is_file():
        more.append(Details("summary.md", (markdown(ctx, folder / "summary.md"),)))
    more += other_csvs(ctx, folder, {"cells.csv", "matrix.csv", "marginals.csv"})
    more.append(file_links(ctx, folder))
    sections.append(Section("files", "Cells, summary and files", tuple(more)))
    return [s for s in sections if s.blocks]


def other_csvs(ctx: Context, folder: Path, shown: set[str], prefix: str = "") -> list[Block]:
    """Every CSV of ``folder`` not in ``shown``, each as it is, collapsed."""
    return [Details(p.name, (csv_table(ctx, p, f"{prefix}{slug(p.stem)}", p.name),))
            for p in sorted(folder.glob("*.csv")) if p.name not in shown]


# ------------------------------------------------------------------------- a comparison
def comparison_sections(ctx: Context) -> list[Section]:
    """A comparison page: comparison.csv with intervals, its notes, side-by-side marginals, figures."""
    folder = ctx.folder
    blocks: list[Block] = []
    if (folder / "comparison.csv").is_file():
        blocks.append(comparison_table(ctx, folder / "comparison.csv", "comparison", "Group A − group B"))
    if (folder / "comparison.md").is_file():
        blocks.append(Details("comparison.md", (markdown(ctx, folder / "comparison.md"),)))
    if (folder / "marginals.csv").is_file():
        blocks.append(with_key(csv_table(ctx, folder / "marginals.csv", "marginals",
                                         "Marginals per source class, side by side"), ctx.classes))
    sections = [Section("comparison", "Comparison", tuple(blocks))]
    runs = sorted(p.parent for p in folder.glob("*/run.json"))  # `robust-vae report A B --out DIR`
    if runs:
        sections += [Section("runs", "Runs", (runs_index(ctx, runs),)),
                     Section("run-details", "Every run", tuple(run_details(ctx, p) for p in runs))]
    shown = figures_in(ctx, folder)
    if shown:
        sections.append(Section("figures", "Figures", (shown,)))
    more = other_csvs(ctx, folder, {"comparison.csv", "marginals.csv"})
    if more:
        sections.append(Section("tables", "Other tables", tuple(more)))
    return sections


# ------------------------------------------------------------------------- a study
def study_runs(folder: Path, spec: Mapping[str, Any]) -> list[Path]:
    """The study's run folders: in study.toml's order (models × seeds × recipes), then any others."""
    head = spec.get("study", {})
    runs_dir = folder / str(head.get("runs_dir", "runs"))
    listed: dict[Path, None] = {}
    for table in spec.get("runs", []):
        for model in table.get("models", []):
            for seed in table.get("seeds", [0]):
                for recipe in table.get("recipes", [head.get("main_recipe", "thesis")]):
                    listed[runs_dir / f"{model}-seed{seed}" / str(recipe)] = None
    found = sorted(p.parent for p in runs_dir.glob("*/*/run.json"))
    return [p for p in listed if (p / "run.json").is_file()] + [p for p in found if p not in listed]


def _overall(folder: Path) -> dict[str, str]:
    """The overall row of a run's marginals.csv, rates in percent (``n/a`` when absent)."""
    path = folder / "marginals.csv"
    rows = [r for r in csv_records(path)[1] if r.get("kind") == "overall"] if path.is_file() else []
    row = rows[0] if rows else {}
    return {m: percent(row[m]) if m in row else "n/a" for m in ("as_target", "as_ignore_target")}


def _run_record(ctx: Context, folder: Path) -> dict[str, str]:
    meta = read_json(folder / "run.json")
    per_pair = "full" if meta.get("full") or meta.get("per_pair") is None else _scalar(meta.get("per_pair"))
    return {"run": ctx.name(folder), "model": _scalar(meta.get("model", "")),
            "seed": _scalar(meta.get("model_seed", "")), "recipe": _scalar(meta.get("recipe", "")),
            "per_pair": per_pair, "attacked": _scalar(meta.get("examples_attacked", "")),
            "command": _scalar(meta.get("command", "")), **_overall(folder)}


RUN_INDEX_COLUMNS = (
    Col("run", ("run",)), Col("model", ("model",)), Col("seed", ("seed",)), Col("recipe", ("recipe",)),
    Col("pairs per cell", ("per_pair",)), Col("attacked examples", ("attacked",)),
    Col("AS target, %", ("as_target",), heat=100), Col("AS ignore-target, %", ("as_ignore_target",), heat=100),
    Col("command", ("command",), code=True),
)


def runs_index(ctx: Context, runs: Sequence[Path]) -> Table:
    """One row per run: its folder (a link to its section below), model, seed, recipe, rates, command."""
    table = build_table([_run_record(ctx, p) for p in runs], RUN_INDEX_COLUMNS, table_id="runs",
                        caption="Runs (overall rates: unweighted mean over cells; each run's marginals.csv)",
                        source="runs/*/*/run.json, marginals.csv")
    rows = tuple(Row((Cell(r.cells[0].text, href="#" + run_anchor(ctx, p)), *r.cells[1:]), r.pinned)
                 for r, p in zip(table.rows, runs))
    return replace(table, rows=rows)


def run_anchor(ctx: Context, folder: Path) -> str:
    """The id of a run's section on a study page."""
    return "run-" + slug(ctx.name(folder))


def run_details(ctx: Context, folder: Path) -> Details:
    """A compact, collapsed section for one run of a study: command, facts, files, marginals, matrix."""
    meta, prefix = read_json(folder / "run.json"), run_anchor(ctx, folder) + "-"
    blocks: list[Block] = [Command(str(meta["command"]))] if meta.get("command") else []
    blocks += [facts_table(key_facts(meta), f"{prefix}facts", "Run facts", ctx.name(folder / "run.json")),
               file_links(ctx, folder)]
    blocks += marginal_tables(ctx, folder, prefix)[:1]
    matrix = matrix_table(ctx, folder, prefix)
    if matrix:
        blocks.append(matrix)
    return Details(ctx.name(folder), tuple(blocks), id=run_anchor(ctx, folder))


def _study_csv(ctx: Context, name: str, caption: str, columns: Sequence[Col] | None = None) -> list[Block]:
    path = ctx.folder / name
    if not path.is_file():
        return []
    if name.endswith("comparisons.csv"):
        return [comparison_table(ctx, path, slug(Path(name).stem), caption)]
    if columns is None:
        return [csv_table(ctx, path, slug(Path(name).stem), caption)]
    return [build_table(csv_records(path)[1], columns, table_id=slug(Path(name).stem), caption=caption,
                        source=name)]


# ------------------------------------------------------------------------- a study's analysis and cards
ANALYSIS_DIR = "analysis"  # robust_vae.analysis.study_analysis.FOLDER (no import above report/)
CARDS_DIR = "robustness"  # robust_vae.analysis.study_robustness.FOLDER
ANALYSIS_CSVS = ("models.csv", "correlation.csv", "beta-effect.csv")
CARD_CSV_FIELDS = ("model", "seed", "metric", "mean", "low", "high", "n")
CARD_FIGURES = (("damage.png", "Max damage against the budget r, with the 95 % band"),
                ("margins.png", "r-robustness margin against Camuto et al.'s lower bound, one point per example"))


def _dash(text: str) -> str:
    return text or "–"


SIGNIFICANT = 0.05  # a correlation's q below this is shown in bold


def _p(text: str) -> str:
    """A p- or q-value from a CSV as the tables print it."""
    try:
        return format_p(float(text))
    except ValueError:
        return "n/a"


def correlation_table(ctx: Context, path: Path, table_id: str, caption: str, pairs: Sequence[Col]) -> Table:
    """A correlation table (``correlation.csv``, ``beta-effect.csv``): ``pairs`` (the columns naming
    the pair), models, ρ and (where some row has a control) the partial ρ with their intervals,
    p- and q-values as ``correlation.md`` shows them, ρ bold when its q is below SIGNIFICANT;
    sorted on the exact values."""
    _, records = csv_records(path)
    cols = [*pairs, Col("models", ("n_models",)),
            Col("ρ [95% CI]", ("rho", "rho_low", "rho_high"), show=format_interval, bold_below=("q", SIGNIFICANT)),
            Col("p", ("p",), show=_p), Col("q", ("q",), show=_p)]
    if any(r.get("control") for r in records):
        cols += [Col("partial ρ [95% CI]", ("partial_rho", "partial_low", "partial_high"), show=format_interval,
                     bold_below=("partial_q", SIGNIFICANT)),
                 Col("p", ("partial_p",), show=_p), Col("q", ("partial_q",), show=_p),
                 Col("controlling for", ("control",), show=_dash)]
    cols.append(Col("replicates", ("replicates_used",)))
    return build_table(records, cols, table_id=table_id, caption=caption, source=ctx.name(path),
                       notes=[f"ρ in bold: q < {SIGNIFICANT:g} (two-sided permutation test over the points; "
                              "Benjamini–Hochberg over the table's rows). p and q are sorted on their exact values."])


def _scatter_titles(folder: Path) -> dict[str, str]:
    """scatter-<slug(y)>.png stem -> its title, y from correlation.csv."""
    path = folder / "correlation.csv"
    ys = [r.get("y", "") for r in csv_records(path)[1]] if path.is_file() else []
    return {f"scatter-{slug(y)}": f"{y} against the headline disentanglement metric" for y in ys if y}


def analysis_figures(ctx: Context) -> Figures | None:
    """The scatter figures of ``analysis/`` (embedded as the page's other figures)."""
    folder = ctx.folder / ANALYSIS_DIR
    paths = sorted(folder.glob("scatter-*.png")) if folder.is_dir() else []
    titles = _scatter_titles(folder) if paths else {}
    return Figures(tuple(figure(ctx, p, titles.get(p.stem, "")) for p in paths)) if paths else None


def analysis_blocks(ctx: Context, spec: Mapping[str, Any], scatter: Figures | None) -> tuple[Block, ...]:
    """"Does disentanglement predict robustness?" from ``analysis/`` (``[analysis]``): the correlations,
    the β effect, the scatter figures, the models frame; () when the study wrote none of them."""
    folder = ctx.folder / ANALYSIS_DIR
    if not any((folder / name).is_file() for name in ANALYSIS_CSVS) and scatter is None:
        return ()
    settings = spec.get("analysis", {})
    unit = settings.get("unit", DEFAULT_UNIT) if isinstance(settings, Mapping) else DEFAULT_UNIT
    unit = unit if unit in UNIT_GROUPS else DEFAULT_UNIT  # the study itself refuses another one
    points = (f"the study's {unit_points(unit)}, from the rows of analysis/models.csv (intervals resample "
              f"{unit_levels(unit)})")
    blocks: list[Block] = [Text(
        f"Spearman rank correlations across {points} between each disentanglement and each robustness metric, "
        "with 95 % hierarchical-bootstrap intervals; the partial ρ partials out the ranks of the control (by "
        "default the models' reconstruction error recon_bce). Pairs not computed, and why: results.md.")]
    if (folder / "correlation.csv").is_file():
        blocks.append(correlation_table(
            ctx, folder / "correlation.csv", "analysis-correlation",
            "Spearman ρ of each disentanglement × robustness pair [95 % CI]",
            (Col("disentanglement (x)", ("x",)), Col("robustness (y)", ("y",)))))
    if (folder / "beta-effect.csv").is_file():
        family = settings.get("beta_line") if isinstance(settings, Mapping) else None
        blocks.append(correlation_table(
            ctx, folder / "beta-effect.csv", "analysis-beta-effect",
            f"β effect: Spearman ρ of each metric against β over the {f'{family} ' if family else ''}"
            f"{unit_points(unit)}", (Col("metric", ("y",)),)))
    if scatter is not None:
        blocks.append(scatter)
    if (folder / "models.csv").is_file():
        blocks.append(Details("analysis/models.csv: the models frame (one row per model and seed)",
                              (csv_table(ctx, folder / "models.csv", "analysis-models", "Models frame"),)))
    blocks += other_csvs(ctx, folder, set(ANALYSIS_CSVS), "analysis-")
    if isinstance(settings, Mapping) and settings:
        blocks.append(Details("[analysis] in study.toml", (facts_table(
            flatten(settings), "analysis-settings", "Settings ([analysis] in study.toml)", "study.toml"),)))
    blocks.append(file_links(ctx, folder))
    return tuple(blocks)


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("nan")


def _card_radius(folder: Path) -> str | None:
    """The metric radius of a card (``card.json``'s settings) as its damage column names it."""
    settings = read_json(folder / "card.json").get("settings")
    radius = settings.get("metric_radius") if isinstance(settings, Mapping) else None
    return f"{radius:g}" if isinstance(radius, int | float) and not isinstance(radius, bool) else None


def card_anchor(ctx: Context, folder: Path) -> str:
    """The id of a report card's section on a study page."""
    return "card-" + slug(ctx.name(folder))


def cards_table(ctx: Context, path: Path) -> tuple[Table, list[tuple[str, str, Path]]]:
    """``cards.csv`` (long: one row per card and metric) pivoted: one row per card with the
    headline means of :data:`robust_vae.report.robustness.HEADLINE` and their intervals (max damage
    at the cards' metric radius, at every radius when the cards differ in it); and the cards
    (model, seed, folder), in the file's order."""
    _, records = csv_records(path)
    if records and (missing := sorted(set(CARD_CSV_FIELDS) - set(records[0]))):
        raise DataError(f"{ctx.name(path)} lacks column(s) {missing}: rewrite it with the command that made it")
    by_card: dict[tuple[str, str], dict[str, Mapping[str, str]]] = {}
    for r in records:
        by_card.setdefault((r["model"], r["seed"]), {})[r["metric"]] = r
    cards = [(model, seed, ctx.folder / CARDS_DIR / f"{model}-seed{seed}") for model, seed in by_card]
    radii = {_card_radius(folder) for _, _, folder in cards}
    found = list(dict.fromkeys(m for metrics in by_card.values() for m in metrics))
    at_radius = [f"damage_r{radius}" for radius in radii if radius is not None] if len(radii) == 1 else []
    damage = [m for m in at_radius if m in found] or [m for m in found if m.startswith("damage_r")]
    columns = [(m, f"max damage at r={m.removeprefix('damage_r')}") for c, _ in HEADLINE if c == "damage"
               for m in damage]
    columns += [(c, h) for c, h in HEADLINE if c != "damage"]
    columns = [(m, h) for m, h in columns if m in found]
    rows = []
    for (model, seed, folder), metrics in zip(cards, by_card.values()):
        examples = next(iter(metrics.values()))["n"]
        cells = [Cell(model, href="#" + card_anchor(ctx, folder) if folder.is_dir() else ""),
                 Cell(seed, sort_key(seed)), Cell(examples, sort_key(examples))]
        for metric, _ in columns:
            value = metrics.get(metric)
            if value is None:
                cells.append(Cell("–"))
                continue
            text, _, rest = interval({k: _number(value[k]) for k in ("mean", "low", "high")}).partition(" ")
            cells.append(Cell(text, sort_key(value["mean"]), sub=rest))
        rows.append(Row(tuple(cells)))
    table = Table("robustness-cards", "Report cards: mean over each card's examples [95 % bootstrap interval]",
                  ("model", "seed", "examples", *(h for _, h in columns)), tuple(rows), ctx.name(path),
                  notes=("Every metric with its interval, and the class means: each card's card.md below.",))
    return table, cards


def card_details(ctx: Context, model: str, seed: str, folder: Path, embed: bool) -> Details:
    """One report card, collapsed: its damage and margin figures, card.md and files."""
    blocks: list[Block] = []
    shown = [figure(ctx, folder / name, title, embed) for name, title in CARD_FIGURES if (folder / name).is_file()]
    if shown:
        blocks.append(Figures(tuple(shown)))
    if (folder / "card.md").is_file():
        blocks.append(markdown(ctx, folder / "card.md"))
    blocks.append(file_links(ctx, folder))
    return Details(f"{model} seed {seed}: {ctx.name(folder)}", tuple(blocks), id=card_anchor(ctx, folder))


def cards_blocks(ctx: Context, spec: Mapping[str, Any]) -> tuple[Block, ...]:
    """"Robustness report cards" from ``robustness/`` (``[robustness]``): one row per card, then each
    card's figures and card.md; () without ``cards.csv``. The cards' figures are embedded while they
    total at most :data:`CARD_FIGURES_EMBED_BYTES`, else linked."""
    folder = ctx.folder / CARDS_DIR
    if not (folder / "cards.csv").is_file():
        return ()
    table, cards = cards_table(ctx, folder / "cards.csv")
    blocks: list[Block] = [Text(
        "Classifier-free report cards (robust-vae robustness) of the study's models, one per model seed, each in "
        "robustness/<model>-seed<S>/: means over its test examples with 95 % percentile-bootstrap intervals."),
        table]
    pngs = [f / name for _, _, f in cards for name, _ in CARD_FIGURES if (f / name).is_file()]
    size = sum(p.stat().st_size for p in pngs)
    embed = size <= CARD_FIGURES_EMBED_BYTES
    if not embed:
        blocks.append(Text(f"The cards' {len(pngs)} figures ({size / 1e6:.1f} MB) are linked, not embedded, to keep "
                           "this page small: they load from the card folders next to it."))
    blocks += [card_details(ctx, model, seed, f, embed) for model, seed, f in cards if f.is_dir()]
    blocks += other_csvs(ctx, folder, {"cards.csv"}, "robustness-")
    settings = spec.get("robustness", {})
    if isinstance(settings, Mapping) and settings:
        blocks.append(Details("[robustness] in study.toml", (facts_table(
            flatten(settings), "robustness-settings", "Settings ([robustness] in study.toml; defaults for the keys "
            "it lacks)", "study.toml"),)))
    blocks.append(file_links(ctx, folder))
    return tuple(blocks)


def study_sections(ctx: Context, spec: Mapping[str, Any]) -> list[Section]:
    """A study page: setup, the README's answers, runs, marginals, comparisons, attacks, figures, runs."""
    folder, head = ctx.folder, spec.get("study", {})
    setup: list[Block] = [Text(str(head["description"]))] if head.get("description") else []
    if (folder / "study.toml").is_file():
        setup.append(Command(f"robust-vae study {(folder / 'study.toml').as_posix()}"))
    setup.append(facts_table(flatten({k: v for k, v in head.items() if k not in ("name", "description")}),
                             "study-settings", "Settings ([study] in study.toml)", "study.toml"))
    shown = figures_in(ctx, folder / "figures") if (folder / "figures").is_dir() else None
    scatter = analysis_figures(ctx)
    anchors = {(folder / f.file).resolve(): f.id for f in (*(shown.items if shown else ()),
                                                          *(scatter.items if scatter else ()))}
    runs = study_runs(folder, spec)
    sections = [
        Section("setup", "Setup", tuple(setup)),
        Section("answers", "README.md: setup and answers", (markdown(ctx, folder / "README.md", anchors),)
                if (folder / "README.md").is_file() else ()),
        Section("analysis", "Does disentanglement predict robustness?", analysis_blocks(ctx, spec, scatter)),
        Section("runs", "Runs", (runs_index(ctx, runs),) if runs else ()),
        Section("marginals", "Marginals", tuple(
            [with_key(t, ctx.classes) for t in _study_csv(
                ctx, "marginals.csv", f"Marginals per source {ctx.classes.noun} (main recipe, mean over seeds), %")]
            + _study_csv(ctx, "seeds.csv", "Overall rates per model seed, %"))),
        Section("comparisons", "Comparisons between models", tuple(_study_csv(
            ctx, "comparisons.csv", "Group A − group B: hierarchical-bootstrap 95 % intervals, paired tests"))),
        Section("attacks", "Attack strength", tuple(
            _study_csv(ctx, "attacks.csv", "Overall success per attack (seed 0), %", ATTACK_COLUMNS)
            + _study_csv(ctx, "attacks-comparisons.csv", "Each attack against the baseline, and the models "
                         "under each attack"))),
        Section("robustness-cards", "Robustness report cards", cards_blocks(ctx, spec)),
        Section("figures", "Figures", (shown,) if shown else ()),
        Section("run-details", "Every run", tuple(run_details(ctx, p) for p in runs)),
    ]
    more: list[Block] = []
    if (folder / "results.md").is_file():
        more.append(Details("results.md: every table, as robust-vae study wrote it",
                            (markdown(ctx, folder / "results.md", anchors),)))
    more += other_csvs(ctx, folder, {"marginals.csv", "seeds.csv", "comparisons.csv", "attacks.csv",
                                     "attacks-comparisons.csv"})
    sections.append(Section("files", "results.md and other tables", tuple(more)))
    return [s for s in sections if s.blocks]


def read_study(folder: Path) -> dict[str, Any]:
    """study.toml as a dict (``{}`` when absent); invalid TOML is a one-line error."""
    path = folder / "study.toml"
    if not path.is_file():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise DataError(f"{path} is not valid TOML ({error}): fix the file") from error


# ------------------------------------------------------------------------- pages
def folder_kind(folder: Path) -> str:
    """``"study"``, ``"run"`` or ``"comparison"``, from the files in ``folder``."""
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder: give a run, comparison or study folder")
    if (folder / "study.toml").is_file() or (folder / "results.md").is_file():
        return "study"
    if (folder / "matrix.csv").is_file() or (folder / "cells.csv").is_file():
        return "run"
    if (folder / "comparison.csv").is_file() or (folder / "marginals.csv").is_file():
        return "comparison"
    raise DataError(f"{folder} holds no run (matrix.csv, cells.csv), comparison (comparison.csv, marginals.csv) "
                    "or study (study.toml, results.md): give the folder a robust-vae command wrote")


def folder_classes(folder: Path, kind: str) -> ClassLabels:
    """The classes of what ``folder`` shows: a run's (run.json), a study's (its dataset, else the
    classes its runs share), a comparison's (the classes its runs share)."""
    if kind == "run":
        return run_classes(folder)
    if kind == "study":
        spec = read_study(folder)
        dataset = spec.get("study", {}).get("dataset")
        if dataset:
            return for_dataset(dataset)
        return shared_classes(run_classes(p) for p in study_runs(folder, spec))
    return shared_classes(run_classes(p.parent) for p in sorted(folder.glob("*/run.json")))


def build_page(folder: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> Page:
    """The page model of ``folder`` as seen from ``out_dir`` (where the page will be written)."""
    kind = folder_kind(Path(folder))
    ctx = Context(Path(folder), Path(out_dir), folder_classes(Path(folder), kind))
    name = ctx.folder.resolve().name
    if kind == "run":
        meta = read_json(ctx.folder / "run.json")
        title = " · ".join(_scalar(meta[k]) for k in ("label", "recipe") if meta.get(k)) or name
        return Page(kind, title, _scalar(meta.get("recipe_description", "")), ctx.folder.as_posix(),
                    tuple(run_sections(ctx)))
    if kind == "study":
        spec = read_study(ctx.folder)
        head = spec.get("study", {})
        runs = len(study_runs(ctx.folder, spec))
        subtitle = " · ".join([*([f"dataset {head['dataset']}"] if "dataset" in head else []), f"{runs} runs"])
        return Page(kind, str(head.get("name", name)), subtitle, ctx.folder.as_posix(),
                    tuple(study_sections(ctx, spec)))
    return Page(kind, name, "comparison", ctx.folder.as_posix(), tuple(comparison_sections(ctx)))


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("robust_vae.report", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["number"] = lambda value: format(value, ".15g")
    return env


def render_page(page: Page) -> str:
    """The page as HTML (every value escaped by the template engine)."""
    return _environment().get_template("page.html.j2").render(page=page)


def render_html(folder: str | os.PathLike[str], out_dir: str | os.PathLike[str] | None = None) -> str:
    """The HTML page of a run, comparison or study folder; relative links start at ``out_dir``."""
    return render_page(build_page(folder, out_dir if out_dir is not None else folder))


def write_html(folder: str | os.PathLike[str], out: str | os.PathLike[str] | None = None) -> Path:
    """Write the page of ``folder`` to ``out`` (default ``<folder>/index.html``; a folder or a name without
    suffix: ``<out>/index.html``); returns its path."""
    path = Path(out) if out is not None else Path(folder) / PAGE_NAME
    if path.is_dir() or not path.suffix:
        path = path / PAGE_NAME
    text = render_html(folder, path.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
