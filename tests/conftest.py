"""Shared fixtures: the real MNIST split(s) and an isolated cache for the whole session.

Nothing here skips: when the data is missing the tests that need it fail with a message
that says where the files were looked for and how to point the tests at them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from robust_vae.data import DATA_ENV, Dataset, load_dataset
from robust_vae.zoo import SHIPPED_MODELS

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_ROOT = (REPO_ROOT / ".." / "shared" / "data").resolve()
MNIST_STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def data_root() -> Path:
    """The data root the tests use: ``$ROBUST_VAE_DATA``, else ``<repo>/../shared/data``."""
    env = os.environ.get(DATA_ENV)
    return Path(env).expanduser().resolve() if env else DEFAULT_DATA_ROOT


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """One torch thread for the whole session: on a busy 2-core machine two threads make the
    tiny batches of these tests far slower. Session-scoped so it is in force before
    ``small_zoo`` is trained."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session", autouse=True)
def isolated_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Per-session ``ROBUST_VAE_CACHE`` so no test writes to the user's cache.

    Also pins ``ROBUST_VAE_DATA`` (so nothing can fall back to a network download) and drops
    ``ROBUST_VAE_MODELS`` (so the tests check the shipped ``models/``, not a user's override;
    tests that need another zoo set it with ``monkeypatch``).
    """
    cache = tmp_path_factory.mktemp("robust-vae-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ROBUST_VAE_CACHE", str(cache))
        patch.setenv(DATA_ENV, str(data_root()))
        patch.delenv("ROBUST_VAE_MODELS", raising=False)
        yield cache


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """The data root holding ``mnist/`` with the four standard IDX files (``.gz`` or not)."""
    root = data_root()
    folder = root / "mnist"
    missing = [
        stem for stem in MNIST_STEMS
        if not (folder / f"{stem}.gz").is_file() and not (folder / stem).is_file()
    ]
    if missing:
        pytest.fail(
            f"MNIST files missing in {folder}: {', '.join(missing)}. Put the standard IDX files "
            f"there or set {DATA_ENV}=ROOT where ROOT/mnist/ holds them "
            f"(default ROOT is {DEFAULT_DATA_ROOT})",
            pytrace=False,
        )
    return root


@pytest.fixture(scope="session")
def mnist_test(mnist_root: Path) -> Dataset:
    return load_dataset("mnist", "test", data_dir=mnist_root)


@pytest.fixture(scope="session")
def mnist_train(mnist_root: Path) -> Dataset:
    return load_dataset("mnist", "train", data_dir=mnist_root)


SMALL_VAE_STEPS = 500


@pytest.fixture(scope="session")
def small_zoo(mnist_root: Path, isolated_environment: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A zoo root (``<root>/mnist/``) with the shipped classifier and a small real ``vae``.

    The VAE is the thesis architecture trained for 500 steps (lr 2e-3) on real MNIST by
    ``train_vae`` (about half a minute on 2 cores): good enough that attacks have something
    to move, small enough for CI. Point ``ROBUST_VAE_MODELS`` at the returned root to use it.
    """
    import shutil

    import torch

    from robust_vae.training.vae import train_vae

    root = tmp_path_factory.mktemp("small-zoo")
    (root / "mnist").mkdir()
    for name in ("classifier.safetensors", "classifier.json"):
        shutil.copy(SHIPPED_MODELS / "mnist" / name, root / "mnist" / name)
    threads = torch.get_num_threads()
    result = train_vae("vae", "mnist", seed=0, steps=SMALL_VAE_STEPS, overrides={"lr": 2e-3},
                       out_dir=root / "mnist", progress=False, log=lambda message: None)
    torch.set_num_threads(threads)
    assert result is not None and result.card.data["metrics"]["recon_accuracy"] > 0.5
    return root


@pytest.fixture(scope="session")
def small_vae(small_zoo: Path):
    """The small trained VAE of :func:`small_zoo`, in eval mode."""

    from robust_vae.models import get_family
    from robust_vae.zoo.cards import load_state, read_card

    card = read_card(small_zoo / "mnist" / "vae-seed0.json")
    return load_state(card, get_family("vae")(get_family("vae").config_class.from_dict(card.data["config"])))


def kill_when(command: list[str], env: dict[str, str], ready: Callable[[], object], what: str,
              poll: float = 0.02, timeout: float = 240.0) -> subprocess.Popen:
    """Start ``command`` in its own session, SIGKILL its process group as soon as ``ready()``
    is true, and return the reaped process. Fails if the command ends first, or if ``what``
    (the awaited thing, for the message) does not appear within ``timeout`` seconds."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, f"no {what} appeared"
            time.sleep(poll)
        assert process.poll() is None, "the run finished before it could be killed"
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
    return process


@pytest.fixture(scope="session")
def kill_process_when() -> Callable[..., subprocess.Popen]:
    """:func:`kill_when`, for the kill-and-resume tests."""
    return kill_when
