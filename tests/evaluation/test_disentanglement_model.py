"""Disentanglement of a trained model (issue 19): the API over a VAE and a dataset with factors,
and ``robust-vae disentanglement`` end to end.

No dSprites model is shipped yet, so the module trains a tiny zoo in a temporary
``ROBUST_VAE_MODELS``: the evaluation classifier (one epoch; ``train_vae`` needs it for the
card's ``recon_accuracy``) and a ``vae`` (400 steps, lr 2e-3: enough for its Gaussian means to vary, so
FactorVAE keeps active dimensions). Metric sample sizes are far below
disentanglement_lib's defaults (``SMALL``) to keep the file within a minute on one core.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from robust_vae.cli.app import main
from robust_vae.core.errors import ConfigError, DataError, ZooError
from robust_vae.evaluation.disentanglement import ModelSampler, measure_disentanglement, metric_names
from robust_vae.evaluation.disentanglement.model import factor_source
from robust_vae.models import get_family
from robust_vae.models.base import LatentVAE
from robust_vae.zoo import MODELS_ENV, load_model, read_card, sha256_of, update_card

SMALL = ["--num-train", "200", "--num-test", "100", "--group-size", "8"]
SMALL_API: dict[str, Any] = {"num_train": 200, "num_test": 100, "group_size": 8}
SEVEN = {"betavae_score", "factorvae_score", "mig", "sap", "dci", "modularity", "explicitness"}
# every score in [0, 1] except the FactorVAE active-dimension count
UNIT_SCORES = ("betavae_score", "betavae_score_train", "factorvae_score", "factorvae_score_train", "mig", "sap",
               "dci_disentanglement", "dci_completeness", "dci_informativeness_train", "dci_informativeness_test",
               "modularity", "explicitness_train", "explicitness_test")


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A zoo root with ``dsprites/classifier`` and ``dsprites/vae-seed0``, set as ``ROBUST_VAE_MODELS``."""
    import torch

    from robust_vae.training import ClassifierConfig, train_classifier, train_vae

    root = tmp_path_factory.mktemp("dsprites-zoo")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(MODELS_ENV, str(root))
        torch.manual_seed(0)
        train_classifier("dsprites", ClassifierConfig(epochs=1), out_dir=root / "dsprites", progress=False)
        result = train_vae("vae", "dsprites", seed=0, steps=400, overrides={"lr": 2e-3}, out_dir=root / "dsprites",
                           progress=False, log=lambda message: None)
        assert result is not None
        yield root


@pytest.fixture(scope="module")
def model(zoo: Path) -> LatentVAE:
    return load_model("vae", "dsprites", seed=0)


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``robust-vae ARGS`` in this process: (exit code, stdout, stderr); argparse errors exit."""
    try:
        code = main(args)
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def first_run(zoo: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``robust-vae disentanglement --model vae --dataset dsprites --json`` (small samples), once."""
    out = tmp_path_factory.mktemp("first") / "out"
    card_before = json.loads((zoo / "dsprites" / "vae-seed0.json").read_text())
    stdout, stderr = io.StringIO(), io.StringIO()  # capsys is function-scoped
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["disentanglement", "--model", "vae", "--dataset", "dsprites", "--json", "--out", str(out),
                     *SMALL])
    assert code == 0, stderr.getvalue()
    return {"result": json.loads(stdout.getvalue()), "out": out, "stderr": stderr.getvalue(),
            "card_before": card_before}


def test_cli_prints_every_metric_in_its_range(first_run: dict[str, Any]) -> None:
    result = first_run["result"]
    assert set(result["metrics"]) == SEVEN == set(metric_names())
    for key in UNIT_SCORES:
        assert 0.0 <= result["scores"][key] <= 1.0, (key, result["scores"][key])
    assert 1 <= result["scores"]["factorvae_active_dims"] <= 20
    # code: the vae's 10 Gaussian means and its 10-way categorical's probabilities
    assert result["code"]["kind"] == "mean" and result["code"]["dims"] == 20
    assert result["code"]["categorical_dims"] == 10
    assert result["code"]["description"] == ("the 10 Gaussian posterior means and the 10 probabilities "
                                             "softmax(logits) of the categorical latent")
    assert result["model"]["name"] == "vae" and result["model"]["seed"] == 0
    assert result["model"]["sha256"] == first_run["card_before"]["sha256"]
    assert result["dataset"] == "dsprites" and result["factor_sizes"] == [3, 6, 40, 32, 32]
    # the sample sizes asked for reached every metric, and each records its seed
    settings = {name: metric["settings"] for name, metric in result["metrics"].items()}
    assert settings["betavae_score"]["num_train"] == 200 and settings["betavae_score"]["num_eval"] == 100
    assert settings["betavae_score"]["batch_size"] == 8 == settings["factorvae_score"]["batch_size"]
    assert settings["factorvae_score"]["num_variance_estimate"] == 200
    assert settings["mig"]["num_points"] == 200 and settings["modularity"]["num_points"] == 200
    assert (settings["dci"]["num_train"], settings["dci"]["num_test"]) == (200, 100)
    assert (settings["sap"]["num_train"], settings["explicitness"]["num_test"]) == (200, 100)
    assert all(s["seed"] == 0 for s in settings.values())
    assert result["sample"]["points"] == 300
    # 300 fixed codes, 2 × 300 β-VAE points of 8 images, 200 FactorVAE variance codes, 300 points of 8
    assert result["images_encoded"] == 300 + 2 * 300 * 8 + 200 + 300 * 8
    assert result["command"] == ("robust-vae disentanglement --model vae --dataset dsprites --seed-model 0 --seed 0 "
                                 "--num-train 200 --num-test 100 --group-size 8")
    assert "disentanglement" in first_run["stderr"]  # the progress bar and the "wrote" line


def test_cli_writes_the_three_files(first_run: dict[str, Any]) -> None:
    out: Path = first_run["out"]
    assert sorted(p.name for p in out.iterdir()) == ["disentanglement.json", "disentanglement.md",
                                                     "disentanglement.tex"]
    saved = json.loads((out / "disentanglement.json").read_text())
    assert saved["scores"] == first_run["result"]["scores"]
    markdown = (out / "disentanglement.md").read_text()
    mig = first_run["result"]["scores"]["mig"]
    assert "| MIG | mean over factors | " + f"{mig:.4f}" in markdown
    assert "| β-VAE score | eval accuracy |" in markdown and "factor orientation" in markdown
    latex = (out / "disentanglement.tex").read_text()
    assert "\\begin{tabular}{llrl}" in latex and "$\\beta$-VAE score" in latex and f"{mig:.4f}" in latex


def test_cli_records_the_scores_in_the_card(zoo: Path, first_run: dict[str, Any]) -> None:
    card_path = zoo / "dsprites" / "vae-seed0.json"
    card = read_card(card_path)
    record = card.data["disentanglement"]
    result = first_run["result"]
    assert record["scores"] == result["scores"]
    assert record["settings"]["dci"] == result["metrics"]["dci"]["settings"]
    assert record["seed"] == 0 and record["code"] == "mean" and record["date"] == result["date"]
    assert record["command"] == result["command"]
    # only the card changed: every other field as before, the weights still verify
    assert {k: v for k, v in card.data.items() if k != "disentanglement"} == first_run["card_before"]
    assert sha256_of(card.weights_path) == card.data["sha256"]
    load_model("vae", "dsprites", seed=0)


def test_same_seed_same_numbers_whatever_the_batch_size(first_run: dict[str, Any], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["disentanglement", "--model", "vae", "--dataset", "dsprites", "--json", "--no-card",
                          "--batch-size", "64", "--out", str(tmp_path / "again"), *SMALL], capsys)
    assert code == 0, err
    again = json.loads(out)
    assert again["batch_size"] == 64 and first_run["result"]["batch_size"] == 1024
    assert again["metrics"] == first_run["result"]["metrics"]  # every score and setting, exactly
    assert again["scores"] == first_run["result"]["scores"]


def test_the_seed_matters(model: LatentVAE, first_run: dict[str, Any]) -> None:
    one = measure_disentanglement(model, "dsprites", seed=1, **SMALL_API)
    zero = first_run["result"]
    assert one["sample"]["rng"] == "numpy default_rng([1, 1])" and zero["sample"]["rng"] == "numpy default_rng([0, 1])"
    assert all(metric["settings"]["seed"] == 1 for metric in one["metrics"].values())
    assert one["scores"] != zero["scores"]


def test_codes_do_not_depend_on_the_batch_size(model: LatentVAE) -> None:
    from robust_vae.data import dataset_source

    source = dataset_source("dsprites")
    factors = ModelSampler(model, source, {"image_size": 32}).sample_factors(1000, np.random.default_rng(0))
    codes = [ModelSampler(model, source, {"image_size": 32}, batch_size=b).represent(factors) for b in (64, 192, 1024)]
    assert codes[0].shape == (1000, 20)
    assert np.array_equal(codes[0], codes[1]) and np.array_equal(codes[0], codes[2])
    gaussian = ModelSampler(model, source, {"image_size": 32}, code="gaussian").represent(factors[:10])
    assert np.array_equal(gaussian, codes[0][:10, :10])
    # the categorical part is a probability vector
    assert np.allclose(codes[0][:, 10:].sum(axis=1), 1.0, atol=1e-5)


def test_the_encoder_sees_fixed_chunks(zoo: Path) -> None:
    """Whatever the batch size, the encoder gets the same chunks of at most 64 images (a float
    encoder's arithmetic may depend on its batch: this is what keeps the codes exact)."""
    from robust_vae.data import dataset_source

    model = load_model("vae", "dsprites", seed=0)
    seen: list[int] = []
    encode = model.encode

    def spy(x: Any) -> Any:
        seen.append(int(x.shape[0]))
        return encode(x)

    model.encode = spy  # type: ignore[method-assign]
    factors = np.zeros((1000, 5), dtype=np.int64)
    chunks = []
    for batch_size in (64, 1024):
        seen.clear()
        ModelSampler(model, dataset_source("dsprites"), {"image_size": 32}, batch_size=batch_size).represent(factors)
        chunks.append(list(seen))
    assert chunks[0] == chunks[1] == [64] * 15 + [40]


def test_api_refuses_a_dataset_without_factors_and_a_wrong_input_shape(model: LatentVAE) -> None:
    with pytest.raises(DataError, match="mnist has no ground-truth factors.*class \\(digit\\)") as no_factors:
        factor_source("mnist")  # the factor-only callers (convergence); measure_disentanglement takes the class
    with pytest.raises(ConfigError, match=r"takes \(1, 32, 32\) images but dsprites renders \(1, 64, 64\)") as size:
        measure_disentanglement(model, "dsprites", image_size=64, **SMALL_API)
    colour = get_family("vae")(get_family("vae").config_class(channels=3))
    with pytest.raises(ConfigError, match=r"takes \(3, 32, 32\) images but dsprites renders \(1, 32, 32\)") as rgb:
        measure_disentanglement(colour, "dsprites", **SMALL_API)
    with pytest.raises(ConfigError, match="multiple of 64"):
        measure_disentanglement(model, "dsprites", batch_size=100, **SMALL_API)
    with pytest.raises(ConfigError, match="unknown code"):
        measure_disentanglement(model, "dsprites", code="logits", **SMALL_API)
    for error in (no_factors, size, rgb):
        assert "\n" not in str(error.value)


def assert_one_line(code: int, out: str, err: str) -> str:
    assert code == 2, (code, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("robust-vae disentanglement: error: "), err
    assert out == ""
    return lines[0]


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "vae", "--dataset", "mnist"], "no shipped model 'vae-seed0'"),  # the class factor, not this zoo
    (["--model", "vae", "--dataset", "nope"], "unknown dataset 'nope'"),
    (["--model", "jointvae", "--dataset", "dsprites"], "no shipped model 'jointvae-seed0'"),
    (["--model", "vae", "--dataset", "dsprites", "--seed-model", "3"], "no shipped model 'vae-seed3'"),
    (["--model", "vae", "--dataset", "dsprites", "--batch-size", "100"], "multiple of 64"),
    (["--model", "vae", "--dataset", "dsprites", "--group-size", "1"], "must be at least 2"),
    (["--model", "vae", "--dataset", "dsprites", "--seed", "-1"], "seed must be a whole number >= 0"),
])
def test_cli_bad_input_is_one_line_exit_2(zoo: Path, first_run: dict[str, Any], tmp_path: Path, args: list[str],
                                          message: str, capsys: pytest.CaptureFixture[str]) -> None:
    card = (zoo / "dsprites" / "vae-seed0.json").read_text()
    out = tmp_path / "out"
    line = assert_one_line(*run(["disentanglement", *args, "--out", str(out), *SMALL], capsys))
    assert message in line
    assert not out.exists()  # nothing written
    assert (zoo / "dsprites" / "vae-seed0.json").read_text() == card  # the card is untouched


def test_cli_unwritable_out_is_one_line_exit_2(first_run: dict[str, Any], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    line = assert_one_line(*run(["disentanglement", "--model", "vae", "--dataset", "dsprites", "--out",
                                 str(blocker / "out"), *SMALL], capsys))
    assert "is a file, not a folder" in line


def test_update_card_keeps_what_identifies_the_weights(zoo: Path, first_run: dict[str, Any]) -> None:
    card = read_card(zoo / "dsprites" / "vae-seed0.json")
    with pytest.raises(ZooError, match="cannot change sha256"):
        update_card(card, sha256="0" * 64)
    updated = update_card(card, note="kept")
    assert read_card(card.path).data == updated.data and updated.data["note"] == "kept"
    assert updated.data["disentanglement"] == card.data["disentanglement"]


def test_models_listing_shows_the_scores(first_run: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    scores = first_run["result"]["scores"]
    code, out, _ = run(["models", "--dataset", "dsprites", "--markdown"], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].endswith("| test acc. | MIG | DCI-D | β-VAE | FactorVAE |")
    vae = next(line for line in lines if line.startswith("| `vae` "))
    assert vae.endswith(f"| {scores['mig']:.4f} | {scores['dci_disentanglement']:.4f} | "
                        f"{scores['betavae_score']:.4f} | {scores['factorvae_score']:.4f} |")
    classifier = next(line for line in lines if line.startswith("| `classifier` "))
    assert classifier.endswith("| – | – | – | – |")
    code, out, _ = run(["models", "--dataset", "dsprites"], capsys)
    assert code == 0 and f"mig={scores['mig']:.4f}" in out and f"betavae_score={scores['betavae_score']:.4f}" in out
    code, out, _ = run(["models", "--dataset", "dsprites", "--json"], capsys)
    entry = next(e for e in json.loads(out) if e["name"] == "vae")
    assert entry["disentanglement"]["mig"] == scores["mig"]


def test_default_out_follows_attack() -> None:
    from robust_vae.cli.app import build_parser
    from robust_vae.cli.disentanglement import default_out

    parser = build_parser()
    args = parser.parse_args(["disentanglement", "--model", "vae"])
    assert args.dataset == "dsprites" and args.code == "mean" and args.num_train == 10_000 and args.num_test == 5_000
    assert args.group_size is None and args.dci_regressor == "random_forest"
    assert default_out(args) == Path("reports/dsprites/vae/disentanglement")
    args = parser.parse_args(["disentanglement", "--model", "jointvae", "--seed-model", "2"])
    assert default_out(args) == Path("reports/dsprites/jointvae-seed2/disentanglement")
