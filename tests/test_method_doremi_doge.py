"""DoReMi and DoGE: their weight updates on hand-worked numbers, their training loops on
planted domains, and both behind the method interface with their cost counted."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from chameleon_assets.core import methods
from chameleon_assets.core.methods import DomainSet, ProxyRecipe
from chameleon_assets.core.methods.doge import DoGE, doge_train, doge_update
from chameleon_assets.core.methods.doremi import domain_means, doremi_train, doremi_update
from chameleon_assets.core.model import build_model, count_parameters
from chameleon_assets.core.train import WeightedDomainSampler
from chameleon_assets.settings import ModelConfig, TrainConfig

VOCAB = 64
CTX = 16
TINY = ModelConfig(arch="llama", hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32, context_length=CTX)
CPU = torch.device("cpu")


def _train_cfg(steps: int, batch_size: int) -> TrainConfig:
    return TrainConfig(tokens=steps * batch_size * CTX, batch_size=batch_size, lr=1e-2, warmup_steps=2,
                       checkpoint_every=1000)


def _is_distribution_per_row(trajectory: np.ndarray) -> bool:
    return bool((trajectory >= 0).all() and np.allclose(trajectory.sum(axis=1), 1.0))


# --- DoReMi -------------------------------------------------------------------------------


def test_doremi_update_is_an_exponentiated_step_mixed_with_uniform() -> None:
    # alpha' = [.5 * 3, .5 * 1] -> [.75, .25]; then (1 - .1) * [.75, .25] + .1 / 2 = [.725, .275].
    assert doremi_update(np.array([0.5, 0.5]), np.array([math.log(3), 0.0]), 1.0, 0.0) == pytest.approx([0.75, 0.25])
    assert doremi_update(np.array([0.5, 0.5]), np.array([math.log(3), 0.0]), 1.0, 0.1) == pytest.approx([0.725, 0.275])
    # eta scales the exponent: exp(2 * ln 2) = 4 -> [.2 * 4, .8 * 1] / 1.6 = [.5, .5].
    assert doremi_update(np.array([0.2, 0.8]), np.array([math.log(2), 0.0]), 2.0, 0.0) == pytest.approx([0.5, 0.5])
    # A huge step neither overflows nor leaves the simplex.
    assert doremi_update(np.array([0.5, 0.5]), np.array([1e4, 0.0]), 1.0, 0.0) == pytest.approx([1.0, 0.0])


def test_domain_means_average_each_domains_tokens_and_leave_an_absent_domain_at_zero() -> None:
    values = torch.tensor([[1.0, 3.0], [5.0, 7.0], [10.0, 20.0]])
    means, counts = domain_means(values, torch.tensor([0, 2, 0]), k=3)
    assert means.tolist() == [(1 + 3 + 10 + 20) / 4, 0.0, (5 + 7) / 2]
    assert counts.tolist() == [4.0, 0.0, 2.0]


class PatternOracle(torch.nn.Module):
    """A planted reference: on a token of the pattern range [48, 64) it puts logit 30 on the
    pattern's next token (48 + (t - 47) mod 16), elsewhere uniform logits (loss ln 64)."""

    def forward(self, input_ids: torch.Tensor) -> SimpleNamespace:
        logits = torch.zeros(*input_ids.shape, VOCAB)
        following = 48 + (input_ids - 47) % 16
        planted = torch.where(input_ids >= 48, 30.0, 0.0)
        return SimpleNamespace(logits=logits.scatter(-1, following.unsqueeze(-1), planted.unsqueeze(-1)))


def test_doremi_raises_the_weight_of_the_domain_with_the_highest_excess_loss() -> None:
    rng = np.random.default_rng(0)
    # The reference predicts "pattern" perfectly (excess = the proxy's whole loss there) and
    # is uniform on the noise domains, which a proxy soon beats (ln 47 < ln 64): excess ~0.
    tokens = {"pattern": np.tile(np.arange(48, 64), 200), "noise1": rng.integers(1, 48, 3200),
              "noise2": rng.integers(1, 48, 3200)}
    names = ["noise1", "pattern", "noise2"]
    sampler = WeightedDomainSampler(tokens, {d: 1.0 for d in names}, CTX, seed=1)
    smoothing = 1e-3
    run = doremi_train(build_model(TINY, VOCAB, 0, seed=1), PatternOracle(), sampler, _train_cfg(20, 6), CPU,
                       eta=1.0, smoothing=smoothing, domains=names)
    assert run.trajectory.shape == (20, 3) and _is_distribution_per_row(run.trajectory)
    assert (run.trajectory >= smoothing / 3 - 1e-12).all()  # (1 - c) p + c / k >= c / k
    assert run.weights[1] > 1 / 3 and int(np.argmax(run.weights)) == 1
    assert run.weights == pytest.approx(run.trajectory.mean(axis=0))
    assert run.tokens == 20 * 6 * CTX


# --- DoGE ---------------------------------------------------------------------------------


def test_doge_update_raises_the_domains_whose_gradients_align_with_the_others() -> None:
    uniform = np.full(3, 1 / 3)
    # g1 = g2, g3 orthogonal: W = [<g1, g2 + g3>, <g2, g1 + g3>, <g3, g1 + g2>] / mean norm = [1, 1, 0];
    # eta = ln 2 doubles the aligned ones: [2, 2, 1] / 5.
    aligned = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    alpha, scores = doge_update(uniform, aligned, math.log(2), 0.0)
    assert scores == pytest.approx([1.0, 1.0, 0.0], rel=1e-5)
    assert alpha == pytest.approx([0.4, 0.4, 0.2], rel=1e-5)
    # Gradients three times as long: inner products 9, mean norm 3 -> W = [3, 3, 0].
    alpha, scores = doge_update(uniform, 3 * aligned, math.log(2) / 3, 0.0)
    assert scores == pytest.approx([3.0, 3.0, 0.0], rel=1e-5) and alpha == pytest.approx([0.4, 0.4, 0.2], rel=1e-5)
    # Ten times as long: W = [10, 10, 0] is clipped to [5, 5, 0]; with smoothing .1: .9 * [.4, .4, .2] + .1 / 3.
    alpha, scores = doge_update(uniform, 10 * aligned, math.log(2) / 5, 0.1)
    assert scores == pytest.approx([5.0, 5.0, 0.0])
    assert alpha == pytest.approx([0.9 * 0.4 + 0.1 / 3, 0.9 * 0.4 + 0.1 / 3, 0.9 * 0.2 + 0.1 / 3], rel=1e-5)
    # Flat torch tensors give the same; a conflicting g3 = -g1: W = [0, 0, -2] clipped at 0, no change.
    alpha, _ = doge_update(uniform, [torch.tensor(row) for row in aligned], math.log(2), 0.0)
    assert alpha == pytest.approx([0.4, 0.4, 0.2], rel=1e-5)
    alpha, scores = doge_update(uniform, np.array([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]]), 1.0, 0.0)
    assert scores == pytest.approx([0.0, 0.0, 0.0]) and alpha == pytest.approx(uniform)


def test_doge_gives_twin_domains_more_weight_than_a_distinct_one() -> None:
    rng = np.random.default_rng(0)
    # Twins: the same skewed unigram over tokens 1-8 (their gradients align); distinct:
    # uniform over 32-63 (a different part of the vocabulary).
    skewed = 0.5 ** np.arange(8) / (0.5 ** np.arange(8)).sum()
    tokens = {"twin_a": rng.choice(np.arange(1, 9), 4000, p=skewed),
              "twin_b": rng.choice(np.arange(1, 9), 4000, p=skewed), "distinct": rng.integers(32, 64, 4000)}
    names = ["twin_a", "distinct", "twin_b"]
    sampler = WeightedDomainSampler(tokens, {d: 1.0 for d in names}, CTX, seed=0)
    params = DoGE.Params()  # the default step size moves the weights in so clear a case
    run = doge_train(build_model(TINY, VOCAB, 0, seed=0), sampler, _train_cfg(16, 12), CPU, params.eta,
                     params.smoothing, names)
    assert run.trajectory.shape == (16, 3) and _is_distribution_per_row(run.trajectory)
    assert min(run.weights[0], run.weights[2]) > 1 / 3 > run.weights[1]
    assert run.tokens == 16 * 3 * (12 // 3) * CTX  # every step: 4 windows of each of the 3 domains
    assert sampler.draws == {d: 16 * 4 for d in names}


# --- Behind the interface -------------------------------------------------------------------


@pytest.fixture
def tiny_domains() -> DomainSet:
    rng = np.random.default_rng(3)
    train = {"a": rng.integers(1, 20, 800), "b": rng.integers(20, 40, 800), "c": rng.integers(1, 64, 800)}
    val = {d: t[:100] for d, t in train.items()}
    return DomainSet(["a", "b", "c"], [len(t) for t in train.values()], train=train, val=val)


@pytest.fixture
def recipe() -> ProxyRecipe:
    train = TrainConfig(tokens=512, batch_size=4, lr=1e-2, warmup_steps=2, checkpoint_every=1000)
    return ProxyRecipe(model=TINY, train=train, vocab_size=VOCAB, eos_id=0, seed=0, device="cpu")


def _flops_per_token(recipe: ProxyRecipe) -> tuple[float, float]:
    """(training, forward) FLOPs per token from the parameter count and the config:
    forward 2 N + 2 L n_ctx d (weights, attention), training three times that."""
    d, f, layers = TINY.hidden_size, TINY.intermediate_size, TINY.num_layers
    # Tied embedding V d, per layer q/k/v/o 4 d^2 + gated MLP 3 d f + two RMSNorms 2 d, final norm d.
    n = VOCAB * d + layers * (4 * d * d + 3 * d * f + 2 * d) + d
    assert n == count_parameters(build_model(TINY, VOCAB, 0, seed=0)) == 6224
    forward = 2 * n + 2 * layers * CTX * d
    return 3 * forward, forward


def test_doremi_through_the_interface_counts_the_reference_it_trains(tiny_domains: DomainSet,
                                                                      recipe: ProxyRecipe) -> None:
    result = methods.run("doremi", tiny_domains, None, recipe)
    steps = 512 // (4 * CTX)  # 8 steps of 4 windows of 16 tokens, for the reference and the proxy
    assert result.weights.shape == (3,) and result.weights.sum() == pytest.approx(1.0)
    assert result.trajectory.shape == (steps, 3) and _is_distribution_per_row(result.trajectory)
    train, forward = _flops_per_token(recipe)
    assert set(result.cost.parts) == {"reference", "proxy", "reference_forward"}
    assert result.cost.parts["reference"] == pytest.approx(train * 512)
    assert result.cost.parts["proxy"] == pytest.approx(train * 512)
    assert result.cost.parts["reference_forward"] == pytest.approx(forward * 512)
    assert result.cost.flops == pytest.approx(sum(result.cost.parts.values())) and result.cost.flops > 0
    assert result.cost.tokens == 3 * 512 and result.cost.wall_s > 0
    assert result.details["steps"] == steps and len(result.details["final_excess"]) == 3
    json.dumps(result.details)  # stored as JSON and logged to MLflow


def test_doge_through_the_interface_counts_every_domain_gradient(tiny_domains: DomainSet,
                                                                  recipe: ProxyRecipe) -> None:
    result = methods.run("doge", tiny_domains, DoGE.Params(eta=1.0), recipe)
    steps = 512 // (4 * CTX)
    assert result.weights.shape == (3,) and result.weights.sum() == pytest.approx(1.0)
    assert result.trajectory.shape == (steps, 3) and _is_distribution_per_row(result.trajectory)
    train, _ = _flops_per_token(recipe)
    tokens = steps * 3 * 1 * CTX  # batch 4 over 3 domains: one window of each per step
    assert set(result.cost.parts) == {"proxy"}
    assert result.cost.flops == pytest.approx(train * tokens) == pytest.approx(result.cost.parts["proxy"])
    assert result.cost.tokens == tokens and result.cost.wall_s > 0
    json.dumps(result.details)


def test_both_methods_train_proxies_and_take_their_settings_from_params() -> None:
    assert {"doremi", "doge"} <= set(methods.trained_methods())
    assert methods.get("doremi").Params() == methods.get("doremi").Params(eta=1.0, smoothing=1e-3)
    with pytest.raises(ValueError):
        methods.get("doge").Params(smoothing=1.5)


def test_with_gradient_accumulation_the_weights_move_once_per_optimiser_step(tiny_domains: DomainSet,
                                                                               recipe: ProxyRecipe) -> None:
    accum = ProxyRecipe(model=TINY, train=TrainConfig(tokens=512, batch_size=2, grad_accum=2, lr=1e-2,
                                                      warmup_steps=2, checkpoint_every=1000),
                        vocab_size=VOCAB, eos_id=0, seed=0, device="cpu")
    steps = 512 // (2 * 2 * CTX)
    doremi = methods.run("doremi", tiny_domains, None, accum)
    assert doremi.trajectory.shape == (steps, 3) and doremi.cost.tokens == 3 * 512
    doge = methods.run("doge", tiny_domains, None, accum)
    # batch 2 over 3 domains: still one window of each, in each of the 2 micro-batches.
    assert doge.trajectory.shape == (steps, 3) and doge.cost.tokens == steps * 2 * 3 * CTX
