"""Classifier-guided attacks through foolbox 3: the machinery the ``e2e`` and ``kos-classifier``
attacks share.

A VAE pipeline that ends in class logits is a classifier, so foolbox's attacks apply to it
directly (literature.md, "Classifier attacks"). A :class:`FoolboxAttack` builds such a pipeline
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

The objective an attack reports is the targeted margin max_{j ≠ t} logit_j − logit_t of the
attacked pipeline at the returned adversarial: negative exactly when the pipeline labels it t,
i.e. when foolbox counts it a success.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator

import torch
from torch import nn

from robust_vae.attacks.base import Attack, Problem, RunOutput, per_example_generators
from robust_vae.core.errors import ConfigError

# method -> norm of its budget
METHODS: dict[str, str] = {"linf-pgd": "linf", "l2-pgd": "l2", "cw": "l2"}


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


def targeted_margin(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """max_{j ≠ t} logit_j − logit_t per row: (M, K), (M,) -> (M,); < 0 iff argmax is t (no ties)."""
    rows = torch.arange(logits.shape[0], device=logits.device)
    target = logits[rows, classes]
    others = logits.clone()
    others[rows, classes] = -torch.inf
    return others.amax(dim=1) - target


def per_example_start(shape: torch.Size, seeds: torch.Tensor, norm: str) -> torch.Tensor:
    """Uniform random starts in the unit L∞ or L2 ball, (M, *shape); row i depends on seeds[i] only.

    L2: the first n coordinates of a uniform point on the (n + 1)-sphere are uniform in the n-ball
    (Voelker et al. 2017, as foolbox samples them).
    """
    n = int(torch.Size(shape).numel())
    rows = []
    for g in per_example_generators(seeds):
        if norm == "linf":
            rows.append(torch.rand(n, generator=g) * 2 - 1)
        else:
            point = torch.randn(n + 2, generator=g)
            rows.append((point / point.norm())[:n])
    if not rows:
        return torch.zeros((0, *shape))
    return torch.stack(rows).view(-1, *shape)


def _foolbox():  # type: ignore[no-untyped-def]
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
    if method == "cw":
        return fb.attacks.L2CarliniWagnerAttack(
            binary_search_steps=binary_search_steps, steps=steps, stepsize=cw_stepsize,
            confidence=confidence, initial_const=initial_const, abort_early=abort_early)
    base = fb.attacks.LinfPGD if method == "linf-pgd" else fb.attacks.L2PGD
    norm = METHODS[method]

    class SeededPGD(base):  # type: ignore[misc, valid-type]
        def get_random_start(self, x0, epsilon):  # type: ignore[no-untyped-def]
            import eagerpy as ep

            start = per_example_start(x0.shape[1:], seeds, norm).to(x0.raw)
            return x0 + ep.astensor(start * epsilon)

    return SeededPGD(rel_stepsize=rel_stepsize, steps=steps, random_start=random_start)


def run_foolbox(net: nn.Module, attack: Any, images: torch.Tensor, classes: torch.Tensor,
                epsilon: float, *, targeted: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run a foolbox ``attack`` on ``net`` (images in [0, 1] -> logits) at budget ``epsilon``.

    images (M, C, H, W) in [0, 1]; classes (M,) int64: target classes (``targeted``) or true
    labels (untargeted, ``Misclassification``). Returns foolbox's clipped adversarials
    (M, C, H, W) (inside the ε-ball), foolbox's own success flags for them (M,) bool, and its raw
    outputs (M, C, H, W) (for a minimisation attack such as CW: possibly outside the ball).
    """
    fb = _foolbox()
    with frozen(net), torch.enable_grad():
        fmodel = fb.PyTorchModel(net, bounds=(0.0, 1.0), device=images.device)
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
    budget_norm: ClassVar[str | None] = "linf"

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
        if self.method not in METHODS:
            raise ConfigError(f"{self.name}: method must be one of {', '.join(METHODS)}, got {self.method!r}")
        self.budget_norm = METHODS[self.method]  # type: ignore[misc]  # per-instance budget
        self._classifier: nn.Module | None = None
        self._data_dir: str | None = None
        super().__post_init__()

    def validate(self) -> None:
        super().validate()
        if self.epsilon is None or isinstance(self.epsilon, (list, tuple)):
            raise ConfigError(f"{self.name}: epsilon must be one number (the budget)")
        if self.steps < 1 or self.rel_stepsize <= 0 or self.binary_search_steps < 1 or self.cw_stepsize <= 0:
            raise ConfigError(f"{self.name}: steps, rel_stepsize, binary_search_steps and cw_stepsize must be positive")

    def bind(self, *, classifier: nn.Module | None = None, data_dir: str | None = None) -> "FoolboxAttack":
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
                return net(problem.targets).argmax(-1)
            return self.classes_from_codes(model, net, problem.target_code)

    def run(self, model: nn.Module, problem: Problem) -> RunOutput:
        sources = problem.sources
        m = sources.shape[0]
        iterations = torch.full((m,), self.steps * (self.binary_search_steps if self.method == "cw" else 1),
                                dtype=torch.int64)
        net = self.network(model)
        with frozen(net):
            classes = self.target_classes(model, net, problem)
            adversarial = sources.clone()
            assert problem.epsilon is not None
            for value in torch.unique(problem.epsilon).tolist():  # one ε unless ε is swept
                rows = (problem.epsilon == value).nonzero().flatten()
                attack = self.foolbox_attack(problem.seeds[rows.cpu()])
                found, _, raw = run_foolbox(net, attack, sources[rows], classes[rows], value)
                if self.method == "cw":  # where CW found no adversarial of any size, foolbox returns zeros
                    with torch.no_grad():
                        any_size = net(raw).argmax(-1) == classes[rows]
                    found = torch.where(any_size.view(-1, 1, 1, 1), found, sources[rows])
                adversarial[rows] = found
            with torch.no_grad():
                margin = targeted_margin(net(adversarial), classes)
        return RunOutput(adversarial, margin, iterations)
