"""One attack run as a frozen value: what it attacks, with what, on which pairs, where.

:class:`RunConfig` is the single description of a run. Its :meth:`RunConfig.fingerprint` is
what a run folder's ``config.json`` holds (a rerun with another fingerprint is refused, an
equal one resumes), its :meth:`RunConfig.command` is the ``robust-vae attack`` line that
reproduces it, and :func:`robust_vae.evaluation.runner.run_attack` makes it. The CLI, the
study and the benchmarks all build a ``RunConfig``.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robust_vae.attacks import Attack, load_attack, read_recipe
from robust_vae.core.devices import check_device
from robust_vae.core.errors import ConfigError
from robust_vae.data.digest import dataset_digest
from robust_vae.models import get_family
from robust_vae.models.conditional import LABEL_SOURCES, check_label_source, is_conditional
from robust_vae.zoo import Card, find_card, load_model

DEFAULT_PER_PAIR = 20  # 1,800 attacked pairs on MNIST: the thesis recipe finishes in minutes on 2 CPU cores
DEFAULT_BATCH_SIZE = 512


def fingerprint_of(*, model: str | None, model_seed: int | None, weights_sha256: str | None, dataset: str,
                   attack: Attack, per_pair: int | None, seed: int, batch_size: int,
                   classifier_sha256: str | None, dataset_sha256: dict[str, str] | None = None,
                   artefacts: dict[str, str] | None = None, label_source: str | None = None) -> dict[str, Any]:
    """The canonical fingerprint of a run (JSON types only): every input that changes a result.

    This is the only definition; :meth:`RunConfig.fingerprint` and
    :func:`robust_vae.evaluation.success_matrix.success_matrix` both call it. ``label_source``
    (a conditional model's threat model) is a key only when set, so every other run's
    fingerprint is what it always was.
    """
    raw = {
        "model": model, "model_seed": model_seed, "weights_sha256": weights_sha256, "dataset": dataset,
        "attack": attack.name, "hyperparameters": attack.hyperparameters(), "per_pair": per_pair,
        "seed": seed, "batch_size": batch_size, "classifier_sha256": classifier_sha256,
        "dataset_sha256": dataset_sha256 or {}, "artefacts": artefacts or {},
    }
    if label_source is not None:
        raw["label_source"] = label_source
    canonical: dict[str, Any] = json.loads(json.dumps(raw, sort_keys=True, default=str))
    return canonical


@dataclass(frozen=True)
class RunConfig:
    """A success-matrix run of one zoo model under one recipe.

    ``overrides`` replace single recipe values (``--set KEY=VALUE``); ``per_pair`` None means
    every test pair (``--full``). ``device`` and ``data_dir`` say where, not what: they are not
    part of the fingerprint. ``label_source`` is the threat model of a conditional model
    (``true`` or ``classifier``, :mod:`robust_vae.models.conditional`), None for every other.
    """

    model: str
    dataset: str = "mnist"
    model_seed: int = 0
    recipe: str = "thesis"
    overrides: tuple[tuple[str, Any], ...] = ()
    per_pair: int | None = DEFAULT_PER_PAIR
    seed: int = 0
    batch_size: int = DEFAULT_BATCH_SIZE
    device: str = "cpu"
    data_dir: str | None = None
    label: str | None = field(default=None, compare=False)
    label_source: str | None = None

    def __post_init__(self) -> None:
        """Check every value once, here: nothing is loaded or written before the config is valid."""
        for name in ("model_seed", "seed", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"{name} must be a whole number, got {value!r}")
        if self.per_pair is not None and (not isinstance(self.per_pair, int) or self.per_pair < 1):
            raise ConfigError(f"per_pair must be a whole number >= 1 (or None for every pair), got {self.per_pair!r}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.seed < 0 or self.model_seed < 0:
            raise ConfigError("seeds must be >= 0")
        if self.label_source is not None and self.label_source not in LABEL_SOURCES:
            raise ConfigError(f"label_source must be one of {', '.join(map(repr, LABEL_SOURCES))}, "
                              f"got {self.label_source!r}")
        for key, _ in self.overrides:
            if key == "device":
                raise ConfigError("the device is not a recipe value: pass --device cuda (RunConfig(device=...)) "
                                  "instead of --set device=...")
        check_device(self.device)
        self.attack()  # reads the recipe and checks every hyperparameter (type, range, finiteness)

    @classmethod
    def create(cls, model: str, *, overrides: dict[str, Any] | None = None, **values: Any) -> RunConfig:
        """Build a config with ``overrides`` given as a dict (kept in the given order)."""
        return cls(model=model, overrides=tuple((overrides or {}).items()), **values)

    # ----- what the run attacks with -----
    def recipe_spec(self) -> dict[str, Any]:
        """The recipe as read from its file (name, attack, params, description)."""
        return read_recipe(self.recipe)

    def recipe_name(self) -> str:
        return str(self.recipe_spec()["name"])

    def attack(self) -> Attack:
        """The attack the recipe and overrides describe, bound to the data root."""
        return load_attack(self.recipe, **dict(self.overrides)).bind(data_dir=self.data_dir)

    def display_label(self) -> str:
        """Name of the model in tables: ``label``, else the model (and its seed if not 0)."""
        if self.label:
            return self.label
        return self.model if self.model_seed == 0 else f"{self.model} (seed {self.model_seed})"

    def default_out(self) -> Path:
        """``reports/<dataset>/<model>[-seed<S>][-<label source>-label]/<recipe>/``, relative to
        the working directory (a conditional model's two threat models get two folders)."""
        folder = self.model if self.model_seed == 0 else f"{self.model}-seed{self.model_seed}"
        if self.label_source is not None:
            folder += f"-{self.label_source}-label"
        return Path("reports") / self.dataset / folder / self.recipe_name()

    # ----- identity -----
    def check_available(self) -> tuple[Card, Card]:
        """The model's and the classifier's cards, without loading or training anything: raises
        ZooError for a model seed not in the zoo and ConfigError for a threat model that does not
        fit the model (a study's ``--dry-run`` asks this of every run it has not made yet)."""
        card = find_card(self.model, self.dataset, self.model_seed)
        family = card.data.get("family")
        conditional = isinstance(family, str) and is_conditional(get_family(family))
        check_label_source(conditional, self.label_source, self.model)
        return card, find_card("classifier", self.dataset, None)

    def fingerprint(self) -> dict[str, Any]:
        """What ``config.json`` of the run folder holds: the sha256 of the model, the classifier,
        the dataset files and any artefact the attack uses (the latent classifier of
        ``kos-classifier``, trained on first use), the attack with every hyperparameter value,
        the pair sample and the batch size."""
        card, classifier = self.check_available()
        attack = self.attack()
        artefacts = attack.artefacts(load_model(self.model, self.dataset, self.model_seed)) \
            if attack.has_artefacts else {}
        return fingerprint_of(
            model=self.model, model_seed=self.model_seed, weights_sha256=card.data["sha256"],
            dataset=self.dataset, attack=attack, per_pair=self.per_pair, seed=self.seed,
            batch_size=self.batch_size, classifier_sha256=classifier.data["sha256"],
            dataset_sha256=dataset_digest(self.dataset, self.data_dir), artefacts=artefacts,
            label_source=self.label_source,
        )

    def command(self, out_dir: str | Path | None = None) -> str:
        """The ``robust-vae attack`` command line that makes this run (into ``out_dir``)."""
        argv = ["robust-vae", "attack", "--model", self.model, "--dataset", self.dataset,
                "--seed-model", str(self.model_seed), "--attack", self.recipe, "--seed", str(self.seed),
                "--batch-size", str(self.batch_size)]
        argv += ["--full"] if self.per_pair is None else ["--per-pair", str(self.per_pair)]
        for key, value in self.overrides:
            argv += ["--set", f"{key}={json.dumps(value)}"]
        if self.label_source is not None:
            argv += ["--label-source", self.label_source]
        if self.device != "cpu":
            argv += ["--device", self.device]
        if self.label:
            argv += ["--label", self.label]
        if out_dir is not None:
            argv += ["--out", str(out_dir)]
        return shlex.join(argv)
