"""Attack base class and result type.

An attack is a callable over a model (anything with the zoo's model interface), a batch of
sources and a batch of targets. Hyperparameters are keyword-only; a subclass implements
only :meth:`Attack.run`. The base class owns everything that must be right for every
attack: it replicates the batch over the sweep, clips the output to [0, 1] and to the
ε-ball, and recomputes distortions and latent distances itself, so no attack can
over-report.
"""

from __future__ import annotations

import contextlib
import math
import types
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar, Union, cast

import torch
from torch import nn

from robust_vae.attacks.budgets import L2_BALL, LINF_BALL, Budget, Norm, NormBall, budget_for
from robust_vae.core.devices import check_device, model_device
from robust_vae.core.errors import ConfigError
from robust_vae.models.protocol import AttackableModel, target_view

Sweep = float | Sequence[float]


@dataclass
class AttackResult:
    """Result of one attack call over K sweep values and N examples.

    adversarial: (K, N, C, H, W) in [0, 1]; l2, linf, latent_distance, objective: (K, N);
    iterations: (K, N) int64. ``sweep_name`` / ``sweep_values`` say what the K axis is
    (e.g. ``"c"`` and the C grid); K = 1 for an attack without a sweep. ``extras``: per-example
    values an attack reports beyond these, name -> (K, N) numeric tensor (e.g. the ensemble's
    ``winner``); success matrices write them as extra columns of ``examples.csv.gz``.
    """

    adversarial: torch.Tensor
    l2: torch.Tensor
    linf: torch.Tensor
    latent_distance: torch.Tensor
    objective: torch.Tensor
    iterations: torch.Tensor
    sweep_name: str
    sweep_values: list[float]
    attack: str = ""
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def select(self, index: torch.Tensor) -> AttackResult:
        """Reduce the sweep: ``index`` (N,) picks one sweep entry per example -> K = 1."""
        n = self.l2.shape[1]
        columns = torch.arange(n, device=index.device)

        def pick(t: torch.Tensor) -> torch.Tensor:
            return t[index.to(t.device), columns.to(t.device)].unsqueeze(0)

        return replace(
            self,
            adversarial=pick(self.adversarial), l2=pick(self.l2), linf=pick(self.linf),
            latent_distance=pick(self.latent_distance), objective=pick(self.objective),
            iterations=pick(self.iterations), sweep_name=f"best {self.sweep_name}",
            sweep_values=[math.nan], extras={k: pick(v) for k, v in self.extras.items()},
        )

    def best_latent(self) -> tuple[AttackResult, torch.Tensor]:
        """Per example, the sweep entry closest to the target code; returns it and the index."""
        index = self.latent_distance.argmin(0)
        return self.select(index), index

    def most_damaging(self) -> tuple[AttackResult, torch.Tensor]:
        """Per example, the sweep entry of largest ``objective`` (untargeted attacks report the
        damage they did there); returns it and the index."""
        index = self.objective.argmax(0)
        return self.select(index), index


def per_example_generators(seeds: torch.Tensor) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(int(s)) for s in seeds.tolist()]


def per_example_normal(shape: torch.Size, seeds: torch.Tensor, std: float) -> torch.Tensor:
    """Gaussian noise (N, *shape) where row i depends only on ``seeds[i]`` (batch independence)."""
    rows = [torch.randn(shape, generator=g) * std for g in per_example_generators(seeds)]
    return torch.stack(rows) if rows else torch.zeros((0, *shape))


def project_linf(x: torch.Tensor, center: torch.Tensor, epsilon: torch.Tensor | float | None) -> torch.Tensor:
    """Project onto {|x − center|∞ ≤ ε} ∩ [0, 1]; ε broadcast per example, (N,) or scalar
    (:meth:`robust_vae.attacks.budgets.LinfBall.project`)."""
    return LINF_BALL.project(x, center, epsilon)


def project_l2(x: torch.Tensor, center: torch.Tensor, epsilon: torch.Tensor | float) -> torch.Tensor:
    """Project the perturbation onto the L2 ball of radius ε, then clip to [0, 1]
    (:meth:`robust_vae.attacks.budgets.L2Ball.project`)."""
    return L2_BALL.project(x, center, epsilon)


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """``model`` in eval mode with parameter gradients off inside the block, both restored after
    (attacks and attack-free scores differentiate with respect to the input only)."""
    was_training = model.training
    requires = [p.requires_grad for p in model.parameters()]
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(model.parameters(), requires):
            p.requires_grad_(flag)
        model.train(was_training)


def as_attackable(model: nn.Module) -> AttackableModel:
    """``model`` seen through the attack interface (:class:`AttackableModel`): a static view for
    the type checker, the same object at run time (no check; for the checked conversion with a
    one-line error see :func:`robust_vae.models.protocol.attackable`)."""
    return cast(AttackableModel, model)


@dataclass
class Problem:
    """The flattened batch an attack's :meth:`Attack.run` solves: M = K·N independent problems.

    sources, targets: (M, C, H, W); target_code: (M, D); sweep: (M,) the sweep value of each
    problem (or None); seeds: (M,) per-problem seeds; epsilon: (M,) L∞/L2 budget or None;
    target_classes: (M,) int64 class of each target when the caller knows it (or None).
    """

    sources: torch.Tensor
    targets: torch.Tensor | None
    target_code: torch.Tensor
    sweep: torch.Tensor | None
    seeds: torch.Tensor
    epsilon: torch.Tensor | None
    target_classes: torch.Tensor | None = None

    def rows(self, index: slice) -> Problem:
        """The sub-problem of rows ``index`` (every per-problem tensor sliced alike)."""
        def part(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[index]

        return Problem(self.sources[index], part(self.targets), self.target_code[index], part(self.sweep),
                       self.seeds[index], part(self.epsilon), part(self.target_classes))


@dataclass
class RunOutput:
    """What :meth:`Attack.run` returns: adversarials (M, C, H, W), objective (M,), iterations (M,),
    optional per-problem ``extras`` (name -> (M,) tensor; :attr:`AttackResult.extras`) and, for
    the L-BFGS-B solvers, the evaluations (M,) each problem cost."""

    adversarial: torch.Tensor
    objective: torch.Tensor
    iterations: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    evaluations: torch.Tensor | None = None  # (M,) objective/gradient evaluations, where the solver counts them
    memory: Any = None  # the torch L-BFGS-B's final limited memories (a continuation passes them on)


def expected_image_shape(model: object) -> tuple[int, int, int] | None:
    """(C, H, W) the model takes, from its config (``channels``, ``image_size``), if it says."""
    config = getattr(model, "config", None)
    channels, size = getattr(config, "channels", None), getattr(config, "image_size", None)
    if isinstance(channels, int) and isinstance(size, int):
        return channels, size, size
    return None


def check_images(x: torch.Tensor, what: str, model: object = None) -> None:
    """A one-line error unless ``x`` is a floating (N, C, H, W) batch in [0, 1] without NaN or
    inf, of the shape ``model`` takes: nothing is clipped or converted silently."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ConfigError(f"{what} must be a (N, C, H, W) tensor, got {shape}")
    if not torch.is_floating_point(x):
        raise ConfigError(f"{what} are {x.dtype}: pass floating-point images in [0, 1] "
                          "(e.g. x.float() / 255 for uint8)")
    if not bool(torch.isfinite(x).all()):
        raise ConfigError(f"{what} contain NaN or inf values: every pixel must be a number in [0, 1]")
    low, high = float(x.min()) if x.numel() else 0.0, float(x.max()) if x.numel() else 0.0
    if low < 0.0 or high > 1.0:
        raise ConfigError(f"{what} have values in [{low:.3g}, {high:.3g}]: images must lie in [0, 1] "
                          "(divide uint8 images by 255; undo any mean/std normalisation)")
    expected = expected_image_shape(model)
    if expected is not None and tuple(x.shape[1:]) != expected:
        c, h, w = expected
        raise ConfigError(f"{what} have shape {tuple(x.shape)} but the model takes (N, {c}, {h}, {w}): "
                          f"resize to {h}×{w} with {c} channel(s) (robust_vae.load_dataset does this)")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_value(attack: str, name: str, value: object, hint: object, sweep: bool) -> None:
    """One hyperparameter against its annotation: whole numbers for ``int``, finite numbers
    for ``float``, lists of finite numbers only for the sweep field; a one-line error else."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (Union, types.UnionType) else (hint,)
    if value is None:
        if type(None) in options:
            return
        raise ConfigError(f"{attack}: {name} must not be empty (None)")
    if bool in options and isinstance(value, bool):
        return
    if int in options and float not in options:
        if not (isinstance(value, int) and not isinstance(value, bool)):
            raise ConfigError(f"{attack}: {name} must be a whole number, got {value!r}")
        return
    if float in options:
        if _is_number(value):
            if not math.isfinite(float(cast(float, value))):
                raise ConfigError(f"{attack}: {name} must be a finite number, got {value!r}")
            return
        if isinstance(value, (list, tuple)) and any(typing.get_origin(o) is not None for o in options):
            if not sweep:
                raise ConfigError(f"{attack}: {name} takes one value, not a list")
            if not value or not all(_is_number(v) and math.isfinite(float(v)) for v in value):
                raise ConfigError(f"{attack}: {name} must be a non-empty list of finite numbers, got {value!r}")
            return
        if isinstance(value, (list, tuple)):
            raise ConfigError(f"{attack}: {name} takes one value, not a list (got {value!r})")
        raise ConfigError(f"{attack}: {name} must be a number, got {value!r}")
    if str in options and not isinstance(value, str):
        raise ConfigError(f"{attack}: {name} must be a string, got {value!r}")
    if bool in options and not isinstance(value, bool) and not (str in options and isinstance(value, str)):
        raise ConfigError(f"{attack}: {name} must be true or false, got {value!r}")


def check_hyperparameter_types(attack: Attack) -> None:
    """Check every dataclass field of ``attack`` against its type annotation (see
    :func:`_check_value`); runs before the attack's own range checks in ``validate()``."""
    hints = typing.get_type_hints(type(attack))
    for f in fields(attack):
        _check_value(attack.name, f.name, getattr(attack, f.name), hints.get(f.name, object),
                     sweep=f.name == attack.sweep_field)


@dataclass(repr=False)
class Attack:
    """Base class: keyword-only hyperparameters (dataclass fields) and one ``__call__``.

    Subclasses declare ``name``, optionally ``sweep_field`` (a field that may hold a list of
    values, giving the K axis), ``budget_norm`` ("linf", "l2" or None; a class attribute, or a
    property where a field chooses it) with an ``epsilon`` field, and implement :meth:`run`.
    The budget object of that norm is :attr:`budget`.
    """

    name: ClassVar[str] = "attack"
    sweep_field: ClassVar[str | None] = None
    # untargeted attacks ignore the target and report damage as ``objective``: a sweep is
    # reduced by the largest damage, not by the distance to a target code they never aimed at
    untargeted: ClassVar[bool] = False

    seed: int = field(default=0, kw_only=True)
    device: str | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        check_hyperparameter_types(self)
        self.validate()

    @property
    def budget_norm(self) -> str | None:
        """The recipe string of the budget's norm ("linf", "l2"), None without a budget."""
        return None

    @property
    def budget(self) -> Budget:
        """The budget object of :attr:`budget_norm` (the box alone when it is None)."""
        return budget_for(self.budget_norm)

    @property
    def needs_target_images(self) -> bool:
        """Whether the attack needs target images (not just target codes)."""
        return False

    # ----- configuration -----
    def validate(self) -> None:
        if self.device is not None:
            check_device(self.device, f"{self.name}: device")
        epsilon = getattr(self, "epsilon", None)
        if epsilon is not None:
            for value in self._as_list(epsilon):
                if not value >= 0:
                    raise ConfigError(f"{self.name}: epsilon must be >= 0, got {value}")

    def reduce_sweep(self, result: AttackResult) -> tuple[AttackResult, torch.Tensor]:
        """K > 1 → K = 1 and the chosen sweep index (N,): the entry closest to the target code
        (targeted attacks) or of largest damage (:attr:`untargeted`); K = 1 is returned as is."""
        if result.l2.shape[0] == 1:
            return result, torch.zeros(result.l2.shape[1], dtype=torch.int64, device=result.l2.device)
        return result.most_damaging() if self.untargeted else result.best_latent()

    def bind(self, *, classifier: nn.Module | None = None, data_dir: str | None = None) -> Attack:
        """Context beyond the hyperparameters: the evaluation classifier and the data root
        (``--data-dir``). Attacks that need neither ignore it; returns ``self``."""
        return self

    has_artefacts: ClassVar[bool] = False  # True where results depend on more than the hyperparameters
    #: options added after runs were recorded: left out of hyperparameters() (and so of a run's
    #: fingerprint) while at their default, which reproduces what the older runs did
    later_options: ClassVar[tuple[str, ...]] = ()

    def artefacts(self, model: nn.Module) -> dict[str, str]:
        """sha256 of every file besides the model and classifier whose content changes the
        results (run fingerprints record them); none for most attacks."""
        return {}

    @classmethod
    def inline_params(cls, argument: str) -> dict[str, Any]:
        """The hyperparameters an inline recipe ``<name>:<argument>`` stands for (``--attack
        ensemble:thesis-fast,e2e-linf``); attacks without an inline form refuse it."""
        raise ConfigError(f"attack {cls.name!r} has no inline form {cls.name}:...: write a recipe .toml instead")

    @classmethod
    def inline_name(cls, argument: str) -> str:
        """The recipe name (and default report folder) of an inline recipe, safe as a folder name."""
        return f"{cls.name}-{argument}"

    def hyperparameters(self) -> dict[str, Any]:
        """Every hyperparameter value (what run metadata records); a :attr:`later_options` entry
        only when it differs from its default."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if not (f.name in self.later_options and getattr(self, f.name) == f.default)}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({args})"

    @staticmethod
    def _as_list(value: Sweep) -> list[float]:
        if isinstance(value, (list, tuple)):
            return [float(v) for v in value]
        return [float(cast(float, value))]

    def sweep_values(self) -> list[float] | None:
        if self.sweep_field is None:
            return None
        return self._as_list(getattr(self, self.sweep_field))

    def sweep_size(self) -> int:
        """K, the number of sweep entries (1 for an attack without a sweep)."""
        values = self.sweep_values()
        return len(values) if values else 1

    # ----- the one call -----
    def __call__(
        self,
        model: nn.Module,
        sources: torch.Tensor,
        targets: torch.Tensor,
        *,
        seeds: torch.Tensor | None = None,
        target_classes: torch.Tensor | None = None,
    ) -> AttackResult:
        """Attack ``sources`` (N, C, H, W) in [0, 1] towards ``targets``.

        ``targets`` are images (N, C, H, W) or attack codes (N, D) (φ of the targets).
        ``seeds`` (N,) int64 make each example's randomness depend on its own seed only, so
        an example's result does not depend on the rest of the batch; default seed + arange(N).
        ``target_classes`` (N,) int64, optional: the class of each target, for attacks that aim
        at a class (the classifier-guided attacks); the others ignore it.
        """
        device = torch.device(self.device) if self.device else model_device(model)
        if self.device:
            model.to(device)
        problem = self._flatten_batch(as_attackable(model), device, sources, targets, seeds, target_classes)
        out = self._run_frozen(model, problem)
        return self._result(as_attackable(model), problem, out, device)

    def _flatten_batch(self, model: AttackableModel, device: torch.device, sources: torch.Tensor,
                       targets: torch.Tensor, seeds: torch.Tensor | None,
                       target_classes: torch.Tensor | None) -> Problem:
        """The :class:`Problem` of a call: inputs checked, moved to ``device`` and replicated
        over the K sweep values."""
        check_images(sources, "sources", model)
        n = sources.shape[0]
        if targets.shape[0] != n:
            raise ConfigError(f"{n} sources but {targets.shape[0]} targets")
        if targets.dim() == 4:
            check_images(targets, "targets", model)
        elif not torch.is_floating_point(targets) or not bool(torch.isfinite(targets).all()):
            raise ConfigError("target codes must be finite floating-point values")
        sources = sources.to(device, torch.float32)
        targets = targets.to(device, torch.float32)
        target_images = targets if targets.dim() == 4 else None
        if target_images is None and self.needs_target_images:
            raise ConfigError(f"{self.name} needs target images, not target codes")
        with torch.no_grad():
            # target_view: a conditional model under the true-label threat model encodes targets under their own label
            target_code = target_view(model).attack_code(targets) if target_images is not None else targets
        if target_classes is not None and tuple(target_classes.shape) != (n,):
            raise ConfigError(f"target_classes must be ({n},), got shape {tuple(target_classes.shape)}")
        if seeds is None:
            seeds = self.seed + torch.arange(n, dtype=torch.int64)
        seeds = seeds.to(torch.int64).cpu()

        values = self.sweep_values()
        k = self.sweep_size()

        def tile(t: torch.Tensor) -> torch.Tensor:
            return t.repeat(k, *([1] * (t.dim() - 1)))

        sweep = None
        if values:
            sweep = torch.tensor(values, dtype=torch.float32, device=device).repeat_interleave(n)
        return Problem(
            sources=tile(sources),
            targets=tile(target_images) if target_images is not None else None,
            target_code=tile(target_code),
            sweep=sweep,
            seeds=tile(seeds) + 1_000_003 * torch.arange(k).repeat_interleave(n),
            epsilon=self._epsilons(sweep, k * n, device),
            target_classes=None if target_classes is None else tile(target_classes.to(device, torch.int64)),
        )

    def _epsilons(self, sweep: torch.Tensor | None, size: int, device: torch.device) -> torch.Tensor | None:
        """The (M,) budget of every problem, None without a budget or without an ``epsilon``."""
        epsilon = getattr(self, "epsilon", None)
        if self.budget.norm is None or epsilon is None:
            return None
        if self.sweep_field == "epsilon":
            assert sweep is not None
            return sweep.clone()
        return torch.full((size,), float(epsilon), device=device)

    def _run_frozen(self, model: nn.Module, problem: Problem) -> RunOutput:
        """:meth:`run` with the model in eval mode and no parameter gradients (restored after)."""
        with frozen(model):
            return self.run(model, problem)

    def _result(self, model: AttackableModel, problem: Problem, out: RunOutput, device: torch.device) -> AttackResult:
        """The :class:`AttackResult` of ``out``: adversarials clipped to the box and the budget,
        distortions and latent distances recomputed from them."""
        adversarial = self._clip(out.adversarial.detach().to(problem.sources.dtype), problem)  # float64 solvers too
        with torch.no_grad():
            l2 = L2_BALL.distance(adversarial, problem.sources)
            linf = LINF_BALL.distance(adversarial, problem.sources)
            latent = (model.attack_code(adversarial) - problem.target_code).norm(dim=1)
        values = self.sweep_values()
        k = self.sweep_size()
        shape = (k, problem.sources.shape[0] // k)
        return AttackResult(
            adversarial=adversarial.view(*shape, *problem.sources.shape[1:]),
            l2=l2.view(shape),
            linf=linf.view(shape),
            latent_distance=latent.view(shape),
            objective=out.objective.detach().to(device, torch.float32).view(shape),
            iterations=out.iterations.to(torch.int64).view(shape).to(device),
            sweep_name=self.sweep_field or "",
            sweep_values=values or [math.nan],
            attack=self.name,
            extras={k: v.detach().to(device).view(shape) for k, v in out.extras.items()},
        )

    def _clip(self, x: torch.Tensor, problem: Problem) -> torch.Tensor:
        """``x`` projected onto the box and the problem's budget."""
        return self.budget.project(x, problem.sources, problem.epsilon)

    def run(self, model: nn.Module, problem: Problem) -> RunOutput:  # pragma: no cover - abstract
        raise NotImplementedError


class NormBudgetAttack(Attack):
    """Base of attacks whose ``norm`` field ("linf" | "l2", declared by the subclass with its
    default) chooses the budget: the field's check, :attr:`budget_norm` and :attr:`ball`."""

    norm: str

    def validate(self) -> None:
        Norm.parse(self.norm, f"{self.name}: norm")
        super().validate()

    @property
    def budget_norm(self) -> str:
        return self.norm  # per instance: the ``norm`` field chooses the budget

    @property
    def ball(self) -> NormBall:
        """The budget's ball (:attr:`budget` typed as the ball it always is here)."""
        return Norm(self.norm).budget
