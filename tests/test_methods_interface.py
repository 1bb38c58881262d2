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
                                         "chameleon_pretrain", "chameleon_finetune", "doremi", "doge", "regmix"}
    assert methods.trained_methods() == ["doge", "doremi", "regmix"]
    with pytest.raises(ValueError, match="unknown mixing method 'dorami'; known: chameleon_finetune"):
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


def test_a_method_missing_its_inputs_is_refused_by_name() -> None:
    bare = methods.DomainSet(["a", "b"], [1, 1])
    with pytest.raises(ValueError, match="method 'chameleon_pretrain' needs the domain kernel"):
        methods.run("chameleon_pretrain", bare)
    with pytest.raises(ValueError, match="method 'doremi' needs the train tokens of a, b"):
        methods.run("doremi", bare, None, RECIPE)
    with pytest.raises(ValueError, match="method 'doge' trains proxy models: give it a ProxyRecipe"):
        methods.run("doge", _domains())
