"""Classifier-guided attacks through foolbox 3: the machinery the ``e2e`` and ``kos-classifier``
attacks share.

A VAE pipeline that ends in class logits is a classifier, so foolbox's attacks apply to it
directly (Kos, Fischer & Song 2017; Gondim-Ribeiro et al. 2018). A :class:`FoolboxAttack` builds such a pipeline
for the attacked model (:meth:`FoolboxAttack.network`: images in [0, 1] -> logits), wraps it as
``foolbox.PyTorchModel(net, bounds=(0, 1))`` and runs a targeted foolbox attack on it with
``TargetedMisclassification(target classes)`` at budget ε:

- ``method="linf-pgd"``: foolbox ``LinfPGD`` (L∞ budget ε);
- ``method="l2-pgd"``: foolbox ``L2PGD`` (L2 budget ε);
- ``method="cw"``: foolbox ``L2CarliniWagnerAttack`` (minimal L2 adversarial, projected onto
  the L2 ball ε; examples it finds no adversarial of any size for are returned unperturbed).

**Target classes.** The success matrix passes the target images' labels
(``Attack.__call__(..., target_classes=...)``). Called without them, the target class of an
example is the attacked pipeline's own label of its target image (for ``e2e``: the evaluation
classifier's label of the target's reconstruction; for ``kos-classifier``: the latent
classifier's label of the target's code), the class analogue of the latent attacks' "move
onto the target's code".

**Randomness.** The PGD random start is drawn per example from its own seed (foolbox would
draw it from torch's global generator for the whole batch), so an example's result does not
depend on the rest of its batch beyond float rounding.

**Progress.** foolbox runs its own loop, so :func:`run_foolbox` wraps the attacked pipeline in a
:class:`StepCounter`: each forward pass foolbox makes (one per PGD or CW step) is reported to
:mod:`robust_vae.core.progress` as one step of :attr:`FoolboxAttack.total_steps`.

The objective an attack reports is the targeted margin max_{j ≠ t} logit_j − logit_t of the
attacked pipeline at the returned adversarial: negative exactly when the pipeline labels it t,
i.e. when foolbox counts it a success.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from robust_vae.attacks.base import Attack, Problem, RunOutput, per_example_generators
from robust_vae.attacks.budgets import Norm, NormBall
from robust_vae.attacks.options import Choice
from robust_vae.core import progress
from robust_vae.core.errors import ConfigError

if TYPE_CHECKING:
    from eagerpy.tensor.tensor import Tensor as EagerTensor


class FoolboxMethod(Choice):
    """The foolbox attack a :class:`FoolboxAttack` runs (its ``method`` field)."""

    LINF_PGD = "linf-pgd"  # foolbox LinfPGD
    L2_PGD = "l2-pgd"      # foolbox L2PGD
    CW = "cw"              # foolbox L2CarliniWagnerAttack

    @property
    def norm(self) -> Norm:
        """The norm of the method's budget."""
        return Norm.LINF if self is FoolboxMethod.LINF_PGD else Norm.L2


# method -> norm of its budget (the recipe strings)
METHODS: dict[str, str] = {method.value: method.norm.value for method in FoolboxMethod}


@contextmanager
def frozen(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` in eval mode with no parameter gradients (foolbox backpropagates only to x).

    Afterwards every submodule gets back its own mode and every parameter its own flag.
    """
    modes = [(m, m.training) for m in module.modules()]
    flags = [p.requires_grad for p in module.parameters()]
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)
        for m, mode in modes:
            m.training = mode


class StepCounter(nn.Module):
    """``net`` unchanged, except that every forward call is reported as one optimisation step
    (:func:`robust_vae.core.progress.step`, out of ``total``): foolbox runs its own loop, and
    each of its steps makes one forward pass."""

    def __init__(self, net: nn.Module, total: int) -> None:
        super().__init__()
        self.net = net
        self.total = total
        self.calls = 0
        self.training = False  # a pipeline for inference; the wrapped modules keep their own mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)
        self.calls += 1
        progress.step(self.calls, self.total)
        return out


def targeted_margin(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """max_{j ≠ t} logit_j − logit_t per row: (M, K), (M,) -> (M,); < 0 iff argmax is t (no ties)."""
    rows = torch.arange(logits.shape[0], device=logits.device)
    target = logits[rows, classes]
    others = logits.clone()
    others[rows, classes] = -torch.inf
    return others.amax(dim=1) - target


def per_example_start(shape: torch.Size, seeds: torch.Tensor, norm: str | NormBall) -> torch.Tensor:
    """Uniform random starts in the unit L∞ or L2 ball, (M, *shape); row i depends on seeds[i] only.

    ``norm``: ``"linf"``, ``"l2"`` or the ball itself (:meth:`NormBall.sample_unit_ball`).
    """
    ball = Norm.parse(norm, "random start norm").budget if isinstance(norm, str) else norm
    n = int(torch.Size(shape).numel())
    rows = [ball.sample_unit_ball(n, g) for g in per_example_generators(seeds)]
    if not rows:
        return torch.zeros((0, *shape))
    return torch.stack(rows).view(-1, *shape)


def _foolbox() -> ModuleType:
    try:
        import foolbox
    except ImportError:  # pragma: no cover - foolbox is a declared dependency
        raise ConfigError("the classifier-guided attacks need foolbox 3: pip install 'foolbox>=3.3,<4'") from None
    return foolbox


def foolbox_attack(method: str, *, steps: int, rel_stepsize: float, random_start: bool,
                   seeds: torch.Tensor, binary_search_steps: int = 5, cw_stepsize: float = 0.01,
                   confidence: float = 0.0, initial_const: float = 1e-3, abort_early: bool = True) -> Any:
    """The foolbox attack object for ``method`` (PGD random starts drawn per example from ``seeds``)."""
    fb = _foolbox()
    kind = FoolboxMethod.parse(method, "foolbox method")
    if kind is FoolboxMethod.CW:
        return fb.attacks.L2CarliniWagnerAttack(
            binary_search_steps=binary_search_steps, steps=steps, stepsize=cw_stepsize,
            confidence=confidence, initial_const=initial_const, abort_early=abort_early)
    return _seeded_pgd(kind, seeds)(rel_stepsize=rel_stepsize, steps=steps, random_start=random_start)


def _seeded_pgd(method: FoolboxMethod, seeds: torch.Tensor) -> type[Any]:
    """foolbox's PGD class for ``method``, its random start drawn per example from ``seeds``."""
    from eagerpy.astensor import astensor
    from foolbox.attacks import L2PGD, LinfPGD

    ball = method.norm.budget

    def seeded_start(x0: EagerTensor, epsilon: float) -> EagerTensor:
        start = per_example_start(torch.Size(x0.shape[1:]), seeds, ball).to(x0.raw)
        return x0 + astensor(start * epsilon)

    class SeededLinfPGD(LinfPGD):
        def get_random_start(self, x0: EagerTensor, epsilon: float) -> EagerTensor:
            return seeded_start(x0, epsilon)

    class SeededL2PGD(L2PGD):
        def get_random_start(self, x0: EagerTensor, epsilon: float) -> EagerTensor:
            return seeded_start(x0, epsilon)

    return SeededLinfPGD if method is FoolboxMethod.LINF_PGD else SeededL2PGD


def run_foolbox(net: nn.Module, attack: Any, images: torch.Tensor, classes: torch.Tensor,
                epsilon: float, *, targeted: bool = True, total_steps: int | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run a foolbox ``attack`` on ``net`` (images in [0, 1] -> logits) at budget ``epsilon``.

    images (M, C, H, W) in [0, 1]; classes (M,) int64: target classes (``targeted``) or true
    labels (untargeted, ``Misclassification``). Returns foolbox's clipped adversarials
    (M, C, H, W) (inside the ε-ball), foolbox's own success flags for them (M,) bool, and its raw
    outputs (M, C, H, W) (for a minimisation attack such as CW: possibly outside the ball).
    With ``total_steps``, each forward pass foolbox makes is reported as a step of that many
    (:class:`StepCounter`).
    """
    fb = _foolbox()
    with frozen(net), torch.enable_grad():
        attacked = net if total_steps is None else StepCounter(net, total_steps)
        fmodel = fb.PyTorchModel(attacked, bounds=(0.0, 1.0), device=images.device)
        criterion = (fb.criteria.TargetedMisclassification(classes) if targeted
                     else fb.criteria.Misclassification(classes))
        raw, clipped, success = attack(fmodel, images, criterion, epsilons=float(epsilon))
    return clipped.detach(), success.detach(), raw.detach()


@dataclass(repr=False)
class FoolboxAttack(Attack):
    """A targeted foolbox attack on the pipeline :meth:`network` builds for the attacked model.

    ``method``: ``"linf-pgd"``, ``"l2-pgd"`` or ``"cw"`` (budget norm L∞, L2, L2);
    ``epsilon``: the budget; ``steps``: PGD steps (for ``cw``: Adam steps per binary-search step);
    ``rel_stepsize``: PGD step size relative to ε; ``random_start``: PGD starts uniformly in the
    ball; ``binary_search_steps``, ``cw_stepsize``, ``confidence``, ``initial_const``,
    ``abort_early``: foolbox's Carlini-Wagner settings; ``dataset``: the zoo dataset whose
    evaluation classifier and train split the attack uses.
    """

    name: ClassVar[str] = "foolbox"

    method: str = "linf-pgd"
    epsilon: float = 0.1
    steps: int = 100
    rel_stepsize: float = 0.025
    random_start: bool = True
    binary_search_steps: int = 5
    cw_stepsize: float = 0.01
    confidence: float = 0.0
    initial_const: float = 1e-3
    abort_early: bool = True
    dataset: str = "mnist"

    def __post_init__(self) -> None:
        self._classifier: nn.Module | None = None
        self._data_dir: str | None = None
        super().__post_init__()

    def validate(self) -> None:
        FoolboxMethod.parse(self.method, f"{self.name}: method")
        super().validate()
        if self.epsilon is None or isinstance(self.epsilon, (list, tuple)):
            raise ConfigError(f"{self.name}: epsilon must be one number (the budget)")
        if self.steps < 1 or self.rel_stepsize <= 0 or self.binary_search_steps < 1 or self.cw_stepsize <= 0:
            raise ConfigError(f"{self.name}: steps, rel_stepsize, binary_search_steps and cw_stepsize must be positive")

    @property
    def budget_norm(self) -> str:
        return FoolboxMethod(self.method).norm.value  # per instance: the method chooses the budget

    @property
    def total_steps(self) -> int:
        """Optimisation steps per example: ``steps`` (for ``cw``: × ``binary_search_steps``)."""
        return self.steps * (self.binary_search_steps if FoolboxMethod(self.method) is FoolboxMethod.CW else 1)

    def bind(self, *, classifier: nn.Module | None = None, data_dir: str | None = None) -> FoolboxAttack:
        """Use this evaluation classifier (default: the zoo's for ``dataset``) and data root."""
        if classifier is not None:
            self._classifier = classifier
        if data_dir is not None:
            self._data_dir = str(data_dir)
        return self

    def evaluation_classifier(self, device: torch.device) -> nn.Module:
        """The bound evaluation classifier, else the shipped one for ``dataset`` (loaded once)."""
        if self._classifier is None:
            from robust_vae.zoo import load_classifier

            self._classifier = load_classifier(self.dataset)
        return self._classifier.to(device).eval()

    # ----- what a subclass defines -----
    def network(self, model: nn.Module) -> nn.Module:  # pragma: no cover - abstract
        """The pipeline foolbox attacks: (M, C, H, W) images in [0, 1] -> (M, classes) logits."""
        raise NotImplementedError

    def classes_from_codes(self, model: nn.Module, net: nn.Module, codes: torch.Tensor) -> torch.Tensor:
        raise ConfigError(f"{self.name} needs target classes or target images, not target codes")

    # ----- the optimisation -----
    def foolbox_attack(self, seeds: torch.Tensor) -> Any:
        """The configured foolbox attack object; PGD random starts come from ``seeds`` (M,)."""
        return foolbox_attack(
            self.method, steps=self.steps, rel_stepsize=self.rel_stepsize, random_start=self.random_start,
            seeds=seeds, binary_search_steps=self.binary_search_steps, cw_stepsize=self.cw_stepsize,
            confidence=self.confidence, initial_const=self.initial_const, abort_early=self.abort_early)

    def target_classes(self, model: nn.Module, net: nn.Module, problem: Problem) -> torch.Tensor:
        if problem.target_classes is not None:
            return problem.target_classes.to(problem.sources.device, torch.int64)
        with torch.no_grad():
            if problem.targets is not None:
                logits: torch.Tensor = net(problem.targets)
                return logits.argmax(-1)
            return self.classes_from_codes(model, net, problem.target_code)

    def run(self, model: nn.Module, problem: Problem) -> RunOutput:
        sources = problem.sources
        m = sources.shape[0]
        iterations = torch.full((m,), self.total_steps, dtype=torch.int64)
        net = self.network(model)
        with frozen(net):
            classes = self.target_classes(model, net, problem)
            adversarial = sources.clone()
            assert problem.epsilon is not None
            for value in torch.unique(problem.epsilon).tolist():  # one ε unless ε is swept
                rows = (problem.epsilon == value).nonzero().flatten()
                attack = self.foolbox_attack(problem.seeds[rows.cpu()])
                found, _, raw = run_foolbox(net, attack, sources[rows], classes[rows], value,
                                            total_steps=self.total_steps)
                if FoolboxMethod(self.method) is FoolboxMethod.CW:
                    # where CW found no adversarial of any size, foolbox returns zeros
                    with torch.no_grad():
                        any_size = net(raw).argmax(-1) == classes[rows]
                    found = torch.where(any_size.view(-1, 1, 1, 1), found, sources[rows])
                adversarial[rows] = found
            with torch.no_grad():
                margin = targeted_margin(net(adversarial), classes)
        return RunOutput(adversarial, margin, iterations)
