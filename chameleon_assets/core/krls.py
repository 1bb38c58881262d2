"""CHAMELEON's mixture weights from domain embeddings (Xie, Tonin & Cevher, ICML 2025).

Given the mean embedding e_i of each of k domains (rows of E, k x d):

    K    = E E^T                                   linear kernel (k x k)
    K_c  = H K H,   H = I - 1 1^T / k              centred kernel
    tau_i = [K_c (K_c + lam * k * I)^-1]_ii        kernel ridge leverage score (KRLS)
                                                   (ridge "relative": lam -> lam * trace(K_c) / k)
    tau  <- tau / sum_j tau_j                      normalised to sum 1
    pretrain weights  = softmax((1 / tau) / T_pt)  favour what domains share
    finetune weights  = softmax(tau / T_ft)        favour what is unique

A domain far from the others in embedding space has a large leverage score: it is hard
to reconstruct from the rest. Pure numpy, no Dagster: callable from a notebook.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Ridge = Literal["absolute", "relative"]
RIDGES: tuple[str, ...] = ("absolute", "relative")


def linear_kernel(means: np.ndarray) -> np.ndarray:
    """K = E E^T for domain mean embeddings E (k x d)."""
    e = np.asarray(means, dtype=np.float64)
    return e @ e.T


def center_kernel(kernel: np.ndarray) -> np.ndarray:
    """K_c = H K H with H = I - 1 1^T / k (the kernel of the mean-centred embeddings)."""
    k = kernel.shape[0]
    h = np.eye(k) - np.full((k, k), 1.0 / k)
    return h @ kernel @ h


def krls(kernel_c: np.ndarray, lam: float) -> np.ndarray:
    """Raw kernel ridge leverage scores tau_i = [K_c (K_c + lam * k * I)^-1]_ii.

    K_c and (K_c + lam k I)^-1 commute (both are functions of K_c), so the diagonal of
    solve(K_c + lam k I, K_c) is the same and avoids forming an explicit inverse.
    """
    if lam <= 0:
        raise ValueError(f"lam must be positive, got {lam}")
    k = kernel_c.shape[0]
    return np.diag(np.linalg.solve(kernel_c + lam * k * np.eye(k), kernel_c)).copy()


def effective_lambda(kernel_c: np.ndarray, lam: float, ridge: Ridge = "absolute") -> float:
    """The lambda that enters tau_i = [K_c (K_c + lambda * k * I)^-1]_ii.

    absolute (the paper's): lambda = lam.
    relative (scale-free):  lambda = lam * trace(K_c) / k, so the ridge lambda * k = lam * trace(K_c).

    trace(K_c) / k is the mean eigenvalue of K_c (the mean squared distance of the domain
    means from their centroid). Multiplying every embedding by c multiplies K_c and its
    trace by c^2, so with the relative ridge the scores, and the weights, do not change;
    with the absolute one lam's effect depends on the proxy's embedding scale. A zero
    K_c (one domain, or identical means) has no scale: lam is used as is (every score is 0).
    """
    if ridge == "absolute":
        return float(lam)
    if ridge != "relative":
        raise ValueError(f"ridge must be one of {RIDGES}, got {ridge!r}")
    k = kernel_c.shape[0]
    trace = float(np.trace(kernel_c))
    return float(lam) * trace / k if trace > 0 else float(lam)


def softmax(x: np.ndarray) -> np.ndarray:
    """softmax(x)_i = exp(x_i) / sum_j exp(x_j); +inf entries share all the mass equally."""
    x = np.asarray(x, dtype=np.float64)
    inf = np.isposinf(x)
    if inf.any():
        return inf / inf.sum()
    z = np.exp(x - x.max())
    return z / z.sum()


def pretrain_weights(tau: np.ndarray, temperature: float) -> np.ndarray:
    """softmax((1 / tau) / T_pt); a zero score (a domain at the centroid) gets +inf logit."""
    with np.errstate(divide="ignore"):
        inv = np.where(tau > 0, 1.0 / np.maximum(tau, np.finfo(float).tiny), np.inf)
    return softmax(inv / temperature)


def finetune_weights(tau: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(tau / T_ft)."""
    return softmax(np.asarray(tau, dtype=np.float64) / temperature)


@dataclass
class ChameleonWeights:
    """Everything derived from one set of domain means (inspectable, JSON-friendly)."""

    domains: list[str]
    kernel: np.ndarray
    kernel_centered: np.ndarray
    krls_raw: np.ndarray
    krls: np.ndarray
    pretrain: np.ndarray
    finetune: np.ndarray
    notes: list[str] = field(default_factory=list)
    lam_effective: float = float("nan")  # the lambda in K_c + lambda k I (see effective_lambda)


def chameleon_weights(
    domains: list[str],
    kernel: np.ndarray,
    lam: float = 10.0,
    t_pretrain: float = 5.0,
    t_finetune: float = 0.2,
    ridge: Ridge = "absolute",
) -> ChameleonWeights:
    """The full CHAMELEON computation from the (uncentred) domain kernel K = E E^T (k x k).

    ``chameleon_weights(domains, linear_kernel(means))`` for mean embeddings ``means``.
    ``ridge``: "absolute" uses lam as given (the paper), "relative" uses
    lam * trace(K_c) / k (``effective_lambda``), which makes the weights scale-free.
    Degenerate inputs get weights with an explanatory note instead of a crash: one
    domain gets weight 1, and domains whose centred embeddings are all zero (identical
    means) get uniform weights.
    """
    kern = np.asarray(kernel, dtype=np.float64)
    if kern.shape != (len(domains), len(domains)):
        raise ValueError(f"kernel must be (k x k) with k = {len(domains)} domains, got {kern.shape}")
    if not np.isfinite(kern).all():
        raise ValueError("domain kernel contains NaN or inf (check the domain embeddings)")
    k = len(domains)
    kern_c = center_kernel(kern)
    lam_eff = effective_lambda(kern_c, lam, ridge)
    raw = krls(kern_c, lam_eff)
    notes: list[str] = []
    if k == 1:
        notes.append(f"only one domain ('{domains[0]}'): every mixture puts weight 1 on it")
        tau = np.ones(1)
        return ChameleonWeights(domains, kern, kern_c, raw, tau, np.ones(1), np.ones(1), notes, lam_eff)
    total = raw.sum()
    if total <= 1e-12 * max(1.0, np.abs(kern).max()):
        notes.append("all domain mean embeddings coincide: leverage scores are zero, weights are uniform")
        uni = np.full(k, 1.0 / k)
        return ChameleonWeights(domains, kern, kern_c, raw, uni, uni.copy(), uni.copy(), notes, lam_eff)
    tau = raw / total
    return ChameleonWeights(domains, kern, kern_c, raw, tau, pretrain_weights(tau, t_pretrain),
                            finetune_weights(tau, t_finetune), notes, lam_eff)
