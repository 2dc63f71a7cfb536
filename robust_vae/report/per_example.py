"""Per-cell tables of a run's optional per-example columns: the ensemble's winners and the
classifier-free metrics (``winners.csv``, ``metrics.csv``, ``metrics_cells.csv``).

Rendered from the per-example table alone, so a saved run re-renders them byte for byte.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from robust_vae.report.tables import markdown_table

KEY_COLUMNS = ["source", "target", "source_index", "target_index"]


def winners_table(examples: pd.DataFrame, members: Sequence[str], cells: pd.DataFrame) -> pd.DataFrame:
    """One row per cell of ``cells`` (source, target, n) with, per member, the targeted and the
    ignore-target successes it won (``target_wins_<member>``, ``ignore_target_wins_<member>``):
    their sums over the members are the cell's ``hits_target`` and ``hits_ignore_target``."""
    rows = []
    grouped = {key: frame for key, frame in examples.groupby(["source", "target"])}
    for s, t in zip(cells["source"], cells["target"]):
        frame = grouped.get((s, t), examples.iloc[0:0])
        row: dict[str, object] = {"source": int(s), "target": int(t), "n": len(frame)}
        hit_t = (frame["prediction"] == t).to_numpy()
        hit_i = (frame["prediction"] != s).to_numpy()
        winner = frame["winner"].to_numpy()
        for i, member in enumerate(members):
            row[f"target_wins_{member}"] = int((hit_t & (winner == i)).sum())
        for i, member in enumerate(members):
            row[f"ignore_target_wins_{member}"] = int((hit_i & (winner == i)).sum())
        rows.append(row)
    return pd.DataFrame(rows)


def winners_markdown(winners: pd.DataFrame, members: Sequence[str]) -> str:
    """The run's successes won per member, over all cells (a section of ``summary.md``)."""
    total_t = sum(int(winners[f"target_wins_{m}"].sum()) for m in members)
    total_i = sum(int(winners[f"ignore_target_wins_{m}"].sum()) for m in members)
    rows = []
    for m in members:
        t, i = int(winners[f"target_wins_{m}"].sum()), int(winners[f"ignore_target_wins_{m}"].sum())
        rows.append([f"`{m}`", f"{t} ({_share(t, total_t)})", f"{i} ({_share(i, total_i)})"])
    table = markdown_table(["member", "targeted successes won", "ignore-target successes won"], rows, "lrr")
    return ("## Worst case over attacks\n\nPer example, the first member (in this order) that reached the "
            "best success level is the one reported (`winner` in examples.csv.gz; per cell in winners.csv).\n\n"
            + table + "\n")


def _share(part: int, total: int) -> str:
    return f"{100 * part / total:.1f}%" if total else "–"


def metrics_cells(examples: pd.DataFrame, columns: Sequence[str], cells: pd.DataFrame) -> pd.DataFrame:
    """Per cell of ``cells``: n and the mean of every metric column (``mean_<column>``, NaN
    where the cell has no example or the metric was not recorded)."""
    rows = []
    grouped = {key: frame for key, frame in examples.groupby(["source", "target"])}
    for s, t in zip(cells["source"], cells["target"]):
        frame = grouped.get((s, t), examples.iloc[0:0])
        row: dict[str, object] = {"source": int(s), "target": int(t), "n": len(frame)}
        for column in columns:
            values = frame[column].to_numpy(dtype=float)
            row[f"mean_{column}"] = float(np.nanmean(values)) if np.isfinite(values).any() else np.nan
        rows.append(row)
    return pd.DataFrame(rows)
