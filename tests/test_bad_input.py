"""Bad input, every kind a careful user tried: one line on stderr, exit code 2, no traceback,
and the run folder exactly as it was. Plus NaN/inf/range checks through the API."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import robust_vae as rv
from robust_vae.cli.app import main
from robust_vae.core.errors import ConfigError
from robust_vae.training.vae import checkpoint_dir

BASE = ["attack", "--model", "vae", "--dataset", "mnist", "--per-pair", "1", "--attack", "thesis-fast",
        "--set", "steps=2", "--batch-size", "64"]


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bad-input") / "run"
    assert main([*BASE, "--out", str(out)]) == 0
    return out


def _zoo_with_card(tmp: Path, change: Callable[[dict[str, object]], None]) -> Path:
    zoo = tmp / "zoo"
    shutil.copytree(rv.zoo.SHIPPED_MODELS / "mnist", zoo / "mnist")
    card = zoo / "mnist" / "vae-seed0.json"
    data = json.loads(card.read_text())
    change(data)
    card.write_text(json.dumps(data))
    return zoo


def _zoo_as(tmp: Path, dataset: str) -> Path:
    """A zoo whose ``dataset`` folder holds the MNIST cards (a model used with another dataset)."""
    zoo = tmp / "zoo"
    shutil.copytree(rv.zoo.SHIPPED_MODELS / "mnist", zoo / dataset)
    return zoo


def _damage(path: Path, text: bytes | None = None) -> None:
    path.write_bytes(text if text is not None else path.read_bytes()[: len(path.read_bytes()) // 2])


# id -> (extra arguments (BASE and --out RUN first, later options win) or a full argv starting
#        with "!", a substring of the error line, an optional preparation (tmp, run, monkeypatch))
Prep = Callable[[Path, Path, pytest.MonkeyPatch], None]
CASES: dict[str, tuple[list[str], str, Prep | None]] = {
    "lr-nan": (["--set", "lr=nan"], "lr must be a finite number", None),
    "lr-inf": (["--set", "lr=inf"], "lr must be a finite number", None),
    "epsilon-inf": (["--set", "epsilon=inf"], "epsilon must be a finite number", None),
    "lam-nan": (["--set", "lam=nan"], "lam must be a finite number", None),
    "steps-fraction": (["--set", "steps=1.5"], "steps must be a whole number", None),
    "steps-word": (["--set", "steps=abc"], "steps must be a whole number", None),
    "steps-zero": (["--set", "steps=0"], "steps and lr must be positive", None),
    "epsilon-list": (["--set", "epsilon=[0.1,0.2]"], "takes one value, not a list", None),
    "epsilon-negative": (["--set", "epsilon=-0.1"], "epsilon must be >= 0", None),
    "unknown-key": (["--set", "nosuchkey=1"], "valid keys: seed, device, epsilon", None),
    "set-no-equals": (["--set", "steps"], "--set expects KEY=VALUE", None),
    "set-device": (["--set", "device=cuda"], "pass --device", None),
    "device-tpu": (["--device", "tpu"], "is not a torch device", None),
    "device-cuda": (["--device", "cuda"], "CUDA is not available", None),
    "unknown-model": (["--model", "nosuchmodel"], "'nosuchmodel'", None),
    "unknown-seed": (["--seed-model", "7"], "vae-seed7", None),
    "unknown-recipe": (["--attack", "nosuchrecipe"], "unknown attack recipe", None),
    "missing-recipe-file": (["--attack", "{tmp}/none.toml"], "not found", None),
    "bad-recipe-toml": (["--attack", "{tmp}/bad.toml"], "is not valid TOML",
                        lambda tmp, run, mp: (tmp / "bad.toml").write_text("attack = [\n") and None),
    "unknown-dataset": (["--dataset", "cifar99"], "unknown dataset", None),
    "missing-data": (["--data-dir", "{tmp}"], "files not found", None),
    "out-is-a-file": (["--out", "{run}/cells.csv"], "it is a file", None),
    "out-under-a-file": (["--out", "{run}/cells.csv/sub"], "cannot write", None),
    "out-in-proc": (["--out", "/proc/robust-vae-x"], "cannot write", None),
    "other-configuration": (["--per-pair", "2"], "different configuration", None),
    "config-not-json": ([], "cannot be read", lambda tmp, run, mp: _damage(run / "config.json", b"{not json")),
    "corrupt-weights": ([], "sha256", lambda tmp, run, mp: mp.setenv("ROBUST_VAE_MODELS", str(
        _zoo_with_card(tmp, lambda d: d.update(sha256="0" * 64))))),
    "card-weights-path": ([], "must name a .safetensors file", lambda tmp, run, mp: mp.setenv(
        "ROBUST_VAE_MODELS", str(_zoo_with_card(tmp, lambda d: d.update(weights="../../x"))))),
    "card-config-string": ([], "'config' must be a JSON object", lambda tmp, run, mp: mp.setenv(
        "ROBUST_VAE_MODELS", str(_zoo_with_card(tmp, lambda d: d.update(config="oops"))))),
    "card-config-field": ([], "has no field(s) ['nonsense']", lambda tmp, run, mp: mp.setenv(
        "ROBUST_VAE_MODELS", str(_zoo_with_card(tmp, lambda d: d.update(config={"nonsense": 1}))))),
    "model-of-another-dataset": (["--dataset", "fashion-mnist"], "trained on mnist, not fashion-mnist",
                                 lambda tmp, run, mp: mp.setenv("ROBUST_VAE_MODELS", str(_zoo_as(tmp, "fashion-mnist")))),
    "train-size-mnist-lacks": (["!train", "--model", "vae", "--image-size", "64", "--steps", "3", "--out", "{tmp}/zoo"],
                               "no option 'image_size'", None),
    "train-data-option": (["!train", "--model", "vae", "--data-option", "samples", "--steps", "3", "--out",
                           "{tmp}/zoo"], "--data-option takes KEY=WHOLE_NUMBER", None),
    "traverse-image": (["!traverse", "--model", "vae", "--image", "99999", "--out", "{tmp}/t.png"],
                       "is not a test image", None),
    "report-not-a-run": (["!report", "{tmp}"], "is not a finished run", None),
    "report-bad-cells": (["!report", "{run}"], "cells.csv", lambda tmp, run, mp: _damage(
        run / "cells.csv", b"source,target\n0,1\n")),
    "report-bad-run-json": (["!report", "{run}"], "cannot be read", lambda tmp, run, mp: _damage(run / "run.json")),
    "study-missing": (["!study", "{tmp}/none.toml"], "not found", None),
    "compare-missing": (["!compare", "--a", "{tmp}/x", "--b", "{tmp}/y"], "", None),
    "train-bad-checkpoint": (["!train", "--model", "vae", "--steps", "3", "--out", "{tmp}/zoo"], "cannot be used",
                             lambda tmp, run, mp: _bad_checkpoint(tmp, mp)),
}


def _bad_checkpoint(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROBUST_VAE_CACHE", str(tmp / "cache"))
    values = rv.models.get_family("vae").config_class(steps=3).to_dict()
    path = checkpoint_dir("vae", "mnist", 0, values) / "checkpoint.pt"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x80\x02truncated")


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_changes_nothing(
    case: str, base_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    extra, expected, prepare = CASES[case]
    run = tmp_path / "run"
    shutil.copytree(base_run, run)
    if prepare is not None:
        prepare(tmp_path, run, monkeypatch)
    before = snapshot(run)
    filled = [a.format(run=run, tmp=tmp_path) for a in extra]
    argv = [filled[0][1:], *filled[1:]] if filled and filled[0].startswith("!") else [*BASE, "--out", str(run), *filled]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and "it/s]" not in line and "example/s" not in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert ": error: " in lines[0] and expected in lines[0], lines[0]
    assert snapshot(run) == before


def test_truncated_unit_is_named_with_its_fix(base_run: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    shutil.copytree(base_run, run)
    (run / "cells.csv").unlink()  # unfinished: the rerun loads the saved unit
    unit = sorted((run / "progress").glob("unit-*.npz"))[0]
    _damage(unit)
    before = snapshot(run)
    assert main([*BASE, "--out", str(run)]) == 2
    assert f"{unit} is damaged" in capsys.readouterr().err
    after = snapshot(run)  # the run got as far as taking the folder's lock: only .lock was touched
    assert {k: v for k, v in after.items() if k != ".lock"} == {k: v for k, v in before.items() if k != ".lock"}
    assert after[".lock"][0] == b""  # released


def test_failed_validation_leaves_no_config_behind(tmp_path: Path) -> None:
    """A refused configuration writes nothing, so the corrected command is not 'different'."""
    out = tmp_path / "fresh"
    assert main([*BASE, "--set", "lr=nan", "--out", str(out)]) == 2
    assert not out.exists()
    assert main([*BASE, "--out", str(out)]) == 0


# ----------------------------------------------------------------- the API
@pytest.fixture(scope="module")
def vae() -> torch.nn.Module:
    return rv.load_model("vae", "mnist")


@pytest.mark.parametrize(("make", "expected"), [
    (lambda x: x.clone().index_put_((torch.tensor([0]),), torch.tensor(float("nan"))), "NaN or inf"),
    (lambda x: x * 255.0, "must lie in [0, 1]"),
    (lambda x: x - 0.5, "must lie in [0, 1]"),
    (lambda x: (x * 255).to(torch.uint8), "torch.uint8"),
    (lambda x: x[:, :, :28, :28], "the model takes (N, 1, 32, 32)"),
    (lambda x: x.repeat(1, 3, 1, 1), "the model takes (N, 1, 32, 32)"),
    (lambda x: x[0], "must be a (N, C, H, W) tensor"),
], ids=["nan-pixel", "0-255", "centred", "uint8", "28x28", "3-channels", "no-batch"])
def test_attack_inputs_are_checked(vae: torch.nn.Module, make: Callable[[torch.Tensor], torch.Tensor],
                                   expected: str) -> None:
    test = rv.load_dataset("mnist", "test")
    sources, targets = test.images[:4], test.images[4:8]
    attack = rv.load_attack("thesis-fast", steps=1)
    with pytest.raises(ConfigError) as error:
        attack(vae, make(sources), targets)
    assert expected in str(error.value)
    with pytest.raises(ConfigError):
        attack(vae, sources, make(targets))


def test_reconstruct_names_the_expected_shape(vae: torch.nn.Module) -> None:
    with pytest.raises(ConfigError, match=r"takes \(N, 1, 32, 32\)"):
        vae.reconstruct(torch.zeros(2, 1, 28, 28))
