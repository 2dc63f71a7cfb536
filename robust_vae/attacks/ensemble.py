"""Worst case over attacks (AutoAttack's convention): an example is broken when any member breaks it.

``--attack ensemble:thesis-fast,tabacof-linf,e2e-linf`` (an inline recipe) or a recipe with
``attack = "ensemble"`` and ``members = [...]`` runs each member recipe on the same examples,
with the same per-example seeds and target classes, and judges every member's adversarial the
way the success matrix does (protocol §4): the evaluation classifier's label of the
deterministic reconstruction x̂(x*). Per example it reports one member's adversarial, in this
order of preference:

1. a targeted success (label = target class), else
2. an ignore-target success (label ≠ the source's label), else
3. the first member's adversarial (nothing broke the example).

so the ensemble's AS target is the logical OR of its members' targeted successes and its AS
ignore-target the OR of their ignore-target successes. Among the members at the same level,
``choose="first"`` takes the first in member order; members after the first then attack only
the examples no earlier member has broken towards the target (AutoAttack's saving: the later,
costlier attacks see only the robust rest). ``choose="smallest-l2"`` runs every member on every
example and takes the one with the smallest L2 distortion. A member with a sweep is reduced
per example to the entry closest to the target code, as the success matrix reduces it.

The source's label is the classifier's label of the clean reconstruction (the success matrix
attacks only sources whose clean reconstruction is labelled as their class, so it is their
class). Every member must have the same budget (norm and ε): a worst case is taken within one
threat model. ``extras["winner"]`` (K = 1, N) is the index in ``members`` of the reported
member; ``objective`` and ``iterations`` are that member's.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from robust_vae.attacks.base import Attack, Problem, RunOutput, as_attackable
from robust_vae.attacks.options import Choice
from robust_vae.attacks.recipe import load_attack, read_recipe
from robust_vae.attacks.registry import register_attack
from robust_vae.core import progress
from robust_vae.core.errors import ConfigError

PROGRESS_SCALE = 1000  # progress steps per member (members report their own totals; rescaled)


class Choose(Choice):
    """Which member's adversarial an ensemble reports among those at the same success level."""

    FIRST = "first"              # the first in member order (later members skip broken examples)
    SMALLEST_L2 = "smallest-l2"  # the smallest L2 distortion (every member on every example)


# success levels of one adversarial, higher is better for the attacker
FAILED, IGNORE_TARGET, TARGET = 0, 1, 2


@torch.no_grad()
def reconstruction_labels(model: nn.Module, classifier: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The success criterion's labels: classifier(x̂(x)).argmax, (N, C, H, W) -> (N,) int64
    (exactly what :func:`robust_vae.evaluation.success_matrix.success_matrix` judges)."""
    labels: torch.Tensor = classifier(as_attackable(model).reconstruct(x)).argmax(-1)
    return labels


def success_level(prediction: torch.Tensor, source_class: torch.Tensor, target_class: torch.Tensor) -> torch.Tensor:
    """(N,) int64: 2 targeted success, 1 ignore-target success only, 0 neither."""
    return torch.where(prediction == target_class, TARGET,
                       torch.where(prediction != source_class, IGNORE_TARGET, FAILED)).to(torch.int64)


@register_attack
@dataclass(repr=False)
class EnsembleAttack(Attack):
    """The per-example worst case over ``members`` (recipe names or ``.toml`` paths).

    ``choose``: ``"first"`` (first success in member order; later members skip the examples
    already broken towards the target) or ``"smallest-l2"``. ``dataset``: whose shipped
    evaluation classifier judges success when none is bound (``success_matrix`` binds its own).
    """

    name: ClassVar[str] = "ensemble"
    has_artefacts: ClassVar[bool] = True  # the members' (e.g. kos-classifier's latent classifier)

    members: list[str] = field(default_factory=lambda: ["thesis-fast", "tabacof-linf", "e2e-linf"])
    choose: str = "first"
    dataset: str = "mnist"

    def __post_init__(self) -> None:
        self._classifier: nn.Module | None = None
        self._attacks: list[Attack] = []
        super().__post_init__()

    # ----- configuration -----
    @classmethod
    def inline_params(cls, argument: str) -> dict[str, Any]:
        members = [m.strip() for m in argument.split(",")]
        if not argument.strip() or not all(members):
            raise ConfigError("ensemble: list member recipes after the colon, e.g. "
                              "--attack ensemble:thesis-fast,tabacof-linf,e2e-linf")
        return {"members": members}

    @classmethod
    def inline_name(cls, argument: str) -> str:
        names = [read_recipe(m.strip())["name"] for m in argument.split(",")]
        return "ensemble-" + "+".join(names)

    def validate(self) -> None:
        if not isinstance(self.members, list) or not self.members or \
                not all(isinstance(m, str) and m for m in self.members):
            raise ConfigError(f"ensemble: members must be a non-empty list of recipe names, got {self.members!r}")
        if len(set(self.members)) != len(self.members):
            raise ConfigError(f"ensemble: members are listed twice in {self.members!r}")
        Choose.parse(self.choose, "ensemble: choose")
        overrides = {"device": self.device} if self.device is not None else {}
        attacks = [load_attack(m, **overrides) for m in self.members]
        nested = [m for m, a in zip(self.members, attacks) if isinstance(a, EnsembleAttack)]
        if nested:
            raise ConfigError(f"ensemble: a member cannot be an ensemble ({', '.join(nested)}): list its members")
        threat = {(a.budget_norm, _epsilon_key(a)) for a in attacks}
        if len(threat) > 1:
            described = ", ".join(f"{m}: {a.budget_norm or 'box'} ε = {getattr(a, 'epsilon', None)}"
                                  for m, a in zip(self.members, attacks))
            raise ConfigError(f"ensemble: the members must share one budget (norm and ε), got {described}")
        self._attacks = attacks
        super().validate()

    @property
    def member_attacks(self) -> list[Attack]:
        """The member attacks, in member order."""
        return list(self._attacks)

    @property
    def budget_norm(self) -> str | None:
        return self._attacks[0].budget_norm if self._attacks else None

    @property
    def epsilon(self) -> float | None:
        """The members' common budget (None without one)."""
        value = getattr(self._attacks[0], "epsilon", None) if self._attacks else None
        return None if value is None else float(value)

    def bind(self, *, classifier: nn.Module | None = None, data_dir: str | None = None) -> EnsembleAttack:
        """Judge with ``classifier`` and bind it (and ``data_dir``) to every member."""
        if classifier is not None:
            self._classifier = classifier
        for attack in self._attacks:
            attack.bind(classifier=classifier, data_dir=data_dir)
        return self

    def artefacts(self, model: nn.Module) -> dict[str, str]:
        return {f"{m}/{k}": v for m, a in zip(self.members, self._attacks) if a.has_artefacts
                for k, v in a.artefacts(model).items()}

    def hyperparameters(self) -> dict[str, Any]:
        """The ensemble's fields plus every member's attack and hyperparameters (so a run's
        fingerprint changes when a member recipe does)."""
        values = super().hyperparameters()
        values["member_attacks"] = [{"recipe": m, "attack": a.name, "hyperparameters": a.hyperparameters()}
                                    for m, a in zip(self.members, self._attacks)]
        return values

    def __repr__(self) -> str:
        return f"{type(self).__name__}(members={self.members!r}, choose={self.choose!r})"

    def judge(self, device: torch.device) -> nn.Module:
        """The bound evaluation classifier, else the shipped one of ``dataset`` (loaded once)."""
        if self._classifier is None:
            from robust_vae.zoo import load_classifier

            self._classifier = load_classifier(self.dataset)
        return self._classifier.to(device).eval()

    # ----- the attack -----
    def run(self, model: nn.Module, problem: Problem) -> RunOutput:
        sources = problem.sources
        m = sources.shape[0]
        classifier = self.judge(sources.device)
        source_class = reconstruction_labels(model, classifier, sources)
        if problem.target_classes is not None:
            target_class = problem.target_classes
        elif problem.targets is not None:
            target_class = reconstruction_labels(model, classifier, problem.targets)
        else:
            raise ConfigError("ensemble: pass target images or target_classes (it judges success by class)")
        targets = problem.targets if problem.targets is not None else problem.target_code
        choose = Choose(self.choose)

        adversarial = sources.clone()
        objective = torch.full((m,), torch.nan, device=sources.device)
        iterations = torch.zeros(m, dtype=torch.int64, device=sources.device)
        winner = torch.zeros(m, dtype=torch.int64, device=sources.device)
        level = torch.full((m,), -1, dtype=torch.int64, device=sources.device)
        l2 = torch.full((m,), torch.inf, device=sources.device)
        outer = contextvars.copy_context()  # where the caller listens for progress
        total = len(self._attacks) * PROGRESS_SCALE
        for i, attack in enumerate(self._attacks):
            todo = torch.ones(m, dtype=torch.bool, device=sources.device)
            if choose is Choose.FIRST and i > 0:
                todo = level < TARGET
            rows = torch.nonzero(todo).flatten()
            if len(rows):
                with progress.listen(_forward_progress(outer, i, total)):
                    result = attack(model, sources[rows], targets[rows], seeds=problem.seeds[rows.cpu()],
                                    target_classes=target_class[rows])
                result = attack.reduce_sweep(result)[0]
                adv = result.adversarial[0]
                found = success_level(reconstruction_labels(model, classifier, adv),
                                      source_class[rows], target_class[rows])
                better = found > level[rows]
                if choose is Choose.SMALLEST_L2:
                    better |= (found == level[rows]) & (result.l2[0] < l2[rows])
                take = rows[better]
                adversarial[take] = adv[better]
                objective[take] = result.objective[0][better].float()
                iterations[take] = result.iterations[0][better]
                winner[take] = i
                level[take] = found[better]
                l2[take] = result.l2[0][better]
            outer.run(progress.step, (i + 1) * PROGRESS_SCALE, total)
        return RunOutput(adversarial=adversarial, objective=objective, iterations=iterations,
                         extras={"winner": winner})


def _epsilon_key(attack: Attack) -> Any:
    value = getattr(attack, "epsilon", None)
    if isinstance(value, (list, tuple)):
        raise ConfigError(f"ensemble: member {attack.name} sweeps ε; give each member one budget")
    return None if value is None else float(value)


def _forward_progress(outer: contextvars.Context, index: int, total: int) -> progress.StepCallback:
    """A member's progress, rescaled to its slice of the ensemble's and reported to the caller."""

    def forward(done: int, of: int) -> None:
        outer.run(progress.step, index * PROGRESS_SCALE + (PROGRESS_SCALE * done) // of, total)

    return forward
