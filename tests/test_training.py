"""train_vae: the card it writes, and resuming after an interruption (in process and killed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from robust_vae.data import Dataset, load_dataset
from robust_vae.models import get_family
from robust_vae.training import vae as training
from robust_vae.training.vae import checkpoint_dir, train_vae
from robust_vae.zoo import MODELS_ENV, load_state, read_card, sha256_of

SCRIPT = Path(sys.executable).parent / "robust-vae"
COMMAND = [str(SCRIPT)] if SCRIPT.is_file() else [sys.executable, "-m", "robust_vae.cli.app"]
STEPS, EVERY = 40, 10
CLI_STEPS, CLI_EVERY = 200, 25  # a few seconds of training: time to kill it between checkpoints



@pytest.fixture
def zoo_env(small_zoo: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """ROBUST_VAE_MODELS -> the small zoo (train_vae loads the classifier from there)."""
    monkeypatch.setenv(MODELS_ENV, str(small_zoo))
    return small_zoo


def _train(out: Path, **kwargs):  # type: ignore[no-untyped-def]
    logs: list[str] = []
    result = train_vae("vae", "mnist", seed=kwargs.pop("seed", 3), steps=kwargs.pop("steps_override", STEPS), out_dir=out,
                       checkpoint_every=EVERY, progress=False, log=logs.append, **kwargs)
    return result, logs


def test_train_writes_weights_and_card(zoo_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROBUST_VAE_CACHE", str(tmp_path / "cache"))
    result, logs = _train(tmp_path / "out", seed=3)
    assert result is not None and result.resumed_from == 0
    weights = tmp_path / "out" / "vae-seed3.safetensors"
    card_path = tmp_path / "out" / "vae-seed3.json"
    assert weights.is_file() and card_path.is_file()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["vae-seed3.json", "vae-seed3.safetensors"]
    card = json.loads(card_path.read_text())
    assert card == result.card.data
    assert (card["name"], card["family"], card["dataset"], card["seed"], card["steps"]) == (
        "vae", "vae", "mnist", 3, STEPS)
    assert card["config_class"] == "VAEConfig"
    assert card["config"] == get_family("vae").config_class(steps=STEPS).to_dict()
    assert card["weights"] == "vae-seed3.safetensors"
    assert card["sha256"] == sha256_of(weights)
    metrics = card["metrics"]
    for key in ("recon_bce", "kl_per_dim", "elbo", "recon_accuracy"):
        assert key in metrics, key
    assert len(metrics["kl_per_dim"]) == 10
    assert all(v >= 0 for v in metrics["kl_per_dim"])
    assert 0.0 <= metrics["recon_accuracy"] <= 1.0
    # the confusion of reconstructions: rows are the test images' classes, its diagonal the accuracy
    confusion = np.array(metrics["recon_confusion"])
    test_labels = load_dataset("mnist", "test").labels.numpy()
    assert confusion.shape == (10, 10)
    assert confusion.sum(axis=1).tolist() == np.bincount(test_labels, minlength=10).tolist()
    assert np.trace(confusion) / confusion.sum() == pytest.approx(metrics["recon_accuracy"], abs=1e-12)
    assert 0 < metrics["recon_bce"] < 1024 * 0.7  # better than predicting 0.5 everywhere
    assert metrics["elbo"] < 0 and -metrics["elbo"] >= metrics["recon_bce"] * 0.5
    assert any("wrote" in line for line in logs)
    # the checkpoint lives in the cache, not next to the weights
    ckpt = checkpoint_dir("vae", "mnist", 3, card["config"]) / "checkpoint.pt"
    assert ckpt.is_file() and str(ckpt).startswith(str(tmp_path / "cache"))
    assert torch.load(ckpt, weights_only=True)["step"] == STEPS
    # the weights load back into the architecture the card describes
    model = get_family("vae")(get_family("vae").config_class.from_dict(card["config"]))
    load_state(read_card(card_path), model)


def test_a_named_variant_gets_its_own_card_and_loads_as_its_family(
    zoo_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`train --model betavae --set beta=8 --name betavae-b8`: its own weights file, card name
    and checkpoint; `load_model("betavae-b8")` builds a betavae with β = 8."""
    from robust_vae.core.errors import ConfigError
    from robust_vae.zoo import load_model

    monkeypatch.setenv("ROBUST_VAE_CACHE", str(tmp_path / "cache"))
    out = zoo_env / "mnist"
    result = train_vae("betavae", "mnist", seed=5, steps=STEPS, out_dir=out, checkpoint_every=EVERY,
                       progress=False, log=lambda _: None, name="betavae-b8", settings={"beta": 8.0})
    assert result is not None
    card = json.loads((out / "betavae-b8-seed5.json").read_text())
    assert (card["name"], card["family"], card["config"]["beta"]) == ("betavae-b8", "betavae", 8.0)
    assert card["training"]["command"].endswith("--set beta=8.0 --name betavae-b8")
    default = get_family("betavae").config_class(steps=STEPS).to_dict()
    assert default["beta"] != 8.0
    assert checkpoint_dir("betavae", "mnist", 5, card["config"]) != checkpoint_dir("betavae", "mnist", 5, default)
    model = load_model("betavae-b8", "mnist", seed=5)
    assert model.family == "betavae" and model.config.beta == 8.0  # type: ignore[attr-defined]
    assert not (out / "betavae-seed5.json").exists()
    for kwargs, message in (({"settings": {"beta": 8.0}}, "give the variant its own zoo name"),
                            ({"settings": {"beta": 8.0}, "name": "vae"}, "is the family"),
                            ({"settings": {"no_such": 1}, "name": "betavae-x"}, "has no setting no_such"),
                            ({"settings": {"beta": 2.0}, "name": "Beta VAE"}, "lower-case")):
        with pytest.raises(ConfigError, match=message) as error:
            train_vae("betavae", "mnist", seed=5, steps=STEPS, out_dir=tmp_path / "x", progress=False,
                      log=lambda _: None, **kwargs)  # type: ignore[arg-type]
        assert "\n" not in str(error.value)
    assert not (tmp_path / "x").exists()


def test_recon_scale_weights_the_reconstruction_in_training_only(
    zoo_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``recon_scale`` multiplies the reconstruction in the objective (a β-VAE with scale 4 and β = 4
    has 4× the gradient of one with scale 1 and β = 1), is recorded in the card and its command, and leaves the checkpoint folder of a default
    config where it was before the field existed."""
    from robust_vae.training.vae import LATER_FIELDS, config_digest
    from robust_vae.zoo import load_model

    family = get_family("betavae")
    config = family.config_class(steps=STEPS).to_dict()
    old = {k: v for k, v in config.items() if k not in LATER_FIELDS}
    legacy = training.default_cache_dir() / "checkpoints" / "mnist" / (
        "betavae-seed0-" + config_digest({"family": "betavae", "dataset": "mnist", "seed": 0, "config": old}))
    assert checkpoint_dir("betavae", "mnist", 0, config) == legacy
    assert checkpoint_dir("betavae", "mnist", 0, config | {"recon_scale": 4.0}) != legacy

    model = family(family.config_class(recon_scale=4.0, beta=4.0))
    terms = {"recon": torch.tensor(10.0), "kl_z": torch.tensor(2.0), "kl_c": torch.tensor(0.5)}
    assert model.objective(model.weighted_terms(terms), 0, 1).item() == pytest.approx(4 * 10 + 4 * 2.5)
    plain = family(family.config_class())
    assert plain.weighted_terms(terms) is terms

    monkeypatch.setenv("ROBUST_VAE_CACHE", str(tmp_path / "cache"))
    out = zoo_env / "mnist"
    result = train_vae("betavae", "mnist", seed=2, steps=20, out_dir=out, checkpoint_every=EVERY, progress=False,
                       log=lambda _: None, name="betavae-s4", settings={"beta": 4.0}, overrides={"recon_scale": 4.0})
    assert result is not None
    card = json.loads((out / "betavae-s4-seed2.json").read_text())
    assert card["config"]["recon_scale"] == 4.0
    assert "--recon-scale 4" in card["training"]["command"] and "×4" in card["training"]["likelihood"]
    # the gradient of (scale 4, β = 4) is 4 × that of (scale 1, β = 1) on the same batch and noise
    images = torch.rand(8, 1, 32, 32)
    grads = {}
    for scale, beta in ((4.0, 4.0), (1.0, 1.0)):
        torch.manual_seed(0)
        net = family(family.config_class(recon_scale=scale, beta=beta))
        torch.manual_seed(1)
        net.objective(net.weighted_terms(net.batch_terms(images)), 0, 1).backward()  # type: ignore[no-untyped-call]
        grads[scale] = [p.grad.clone() for p in net.parameters() if p.grad is not None]
    for scaled, unscaled in zip(grads[4.0], grads[1.0], strict=True):
        assert torch.allclose(scaled, 4 * unscaled, rtol=1e-4, atol=1e-7)
    assert load_model("betavae-s4", "mnist", seed=2).config.recon_scale == 4.0  # type: ignore[attr-defined]


def test_snapshots_are_zoo_entries_and_change_nothing(zoo_env: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A run with snapshots ends bit for bit where one without does (the evaluation's random
    draws do not leak into training), and its step-20 snapshot is exactly a 20-step run."""
    from robust_vae.zoo import load_model

    def weights(path: Path) -> dict[str, torch.Tensor]:
        return load_file(str(path))

    monkeypatch.setenv("ROBUST_VAE_CACHE", str(tmp_path / "cache-a"))
    _train(zoo_env / "mnist", seed=7, snapshot_every=20)
    card = json.loads((zoo_env / "mnist" / "vae-step20-seed7.json").read_text())
    assert (card["name"], card["steps"], card["snapshot_of"], card["snapshot_step"]) == ("vae-step20", 20, "vae", 20)
    assert "recon_accuracy" in card["metrics"]
    assert load_model("vae-step20", "mnist", seed=7).family == "vae"
    monkeypatch.setenv("ROBUST_VAE_CACHE", str(tmp_path / "cache-b"))
    _train(tmp_path / "plain", seed=7)
    with_snapshots, plain = weights(zoo_env / "mnist" / "vae-seed7.safetensors"), weights(tmp_path / "plain" / "vae-seed7.safetensors")
    assert all(torch.equal(with_snapshots[k], plain[k]) for k in plain)
    result, _ = _train(tmp_path / "short", seed=7, steps_override=20)
    assert result is not None
    short, snap = weights(tmp_path / "short" / "vae-seed7.safetensors"), weights(zoo_env / "mnist" / "vae-step20-seed7.safetensors")
    assert all(torch.equal(short[k], snap[k]) for k in short)


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(
    zoo_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the card metrics on the first 1,000 test images only (the weights are what is compared)
    evaluate = training.evaluate_vae
    monkeypatch.setattr(training, "evaluate_vae", lambda model, test, *args, **kwargs: evaluate(
        model, Dataset(test.name, test.split, test.images[:1000], test.labels[:1000]), *args, **kwargs))
    # interrupted after 15 steps (a checkpoint at 10, the stop at 15), then rerun
    monkeypatch.setenv("ROBUST_VAE_CACHE", str(tmp_path / "cache-a"))
    first, _ = _train(tmp_path / "a", stop_after=15)
    assert first is None
    assert not (tmp_path / "a" / "vae-seed3.safetensors").exists()
    ckpt = checkpoint_dir("vae", "mnist", 3, get_family("vae").config_class(steps=STEPS).to_dict())
    assert str(ckpt).startswith(str(tmp_path / "cache-a"))
    assert torch.load(ckpt / "checkpoint.pt", weights_only=True)["step"] == 15
    resumed, logs = _train(tmp_path / "a")
    assert resumed is not None and resumed.resumed_from == 15
    assert any("resuming vae seed 3 from step 15" in line for line in logs), logs

    # uninterrupted, in a separate cache
    monkeypatch.setenv("ROBUST_VAE_CACHE", str(tmp_path / "cache-b"))
    straight, _ = _train(tmp_path / "b")
    assert straight is not None and straight.resumed_from == 0

    a = load_file(str(tmp_path / "a" / "vae-seed3.safetensors"))
    b = load_file(str(tmp_path / "b" / "vae-seed3.safetensors"))
    assert list(a) == list(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert resumed.card.data["sha256"] == straight.card.data["sha256"]
    assert resumed.card.data["metrics"] == straight.card.data["metrics"]
    # training moved the weights away from the initialisation
    torch.manual_seed(3)
    initial = get_family("vae")(get_family("vae").config_class(steps=STEPS)).state_dict()
    assert not torch.equal(initial["encoder.head.weight"], a["encoder.head.weight"])


def _checkpoints(cache: Path) -> list[Path]:
    return sorted((cache / "checkpoints" / "mnist").glob("vae-seed0-*/checkpoint.pt"))


def test_killed_cli_training_resumes(small_zoo: Path, tmp_path: Path, kill_process_when) -> None:  # type: ignore[no-untyped-def]
    cache, out = tmp_path / "cache", tmp_path / "out"
    env = dict(os.environ, ROBUST_VAE_MODELS=str(small_zoo), ROBUST_VAE_CACHE=str(cache),
               OMP_NUM_THREADS="1")
    command = [*COMMAND, "train", "--model", "vae", "--steps", str(CLI_STEPS),
               "--checkpoint-every", str(CLI_EVERY), "--out", str(out)]
    process = kill_process_when(command, env, lambda: _checkpoints(cache), "checkpoint", poll=0.05)
    assert process.returncode == -signal.SIGKILL
    assert not (out / "vae-seed0.json").exists()
    killed_at = torch.load(_checkpoints(cache)[0], weights_only=True)["step"]
    assert 0 < killed_at < CLI_STEPS and killed_at % CLI_EVERY == 0

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    resumed = [line for line in rerun.stderr.splitlines() if "resuming" in line]
    assert len(resumed) == 1, rerun.stderr
    assert f"resuming vae seed 0 from step {killed_at} " in resumed[0]
    card = json.loads((out / "vae-seed0.json").read_text())
    assert card["steps"] == CLI_STEPS and card["seed"] == 0
    assert card["sha256"] == sha256_of(out / "vae-seed0.safetensors")
    printed = json.loads(rerun.stdout)
    assert printed["weights"] == str(out / "vae-seed0.safetensors")
    assert printed["metrics"] == card["metrics"]
    assert torch.load(_checkpoints(cache)[0], weights_only=True)["step"] == CLI_STEPS
