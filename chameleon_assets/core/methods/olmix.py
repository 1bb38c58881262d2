"""Olmix (AllenAI, 2025): a log-linear mixing law per evaluation domain and its proposer.

The swarm is RegMix's (``regmix.SwarmRun``: one small model per mixture r, scored on
every domain's held-out windows), so the same runs serve both regressions. For each
evaluation domain i, Olmix fits the log-linear law

    L_i(r) = c_i + k_i exp(sum_j t_ij r_j)                        (k_i > 0)

with a robust (Huber) loss, and proposes the mixture

    r* = argmin_r  (1 / m) sum_i L_i(r) + lam KL(r || q)
         subject to  r in the simplex,  r_j B <= rho n_j

where q is the prior (the natural distribution by default), B the base model's training
tokens, n_j domain j's tokens and rho the repetition limit (epochs over a domain). With
k_i > 0 every L_i is convex in r and so is the KL term: the problem is convex, and
``propose`` solves it exactly (SLSQP on the analytic gradient, from the prior and from
each feasible corner's neighbourhood, keeping the best).

Gauge: the weights sum to 1, so t_i and t_i + a 1 give the same law once k_i is
multiplied by exp(-a); ``fit_law`` fixes sum_j t_ij = 0, which makes the parameters
identifiable. Fit quality is reported out of sample: each domain's law is refitted
without a fold of runs and scored on it (``held_out_quality``).

Mixture reuse (``reuse``): after domains are added, edited or removed, the previous
proposal's ratios among the unaffected domains are frozen, those domains act as one
virtual domain, and a swarm over the |affected| + 1 remaining coordinates (far smaller
than a full one) is fitted and optimised; removing a domain trains nothing.

This module holds the law, its held-out check, the proposer and reuse (functions callable
from a notebook; no method is registered yet): the ``olmix`` mixture over the
``regmix_run`` partitions and the ``olmix_reuse`` mixture are to be registered on them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np

from chameleon_assets.core.methods import out_of_fold_predictions

# Restarts of the law's fit: the exponent's scale is unknown, so the fit starts from
# several (t = 0 and random directions of these norms) and keeps the lowest robust loss.
_START_SCALES = (0.0, 1.0, 3.0, 6.0)


@dataclass
class LogLinearLaw:
    """L_i(r) = c_i + k_i exp(sum_j t_ij r_j) for m evaluation domains over k mixture weights."""

    c: np.ndarray  # (m,)
    k: np.ndarray  # (m,), positive
    t: np.ndarray  # (m, k), rows summing to 0

    def predict(self, mixtures: np.ndarray) -> np.ndarray:
        """L(R) = c + k exp(R t^T): (n, m) predicted losses for (n, k) mixtures ((m,) for one (k,) mixture)."""
        R = np.asarray(mixtures, dtype=np.float64)
        return self.c + self.k * np.exp(R @ self.t.T)

    def mean_loss(self, r: np.ndarray) -> float:
        """(1 / m) sum_i L_i(r)."""
        return float(np.mean(self.predict(r)))


def _fit_one(R: np.ndarray, y: np.ndarray, delta: float, rng: np.random.Generator) -> tuple[float, float, np.ndarray]:
    """(c, k, t) minimising sum_r huber_delta(c + k exp(t . R_r) - y_r), t with sum_j t_j = 0."""
    from scipy.optimize import least_squares

    n, kdim = R.shape
    basis = np.eye(kdim)[:, :-1] - np.eye(kdim)[:, -1:]  # t = basis u: sum_j t_j = 0 for any u

    def residual(x: np.ndarray) -> np.ndarray:
        c, log_k, u = x[0], x[1], x[2:]
        return c + np.exp(log_k + R @ (basis @ u)) - y

    best = None
    for scale in _START_SCALES:
        for _ in range(1 if scale == 0 else 3):
            u0 = rng.normal(size=kdim - 1) * scale / np.sqrt(kdim)
            e = np.exp(R @ (basis @ u0))
            # c and k from least squares at this exponent, k kept positive.
            A = np.stack([np.ones(n), e], axis=1)
            (c0, k0), *_ = np.linalg.lstsq(A, y, rcond=None)
            k0 = max(k0, 1e-3 * (np.std(y) + 1e-12))
            x0 = np.concatenate([[c0, np.log(k0)], u0])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fit = least_squares(residual, x0, loss="huber", f_scale=delta, method="trf", max_nfev=2000,
                                    x_scale="jac")
            if best is None or fit.cost < best.cost:
                best = fit
    c, log_k, u = best.x[0], best.x[1], best.x[2:]
    return float(c), float(np.exp(log_k)), basis @ u


def fit_law(mixtures: np.ndarray, losses: np.ndarray, delta: float = 0.01, seed: int = 0) -> LogLinearLaw:
    """Fit L_i(r) = c_i + k_i exp(sum_j t_ij r_j) to each evaluation domain's column of
    ``losses`` (n runs x m domains) by minimising sum_runs huber_delta(L_i(r) - y_i), where
    huber_delta(e) = e^2 / 2 for |e| <= delta and delta (|e| - delta / 2) beyond (robust to a
    diverged run), with k_i > 0 and sum_j t_ij = 0 (the gauge, module docstring)."""
    R = np.asarray(mixtures, dtype=np.float64)
    Y = np.asarray(losses, dtype=np.float64)
    if Y.ndim == 1:
        Y = Y[:, None]
    if R.ndim != 2 or Y.shape[0] != R.shape[0]:
        raise ValueError(f"olmix law needs an (n, k) array of mixtures and (n, m) losses, got {R.shape} and {Y.shape}")
    if R.shape[0] < R.shape[1] + 2:
        raise ValueError(f"olmix law over {R.shape[1]} domains has {R.shape[1] + 1} parameters per evaluation domain "
                         f"and needs runs >= {R.shape[1] + 2}, got {R.shape[0]}")
    if not (np.isfinite(R).all() and np.isfinite(Y).all()):
        raise ValueError("olmix law: the swarm's mixtures and losses must be finite")
    if not delta > 0:
        raise ValueError(f"olmix law: delta (the Huber threshold) must be positive, got {delta}")
    rng = np.random.default_rng(seed)
    fits = [_fit_one(R, Y[:, i], delta, rng) for i in range(Y.shape[1])]
    return LogLinearLaw(np.array([f[0] for f in fits]), np.array([f[1] for f in fits]),
                        np.stack([f[2] for f in fits]))


def held_out_quality(mixtures: np.ndarray, losses: np.ndarray, folds: int = 5, delta: float = 0.01,
                     seed: int = 0) -> dict[str, float | None]:
    """Out-of-fold fit quality: each run's losses are predicted by the laws fitted to the
    runs outside its fold (fold = run mod ``folds``). Returns the mean absolute error over
    runs and domains, and Spearman's rho between observed and predicted mean loss
    (1 / m) sum_i L_i(r) (None where the ranks are undefined)."""
    from scipy.stats import spearmanr

    R = np.asarray(mixtures, dtype=np.float64)
    Y = np.asarray(losses, dtype=np.float64)
    Y = Y[:, None] if Y.ndim == 1 else Y
    n = len(R)
    if not 2 <= folds <= n:
        raise ValueError(f"olmix held-out quality needs 2 <= folds <= runs ({n}), got {folds}")
    predicted = out_of_fold_predictions(R, Y, folds, lambda a, b: fit_law(a, b, delta, seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rho = float(spearmanr(predicted.mean(axis=1), Y.mean(axis=1)).statistic)
    return {"mae": float(np.abs(predicted - Y).mean()), "rank_correlation": rho if np.isfinite(rho) else None}


def repetition_caps(train_tokens: np.ndarray, budget_tokens: float, max_repetition: float) -> np.ndarray:
    """u_j = min(1, rho n_j / B): the largest share of a B-token budget that repeats domain j
    (n_j tokens) at most rho times."""
    n = np.asarray(train_tokens, dtype=np.float64)
    if not (budget_tokens > 0 and max_repetition > 0):
        raise ValueError(f"olmix: budget_tokens ({budget_tokens}) and max_repetition ({max_repetition}) must be "
                         "positive")
    caps = np.minimum(1.0, max_repetition * n / budget_tokens)
    if caps.sum() < 1 - 1e-12:
        raise ValueError(f"olmix: the domains hold {n.sum():.0f} tokens, so a {budget_tokens:.0f}-token budget repeats "
                         f"them more than max_repetition = {max_repetition} times; raise max_repetition")
    return caps


def propose(law: LogLinearLaw, prior: np.ndarray, lam: float, caps: np.ndarray | None = None,
            fixed: dict[int, float] | None = None) -> np.ndarray:
    """r* = argmin_r (1 / m) sum_i L_i(r) + lam sum_j r_j log(r_j / q_j) over the simplex with
    0 <= r_j <= u_j (``caps``) and r_j = f_j for the ``fixed`` indices (the frozen ratios of
    mixture reuse). Convex for k_i > 0: SLSQP with the analytic gradient
    (1 / m) sum_i k_i exp(t_i . r) t_i + lam (log(r / q) + 1), started from several feasible
    points, the best kept."""
    from scipy.optimize import minimize

    q = np.asarray(prior, dtype=np.float64)
    q = q / q.sum()
    kdim = len(q)
    if law.t.shape[1] != kdim:
        raise ValueError(f"olmix: a law over {law.t.shape[1]} domains and a prior over {kdim}")
    if lam < 0:
        raise ValueError(f"olmix: lam (the KL weight) must be >= 0, got {lam}")
    u = np.ones(kdim) if caps is None else np.asarray(caps, dtype=np.float64)
    fixed = dict(fixed or {})
    lo = np.full(kdim, 1e-12)
    hi = u.copy()
    for j, v in fixed.items():
        lo[j] = hi[j] = v
    if lo.sum() > 1 + 1e-9 or hi.sum() < 1 - 1e-9:
        raise ValueError("olmix: no mixture satisfies the caps and the frozen ratios")
    m = len(law.c)

    def objective(r: np.ndarray) -> tuple[float, np.ndarray]:
        e = law.k * np.exp(law.t @ r)
        rr = np.maximum(r, 1e-300)
        value = float((law.c + e).mean() + lam * (rr * np.log(rr / q)).sum())
        grad = (e[:, None] * law.t).sum(axis=0) / m + lam * (np.log(rr / q) + 1)
        return value, grad

    def feasible(x: np.ndarray) -> np.ndarray:
        x = np.clip(x, lo, hi)
        for _ in range(100):  # move the excess over the free coordinates, within their bounds
            gap = 1 - x.sum()
            if abs(gap) < 1e-12:
                break
            room = (hi - x) if gap > 0 else (x - lo)
            if room.sum() <= 0:
                break
            x = np.clip(x + gap * room / room.sum(), lo, hi)
        return x

    starts = [feasible(q)] + [feasible(lo + (hi - lo) * (np.arange(kdim) == j)) for j in range(kdim)]
    best, best_value = None, np.inf
    for x0 in starts:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = minimize(objective, x0, jac=True, method="SLSQP", bounds=list(zip(lo, hi)),
                           constraints=[{"type": "eq", "fun": lambda r: r.sum() - 1, "jac": lambda r: np.ones(kdim)}],
                           options={"ftol": 1e-12, "maxiter": 500})
        x = feasible(res.x)
        value = objective(x)[0]
        if value < best_value:
            best, best_value = x, value
    best = np.where(best <= 1e-12, 0.0, best)
    return best / best.sum()


@dataclass
class Reuse:
    """Mixture reuse after domains change: the new mixture, the runs it took and what it kept."""

    weights: np.ndarray  # (k,) over the new domains
    runs: int  # swarm runs trained (0 when only domains were removed)
    frozen: dict[str, float]  # the previous proposal's ratios among the unaffected domains (summing to 1)
    reduced: list[str]  # the reduced space's coordinates: "<unaffected>" then the affected domains


def frozen_ratios(previous: dict[str, float], unaffected: list[str]) -> np.ndarray:
    """f_j = w_j / sum_{l in U} w_l for j in U: the previous proposal renormalised over the
    unaffected domains U (a ValueError naming one that the previous proposal lacks)."""
    missing = [d for d in unaffected if d not in previous]
    if missing:
        raise ValueError(f"olmix_reuse: domain {missing[0]} is unaffected but has no weight in the previous proposal")
    w = np.array([float(previous[d]) for d in unaffected])
    if not w.sum() > 0:
        raise ValueError("olmix_reuse: the previous proposal gives the unaffected domains no weight")
    return w / w.sum()


def expand(reduced: np.ndarray, frozen: np.ndarray, unaffected: list[str], affected: list[str],
           names: list[str]) -> np.ndarray:
    """The full mixture of a reduced one (s, a_1 .. a_A): w_j = s f_j on the unaffected
    domains (frozen ratios f), w_a = a_a on the affected ones, in the order of ``names``."""
    out = dict(zip(unaffected, reduced[0] * frozen))
    out.update(zip(affected, reduced[1:]))
    return np.array([out[d] for d in names])


def reuse(previous: dict[str, float], names: list[str], affected: list[str], train_tokens: np.ndarray,
          run: Callable[[np.ndarray], np.ndarray], runs: int, lam: float, budget_tokens: float,
          max_repetition: float, seed: int = 0, delta: float = 0.01) -> Reuse:
    """Olmix's mixture reuse. The domains ``names`` (now) are split into the affected A
    (added or edited) and the unaffected U (kept, unchanged). U's ratios are frozen at the
    previous proposal's (``frozen_ratios``) and U becomes one virtual domain, so the
    problem has |A| + 1 coordinates (s, a): ``runs`` swarm runs on Dirichlet(1) draws over
    them (expanded by ``expand`` and scored by ``run``, a full mixture -> its per-domain
    losses), the log-linear law fitted on the reduced coordinates, and ``propose`` over
    them with the prior q = (sum_U n, n_A) / sum n and the repetition caps (U's the sum of
    its domains'). With no affected domain (only removals) the previous ratios over the
    remaining domains are the answer and no run is trained."""
    names = list(names)
    unknown = [d for d in affected if d not in names]
    if unknown:
        raise ValueError(f"olmix_reuse: affected domain {unknown[0]} is not among the domains {', '.join(names)}")
    unaffected = [d for d in names if d not in affected]
    if not unaffected:
        raise ValueError("olmix_reuse: every domain is affected; recompute the full olmix mixture instead")
    frozen = frozen_ratios(previous, unaffected)
    reduced_names = ["<unaffected>", *affected]
    if not affected:
        return Reuse(expand(np.array([1.0]), frozen, unaffected, [], names), 0,
                     dict(zip(unaffected, frozen.tolist())), reduced_names)
    n = np.asarray(train_tokens, dtype=np.float64)
    index = {d: i for i, d in enumerate(names)}
    n_reduced = np.array([sum(n[index[d]] for d in unaffected), *(n[index[d]] for d in affected)])
    caps_full = repetition_caps(n, budget_tokens, max_repetition)
    caps = np.array([min(1.0, sum(caps_full[index[d]] for d in unaffected)), *(caps_full[index[d]] for d in affected)])
    if runs < len(reduced_names) + 2:
        raise ValueError(f"olmix_reuse: runs = {runs}, but a law over {len(reduced_names)} coordinates needs "
                         f"runs >= {len(reduced_names) + 2}")
    rng = np.random.default_rng([seed, 2])
    R = rng.dirichlet(np.ones(len(reduced_names)), size=runs)
    Y = np.stack([np.asarray(run(expand(r, frozen, unaffected, affected, names)), dtype=np.float64) for r in R])
    law = fit_law(R, Y, delta, seed)
    reduced = propose(law, n_reduced / n_reduced.sum(), lam, caps)
    return Reuse(expand(reduced, frozen, unaffected, affected, names), runs, dict(zip(unaffected, frozen.tolist())),
                 reduced_names)
