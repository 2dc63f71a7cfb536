"""RunConfig: one fingerprint, a command that reproduces it, and run_attack writing it."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pytest

from robust_vae.analysis.study import RunSpec, Study, expected_fingerprint
from robust_vae.cli.app import build_parser
from robust_vae.cli.attack import config_from_args
from robust_vae.core.errors import ConfigError
from robust_vae.evaluation.run_config import RunConfig
from robust_vae.evaluation.runner import run_attack

CONFIGS = [
    RunConfig("vae"),
    RunConfig.create("jointvae", model_seed=1, recipe="thesis-fast", overrides={"steps": 3, "lr": 0.05},
                     per_pair=None, seed=4, batch_size=64),
    RunConfig.create("vae-wd", recipe="tabacof-linf", overrides={"c": [0.5, 2.0], "solver": "torch"},
                     per_pair=2, label="weight decay"),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.model}-{c.recipe}")
def test_command_parses_back_to_the_same_config(config: RunConfig) -> None:
    argv = shlex.split(config.command("some/folder"))
    assert argv[:2] == ["robust-vae", "attack"]
    args = build_parser().parse_args(argv[1:])
    assert str(args.out) == "some/folder"
    again = config_from_args(args)
    assert again == config and again.fingerprint() == config.fingerprint()


def test_fingerprint_covers_what_changes_results_and_nothing_else() -> None:
    base = RunConfig.create("vae", recipe="thesis-fast")
    fingerprint = base.fingerprint()
    assert set(fingerprint) == {"model", "model_seed", "weights_sha256", "dataset", "attack", "hyperparameters",
                                "per_pair", "seed", "batch_size", "classifier_sha256", "dataset_sha256", "artefacts"}
    assert fingerprint["hyperparameters"]["steps"] == 15  # the recipe's values, every one recorded
    same_data = os.environ["ROBUST_VAE_DATA"]  # where and under which name, not what: not in the fingerprint
    assert RunConfig.create("vae", recipe="thesis-fast", data_dir=same_data, label="x").fingerprint() == fingerprint
    for changed in (RunConfig.create("vae", recipe="thesis-fast", overrides={"steps": 16}),
                    RunConfig.create("vae", recipe="thesis-fast", seed=1),
                    RunConfig.create("vae", recipe="thesis-fast", model_seed=1),
                    RunConfig.create("vae", recipe="thesis-fast", per_pair=None)):
        assert changed.fingerprint() != fingerprint
    assert hash(base) == hash(RunConfig.create("vae", recipe="thesis-fast"))


def test_invalid_values_are_refused() -> None:
    with pytest.raises(ConfigError, match="per_pair"):
        RunConfig("vae", per_pair=0)
    with pytest.raises(ConfigError, match="batch_size"):
        RunConfig("vae", batch_size=0)


def test_run_attack_writes_the_fingerprint_and_the_command(tmp_path: Path) -> None:
    config = RunConfig.create("vae", recipe="thesis-fast", overrides={"steps": 2}, per_pair=1)
    result = run_attack(config, tmp_path / "run", progress=False, html=True)
    page = (tmp_path / "run" / "index.html").read_text()
    assert "<table" in page and "http://" not in page and "https://" not in page
    assert json.loads((tmp_path / "run" / "config.json").read_text()) == config.fingerprint()
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["command"] == config.command(tmp_path / "run")
    assert len(result.cells) == 90 and (tmp_path / "run" / "cells.csv").is_file()


def test_the_study_expects_the_run_configs_fingerprint(tmp_path: Path) -> None:
    study = Study(path=tmp_path / "s.toml", out_dir=tmp_path, dataset="mnist", per_pair=3, seed=2, batch_size=128,
                  main_recipe="thesis-fast", bootstrap=10, bootstrap_seed=0, permutations=10,
                  overrides={"steps": 4}, runs=[], marginal_models=[], figure_models=[], comparisons=[],
                  attack_strength=None)
    spec = RunSpec("jointvae", 2, "thesis-fast", tmp_path / "runs", per_pair=3)
    expected = RunConfig.create("jointvae", model_seed=2, recipe="thesis-fast", overrides={"steps": 4},
                                per_pair=3, seed=2, batch_size=128)
    assert expected_fingerprint(study, spec) == expected.fingerprint()


def test_a_study_table_can_set_overrides_and_threat_models(tmp_path: Path) -> None:
    from robust_vae.analysis.study import read_study, run_config

    path = tmp_path / "study.toml"
    path.write_text('[study]\nmain_recipe = "thesis-fast"\nper_pair = 2\n[study.set]\nseed = 3\n'
                    '[[runs]]\nmodels = ["vae"]\nrecipes = ["tabacof"]\nset = { divergence = "l2", max_iter = 5 }\n'
                    '[[runs]]\nmodels = ["cond-betavae"]\nlabel_sources = ["true", "classifier"]\n')
    study = read_study(path)
    by_name = {spec.name: spec for spec in study.runs}
    assert set(by_name) == {"vae", "cond-betavae@true", "cond-betavae@classifier"}
    assert by_name["cond-betavae@true"].folder == tmp_path / "runs" / "cond-betavae-true-label-seed0" / "thesis-fast"
    assert by_name["vae"].folder == tmp_path / "runs" / "vae-seed0" / "tabacof"
    vae = run_config(study, by_name["vae"])
    assert dict(vae.overrides) == {"seed": 3, "divergence": "l2", "max_iter": 5} and vae.label_source is None
    conditional = run_config(study, by_name["cond-betavae@classifier"])
    assert conditional.label_source == "classifier" and dict(conditional.overrides) == {"seed": 3}
    assert "--label-source classifier" in conditional.command()
    args = build_parser().parse_args(shlex.split(conditional.command())[1:])
    assert config_from_args(args) == conditional
    assert study.marginal_models == ["cond-betavae@classifier", "cond-betavae@true", "vae"]
    path.write_text('[[runs]]\nmodels = ["vae"]\nlabel_source = "true"\n')
    with pytest.raises(ConfigError, match="unknown key"):
        read_study(path)
    with pytest.raises(ConfigError, match="label_source"):
        RunConfig("vae", label_source="oracle")


def test_a_run_finished_meanwhile_by_another_process_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run listed as new that another process finished before the study's loop reaches it is not run
    again: its run.json keeps the timings of the call that made it."""
    from robust_vae.analysis import study as study_module

    study = Study(path=tmp_path / "s.toml", out_dir=tmp_path, dataset="mnist", per_pair=1, seed=0, batch_size=128,
                  main_recipe="thesis-fast", bootstrap=10, bootstrap_seed=0, permutations=10,
                  overrides={}, runs=[], marginal_models=[], figure_models=[], comparisons=[],
                  attack_strength=None)
    first, second = (RunSpec(model, 0, "thesis-fast", tmp_path / "runs", per_pair=1) for model in ("vae", "jointvae"))
    monkeypatch.setattr(study_module, "run_status", lambda s, spec: study_module.RunStatus(
        spec, "done" if spec is second else "new"))
    ran: list[str] = []
    monkeypatch.setattr(study_module, "run_attack", lambda config, folder: ran.append(config.model))
    lines: list[str] = []
    statuses = [study_module.RunStatus(first, "new"), study_module.RunStatus(second, "new")]
    assert study_module.run_missing(study, statuses, log=lines.append) == [first]
    assert ran == ["vae"]
    assert lines[-1] == "[2/2] jointvae seed 0 / thesis-fast: finished meanwhile, kept"
