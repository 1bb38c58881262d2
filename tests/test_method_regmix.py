"""RegMix: the swarm's Dirichlet draws, the linear law recovered from planted data, the
proposal of a planted law's minimiser, one swarm run's scores and cost, and the method
behind the interface."""

from __future__ import annotations

import math

import numpy as np
import pytest

from chameleon_assets.core import methods
from chameleon_assets.core.cost import Cost
from chameleon_assets.core.methods import DomainSet, ProxyRecipe
from chameleon_assets.core.methods.regmix import (GradientBoostedMixtureLaw, LinearMixtureLaw, RegMix, SwarmRun,
                                                  candidate_mixtures, fit_and_propose, fit_lightgbm, fit_regression,
                                                  held_out_rank_correlation, propose, swarm_mixture, target_of,
                                                  train_run, uses_lightgbm)
from chameleon_assets.core.model import build_model, count_parameters
from chameleon_assets.settings import ModelConfig, TrainConfig

# One xdist worker runs this whole file: its module-scoped fixture is built once.
pytestmark = pytest.mark.xdist_group("regmix")

PRIOR = np.array([0.4, 0.3, 0.2, 0.1])
Params = RegMix.Params


def _is_distribution(w: np.ndarray) -> bool:
    return bool(np.isfinite(w).all() and (w >= 0).all() and math.isclose(w.sum(), 1.0, abs_tol=1e-12))


# --- The swarm's mixtures -----------------------------------------------------------------


def test_swarm_mixture_is_a_distribution_seeded_by_seed_and_run_alone() -> None:
    params = Params()
    swarm = [swarm_mixture(PRIOR, r, 7, params) for r in range(10)]
    assert all(_is_distribution(w) for w in swarm)
    # The same (seed, run) gives the same mixture, however many runs were drawn before.
    assert np.array_equal(swarm_mixture(PRIOR, 6, 7, params), swarm[6])
    assert all(np.array_equal(a, b) for a, b in zip([swarm_mixture(PRIOR, r, 7, params) for r in range(3)], swarm))
    # Different runs, and a different seed, draw different mixtures.
    assert len({tuple(w) for w in swarm}) == 10
    assert not np.array_equal(swarm_mixture(PRIOR, 6, 8, params), swarm[6])


def test_candidates_follow_the_documented_dirichlet() -> None:
    # One strength s and no cap or zeroing: w ~ Dirichlet(s p), so E w = p and
    # Var w_i = p_i (1 - p_i) / (s + 1).
    plain = Params(prior_power=1.0, min_concentration=2.0, max_concentration=2.0, concentration_levels=1,
                   min_weight=0.0, max_usage=1e6)
    w = candidate_mixtures(PRIOR, plain, seed=0)
    assert w.shape == (100_000, 4) and np.allclose(w.sum(axis=1), 1.0)
    assert w.mean(axis=0) == pytest.approx(PRIOR, abs=0.005)
    assert w.var(axis=0) == pytest.approx(PRIOR * (1 - PRIOR) / 3, rel=0.05)
    # The authors' sampling: centre c = sqrt(p) / sum sqrt(p), s one of 15 values log-spaced in
    # [0.1, 5]. Every level has mean c, so Var w_i = c_i (1 - c_i) mean_s 1 / (s + 1).
    mixed = Params(min_weight=0.0)
    w = candidate_mixtures(PRIOR, mixed, seed=0)
    centre = np.sqrt(PRIOR) / np.sqrt(PRIOR).sum()
    levels = np.exp(np.linspace(math.log(0.1), math.log(5.0), 15))
    assert w.mean(axis=0) == pytest.approx(centre, abs=0.005)
    assert w.var(axis=0) == pytest.approx(centre * (1 - centre) * np.mean(1 / (levels + 1)), rel=0.05)


def test_candidates_respect_the_usage_cap_and_the_minimum_weight() -> None:
    prior = np.array([0.7, 0.2, 0.07, 0.03])
    w = candidate_mixtures(prior, Params(max_usage=2.0, min_weight=0.05, candidates=20_000), seed=1)
    assert (w <= np.array([1.0, 0.4, 0.14, 0.06]) + 1e-12).all()  # min(2 p_i, 1)
    assert ((w == 0) | (w >= 0.05)).all()
    assert np.allclose(w.sum(axis=1), 1.0)


# --- The regression -------------------------------------------------------------------------


def _planted_swarm(runs: int = 30) -> np.ndarray:
    return np.array([swarm_mixture(PRIOR, r, 0, Params()) for r in range(runs)])


def test_the_regression_recovers_a_planted_linear_mixture_law() -> None:
    X = _planted_swarm()
    c = np.array([3.0, 2.5, 4.0, 1.5])
    assert fit_regression(X, X @ c).coefficients == pytest.approx(c, rel=1e-9)
    # An intercept folds into the coefficients, as the rows sum to 1: W c + b = W (c + b).
    assert fit_regression(X, X @ c + 0.7).coefficients == pytest.approx(c + 0.7, rel=1e-9)
    assert fit_regression(X, X @ c).predict(np.array([0.25, 0.25, 0.25, 0.25])) == pytest.approx(11.0 / 4)
    # With noise of sd sigma each coefficient is off by at most a few standard errors,
    # sigma sqrt([(X^T X)^-1]_ii).
    sigma = 1e-3
    y = X @ c + np.random.default_rng(3).normal(0.0, sigma, len(X))
    se = sigma * np.sqrt(np.diag(np.linalg.inv(X.T @ X)))
    assert (np.abs(fit_regression(X, y).coefficients - c) < 5 * se).all()
    # Held out, the exact law ranks every run right (up to the last bit of two runs that
    # drew the same corner, so tie); small noise hardly changes that.
    assert held_out_rank_correlation(X, X @ c) == pytest.approx(1.0, abs=1e-3)
    assert held_out_rank_correlation(X, X @ c, folds=5) == pytest.approx(1.0, abs=1e-3)
    assert held_out_rank_correlation(X, y) > 0.98


def test_the_rank_correlation_scores_held_out_predictions_only() -> None:
    # One domain: the law is the mean of the targets it is fitted to. Leave one out,
    # run i is predicted (S - y_i) / (n - 1), which falls as y_i rises: rho = -1 (in sample
    # every prediction would be the same mean).
    X, y = np.ones((4, 1)), np.array([1.0, 2.0, 3.0, 4.0])
    assert held_out_rank_correlation(X, y) == pytest.approx(-1.0)
    # Two folds (runs 0, 2 | 1, 3): predictions [3, 2, 3, 2]; their ranks [3.5, 1.5, 3.5, 1.5]
    # against [1, 2, 3, 4] correlate -2 / sqrt(4 * 5).
    assert held_out_rank_correlation(X, y, folds=2) == pytest.approx(-1 / math.sqrt(5))
    with pytest.raises(ValueError, match="folds"):
        held_out_rank_correlation(X, y, folds=5)


def test_target_is_the_mean_over_domains_or_one_named_domain() -> None:
    nll = {"a": 1.0, "b": 2.0, "c": 6.0}
    assert target_of(nll, "mean") == 3.0
    assert target_of(nll, "c") == 6.0
    with pytest.raises(ValueError, match="'z'.*a, b, c"):
        target_of(nll, "z")


# --- The proposal ---------------------------------------------------------------------------


def test_propose_takes_the_candidate_with_the_lowest_planted_loss() -> None:
    law = LinearMixtureLaw(np.array([3.0, 2.5, 4.0, 1.5]))
    params = Params(candidates=5_000, top_k=1)
    candidates = candidate_mixtures(PRIOR, params, seed=4)
    true_loss = candidates @ np.array([3.0, 2.5, 4.0, 1.5])
    weights, details = propose(law, PRIOR, params, seed=4)
    assert weights == pytest.approx(candidates[np.argmin(true_loss)])
    assert details["predicted_target"] == pytest.approx(true_loss.min())
    # The best ten: their mean, predicted at the mean of their losses (the law is linear).
    params10 = Params(candidates=5_000, top_k=10)
    best = np.argsort(true_loss)[:10]
    weights, details = propose(law, PRIOR, params10, seed=4)
    assert weights == pytest.approx(candidates[best].mean(axis=0))
    assert details["predicted_target"] == pytest.approx(true_loss[best].mean())


def test_propose_moves_weight_towards_the_domain_with_the_lowest_coefficient() -> None:
    c = np.array([3.0, 1.0, 3.0, 3.0])  # domain 1 alone lowers the loss
    weights, _ = propose(LinearMixtureLaw(c), PRIOR, Params(), seed=0)
    assert _is_distribution(weights)
    assert int(np.argmax(weights - PRIOR)) == 1 and weights[1] > PRIOR[1]
    # A linear law is lowest at the corner e_1; at the lowest strengths a draw is often
    # domain 1 alone (the other weights under min_weight, zeroed): far more than 100 of the
    # 100,000 candidates, so the best 100 are all that corner.
    assert weights == pytest.approx([0.0, 1.0, 0.0, 0.0])
    # The usage cap bounds how far: a favoured small domain stays at most max_usage p_i.
    prior = np.array([0.7, 0.2, 0.07, 0.03])
    weights, _ = propose(LinearMixtureLaw(np.array([3.0, 3.0, 3.0, 1.0])), prior, Params(max_usage=2.0), seed=0)
    assert int(np.argmax(weights / prior)) == 3 and prior[3] < weights[3] <= 0.06 + 1e-12


def test_fit_and_propose_fits_the_chosen_target_and_adds_up_the_swarms_cost() -> None:
    # Planted per-domain laws: NLL_d(w) = w . C[d]. The mean target's law is the mean of
    # C's rows, [2, 2.5, 1.5, 3]; domain "b"'s is C[1].
    names = ["a", "b", "c", "d"]
    C = np.array([[1.0, 3.0, 2.0, 4.0], [3.0, 2.0, 1.0, 2.0], [2.0, 2.5, 1.5, 3.0], [2.0, 2.5, 1.5, 3.0]])
    X = _planted_swarm(8)
    runs = [SwarmRun(r, X[r].tolist(), dict(zip(names, (C @ X[r]).tolist())), 0.0, Cost.of("swarm", 100.0, 1.0, 10))
            for r in range(8)]
    params = Params(candidates=1_000, top_k=5)
    result = fit_and_propose(runs, PRIOR, params, seed=0)
    coef = result.details["coefficients"]
    assert list(coef) == names and list(coef.values()) == pytest.approx([2.0, 2.5, 1.5, 3.0])
    assert result.details["rank_correlation"] == pytest.approx(1.0) and result.details["runs"] == 8
    assert _is_distribution(result.weights)
    # Eight runs of 100 FLOPs, and 2 k FLOPs per candidate's prediction.
    assert result.cost.flops == pytest.approx(8 * 100 + 2 * 1_000 * 4)
    assert result.cost.parts["swarm"] == 800.0 and result.cost.tokens == 80
    on_b = fit_and_propose(runs, PRIOR, Params(candidates=1_000, top_k=5, target="b"), seed=0)
    assert list(on_b.details["coefficients"].values()) == pytest.approx(C[1])
    with pytest.raises(ValueError, match="runs >= 5"):
        fit_and_propose(runs[:4], PRIOR, params, seed=0)
    # Every run scoring the same: no ranking to predict, and the result says so.
    flat = [SwarmRun(r.run, r.mixture, dict.fromkeys(names, 2.0), 2.0, r.cost) for r in runs]
    result = fit_and_propose(flat, PRIOR, params, seed=0)
    assert result.details["rank_correlation"] is None and "rank correlation" in result.notes[0]
    runs_on_d = [SwarmRun(r, X[r].tolist(), dict.fromkeys(names, float(X[r] @ [3.0, 3.0, 3.0, 1.0])), 0.0)
                 for r in range(8)]
    result = fit_and_propose(runs_on_d, PRIOR, Params(), seed=0)
    assert result.weights == pytest.approx([0.0, 0.0, 0.0, 1.0]) and "domain d alone" in result.notes[-1]


# A planted non-linear law: the target is lowest at an interior mixture M, a bowl no plane fits.
BOWL_MINIMUM = np.array([0.1, 0.2, 0.3, 0.4])


def _bowl(W: np.ndarray) -> np.ndarray:
    return 2.0 + 10.0 * ((W - BOWL_MINIMUM) ** 2).sum(axis=-1)


def test_lightgbm_beats_the_linear_law_on_a_planted_non_linear_law() -> None:
    W = np.random.default_rng(3).dirichlet(np.ones(4), size=96)
    y = _bowl(W)
    law = fit_lightgbm(W, y)
    assert isinstance(law, GradientBoostedMixtureLaw) and law.trees == 1000
    linear_rho = held_out_rank_correlation(W, y, 8)
    trees_rho = held_out_rank_correlation(W, y, 8, fit=fit_lightgbm)
    assert trees_rho > 0.85 and trees_rho > linear_rho + 0.15
    # Held out, the trees' predictions also err less than the plane's.
    test = np.random.default_rng(4).dirichlet(np.ones(4), size=200)
    err = {name: np.abs(f(W, y).predict(test) - _bowl(test)).mean() for name, f in
           (("trees", fit_lightgbm), ("linear", fit_regression))}
    assert err["trees"] < 0.6 * err["linear"]
    # Deterministic: the same runs and seed fit the same trees.
    assert np.array_equal(fit_lightgbm(W, y).predict(test), law.predict(test))


def test_auto_regression_switches_to_lightgbm_at_the_documented_threshold() -> None:
    assert Params().lightgbm_min_runs == 64 and Params().regression == "auto"
    assert not uses_lightgbm(Params(), 63) and uses_lightgbm(Params(), 64)
    assert uses_lightgbm(Params(regression="lightgbm"), 8) and not uses_lightgbm(Params(regression="linear"), 512)
    names = ["a", "b", "c", "d"]
    X = np.random.default_rng(5).dirichlet(np.ones(4), size=64)
    runs = [SwarmRun(r, X[r].tolist(), dict.fromkeys(names, float(_bowl(X[r]))), 0.0, Cost.of("swarm", 100.0, 1.0, 10))
            for r in range(64)]
    params = Params(candidates=2_000, top_k=20)
    trees = fit_and_propose(runs, PRIOR, params, seed=0)
    assert trees.details["regression"] == "lightgbm"
    rhos = trees.details["rank_correlations"]
    assert set(rhos) == {"linear", "lightgbm"} and rhos["lightgbm"] > rhos["linear"]
    assert trees.details["rank_correlation"] == rhos["lightgbm"]
    # The trees find the bowl's interior minimum, which a plane cannot: it proposes a corner.
    linear = fit_and_propose(runs[:63], PRIOR, params, seed=0)
    assert linear.details["regression"] == "linear" and linear.details["rank_correlations"]["lightgbm"] is None
    assert _bowl(trees.weights) < _bowl(linear.weights)
    # The cost counts 64 runs and each candidate's passage through the trees.
    per_prediction = 1000 * 5  # ceil(log2 31) levels per tree
    assert trees.cost.flops == pytest.approx(64 * 100 + 2_000 * per_prediction)
    with pytest.raises(ValueError, match="runs >= 8"):
        fit_and_propose(runs[:6], PRIOR, Params(candidates=1_000, top_k=5, regression="lightgbm"), seed=0)
    with pytest.raises(ValueError, match="regression"):
        Params(regression="forest")


def test_params_refuse_inconsistent_ranges() -> None:
    with pytest.raises(ValueError, match="min_concentration"):
        Params(min_concentration=6.0)
    with pytest.raises(ValueError, match="top_k"):
        Params(candidates=10, top_k=11)
    with pytest.raises(ValueError, match="max_usage"):
        Params(max_usage=1.0)


# --- Training and scoring runs ----------------------------------------------------------------

VOCAB, CTX = 64, 16
TINY = ModelConfig(arch="llama", hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32, context_length=CTX)
TRAIN = TrainConfig(tokens=8 * 4 * CTX, batch_size=4, lr=1e-2, warmup_steps=2, checkpoint_every=1000)
NAMES = ["noise", "pattern", "low"]


@pytest.fixture(scope="module")
def domains() -> DomainSet:
    rng = np.random.default_rng(0)
    train = {"noise": rng.integers(1, 48, 3000), "pattern": np.tile(np.arange(48, 64), 150),
             "low": rng.integers(1, 8, 1500)}
    val = {"noise": rng.integers(1, 48, 200), "pattern": np.tile(np.arange(48, 64), 13)[:200],
           "low": rng.integers(1, 8, 200)}
    return DomainSet(NAMES, np.array([len(train[d]) for d in NAMES]), train=train, val=val)


def _recipe() -> ProxyRecipe:
    return ProxyRecipe(model=TINY, train=TRAIN, vocab_size=VOCAB, eos_id=0, seed=0, device="cpu")


def _run_flops() -> float:
    # 8 steps of 4 x 16 tokens trained; 4 windows of 17 tokens (16 predicted) per domain
    # scored: 200 // 17 = 11 windows fit, val_windows = 4 of them.
    n = count_parameters(build_model(TINY, VOCAB, 0, seed=0))
    attention = 2 * TINY.num_layers * CTX * TINY.hidden_size
    return (6 * n + 3 * attention) * (8 * 4 * CTX) + (2 * n + attention) * (3 * 4 * CTX)


def test_a_swarm_run_scores_every_domain_and_counts_training_and_scoring(domains: DomainSet) -> None:
    params = Params(model=TINY, train=TRAIN, val_windows=4)
    run = train_run(domains, np.array([0.2, 0.5, 0.3]), _recipe(), params, run=2)
    assert run.run == 2 and run.mixture == [0.2, 0.5, 0.3]
    assert list(run.val_nll) == NAMES and all(math.isfinite(v) and v > 0 for v in run.val_nll.values())
    assert run.target == pytest.approx(sum(run.val_nll.values()) / 3)
    assert run.cost.flops == pytest.approx(_run_flops())
    assert set(run.cost.parts) == {"swarm", "swarm_eval"} and run.cost.tokens == 8 * 4 * CTX + 3 * 4 * CTX


def test_regmix_behind_the_interface(domains: DomainSet) -> None:
    params = Params(runs=5, model=TINY, train=TRAIN, val_windows=4, candidates=1_000, top_k=10)
    result = methods.run("regmix", domains, params, _recipe())
    assert _is_distribution(result.weights) and result.trajectory is None
    assert -1.0 <= result.details["rank_correlation"] <= 1.0 and result.details["runs"] == 5
    assert list(result.details["coefficients"]) == NAMES
    assert result.cost.flops == pytest.approx(5 * _run_flops() + 2 * 1_000 * 3)
    with pytest.raises(ValueError, match="runs = 3.*runs >= 4"):
        methods.run("regmix", domains, Params(runs=3, model=TINY, train=TRAIN), _recipe())
    with pytest.raises(ValueError, match="'nowhere'"):
        methods.run("regmix", domains, Params(runs=5, model=TINY, train=TRAIN, target="nowhere"), _recipe())
    with pytest.raises(ValueError, match="ProxyRecipe"):
        methods.run("regmix", domains, params)
