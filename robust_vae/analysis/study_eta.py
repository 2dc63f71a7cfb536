"""How long the rest of a study will take, from the wall time its own finished runs and cards recorded.

A study of the families can hold hundreds of runs that take seconds or tens of minutes by their
recipe (a gradient attack on one pair per cell against the Tabacof sweep), so "how many are left"
says little about "when is it done". The estimate prices each run still to make (``new`` or ``partial``) at the mean
``attack_seconds`` of this study's done runs of the same recipe and ``per_pair``, and each card at the
mean ``seconds`` of its done cards: the speed of this machine, under the load it ran with. A partial
run is priced whole (an upper bound); skipped runs (a model not trained yet) are not priced at all.
"""
from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from robust_vae.analysis.study import RunStatus
from robust_vae.analysis.study_robustness import CardStatus

TO_MAKE = ("new", "partial")


@dataclass(frozen=True)
class EtaGroup:
    """The runs of one recipe and ``per_pair`` still to make (or the cards), and what the done ones
    cost: ``mean_seconds`` is None when none is done yet."""

    label: str
    to_make: int
    done_timed: int
    mean_seconds: float | None

    @property
    def seconds(self) -> float | None:
        return None if self.mean_seconds is None else self.to_make * self.mean_seconds


def _recorded_seconds(path: Path, key: str) -> float | None:
    """``key`` of the JSON file at ``path`` as a number of seconds; None when the file, the key or a
    usable value is missing (a run made before the timings were recorded)."""
    try:
        value = json.loads(path.read_text()).get(key)
    except (OSError, ValueError):
        return None
    return float(value) if isinstance(value, int | float) and value >= 0 else None


def _group(label: str, items: Sequence[RunStatus | CardStatus], record: str, key: str) -> EtaGroup:
    """``items``' count still to make, priced at the mean ``key`` of the ``record`` JSON of the done ones."""
    timed = [s for st in items if st.state == "done"
             and (s := _recorded_seconds(st.spec.folder / record, key)) is not None]
    return EtaGroup(label, sum(st.state in TO_MAKE for st in items), len(timed),
                    statistics.fmean(timed) if timed else None)


def eta_groups(statuses: Sequence[RunStatus], cards: Sequence[CardStatus] = ()) -> list[EtaGroup]:
    """One group per (recipe, per_pair) with a run still to make, in the study's order, then one for
    the cards when a card is still to make."""
    keys: list[tuple[str, int | None]] = []
    for st in statuses:
        key = (st.spec.recipe, st.spec.per_pair)
        if st.state in TO_MAKE and key not in keys:
            keys.append(key)
    groups = [_group(recipe + ("" if per_pair is None else f" (per_pair {per_pair})"),
                     [st for st in statuses if (st.spec.recipe, st.spec.per_pair) == (recipe, per_pair)],
                     "run.json", "attack_seconds") for recipe, per_pair in keys]
    if any(card.state in TO_MAKE for card in cards):
        groups.append(_group("robustness card", cards, "card.json", "seconds"))
    return groups


def format_duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``3.4 h``: as precise as a plan needs."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def format_eta(groups: Sequence[EtaGroup], skipped: int = 0) -> str:
    """The ``--dry-run`` line: the total over the priced groups, then each group's count and mean;
    ``skipped``: how many runs and cards cannot run yet (a model not trained: said, not priced)."""
    waiting = f"; {skipped} skipped run(s) and card(s) not priced (not runnable yet: see why above)" if skipped else ""
    if not groups:
        return "time left: nothing to make" + waiting
    parts, unpriced, total = [], [], 0.0
    for g in groups:
        if g.mean_seconds is None:
            unpriced.append(f"{g.to_make} × {g.label}")
        else:
            total += g.to_make * g.mean_seconds
            parts.append(f"{g.to_make} × {g.label} at {format_duration(g.mean_seconds)} (mean of {g.done_timed} done)")
    line = (f"time left: about {format_duration(total)} of wall time at the speed this study's done runs ran "
            f"({'; '.join(parts)})" if parts else "time left: unknown")
    if unpriced:
        line += f"; not priced, none of their kind done yet: {', '.join(unpriced)}"
    return line + waiting
