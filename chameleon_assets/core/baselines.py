"""Baseline mixtures that sit beside CHAMELEON. Each returns weights summing to 1.

n_i below is domain i's number of training tokens.
"""

from __future__ import annotations

import numpy as np


def uniform(k: int) -> np.ndarray:
    """p_i = 1 / k."""
    if k < 1:
        raise ValueError("need at least one domain")
    return np.full(k, 1.0 / k)


def natural(tokens: np.ndarray) -> np.ndarray:
    """p_i = n_i / sum_j n_j (sample in proportion to size)."""
    n = np.asarray(tokens, dtype=np.float64)
    if (n < 0).any() or n.sum() <= 0:
        raise ValueError("token counts must be non-negative with a positive sum")
    return n / n.sum()


def temperature(tokens: np.ndarray, t: float) -> np.ndarray:
    """p_i proportional to n_i^(1/T): T = 1 is natural, T -> inf tends to uniform."""
    if t <= 0:
        raise ValueError(f"temperature must be positive, got {t}")
    n = np.asarray(tokens, dtype=np.float64)
    return natural(n ** (1.0 / t))


def unimax(tokens: np.ndarray, budget: float, max_epochs: float) -> np.ndarray:
    """UniMax (Chung et al., ICLR 2023): a uniform share of the token ``budget`` per domain,
    capped at ``max_epochs * n_i``; what a capped domain cannot use is re-divided among
    the rest.

    Domains are visited from smallest to largest; each gets
    a_i = min(max_epochs * n_i, remaining_budget / remaining_domains). Weights are
    a_i / sum_j a_j (which is the budget unless every domain hits its cap).
    """
    n = np.asarray(tokens, dtype=np.float64)
    if budget <= 0 or max_epochs <= 0:
        raise ValueError("budget and max_epochs must be positive")
    alloc = np.zeros_like(n)
    remaining = float(budget)
    order = np.argsort(n, kind="stable")
    for pos, i in enumerate(order):
        share = remaining / (len(n) - pos)
        alloc[i] = min(max_epochs * n[i], share)
        remaining -= alloc[i]
    return natural(alloc)


def preset(domains: list[str], weights: dict[str, float]) -> np.ndarray | None:
    """A fixed published mixture applied by name, renormalised over ``domains``.

    Returns None when some registered domain has no weight in the preset (names do not
    match), or when the matched weights sum to zero.
    """
    if any(d not in weights for d in domains):
        return None
    w = np.array([float(weights[d]) for d in domains])
    return w / w.sum() if w.sum() > 0 else None
