"""Baseline mixtures against hand-computed values."""

import numpy as np
import pytest

from chameleon_assets.core import baselines


def test_uniform_natural_temperature() -> None:
    np.testing.assert_allclose(baselines.uniform(4), [0.25] * 4)
    np.testing.assert_allclose(baselines.natural(np.array([100, 300, 600])), [0.1, 0.3, 0.6])
    # T = 2: p proportional to sqrt(n) = (10, 20, 30) for n = (100, 400, 900).
    np.testing.assert_allclose(baselines.temperature(np.array([100, 400, 900]), 2.0), [1 / 6, 2 / 6, 3 / 6])
    with pytest.raises(ValueError):
        baselines.temperature(np.array([1, 2]), 0.0)


def test_unimax_redistributes_what_capped_domains_cannot_use() -> None:
    # Budget 600 over n = (10, 100, 1000), one epoch cap. Smallest first:
    # share 200 -> 10 (capped), share 590/2 = 295 -> 100 (capped), share 490 -> 490.
    np.testing.assert_allclose(baselines.unimax(np.array([1000, 10, 100]), 600, 1.0), [490 / 600, 10 / 600, 100 / 600])
    # A large budget caps every domain at max_epochs * n: (20, 40) -> (1/3, 2/3).
    np.testing.assert_allclose(baselines.unimax(np.array([10, 20]), 1000, 2.0), [1 / 3, 2 / 3])
    # A small budget is split uniformly.
    np.testing.assert_allclose(baselines.unimax(np.array([50, 500, 5000]), 30, 1.0), [1 / 3] * 3)


def test_presets_apply_only_when_names_match_and_renormalise() -> None:
    assert baselines.preset(["a", "b"], {"a": 0.2, "b": 0.6, "c": 0.2}).tolist() == pytest.approx([0.25, 0.75])
    assert baselines.preset(["a", "x"], {"a": 0.5, "b": 0.5}) is None
