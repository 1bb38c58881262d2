"""Olmix's log-linear mixing law and proposer on planted problems whose answer is known."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from chameleon_assets.core.methods.olmix import (LogLinearLaw, fit_law, held_out_quality, propose,
                                                 repetition_caps)

pytestmark = pytest.mark.xdist_group("olmix")

# A planted law over k = 3 mixture weights and m = 2 evaluation domains, t's rows summing to 0.
PLANTED = LogLinearLaw(c=np.array([2.0, 3.0]), k=np.array([0.8, 0.5]),
                       t=np.array([[-2.0, 0.5, 1.5], [1.0, -2.5, 1.5]]))


def _swarm(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.ones(3), size=n)


def test_the_law_recovers_planted_parameters() -> None:
    R = _swarm(40)
    Y = PLANTED.predict(R) + np.random.default_rng(1).normal(scale=1e-4, size=(40, 2))
    law = fit_law(R, Y)
    assert law.c == pytest.approx(PLANTED.c, abs=0.02)
    assert law.k == pytest.approx(PLANTED.k, rel=0.05)
    assert law.t == pytest.approx(PLANTED.t, abs=0.05)
    assert np.allclose(law.t.sum(axis=1), 0.0)


def test_the_robust_loss_ignores_a_diverged_run() -> None:
    R = _swarm(40, seed=2)
    Y = PLANTED.predict(R)
    Y[7] += 5.0  # one diverged run
    law = fit_law(R, Y)
    assert law.t == pytest.approx(PLANTED.t, abs=0.05) and law.c == pytest.approx(PLANTED.c, abs=0.02)


def test_held_out_quality_scores_unseen_runs() -> None:
    R = _swarm(30, seed=3)
    good = held_out_quality(R, PLANTED.predict(R), folds=5)
    assert good["mae"] < 1e-3 and good["rank_correlation"] > 0.99
    noise = np.random.default_rng(4).normal(size=(30, 2))
    bad = held_out_quality(R, noise + 3.0, folds=5)
    assert bad["mae"] > 100 * good["mae"] and not (bad["rank_correlation"] or 0) > 0.9
    with pytest.raises(ValueError, match="runs >= 5"):
        fit_law(R[:4], PLANTED.predict(R[:4]))


def _grid(step: float = 0.005) -> np.ndarray:
    a = np.arange(0, 1 + 1e-9, step)
    pts = [(x, y, 1 - x - y) for x, y in itertools.product(a, a) if x + y <= 1 + 1e-9]
    return np.clip(np.array(pts), 0, 1)


def _objective(R: np.ndarray, prior: np.ndarray, lam: float) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = np.where(R > 0, R * np.log(R / prior), 0.0).sum(axis=-1)
    return PLANTED.predict(R).mean(axis=-1) + lam * kl


@pytest.mark.parametrize("lam", [0.0, 0.05, 1.0])
def test_the_proposer_finds_the_planted_minimiser(lam: float) -> None:
    prior = np.array([0.5, 0.3, 0.2])
    r = propose(PLANTED, prior, lam)
    grid = _grid()
    best = grid[np.argmin(_objective(grid, prior, lam))]
    assert _objective(r, prior, lam) <= _objective(best, prior, lam) + 1e-6
    assert r == pytest.approx(best, abs=0.01)
    # The KL penalty pulls towards the prior: the larger lam, the closer.
    far = propose(PLANTED, prior, 0.0)
    near = propose(PLANTED, prior, 10.0)
    kl = lambda w: float(np.sum(np.where(w > 0, w * np.log(np.maximum(w, 1e-300) / prior), 0.0)))  # noqa: E731
    assert kl(near) < kl(r) + 1e-9 <= kl(far) + 2e-9


def test_the_repetition_limit_caps_small_domains() -> None:
    prior = np.array([0.5, 0.3, 0.2])
    caps = repetition_caps(np.array([1000.0, 1000.0, 100.0]), budget_tokens=1000.0, max_repetition=2.0)
    assert caps == pytest.approx([1.0, 1.0, 0.2])
    r = propose(PLANTED, prior, 0.0, caps=caps)
    assert r[2] <= 0.2 + 1e-9
    grid = _grid()
    grid = grid[grid[:, 2] <= 0.2 + 1e-12]
    best = grid[np.argmin(_objective(grid, prior, 0.0))]
    assert _objective(r, prior, 0.0) <= _objective(best, prior, 0.0) + 1e-6
    with pytest.raises(ValueError, match="max_repetition"):
        repetition_caps(np.array([10.0, 10.0, 10.0]), budget_tokens=1000.0, max_repetition=2.0)


def test_frozen_ratios_stay_exactly() -> None:
    prior = np.array([0.5, 0.3, 0.2])
    r = propose(PLANTED, prior, 0.05, fixed={0: 0.25})
    assert r[0] == 0.25 or abs(r[0] - 0.25) < 1e-12
    grid = _grid(0.001)
    grid = grid[np.abs(grid[:, 0] - 0.25) < 1e-9]
    best = grid[np.argmin(_objective(grid, prior, 0.05))]
    assert r == pytest.approx(best, abs=0.002)


# --- Mixture reuse -----------------------------------------------------------------------------

NAMES4 = ["a", "b", "c", "new"]
FULL = LogLinearLaw(c=np.array([2.0, 2.5, 3.0, 1.5]), k=np.array([0.5, 0.4, 0.6, 0.8]),
                    t=np.array([[-1.5, 0.5, 0.5, 0.5], [0.5, -1.5, 0.5, 0.5], [0.5, 0.5, -1.5, 0.5],
                                [0.8, 0.8, 0.8, -2.4]]))


def test_reuse_after_adding_a_domain_runs_only_the_new_swarm_and_keeps_the_frozen_ratios() -> None:
    from chameleon_assets.core.methods.olmix import reuse

    previous = {"a": 0.5, "b": 0.3, "c": 0.2}
    calls: list[np.ndarray] = []

    def run(w: np.ndarray) -> np.ndarray:
        calls.append(w)
        return FULL.predict(w)

    tokens = np.array([4000.0, 3000.0, 2000.0, 1000.0])
    out = reuse(previous, NAMES4, ["new"], tokens, run, runs=8, lam=0.0, budget_tokens=1000.0, max_repetition=4.0)
    assert out.runs == 8 and len(calls) == 8  # only the reduced swarm: 8 runs over (unaffected, new)
    for w in calls:  # every run keeps the frozen ratios among a, b, c
        assert w[:3] / w[:3].sum() == pytest.approx([0.5, 0.3, 0.2], abs=1e-12)
    w = out.weights
    assert w.sum() == pytest.approx(1.0) and w[:3] / w[:3].sum() == pytest.approx([0.5, 0.3, 0.2], abs=1e-12)
    assert out.frozen == pytest.approx(previous)
    # The new domain's share is the planted law's best along the frozen direction.
    s = np.linspace(0, 1, 2001)
    line = np.stack([np.concatenate([si * np.array([0.5, 0.3, 0.2]), [1 - si]]) for si in s])
    best = line[np.argmin(FULL.predict(line).mean(axis=1))]
    assert w[3] == pytest.approx(best[3], abs=0.01)


def test_reuse_after_removing_a_domain_trains_nothing() -> None:
    from chameleon_assets.core.methods.olmix import reuse

    def run(w: np.ndarray) -> np.ndarray:
        raise AssertionError("removing a domain must train no run")

    out = reuse({"a": 0.5, "b": 0.3, "c": 0.2}, ["a", "b"], [], np.array([1.0, 1.0]), run, runs=8, lam=0.0,
                budget_tokens=1.0, max_repetition=4.0)
    assert out.runs == 0 and out.weights == pytest.approx([0.625, 0.375], abs=1e-15)
    with pytest.raises(ValueError, match="domain zzz"):
        reuse({"a": 1.0}, ["a", "zzz"], [], np.array([1.0, 1.0]), run, 8, 0.0, 1.0, 4.0)
