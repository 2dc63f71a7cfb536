"""The study's time-left estimate: each run still to make priced at its recipe's done runs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from robust_vae.analysis.study import RunSpec, RunStatus
from robust_vae.analysis.study_eta import eta_groups, format_duration, format_eta
from robust_vae.analysis.study_robustness import CardSpec, CardStatus


def _run(tmp_path: Path, model: str, recipe: str, state: str, seconds: float | None = None,
         per_pair: int | None = None) -> RunStatus:
    folder = tmp_path / model / recipe / str(per_pair)
    folder.mkdir(parents=True)
    if seconds is not None:
        (folder / "run.json").write_text(json.dumps({"attack_seconds": seconds}))
    return RunStatus(RunSpec(model, 0, recipe, folder, per_pair=per_pair), state)


def test_each_recipe_is_priced_at_its_own_done_runs(tmp_path: Path) -> None:
    statuses = [
        _run(tmp_path, "a", "thesis-fast", "done", 60.0),
        _run(tmp_path, "b", "thesis-fast", "done", 120.0),
        _run(tmp_path, "c", "thesis-fast", "new"),
        _run(tmp_path, "d", "thesis-fast", "partial"),                 # priced whole
        _run(tmp_path, "a", "tabacof", "done", 3600.0, per_pair=5),
        _run(tmp_path, "b", "tabacof", "new", per_pair=5),
        _run(tmp_path, "c", "tabacof", "new", per_pair=1),            # another per_pair: none done
        _run(tmp_path, "e", "thesis-fast", "skipped"),                 # no model yet: not priced
        _run(tmp_path, "f", "thesis-fast", "done"),                    # no timing recorded: not averaged
    ]
    groups = eta_groups(statuses)
    assert [(g.label, g.to_make, g.done_timed, g.mean_seconds) for g in groups] == [
        ("thesis-fast", 2, 2, 90.0), ("tabacof (per_pair 5)", 1, 1, 3600.0), ("tabacof (per_pair 1)", 1, 0, None)]
    assert [g.seconds for g in groups] == [180.0, 3600.0, None]
    line = format_eta(groups, skipped=1)
    assert line.startswith("time left: about 63 min of wall time")
    assert "2 × thesis-fast at 2 min (mean of 2 done)" in line
    assert "not priced, none of their kind done yet: 1 × tabacof (per_pair 1)" in line
    assert line.endswith("1 skipped run(s) and card(s) not priced (not runnable yet: see why above)")


def test_cards_are_priced_at_the_done_cards(tmp_path: Path) -> None:
    cards = []
    for model, state, seconds in (("a", "done", 200.0), ("b", "done", None), ("c", "new", None), ("d", "new", None)):
        folder = tmp_path / model
        folder.mkdir()
        if seconds is not None:
            (folder / "card.json").write_text(json.dumps({"seconds": seconds}))
        cards.append(CardStatus(CardSpec(model, 0, folder), state))
    (group,) = eta_groups([], cards)
    assert (group.label, group.to_make, group.done_timed, group.seconds) == ("robustness card", 2, 1, 400.0)
    assert format_eta([]) == "time left: nothing to make"
    assert format_eta(eta_groups([], cards[:2])) == "time left: nothing to make"


@pytest.mark.parametrize(("seconds", "text"), [(45, "45 s"), (89.4, "89 s"), (600, "10 min"), (5399, "90 min"),
                                               (5400, "1.5 h"), (36000, "10.0 h")])
def test_durations_read_at_a_planning_precision(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
