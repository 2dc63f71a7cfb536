"""``robust-vae compare`` (hierarchical bootstrap, paired tests) on synthetic run folders with
known counts, and ``robust-vae study`` end to end on a tiny study over the small zoo."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from robust_vae.analysis.comparison import Group, RunCounts, compare_runs, group_marginals, paired_tests
from robust_vae.cli.app import main as cli_main
from robust_vae.core.errors import DataError

PAIRS = [(s, t) for s in range(10) for t in range(10) if s != t]
SETUP = {"dataset": "mnist", "attack": "latent-adam", "recipe": "thesis", "per_pair": 50, "seed": 0,
         "hyperparameters": {"epsilon": 0.1, "steps": 1000}, "classifier_sha256": "c0ffee"}


def make_run(folder: Path, n, hits_target, hits_ignore=None, model: str = "vae", model_seed: int = 0,
             examples: bool = True, auddc=None, **meta) -> Path:  # type: ignore[no-untyped-def]
    """A run folder with the given per-cell counts (scalars broadcast to the 90 cells);
    ``auddc``: a callable (rows -> values) giving the examples an AUDDC column, as a swept run has."""
    n = np.broadcast_to(np.asarray(n, np.int64), (90,))
    ht = np.broadcast_to(np.asarray(hits_target, np.int64), (90,))
    hi = ht if hits_ignore is None else np.broadcast_to(np.asarray(hits_ignore, np.int64), (90,))
    folder.mkdir(parents=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        cells = pd.DataFrame({"source": [s for s, _ in PAIRS], "target": [t for _, t in PAIRS], "n_pairs": n,
                              "n": n, "hits_target": ht, "hits_ignore_target": hi,
                              "as_target": ht / np.where(n > 0, n, np.nan),
                              "as_ignore_target": hi / np.where(n > 0, n, np.nan)})
    cells.to_csv(folder / "cells.csv", index=False)
    if examples:
        rows = []
        for (s, t), k, a, b in zip(PAIRS, n, ht, hi):
            other = next(c for c in range(10) if c not in (s, t))
            rows += [(s, t, t)] * a + [(s, t, other)] * (b - a) + [(s, t, s)] * (k - b)
        frame = pd.DataFrame(rows, columns=["source", "target", "prediction"])
        if auddc is not None:
            frame["auddc"] = auddc(len(frame))
        frame.to_csv(folder / "examples.csv.gz", index=False)
    metadata = {**SETUP, "model": model, "model_seed": model_seed, "label": model, **meta}
    (folder / "run.json").write_text(json.dumps(metadata))
    return folder


def rates_to_hits(rates, n: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.round(np.asarray(rates) * n).astype(np.int64)


# ----------------------------------------------------------------- differences and intervals
def test_identical_groups_differ_by_zero(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    hits = [rng.integers(0, 41, 90) for _ in range(3)]
    a = [make_run(tmp_path / f"a{i}", 40, h, np.minimum(h + 5, 40), model_seed=i) for i, h in enumerate(hits)]
    b = [make_run(tmp_path / f"b{i}", 40, h, np.minimum(h + 5, 40), model="vae-b", model_seed=i)
         for i, h in enumerate(hits)]
    result = compare_runs(a, b, bootstrap=500, seed=3, permutations=500)
    assert result.warnings == []
    for m in result.metrics:
        assert m.difference == 0.0
        assert m.lo < 0.0 < m.hi
        assert m.wilcoxon_p == 1.0 and m.permutation_p == 1.0
        assert m.a_higher == m.b_higher == 0 and m.cells == 90
        assert m.mean_a == m.mean_b
    # hand-computed: per run the mean over cells, then over runs
    expected = np.mean([h.mean() / 40 for h in hits])
    assert result.metric("as_target").mean_a == pytest.approx(expected, abs=1e-12)


def test_all_successes_against_none(tmp_path: Path) -> None:
    a = [make_run(tmp_path / f"a{i}", 50, 50, model="jointvae", model_seed=i) for i in range(3)]
    b = [make_run(tmp_path / f"b{i}", 50, 0, model="vae", model_seed=i) for i in range(3)]
    result = compare_runs(a, b, bootstrap=300, seed=0, permutations=999)
    assert (result.label_a, result.label_b) == ("jointvae", "vae")
    for m in result.metrics:
        assert (m.mean_a, m.mean_b, m.difference) == (1.0, 0.0, 1.0)
        assert m.lo == m.hi == 1.0  # no example or seed can change an all-or-nothing cell
        assert m.a_higher == 90 and m.wilcoxon_p < 1e-12
        assert m.permutation_p == pytest.approx(1 / 1000)


def test_clear_shift_is_significant_and_covered(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.6, 90)
    a = [make_run(tmp_path / f"a{i}", 100, rates_to_hits(base + 0.1 + rng.normal(0, 0.02, 90), 100), model="a",
                  model_seed=i) for i in range(3)]
    b = [make_run(tmp_path / f"b{i}", 100, rates_to_hits(base + rng.normal(0, 0.02, 90), 100), model="b",
                  model_seed=i) for i in range(3)]
    m = compare_runs(a, b, bootstrap=1000, seed=0).metric("as_target")
    assert m.difference == pytest.approx(0.1, abs=0.01)
    assert 0.0 < m.lo < m.difference < m.hi < 0.2
    assert m.wilcoxon_p < 1e-10 and m.permutation_p < 1e-3


def test_within_cell_interval_matches_the_binomial_standard_error(tmp_path: Path) -> None:
    """One run, p = 0.5 in every cell of n = 100: the mean over 90 cells has SE sqrt(.25/100/90)."""
    group = Group.load([make_run(tmp_path / "a", 100, 50, examples=False)])
    frame = group_marginals(group, replicates=4000, seed=0)
    overall = frame[frame["kind"] == "overall"].iloc[0]
    half = (overall["as_target_hi"] - overall["as_target_lo"]) / 2
    assert half == pytest.approx(1.96 * np.sqrt(0.25 / 100 / 90), rel=0.15)
    assert overall["as_target"] == 0.5


def test_seed_resampling_widens_the_interval(tmp_path: Path) -> None:
    """Seeds at 20 %, 50 %, 80 % with huge cells: the interval is the spread of the seed means."""
    group = Group.load([make_run(tmp_path / f"s{i}", 10_000, int(r * 10_000), model_seed=i, examples=False)
                        for i, r in enumerate((0.2, 0.5, 0.8))])
    overall = group_marginals(group, replicates=2000, seed=0).query("kind == 'overall'").iloc[0]
    assert overall["as_target"] == pytest.approx(0.5)
    # three seeds drawn with replacement: all three the 20 % (or the 80 %) seed has chance
    # 1/27 = 3.7 % > 2.5 %, so the percentile interval reaches the extreme seeds
    assert overall["as_target_lo"] == pytest.approx(0.2, abs=0.003)
    assert overall["as_target_hi"] == pytest.approx(0.8, abs=0.003)
    one = group_marginals(Group(group.label, group.runs[1:2]), replicates=2000, seed=0)
    one = one.query("kind == 'overall'").iloc[0]
    assert one["as_target_hi"] - one["as_target_lo"] < 0.01  # one seed: example noise only


def test_bootstrap_keeps_target_hits_inside_ignore_target_hits(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    ht = rng.integers(0, 10, 90)
    group = Group.load([make_run(tmp_path / "a", 30, ht, ht + rng.integers(0, 20, 90))])
    boot = group.bootstrap_rates(300, np.random.default_rng(0))
    assert boot["as_target"].shape == (300, 1, 90)
    assert (boot["as_target"] <= boot["as_ignore_target"]).all()


def test_bootstrap_is_reproducible_by_seed(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    a = [make_run(tmp_path / f"a{i}", 20, rng.integers(0, 21, 90), model="a", model_seed=i) for i in range(2)]
    b = [make_run(tmp_path / f"b{i}", 20, rng.integers(0, 21, 90), model="b", model_seed=i) for i in range(2)]
    first, again, other = (compare_runs(a, b, bootstrap=400, seed=s) for s in (7, 7, 8))
    assert first.metrics == again.metrics
    assert first.to_frame().equals(again.to_frame())
    assert (first.metric("as_target").lo, first.metric("as_target").hi) != (other.metric("as_target").lo,
                                                                             other.metric("as_target").hi)
    assert first.metric("as_target").difference == other.metric("as_target").difference


def test_empty_cells_are_skipped(tmp_path: Path) -> None:
    n = np.full(90, 10)
    n[:9] = 0  # source 0 has no kept example
    ht = np.where(n > 0, 10, 0)
    result = compare_runs([make_run(tmp_path / "a", n, ht, model="a")], [make_run(tmp_path / "b", 10, 0, model="b")],
                          bootstrap=50)
    m = result.metric("as_target")
    assert (m.mean_a, m.difference, m.cells) == (1.0, 1.0, 81)
    marg = group_marginals(Group.load([tmp_path / "a"]), replicates=50)
    assert np.isnan(marg.query("kind == 'source' and cls == 0")["as_target"].iloc[0])


def test_paired_tests_directly() -> None:
    d = np.linspace(0.01, 0.05, 90)
    out = paired_tests(0.3 + d, np.full(90, 0.3), permutations=2000, seed=0)
    assert out["a_higher"] == 90 and out["wilcoxon_p"] < 1e-10 and out["permutation_p"] < 1e-3
    noise = np.random.default_rng(0).normal(0, 0.05, 90)
    assert paired_tests(0.5 + noise, np.full(90, 0.5))["wilcoxon_p"] > 0.01


def test_different_setups_are_flagged(tmp_path: Path) -> None:
    a = [make_run(tmp_path / "a", 20, 10, model="vae", recipe="tabacof-linf", attack="latent-lbfgsb")]
    b = [make_run(tmp_path / f"b{i}", 20, 5, model="vae", model_seed=i, per_pair=10) for i in range(2)]
    result = compare_runs(a, b, bootstrap=50)
    text = " ".join(result.warnings)
    assert "DIFFERENT ATTACK SETUPS" in text and "differ in attack, per_pair (" in text
    assert "tabacof-linf vs thesis" in text and "compares attack setups on the same model" in text
    assert "one run" in text  # group A cannot show seed variation
    assert result.label_a == "vae / tabacof-linf" and result.label_b == "vae"
    assert "DIFFERENT ATTACK SETUPS" in result.to_markdown() and "DIFFERENT ATTACK SETUPS" in result.to_latex()
    assert "DIFFERENT ATTACK SETUPS" in result.to_frame()["warnings"].iloc[0]
    other = compare_runs([make_run(tmp_path / "j", 20, 5, model="jointvae", per_pair=20)], b, bootstrap=20)
    assert any("mixes the models with the attack setup" in w for w in other.warnings)
    same = compare_runs([make_run(tmp_path / "k", 20, 5, model="jointvae")], [make_run(tmp_path / "l", 20, 5)],
                        bootstrap=20)
    assert not any("DIFFERENT" in w for w in same.warnings)
    mixed = compare_runs([tmp_path / "b0", make_run(tmp_path / "c", 20, 5, model="jointvae", per_pair=10)],
                         [tmp_path / "b1"], bootstrap=20)
    assert any("mixes models" in w for w in mixed.warnings)


def test_examples_must_add_up_to_cells(tmp_path: Path) -> None:
    run = make_run(tmp_path / "a", 5, 2)
    cells = pd.read_csv(run / "cells.csv")
    cells.loc[3, "hits_target"] = 3
    cells.loc[3, "hits_ignore_target"] = 3
    cells.to_csv(run / "cells.csv", index=False)
    with pytest.raises(DataError, match="does not add up"):
        RunCounts.load(run)
    with pytest.raises(DataError, match="not a finished run"):
        RunCounts.load(tmp_path / "nothing")


def test_compare_command_writes_csv_tex_md(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = [make_run(tmp_path / "runs" / f"jointvae-seed{i}" / "thesis", 30, 20, model="jointvae", model_seed=i)
         for i in range(3)]
    b = [make_run(tmp_path / "runs" / f"vae-seed{i}" / "thesis", 30, 10, model="vae", model_seed=i) for i in range(3)]
    out = tmp_path / "cmp"
    argv = ["compare", "--a", *map(str, a), "--b", *map(str, b), "--bootstrap", "200", "--out", str(out)]
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out
    assert "| jointvae vs vae | AS target |" in printed and "+33.33" in printed
    table = pd.read_csv(out / "comparison.csv")
    assert list(table["metric"]) == ["as_target", "as_ignore_target"]
    assert table["difference_pp"].iloc[0] == pytest.approx(100 / 3, abs=1e-3)
    assert (table["seeds_a"] == "0 1 2").all() and (table["runs_b"] == 3).all()
    assert "\\begin{tabular}" in (out / "comparison.tex").read_text()
    assert (out / "comparison.md").read_text().strip() == printed.split("\nwrote ")[0].strip()
    # default output folder: next to the runs
    assert cli_main(argv[:-2]) == 0
    assert (tmp_path / "runs" / "compare-jointvae-vs-vae" / "comparison.csv").is_file()
    # a run folder that is not a finished run: one line, exit 2
    capsys.readouterr()
    assert cli_main(["compare", "--a", str(tmp_path / "missing"), "--b", str(b[0])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("robust-vae compare: error:") and "not a finished run" in err[0]


def test_auddc_is_compared_when_every_run_has_curves(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    a = [make_run(tmp_path / f"a{i}", 10, 5, model="jointvae", model_seed=i, auddc=lambda k: rng.uniform(0.2, 0.4, k))
         for i in range(3)]
    b = [make_run(tmp_path / f"b{i}", 10, 5, model="vae", model_seed=i, auddc=lambda k: rng.uniform(0.5, 0.7, k))
         for i in range(3)]
    result = compare_runs(a, b, bootstrap=400, permutations=500)
    assert [m.metric for m in result.metrics] == ["as_target", "as_ignore_target", "auddc"]
    auddc = result.metric("auddc")
    assert auddc.difference == pytest.approx(-0.3, abs=0.01)
    assert auddc.lo < auddc.difference < auddc.hi < 0 and auddc.b_higher == 90 and auddc.permutation_p < 0.01
    # a single run's interval is the example-bootstrap one: 1.96 standard errors of 900 U(0.2, 0.4) draws
    one = compare_runs(a[:1], b[:1], bootstrap=2000, permutations=100).metric("auddc")
    half_width = (one.hi_a - one.lo_a) / 2
    assert half_width == pytest.approx(1.96 * 0.2 / np.sqrt(12) / np.sqrt(900), rel=0.2)
    text = result.to_markdown()
    assert "| AUDDC |" in text and f"{auddc.mean_a:.4f} [" in text and "area units" in text
    # the rates' intervals do not move when AUDDC joins (their random streams are their own)
    plain = [make_run(tmp_path / f"p{i}", 10, 5, model="jointvae", model_seed=i) for i in range(3)]
    without = compare_runs(plain, b, bootstrap=400, permutations=500)
    assert [m.metric for m in without.metrics] == ["as_target", "as_ignore_target"]
    assert without.metric("as_target") == result.metric("as_target")


# ----------------------------------------------------------------- the study runner
TINY_STUDY = """
[study]
name = "tiny"
per_pair = 1
seed = 0
bootstrap = 200
permutations = 200

[study.set]
steps = 20

[[runs]]
models = ["vae", "vae-wd"]
seeds = [0, 1]
recipes = ["thesis", "no-such-recipe"]

[[runs]]
models = ["vae"]
recipes = ["thesis-accumulate"]
per_pair = 2

[marginals]
models = ["vae", "vae-wd"]

[[comparisons]]
a = "vae"
b = "vae-wd"

[attack_strength]
models = ["vae"]
recipes = ["thesis", "thesis-accumulate"]
"""


def _clone(zoo: Path, name: str, seed: int, config_class: str | None = None, **config: object) -> None:
    """Register the small VAE's weights under another zoo name/seed (same weights, own card)."""
    folder = zoo / "mnist"
    card = json.loads((folder / "vae-seed0.json").read_text())
    stem = f"{name}-seed{seed}"
    shutil.copy(folder / "vae-seed0.safetensors", folder / f"{stem}.safetensors")
    card.update(name=name, family=name, seed=seed, weights=f"{stem}.safetensors")
    card["config"].update(config)
    if config_class:
        card["config_class"] = config_class
    (folder / f"{stem}.json").write_text(json.dumps(card))


@pytest.fixture(scope="module")
def tiny_zoo(small_zoo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small zoo plus vae-wd seed 0 with the same weights as vae seed 0 (so every
    comparison between them must come out exactly 0); no seed 1 of either."""
    zoo = tmp_path_factory.mktemp("tiny-zoo")
    shutil.copytree(small_zoo / "mnist", zoo / "mnist")
    _clone(zoo, "vae-wd", 0, "WeightDecayVAEConfig", weight_decay=0.5)
    return zoo


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_dry_run_of_runs_not_made_yet_computes_no_fingerprint(
    tiny_zoo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run's fingerprint can need an artefact trained on first use (kos-classifier's latent
    classifier): listing runs that do not exist yet must not compute it, only check the zoo."""
    from robust_vae.evaluation.run_config import RunConfig

    def refuse(self: RunConfig) -> None:
        raise AssertionError(f"fingerprint of {self.model}/{self.recipe} computed by a dry run")

    monkeypatch.setenv("ROBUST_VAE_MODELS", str(tiny_zoo))
    monkeypatch.setattr(RunConfig, "fingerprint", refuse)
    (tmp_path / "study.toml").write_text(TINY_STUDY)
    assert cli_main(["study", str(tmp_path / "study.toml"), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "3 new, 6 skipped" in printed and "model vae-wd seed 1 is not in the zoo yet" in printed
    assert "(train it: robust-vae train --model vae-wd --dataset mnist --seed 1)" in printed  # a family


def test_a_missing_variant_is_told_to_train_with_set_and_name(
    tmp_path: Path, tiny_zoo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from robust_vae.analysis.study import RunSpec, read_study, run_status

    monkeypatch.setenv("ROBUST_VAE_MODELS", str(tiny_zoo))
    (tmp_path / "study.toml").write_text(TINY_STUDY)
    study = read_study(tmp_path / "study.toml")
    status = run_status(study, RunSpec("betavae-b8", 0, "thesis-fast", study.runs_dir / "x"))
    assert status.state == "skipped"
    assert "--set KEY=VALUE --name betavae-b8" in status.reason


def test_study_runs_resumes_and_writes_its_tables(
    tiny_zoo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ROBUST_VAE_MODELS", str(tiny_zoo))
    study = tmp_path / "study"
    study.mkdir()
    (study / "study.toml").write_text(TINY_STUDY)
    toml = str(study / "study.toml")

    assert cli_main(["study", toml, "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "3 new, 6 skipped" in printed
    assert "model vae-wd seed 1 is not in the zoo yet" in printed and "'no-such-recipe' does not exist yet" in printed
    assert "time left: unknown; not priced, none of their kind done yet: 2 × thesis" in printed
    assert not (study / "runs").exists()

    assert cli_main(["study", toml, "--draft-readme"]) == 0
    printed = capsys.readouterr().out
    runs = study / "runs"
    for model, seed, recipe, per_pair in (("vae", 0, "thesis", 1), ("vae-wd", 0, "thesis", 1),
                                          ("vae", 0, "thesis-accumulate", 2)):   # that table sets its own per_pair
        run = json.loads((runs / f"{model}-seed{seed}" / recipe / "run.json").read_text())
        assert (run["model"], run["model_seed"], run["per_pair"], run["hyperparameters"]["steps"]) == \
            (model, seed, per_pair, 20)
        assert run["command"].startswith(f"robust-vae attack --model {model} ")  # reproduces the run alone
    assert sorted(p.name for p in runs.iterdir()) == ["vae-seed0", "vae-wd-seed0"]
    assert not list(runs.glob("*/no-such-recipe"))
    for name in ("marginals.csv", "marginals.tex", "marginals.md", "marginals-intervals.csv", "seeds.csv",
                 "seeds.md", "seeds.tex", "comparisons.csv", "comparisons.tex", "comparisons.md", "attacks.csv",
                 "attacks.md", "attacks.tex", "attacks-comparisons.csv", "results.md", "README.draft.md",
                 "figures/marginals-as-target.png", "figures/marginals-as-ignore-target.png", "figures/attacks.png"):
        assert (study / name).is_file(), name
    assert (study / "figures" / "attacks.png").read_bytes()[:4] == b"\x89PNG"

    # vae and vae-wd seed 0 are the same weights: every number agrees exactly
    marg = pd.read_csv(study / "marginals.csv")
    assert list(marg.columns) == ["source", "vae (1 seed) AS target", "vae (1 seed) AS ignore-target",
                                  "vae-wd (1 seed) AS target", "vae-wd (1 seed) AS ignore-target"]
    np.testing.assert_array_equal(marg.iloc[:, 1], marg.iloc[:, 3])
    cells = pd.read_csv(runs / "vae-seed0" / "thesis" / "cells.csv")
    assert marg.iloc[-1, 1] == pytest.approx(round(100 * cells["as_target"].mean(), 2))
    comps = pd.read_csv(study / "comparisons.csv")
    assert comps["comparison"].iloc[0].startswith("vae vs vae-wd (thesis, seeds 0 vs 0)")
    assert (comps["difference_pp"] == 0).all() and (comps["wilcoxon_p"] == 1).all()
    assert (comps["difference_lo_pp"] <= 0).all() and (comps["difference_hi_pp"] >= 0).all()
    seeds = pd.read_csv(study / "seeds.csv")
    assert sorted(zip(seeds["model"], seeds["seed"])) == [("vae", 0), ("vae-wd", 0)]
    attacks = pd.read_csv(study / "attacks.csv")
    assert list(attacks["recipe"]) == ["thesis", "thesis-accumulate"]
    results = (study / "results.md").read_text()
    assert results.startswith("# tiny: results") and f"robust-vae study {toml}" in results
    assert "skipped" in results and "vae vs vae-wd" in results and "figures/attacks.png" in results
    assert "runs tables with their own per_pair: 2" in results
    assert "# tiny: results" in printed

    # a second invocation runs nothing and rewrites the same tables
    before = snapshot(study)
    assert cli_main(["study", toml]) == 0
    printed = capsys.readouterr().out
    assert "nothing to run" in printed and "time left: nothing to make; 6 skipped run(s)" in printed
    after = snapshot(study)
    assert set(after) == set(before)
    for name, (content, mtime) in before.items():
        if name.startswith("runs/"):
            assert after[name] == (content, mtime), name  # the runs are not touched at all
        elif not name.endswith(".png"):
            assert after[name][0] == content, name  # the tables come out identical

    # another per_pair conflicts with the finished runs: one line, exit 2, nothing changed
    # (--per-pair replaces every table's value: the thesis-accumulate run, made at 2, still matches)
    assert cli_main(["study", toml, "--per-pair", "2"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "different configuration (differs in: per_pair)" in err[0] and captured.out == ""
    assert cli_main(["study", toml, "--per-pair", "2", "--dry-run"]) == 0
    assert "1 done, 6 skipped, 2 conflict" in capsys.readouterr().out
    assert snapshot(runs) == {k[len("runs/"):]: v for k, v in after.items() if k.startswith("runs/")}


def test_study_command_entry_points(tiny_zoo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "study.toml").write_text(TINY_STUDY)
    env = dict(os.environ, ROBUST_VAE_MODELS=str(tiny_zoo), OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-m", "robust_vae", "study", str(tmp_path / "study.toml"), "--dry-run"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "3 new, 6 skipped" in result.stdout
    for text, expected in (("[study]\nper_pair = 0\n[[runs]]\nmodels = ['vae']\n", "per_pair must be a whole number >= 1"),
                           ("[study]\nper_pair = 2\n", "needs at least one [[runs]] table"),
                           ("[[runs]]\nmodel = ['vae']\n", "unknown key(s) ['model']"),
                           ("[[runs]]\nmodels = ['vae']\n[[runs]]\nmodels = ['vae']\nper_pair = 3\n",
                            "already in an earlier [[runs]] table with another per_pair"),
                           ("[[runs]]\nmodels = ['vae']\nper_pair = 'all'\n", "per_pair must be a whole number >= 1"),
                           ("[runs\n", "is not valid TOML")):
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        assert cli_main(["study", str(bad)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("robust-vae study: error: study file") and expected in err, err
    assert cli_main(["study", str(tmp_path / "nothing.toml")]) == 2
    assert "not found" in capsys.readouterr().err
