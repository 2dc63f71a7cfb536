"""The ``robust-vae`` console script, run as a user runs it (a subprocess)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(sys.executable).parent / "robust-vae"
COMMAND = [str(SCRIPT)] if SCRIPT.is_file() else [sys.executable, "-m", "robust_vae.cli.app"]
SUMMARY_KEYS = {"name", "dataset", "family", "seed", "path", "metrics"}
OPTIONAL_SUMMARY_KEYS = {"disentanglement", "below_floor", "notes"}


def robust_vae(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI with the test session's environment (isolated cache, pinned data root)."""
    return subprocess.run([*COMMAND, *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd, env=dict(os.environ))


def assert_one_line_error(result: subprocess.CompletedProcess[str], command: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"robust-vae {command}: error: ")
    assert result.stdout == ""
    return lines[0]


def test_help() -> None:
    result = robust_vae("--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: robust-vae")
    for command in ("models", "train-classifier", "train"):
        assert command in result.stdout
    assert result.stderr == ""


def test_models_json_lists_the_classifier(tmp_path: Path) -> None:
    result = robust_vae("models", "--dataset", "mnist", "--json", cwd=tmp_path)  # any cwd works
    assert result.returncode == 0, result.stderr
    entries = json.loads(result.stdout)
    assert isinstance(entries, list)
    classifiers = [entry for entry in entries if entry["name"] == "classifier"]
    assert len(classifiers) == 1, entries
    entry = classifiers[0]
    assert set(entry) == SUMMARY_KEYS
    assert (entry["dataset"], entry["family"], entry["seed"]) == ("mnist", "classifier", 0)
    assert Path(entry["path"]).is_absolute() and Path(entry["path"]).is_file()
    assert Path(entry["path"]).name == "classifier.safetensors"
    assert entry["metrics"]["test_accuracy"] >= 0.985
    assert all(SUMMARY_KEYS <= set(e) <= SUMMARY_KEYS | OPTIONAL_SUMMARY_KEYS and e["dataset"] == "mnist"
               for e in entries)
    # every VAE card on MNIST is judged against its floor (the classifier has none)
    assert all("below_floor" in e for e in entries if e["family"] != "classifier")


def test_models_markdown_has_one_row_per_card(tmp_path: Path) -> None:
    listed = json.loads(robust_vae("models", "--dataset", "mnist", "--json", cwd=tmp_path).stdout)
    result = robust_vae("models", "--dataset", "mnist", "--markdown", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| `")]
    assert len(rows) == len(listed)
    header = [cell.strip() for cell in result.stdout.splitlines()[0].strip("| ").split("|")]
    classifier_row = next(row for row in rows if row.startswith("| `classifier`"))
    cells = [cell.strip() for cell in classifier_row.strip("| ").split("|")]
    accuracy = next(e for e in listed if e["name"] == "classifier")["metrics"]["test_accuracy"]
    assert cells[header.index("test acc.")] == f"{accuracy:.4f}"


def test_models_note_is_listed_under_the_markdown_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A card below its floor is marked in the table, and its note is the footnote's reason."""
    import shutil

    from robust_vae.zoo import SHIPPED_MODELS
    folder = tmp_path / "models" / "mnist"
    folder.mkdir(parents=True)
    for suffix in (".json", ".safetensors"):
        shutil.copyfile(SHIPPED_MODELS / "mnist" / f"vae-seed0{suffix}", folder / f"vae-seed0{suffix}")
    card = json.loads((folder / "vae-seed0.json").read_text())
    card["metrics"]["recon_accuracy"] = 0.5  # under the 0.86 floor
    (folder / "vae-seed0.json").write_text(json.dumps(card))
    monkeypatch.setenv("ROBUST_VAE_MODELS", str(folder.parent))
    noted = robust_vae("models", "--dataset", "mnist", "--note", "vae", "0", "the decoder ignores z")
    assert noted.returncode == 0, noted.stderr
    result = robust_vae("models", "--dataset", "mnist", "--markdown")
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if line.startswith("| `vae`"))
    assert "0.5000†" in row
    assert result.stdout.rstrip().endswith(
        "† `vae` seed 0 is below its recon-accuracy floor of 0.86: the decoder ignores z")
    listed = json.loads(robust_vae("models", "--dataset", "mnist", "--json").stdout)
    assert listed[0]["below_floor"] is True and listed[0]["notes"] == ["the decoder ignores z"]
    missing = robust_vae("models", "--note", "vae", "0", "text")
    assert "--dataset" in assert_one_line_error(missing, "models")


def test_unknown_family_is_one_line_exit_2() -> None:
    line = assert_one_line_error(robust_vae("train", "--model", "nosuchfamily", "--dataset", "mnist"),
                                 "train")
    assert "'nosuchfamily'" in line and "jointvae" in line


def test_missing_data_is_one_line_exit_2(tmp_path: Path) -> None:
    result = robust_vae("train-classifier", "--data-dir", str(tmp_path / "empty"), "--epochs", "1",
                        "--out", str(tmp_path / "out"))
    line = assert_one_line_error(result, "train-classifier")
    assert "--data-dir" in line and "ROBUST_VAE_DATA" in line
    assert not (tmp_path / "out").exists()


def test_corrupt_gzip_is_one_line_exit_2(tmp_path: Path, mnist_root: Path) -> None:
    # A flipped byte inside the deflate stream raises zlib.error; it must become a DataError.
    folder = tmp_path / "root" / "mnist"
    folder.mkdir(parents=True)
    for source in sorted((mnist_root / "mnist").iterdir()):
        if "idx" in source.name and not source.name.startswith("train-images"):
            os.symlink(source, folder / source.name)
    images = mnist_root / "mnist" / "train-images-idx3-ubyte.gz"
    content = images.read_bytes() if images.is_file() else gzip.compress(
        (mnist_root / "mnist" / "train-images-idx3-ubyte").read_bytes(), compresslevel=1)
    damaged = bytearray(content)
    damaged[1000] ^= 0xFF
    (folder / "train-images-idx3-ubyte.gz").write_bytes(bytes(damaged))
    result = robust_vae("train-classifier", "--data-dir", str(tmp_path / "root"), "--epochs", "1",
                        "--out", str(tmp_path / "out"))
    line = assert_one_line_error(result, "train-classifier")
    assert "train-images-idx3-ubyte.gz" in line and "cannot be read" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv", [["--threads", "0"], ["--epochs", "x"]])
def test_bad_option_is_argparse_usage_error(argv: list[str]) -> None:
    result = robust_vae("train-classifier", *argv)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith("robust-vae train-classifier: error: argument")


@pytest.mark.parametrize(("marker", "dataset"), [("zoo-table", "mnist"), ("fashion-zoo-table", "fashion-mnist"),
                                                  ("dsprites-zoo-table", "dsprites")])
def test_readme_zoo_tables_are_the_command_output(marker: str, dataset: str) -> None:
    """The README's zoo tables are pasted from `robust-vae models --dataset D --markdown`: keep them true."""
    from robust_vae.cli.models import models_markdown
    from robust_vae.zoo import list_cards

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    start, end = f"<!-- {marker}:start -->\n", f"<!-- {marker}:end -->"
    assert start in readme, f"README has no {marker} block"
    pasted = readme[readme.index(start) + len(start):readme.index(end)]
    assert pasted.strip() == models_markdown(list_cards(dataset)).strip(), (
        f"README's {dataset} zoo table is stale: paste `robust-vae models --dataset {dataset} --markdown`")
