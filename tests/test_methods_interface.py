"""One interface for every mixing method: each registered method runs on the same domains."""

from __future__ import annotations

import time

import numpy as np
import pytest

from chameleon_assets.core import methods
from chameleon_assets.settings import ModelConfig, TrainConfig

TINY = ModelConfig(arch="llama", hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32, context_length=16)


def _domains() -> methods.DomainSet:
    rng = np.random.default_rng(0)
    train = {"a": np.tile(np.arange(1, 9, dtype=np.uint16), 80),
             "b": rng.integers(1, 64, 640).astype(np.uint16),
             "c": rng.integers(32, 64, 640).astype(np.uint16)}
    val = {d: t[:200].copy() for d, t in train.items()}
    means = np.array([[1.0, 0.0, 0.2], [0.9, 0.1, 0.1], [0.0, 1.0, 0.0]])
    return methods.DomainSet(["a", "b", "c"], [640, 640, 640], kernel=means @ means.T, train=train, val=val)


def _params(name: str):  # noqa: ANN202
    cls = methods.get(name).Params
    if name == "preset":
        return cls(weights={"a": 1.0, "b": 1.0, "c": 2.0})
    if name == "regmix":
        return cls(runs=4, model=TINY, train=TrainConfig(tokens=256, batch_size=4, lr=1e-2, warmup_steps=1),
                   val_windows=2, candidates=500, top_k=5)
    return cls()


RECIPE = methods.ProxyRecipe(model=TINY, train=TrainConfig(tokens=512, batch_size=4, lr=1e-2, warmup_steps=2,
                                                           checkpoint_every=1000),
                             vocab_size=64, eos_id=0, seed=0, device="cpu")


def test_the_registry_holds_chameleon_the_baselines_and_the_computed_competitors() -> None:
    assert set(methods.registered()) == {"uniform", "natural", "temperature", "unimax", "preset",
                                         "chameleon_pretrain", "chameleon_finetune", "doremi", "doge", "regmix", "olmix",
                                         "aioli"}
    assert methods.trained_methods() == ["doge", "doremi", "olmix", "regmix"]
    assert methods.online_methods() == ["aioli"]
    with pytest.raises(ValueError, match="unknown mixing method 'dorami'; known: aioli, chameleon_finetune"):
        methods.get("dorami")


@pytest.mark.parametrize("name", sorted(methods.registered()))
def test_every_registered_method_gives_a_distribution_and_its_cost(name: str) -> None:
    method = methods.get(name)
    t0 = time.perf_counter()
    result = methods.run(name, _domains(), _params(name), RECIPE if "proxy" in method.needs else None)
    elapsed = time.perf_counter() - t0
    assert result.weights.shape == (3,) and abs(result.weights.sum() - 1) < 1e-12 and (result.weights >= 0).all()
    assert result.cost.wall_s >= 0
    # in seconds, and no more than the whole call took as timed here
    assert result.cost.wall_s <= elapsed
    if name != "preset":  # measured (Preset looks its table up untimed: Cost())
        assert result.cost.wall_s > 0
    if "proxy" in method.needs:  # they train proxies: the cost counts it, part by part
        assert result.cost.flops > 0 and result.cost.tokens > 0
        assert result.cost.flops == pytest.approx(sum(result.cost.parts.values()))
    else:
        assert result.cost.flops < 1e3  # closed form: at most the k x k solve


def test_hand_worked_closed_form_rows_through_the_interface() -> None:
    d = _domains()
    np.testing.assert_allclose(methods.run("uniform", d).weights, [1 / 3] * 3)
    np.testing.assert_allclose(methods.run("preset", d, _params("preset")).weights, [0.25, 0.25, 0.5])
    # Domain c is far from a and b (which nearly coincide): the largest KRLS, so the least
    # pretraining weight and the most finetuning weight.
    pre, fin = methods.run("chameleon_pretrain", d).weights, methods.run("chameleon_finetune", d).weights
    assert pre.argmin() == 2 and fin.argmax() == 2
    # The same rows from the eigendecomposition of the explicitly centred means (not the
    # module's H K H and solve): tau_i = sum_j U_ij^2 s_j / (s_j + lam k), lam = 10, k = 3.
    means = np.array([[1.0, 0.0, 0.2], [0.9, 0.1, 0.1], [0.0, 1.0, 0.0]])
    centred = means - means.mean(axis=0)
    s, u = np.linalg.eigh(centred @ centred.T)
    tau = (u**2 * (s / (s + 10.0 * 3))).sum(axis=1)
    tau = tau / tau.sum()
    np.testing.assert_allclose(pre, np.exp((1 / tau) / 5.0) / np.exp((1 / tau) / 5.0).sum(), rtol=1e-9)
    np.testing.assert_allclose(fin, np.exp(tau / 0.2) / np.exp(tau / 0.2).sum(), rtol=1e-9)


def test_chameleon_rows_equal_the_krls_worked_by_hand_for_three_domains() -> None:
    """Means a = (5, 5), b = (2, 6), c = (2, 4): centred at (3, 5) they are x = (2, 0),
    (-1, 1), (-1, -1), so K_c = X X^T has eigenvalues 6 on (2, -1, -1)/sqrt 6 and 2 on
    (0, 1, -1)/sqrt 2. With lam k = 2 (lam = 2/3, k = 3):
    tau_a = (4/6) 6/8 = 1/2, tau_b = tau_c = (1/6) 6/8 + (1/2) 2/4 = 3/8; sum 5/4, so
    tau = (2/5, 3/10, 3/10). Pretraining: (1/tau) / 5 = (1/2, 2/3, 2/3); finetuning:
    tau / 0.2 = (2, 3/2, 3/2); each row is the softmax of those."""
    means = np.array([[5.0, 5.0], [2.0, 6.0], [2.0, 4.0]])
    d = methods.DomainSet(["a", "b", "c"], [1, 1, 1], kernel=means @ means.T)
    pre_logits, fin_logits = np.array([1 / 2, 2 / 3, 2 / 3]), np.array([2.0, 1.5, 1.5])
    expected_pre = np.exp(pre_logits) / np.exp(pre_logits).sum()
    expected_fin = np.exp(fin_logits) / np.exp(fin_logits).sum()
    params = methods.get("chameleon_pretrain").Params
    # The relative ridge scales lam by trace(K_c) / k = 8/3: lam = 1/4 is the same lam k = 2.
    for p in (params(lam=2 / 3), params(lam=1 / 4, ridge="relative")):
        pre, fin = methods.run("chameleon_pretrain", d, p), methods.run("chameleon_finetune", d, p)
        np.testing.assert_allclose(pre.details["krls_raw"], [1 / 2, 3 / 8, 3 / 8], rtol=1e-12)
        np.testing.assert_allclose(pre.details["krls"], [2 / 5, 3 / 10, 3 / 10], rtol=1e-12)
        assert pre.details["lambda_effective"] == pytest.approx(2 / 3, rel=1e-12)
        np.testing.assert_allclose(pre.weights, expected_pre, rtol=1e-12)
        np.testing.assert_allclose(fin.weights, expected_fin, rtol=1e-12)


def test_a_method_missing_its_inputs_is_refused_by_name() -> None:
    bare = methods.DomainSet(["a", "b"], [1, 1])
    with pytest.raises(ValueError, match="method 'chameleon_pretrain' needs the domain kernel"):
        methods.run("chameleon_pretrain", bare)
    with pytest.raises(ValueError, match="method 'doremi' needs the train tokens of a, b"):
        methods.run("doremi", bare, None, RECIPE)
    with pytest.raises(ValueError, match="method 'doge' trains proxy models: give it a ProxyRecipe"):
        methods.run("doge", _domains())
