"""The classifier-guided attacks through foolbox (``e2e``, ``kos-classifier``): budgets, the
agreement between foolbox's success and robust-vae's own evaluation, target classes, the cached
latent classifier, and the e2e attack against the thesis attack on a shipped model.

Measured on 24 fixed pairs of real MNIST (``source_target_pairs``) with the shipped ``vae``
(seed 0), ε = 0.1 (1 torch thread): AS target e2e-linf 0.333 (8 / 24), thesis 0.125 (3 / 24).
"""

from __future__ import annotations

import json

import pytest
import torch

from robust_vae.attacks import load_attack, make_attack
from robust_vae.attacks.e2e import EndToEndAttack, ReconstructionClassifier, straight_through_reconstruction
from robust_vae.attacks.foolbox_base import per_example_start, run_foolbox, targeted_margin
from robust_vae.attacks.kos import KosClassifierAttack
from robust_vae.attacks.latent_classifier import EncoderClassifier, latent_classifier_for, model_fingerprint
from robust_vae.core.errors import ConfigError
from robust_vae.zoo import load_classifier, load_model

from .conftest import source_target_pairs

# a small latent classifier for the small VAE: every test here and in test_budgets uses these
# values, so it is trained once per session (a few seconds) and then read from the cache
KOS_FAST = {"classifier_train_size": 5000, "classifier_epochs": 10}


@pytest.fixture(scope="module")
def classifier() -> torch.nn.Module:
    return load_classifier("mnist")


def target_labels(data, n: int, target_start: int = 100) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """The labels of the targets :func:`source_target_pairs` picks (same walk over the test set)."""
    labels, chosen, j = data.labels, [], target_start
    for i in range(n):
        while labels[j] == labels[i]:
            j += 1
        chosen.append(j)
        j += 1
    return labels[chosen]


@pytest.fixture(scope="module")
def labelled_pairs(mnist_test):  # type: ignore[no-untyped-def]
    """16 fixed pairs of different classes, the targets' labels and the sources' labels."""
    xs, xt = source_target_pairs(mnist_test, 16)
    return xs, xt, target_labels(mnist_test, 16), mnist_test.labels[:16]


# ----------------------------------------------------------------------------- budgets
@pytest.mark.parametrize("method, epsilon", [("linf-pgd", 0.1), ("l2-pgd", 2.0), ("cw", 2.0)])
def test_foolbox_outputs_stay_in_the_ball_and_the_box(method, epsilon, small_vae, classifier, labelled_pairs) -> None:  # type: ignore[no-untyped-def]
    xs, _, classes, _ = labelled_pairs
    attack = make_attack("e2e", method=method, epsilon=epsilon, steps=10, binary_search_steps=2,
                         initial_const=10.0, cw_stepsize=0.2)
    net = ReconstructionClassifier(small_vae, classifier)
    clipped, success, raw = run_foolbox(net, attack.foolbox_attack(torch.arange(16)), xs, classes, epsilon)
    d = (clipped - xs).flatten(1)
    assert float(clipped.min()) >= 0.0 and float(clipped.max()) <= 1.0
    size = d.abs().amax(1) if method == "linf-pgd" else d.norm(dim=1)
    assert float(size.max()) <= epsilon * (1 + 1e-5), f"foolbox left the ball: {float(size.max())}"
    if method == "cw":  # a minimisation attack: the raw adversarials are smaller where it succeeded
        raw_size = (raw - xs).flatten(1).norm(dim=1)
        assert int(success.sum()) >= 2 and bool((raw_size[success] <= epsilon).all())
    else:
        assert float(size.max()) > 0.5 * epsilon  # it used the budget
    # and through the attack class (base-class clipping on top): exact, no tolerance
    result = attack(small_vae, xs, xs.flip(0), target_classes=classes)
    d = (result.adversarial[0] - xs).flatten(1)
    size = d.abs().amax(1) if attack.budget_norm == "linf" else d.norm(dim=1)
    assert (size <= torch.tensor(epsilon, dtype=torch.float32)).all()
    assert float(result.adversarial.min()) >= 0.0 and float(result.adversarial.max()) <= 1.0


def test_budget_norm_follows_the_method() -> None:
    assert make_attack("e2e").budget_norm == "linf"
    assert make_attack("e2e", method="l2-pgd", epsilon=2.0).budget_norm == "l2"
    assert make_attack("kos-classifier", method="cw", epsilon=2.0).budget_norm == "l2"
    with pytest.raises(ConfigError, match="method"):
        make_attack("e2e", method="fgsm")
    with pytest.raises(ConfigError, match="epsilon"):
        make_attack("kos-classifier", epsilon=-0.1)
    with pytest.raises(ConfigError, match="train_size"):
        make_attack("kos-classifier", classifier_train_size=0)


def test_random_starts_are_per_example() -> None:
    seeds = torch.tensor([3, 8, 5])
    for norm in ("linf", "l2"):
        batch = per_example_start(torch.Size((1, 32, 32)), seeds, norm)
        single = per_example_start(torch.Size((1, 32, 32)), seeds[1:2], norm)
        assert torch.equal(batch[1:2], single)
        assert not torch.equal(batch[0], batch[2])
        size = batch.flatten(1).abs().amax(1) if norm == "linf" else batch.flatten(1).norm(dim=1)
        assert float(size.max()) <= 1.0 and float(size.min()) > 0.5


# ----------------------------------------------------------------------------- agreement
def test_e2e_success_is_robust_vaes_own_evaluation(small_vae, classifier, labelled_pairs) -> None:  # type: ignore[no-untyped-def]
    """What foolbox counts a success is exactly what the success matrix counts:
    classifier(deterministic reconstruction(x*)) = t."""
    xs, _, classes, _ = labelled_pairs
    attack = make_attack("e2e", steps=30)
    net = ReconstructionClassifier(small_vae, classifier)
    adversarial, success, _ = run_foolbox(net, attack.foolbox_attack(torch.arange(16)), xs, classes, 0.1)
    with torch.no_grad():
        predicted = classifier(small_vae.reconstruct(adversarial)).argmax(-1)
    assert torch.equal(success, predicted == classes)
    print(f"e2e on the small VAE, 30 steps: {int(success.sum())} / 16 successes")
    assert 2 <= int(success.sum()) <= 12, int(success.sum())  # measured 5 / 16: both outcomes occur
    # the attack class reports the targeted margin: negative exactly for these successes
    result = attack(small_vae, xs, xs, target_classes=classes)
    with torch.no_grad():
        predicted = classifier(small_vae.reconstruct(result.adversarial[0])).argmax(-1)
    assert torch.equal(result.objective[0] < 0, predicted == classes)


def test_straight_through_forward_is_the_deterministic_reconstruction(small_vae, labelled_pairs) -> None:  # type: ignore[no-untyped-def]
    xs = labelled_pairs[0].clone().requires_grad_(True)
    value = straight_through_reconstruction(small_vae, xs)
    with torch.no_grad():
        assert torch.equal(value.detach(), small_vae.reconstruct(xs))
    (grad,) = torch.autograd.grad(value.sum(), xs)
    with torch.enable_grad():
        x2 = labelled_pairs[0].clone().requires_grad_(True)
        (relaxed,) = torch.autograd.grad(small_vae.relaxed_reconstruct(x2).sum(), x2)
    torch.testing.assert_close(grad, relaxed)
    assert float(grad.abs().max()) > 0


def test_kos_success_is_the_latent_classifiers_own_label(small_vae, labelled_pairs) -> None:  # type: ignore[no-untyped-def]
    xs, _, classes, _ = labelled_pairs
    attack = make_attack("kos-classifier", steps=30, **KOS_FAST)
    latent, _ = attack.latent_classifier(small_vae)
    net = EncoderClassifier(small_vae, latent)
    adversarial, success, _ = run_foolbox(net, attack.foolbox_attack(torch.arange(16)), xs, classes, 0.1)
    with torch.no_grad():
        predicted = latent(small_vae.attack_code(adversarial)).argmax(-1)
    assert torch.equal(success, predicted == classes)
    print(f"kos on the small VAE, 30 steps: {int(success.sum())} / 16 latent-classifier successes")
    assert int(success.sum()) >= 3, int(success.sum())  # measured 6 / 16
    result = attack(small_vae, xs, xs, target_classes=classes)
    assert torch.equal(result.objective[0] < 0, success)


def test_targeted_margin() -> None:
    logits = torch.tensor([[1.0, 3.0, 2.0], [5.0, 0.0, 1.0]])
    assert targeted_margin(logits, torch.tensor([1, 2])).tolist() == [-1.0, 4.0]


# ----------------------------------------------------------------------------- target classes
def test_without_classes_the_target_is_the_pipelines_label_of_the_target(small_vae, classifier, labelled_pairs) -> None:  # type: ignore[no-untyped-def]
    xs, xt, _, _ = labelled_pairs
    attack = make_attack("e2e", steps=5)
    with torch.no_grad():
        implied = classifier(small_vae.reconstruct(xt)).argmax(-1)
    implicit = attack(small_vae, xs, xt)
    explicit = attack(small_vae, xs, xt, target_classes=implied)
    assert torch.equal(implicit.adversarial, explicit.adversarial)
    with pytest.raises(ConfigError, match="target classes or target images"):
        attack(small_vae, xs, small_vae.attack_code(xt).detach())
    with pytest.raises(ConfigError, match="target_classes must be"):
        attack(small_vae, xs, xt, target_classes=implied[:3])


def test_bound_classifier_is_the_one_attacked(small_vae, classifier, labelled_pairs) -> None:  # type: ignore[no-untyped-def]
    """bind(classifier=...) (what success_matrix does) replaces the shipped classifier."""
    xs, _, classes, _ = labelled_pairs

    class Constant(torch.nn.Module):  # always class 0: the attack cannot change it
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.one_hot(torch.zeros(len(x), dtype=torch.int64), 10).float() + 0 * x.sum()

    attack = make_attack("e2e", steps=3).bind(classifier=Constant())
    result = attack(small_vae, xs, xs, target_classes=classes)
    assert torch.equal(result.objective[0] < 0, classes == 0)


# ----------------------------------------------------------------------------- latent classifier cache
def test_latent_classifier_is_cached_with_a_card(small_vae, isolated_environment) -> None:  # type: ignore[no-untyped-def]
    attack = make_attack("kos-classifier", **KOS_FAST)
    first, card = attack.latent_classifier(small_vae)
    data = card.data
    assert card.path.is_relative_to(isolated_environment / "latent-classifiers" / "mnist")
    assert card.weights_path.suffix == ".safetensors"
    assert data["model_sha256"] == model_fingerprint(small_vae)
    assert data["config"] == attack.classifier_config().to_dict()
    assert data["train_images"] == 5000 and data["code_dim"] == 20
    print(f"small-VAE latent classifier: {data['metrics']}")
    assert data["metrics"]["test_accuracy"] > 0.7, data["metrics"]  # measured 0.80 on the small VAE
    assert len(data["sha256"]) == 64
    # a second request reads the cache: same file, same weights, nothing retrained
    mtime = card.weights_path.stat().st_mtime_ns
    again, card2 = latent_classifier_for(small_vae, "mnist", attack.classifier_config(), progress=False)
    assert card2.weights_path.stat().st_mtime_ns == mtime
    for (name, a), (_, b) in zip(first.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name


def test_damaged_cache_entry_is_retrained(small_vae, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    config = make_attack("kos-classifier", classifier_train_size=500, classifier_epochs=1).classifier_config()
    net, card = latent_classifier_for(small_vae, "mnist", config, cache_dir=tmp_path, progress=False)
    card.weights_path.write_bytes(card.weights_path.read_bytes()[:-8] + b"tampered")
    again, card2 = latent_classifier_for(small_vae, "mnist", config, cache_dir=tmp_path, progress=False)
    assert "unusable" in capsys.readouterr().err
    assert json.loads(card2.path.read_text())["sha256"] == card.data["sha256"]  # same training, same bytes
    for a, b in zip(net.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)


# ----------------------------------------------------------------------------- e2e vs thesis
def test_e2e_beats_the_thesis_attack_on_the_shipped_vae(mnist_test, classifier) -> None:  # type: ignore[no-untyped-def]
    """AS target on 24 fixed pairs at ε = 0.1: the e2e attack aims at the metric itself, the
    thesis attack at the target's latent code (which also carries style, not only class)."""
    model = load_model("vae", "mnist", seed=0)
    xs, xt = source_target_pairs(mnist_test, 24)
    classes = target_labels(mnist_test, 24)

    def as_target(attack) -> float:  # type: ignore[no-untyped-def]
        adversarial = attack(model, xs, xt, target_classes=classes).adversarial[0]
        with torch.no_grad():
            return float((classifier(model.reconstruct(adversarial)).argmax(-1) == classes).float().mean())

    e2e = as_target(load_attack("e2e-linf"))
    thesis = as_target(load_attack("thesis"))
    print(f"AS target on 24 pairs, shipped vae, eps 0.1: e2e-linf {e2e:.3f}, thesis {thesis:.3f}")
    assert e2e >= thesis
    assert e2e >= 0.25 and e2e - thesis >= 0.1


def test_recipes_are_the_documented_ones() -> None:
    e2e = load_attack("e2e-linf")
    assert isinstance(e2e, EndToEndAttack)
    settings = (e2e.method, e2e.epsilon, e2e.steps, e2e.rel_stepsize, e2e.random_start)
    assert settings == ("linf-pgd", 0.1, 100, 0.025, True)
    kos = load_attack("kos-classifier-linf")
    assert isinstance(kos, KosClassifierAttack) and (kos.method, kos.epsilon) == ("linf-pgd", 0.1)
    assert load_attack("kos-classifier-cw").method == "cw"
    assert load_attack("e2e-l2").budget_norm == "l2"
