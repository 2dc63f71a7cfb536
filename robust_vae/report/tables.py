"""The one Markdown writer and the one LaTeX writer that every table of the package uses."""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence

_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                  "^": r"\textasciicircum{}"}
_MARKDOWN_ALIGN = {"l": ":---", "r": "---:", "c": ":---:"}


def format_p(p: float) -> str:
    """A p- or q-value for a table: ``<0.0001``, 4 decimals below 0.01, else 3; ``n/a`` when not finite."""
    if not math.isfinite(p):
        return "n/a"
    if p < 1e-4:
        return "<0.0001"
    return f"{p:.4f}" if p < 0.01 else f"{p:.3f}"


def latex_escape(text: object) -> str:
    """Escape LaTeX special characters in a plain label (run names, model names)."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]], align: str | None = None) -> str:
    """GitHub Markdown table; ``align`` is one letter per column (l, r, c), default all right.

    Cells are ``str()``-ed and their ``|`` escaped; no trailing newline.
    """
    align = align or "r" * len(header)
    if len(align) != len(header):
        raise ValueError(f"align has {len(align)} letters for {len(header)} columns")
    escaped = [[str(cell).replace("|", r"\|") for cell in row] for row in [list(header), *rows]]
    lines = ["| " + " | ".join(escaped[0]) + " |",
             "| " + " | ".join(_MARKDOWN_ALIGN[a] for a in align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in escaped[1:]]
    return "\n".join(lines)


def latex_table(
    column_spec: str,
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    caption: str,
    label: str,
    packages: Sequence[str] = ("booktabs",),
    size: str | None = None,
    above_header: Sequence[str] = (),
    midrule_before: Collection[int] = (),
    comments: Sequence[str] = (),
) -> str:
    """A booktabs ``table`` environment, cells given as raw LaTeX.

    ``above_header``: raw lines between ``\\toprule`` and the header (group headings, rules);
    ``midrule_before``: row indexes preceded by an extra ``\\midrule`` (e.g. a "Mean" row);
    ``comments``: ``%`` lines after the table. ``caption`` and ``label`` are verbatim LaTeX.
    """
    lines = ["% requires " + " and ".join(f"\\usepackage{{{p}}}" for p in packages),
             "\\begin{table}[htbp]", "\\centering"]
    if size:
        lines.append(f"\\{size}")
    lines += [f"\\begin{{tabular}}{{{column_spec}}}", "\\toprule", *above_header,
              " & ".join(header) + " \\\\", "\\midrule"]
    for i, row in enumerate(rows):
        if i in midrule_before:
            lines.append("\\midrule")
        lines.append(" & ".join(row) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", f"\\caption{{{caption}}}", f"\\label{{{label}}}", "\\end{table}"]
    lines += [f"% {comment}" for comment in comments]
    return "\n".join(lines) + "\n"
