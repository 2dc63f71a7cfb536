"""``robust-vae attack --attack e2e-linf / kos-classifier-linf`` and ``robust-vae
classifier-robustness`` on the small zoo: every report file, the classifier baseline's numbers,
and one-line errors. ``attack --attack e2e-linf`` runs the console script in a subprocess, as a
user runs it; the rest call ``robust_vae.cli.main`` in-process (the same code, without paying
the interpreter's start-up again)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

SCRIPT = Path(sys.executable).parent / "robust-vae"
COMMAND = [str(SCRIPT)] if SCRIPT.is_file() else [sys.executable, "-m", "robust_vae.cli.app"]
REPORT_FILES = ("cells.csv", "matrix.csv", "marginals.csv", "matrix.tex", "marginals.tex",
                "summary.md", "heatmaps.png", "examples.png", "run.json")
# few, large PGD steps (10 × 0.1·ε) and a small latent classifier (as in
# tests/attacks/test_foolbox_attacks.py)
FAST = ["--set", "steps=10", "--set", "rel_stepsize=0.1"]
KOS_FAST = [*FAST, "--set", "classifier_train_size=5000", "--set", "classifier_epochs=10"]


@pytest.fixture(scope="module")
def env(small_zoo: Path) -> dict[str, str]:
    """The session's environment (its isolated cache: a latent classifier trained by the API
    tests is reused) plus the small zoo and one torch thread."""
    return dict(os.environ, ROBUST_VAE_MODELS=str(small_zoo), OMP_NUM_THREADS="1")


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COMMAND, *args], capture_output=True, text=True, env=env, timeout=600)


def check_report(out: Path, per_pair: int) -> pd.DataFrame:
    for name in REPORT_FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    cells = pd.read_csv(out / "cells.csv")
    assert len(cells) == 90
    assert (cells["n_pairs"] == per_pair).all()
    return cells


@pytest.mark.parametrize("recipe, extra, subprocess_run", [
    ("e2e-linf", FAST, True),  # the console script, as a user runs it
    ("kos-classifier-linf", KOS_FAST, False),  # robust_vae.cli.main in-process: the same code, no start-up
])
def test_attack_with_a_foolbox_recipe_writes_every_report_file(recipe, extra, subprocess_run, env, tmp_path,
                                                              monkeypatch) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / recipe
    args = ["attack", "--model", "vae", "--dataset", "mnist", "--attack", recipe, "--per-pair", "2", *extra,
            "--out", str(out)]
    if subprocess_run:
        result = run_cli(args, env)
        assert result.returncode == 0, result.stderr
    else:
        from robust_vae.cli.app import main

        monkeypatch.setenv("ROBUST_VAE_MODELS", env["ROBUST_VAE_MODELS"])
        assert main(args) == 0
    cells = check_report(out, 2)
    run = json.loads((out / "run.json").read_text())
    assert run["attack"] == recipe.rsplit("-", 1)[0] and run["recipe"] == recipe
    assert run["hyperparameters"]["steps"] == 10 and run["hyperparameters"]["epsilon"] == 0.1
    examples = pd.read_csv(out / "examples.csv.gz")
    assert float(examples["linf"].max()) <= 0.1 + 1e-6
    kept = cells[cells["n"] > 0]
    print(f"{recipe}: {len(kept)} cells kept, {kept['hits_target'].sum()} / {kept['n'].sum()} hits")
    assert len(kept) >= 50  # the small VAE reconstructs a source recognisably about 60 % of the time
    assert 0 < kept["hits_target"].sum() < kept["n"].sum()  # some successes, not all
    if recipe.startswith("kos"):  # the latent classifier is cached with its card
        cards = [json.loads(p.read_text()) for p in
                 Path(env["ROBUST_VAE_CACHE"]).glob("latent-classifiers/mnist/*.json")]
        assert any(card["config"]["train_size"] == 5000 and card["config"]["epochs"] == 10 for card in cards)


def test_classifier_robustness_writes_summary_and_reports(small_zoo: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from robust_vae.cli.app import main  # in-process: the console script's code without the start-up

    out = tmp_path / "robustness"
    assert main(["classifier-robustness", "--dataset", "mnist", "--eps", "0.02", "0.1", "--per-pair", "2",
                 *FAST, "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    summary = pd.read_csv(out / "robustness.csv")
    print(summary.to_string())
    assert summary["epsilon"].tolist() == [0.02, 0.1]
    assert (summary["norm"] == "linf").all()
    card = json.loads((small_zoo / "mnist" / "classifier.json").read_text())
    np.testing.assert_allclose(summary["clean_accuracy"], card["metrics"]["test_accuracy"], atol=1e-6)
    # measured (per-pair 2, 10 steps of 0.1·ε): robust accuracy 0.989 / 0.455 and AS target
    # 0.00 / 0.20 at ε = 0.02 / 0.1, over 178 distinct sources
    low, high = summary.iloc[0], summary.iloc[1]
    assert low["robust_accuracy"] > 0.9 > 0.7 > high["robust_accuracy"]
    assert low["as_target"] < 0.05 < 0.1 < high["as_target"]
    assert (summary["robust_n"] > 160).all()
    for epsilon in ("0.02", "0.1"):
        cells = check_report(out / f"eps-{epsilon}", 2)
        run = json.loads((out / f"eps-{epsilon}" / "run.json").read_text())
        assert run["hyperparameters"]["epsilon"] == float(epsilon) and run["model"] == "classifier"
        examples = pd.read_csv(out / f"eps-{epsilon}" / "examples.csv.gz")
        assert float(examples["linf"].max()) <= float(epsilon) + 1e-6
        assert (cells["n"] == 2).mean() > 0.9  # the classifier labels almost every source correctly
    assert (out / "robustness.md").read_text().count("\n| 0.") == 2
    assert "robust accuracy" in stdout and "| 0.1 | linf | 98.93% |" in stdout


# errors run in-process (robust_vae.cli.main, what the console script calls): no torch start-up
@pytest.mark.parametrize("args, message", [
    (["--attack", "thesis"], "needs an e2e recipe"),
    (["--attack", "no-such-recipe"], "unknown attack recipe"),
    (["--set", "method=fgsm"], "method must be one of"),
])
def test_classifier_robustness_errors_are_one_line(args, message, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from robust_vae.cli.app import main

    out = tmp_path / "never"
    assert main(["classifier-robustness", "--dataset", "mnist", "--per-pair", "1", *args, "--out", str(out)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("robust-vae classifier-robustness: error: "), captured.err
    assert message in lines[0] and captured.out == ""
    assert not out.exists()


def test_negative_eps_is_a_usage_error(capsys) -> None:  # type: ignore[no-untyped-def]
    from robust_vae.cli.app import main

    with pytest.raises(SystemExit) as exit_info:
        main(["classifier-robustness", "--eps", "-0.1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "--eps" in err and "must be a finite number >= 0" in err
