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

The method ``olmix`` is registered here. In the asset graph it trains nothing of its own:
``olmix_weights`` fits the law to the ``regmix_run`` partitions (RegMix's swarm, settings
``methods.regmix``) with ``fit_and_propose``, and ``olmix_reuse_weights`` runs ``reuse``'s
steps over a reduced swarm of its own (``olmix_reuse_run``: ``plan_reuse``,
``reduced_mixture``, ``fit_reuse``). Called on its own (``core.methods.run``), ``compute``
trains its swarm first, from the same Dirichlet as RegMix's, with models of the given
``ProxyRecipe``.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from chameleon_assets.core import baselines
from chameleon_assets.core.cost import Cost
from chameleon_assets.core.methods import DomainSet, MethodResult, ProxyRecipe, out_of_fold_predictions, register
from chameleon_assets.core.schema import InvalidSetting, NonNegativeFloat, PositiveFloat, PositiveInt, settings

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


@dataclass
class ReusePlan:
    """What reuse keeps and what it searches: the domains ``names`` (now), the ``affected``
    (added or edited), the ``unaffected`` with their ``frozen`` ratios."""

    names: list[str]
    affected: list[str]
    unaffected: list[str]
    frozen: np.ndarray

    @property
    def reduced_names(self) -> list[str]:
        """The reduced space's coordinates: the unaffected domains as one, then the affected."""
        return ["<unaffected>", *self.affected]

    def expand(self, reduced: np.ndarray) -> np.ndarray:
        """The full mixture of reduced coordinates (``expand``)."""
        return expand(np.asarray(reduced, dtype=np.float64), self.frozen, self.unaffected, self.affected, self.names)

    def reduce(self, mixture: np.ndarray) -> np.ndarray:
        """The reduced coordinates of a full mixture: (sum_U w_j, w_a for a in A)."""
        by_name = dict(zip(self.names, np.asarray(mixture, dtype=np.float64)))
        return np.array([sum(by_name[d] for d in self.unaffected), *(by_name[d] for d in self.affected)])


def plan_reuse(previous: dict[str, float], names: Sequence[str], affected: Sequence[str]) -> ReusePlan:
    """Split ``names`` into the ``affected`` and the unaffected U, whose ratios are frozen at
    the previous proposal's (``frozen_ratios``); a ValueError naming an affected domain that
    is not among ``names``, or when every domain is affected (nothing to reuse)."""
    names, affected = list(names), list(affected)
    unknown = [d for d in affected if d not in names]
    if unknown:
        raise ValueError(f"olmix_reuse: affected domain {unknown[0]} is not among the domains {', '.join(names)}")
    unaffected = [d for d in names if d not in affected]
    if not unaffected:
        raise ValueError("olmix_reuse: every domain is affected; recompute the full olmix mixture instead")
    return ReusePlan(names, affected, unaffected, frozen_ratios(previous, unaffected))


def reduced_mixture(coordinates: int, run: int, seed: int) -> np.ndarray:
    """Reduced run ``run``'s mixture: r ~ Dirichlet(1, ..., 1) over the ``coordinates``
    (uniform on their simplex), from a generator seeded by (``seed``, 2, ``run``) alone, so a
    run's mixture depends on no other run (resumable, one partition per run)."""
    return np.random.default_rng([seed, 2, run]).dirichlet(np.ones(coordinates))


def reuse_caps_and_prior(plan: ReusePlan, train_tokens: np.ndarray, budget_tokens: float | None,
                         max_repetition: float) -> tuple[np.ndarray, np.ndarray | None]:
    """The reduced problem's prior q = (sum_U n_j, n_A) / sum n and repetition caps
    (U's: min(1, sum_U u_j); ``repetition_caps``; None without a budget)."""
    n = np.asarray(train_tokens, dtype=np.float64)
    index = {d: i for i, d in enumerate(plan.names)}
    n_reduced = np.array([sum(n[index[d]] for d in plan.unaffected), *(n[index[d]] for d in plan.affected)])
    if budget_tokens is None:
        return n_reduced / n_reduced.sum(), None
    full = repetition_caps(n, budget_tokens, max_repetition)
    caps = np.array([min(1.0, sum(full[index[d]] for d in plan.unaffected)), *(full[index[d]] for d in plan.affected)])
    return n_reduced / n_reduced.sum(), caps


def fit_reuse(plan: ReusePlan, reduced: np.ndarray, losses: np.ndarray, train_tokens: np.ndarray, lam: float,
              budget_tokens: float | None, max_repetition: float, seed: int = 0,
              delta: float = 0.01) -> tuple[np.ndarray, LogLinearLaw]:
    """The log-linear law fitted on the reduced swarm (``reduced``: (n, |A| + 1) coordinates,
    ``losses``: (n, m)) and ``propose`` over the reduced coordinates with
    ``reuse_caps_and_prior``; returns the expanded full mixture and the law."""
    if len(reduced) < len(plan.reduced_names) + 2:
        raise ValueError(f"olmix_reuse: {len(reduced)} runs, but a law over {len(plan.reduced_names)} coordinates "
                         f"needs runs >= {len(plan.reduced_names) + 2}: raise methods.olmix.reuse_runs")
    law = fit_law(reduced, losses, delta, seed)
    prior, caps = reuse_caps_and_prior(plan, train_tokens, budget_tokens, max_repetition)
    return plan.expand(propose(law, prior, lam, caps)), law


def reuse(previous: dict[str, float], names: list[str], affected: list[str], train_tokens: np.ndarray,
          run: Callable[[np.ndarray], np.ndarray], runs: int, lam: float, budget_tokens: float,
          max_repetition: float, seed: int = 0, delta: float = 0.01) -> Reuse:
    """Olmix's mixture reuse. The domains ``names`` (now) are split into the affected A
    (added or edited) and the unaffected U (kept, unchanged). U's ratios are frozen at the
    previous proposal's (``frozen_ratios``) and U becomes one virtual domain, so the
    problem has |A| + 1 coordinates (s, a): ``runs`` swarm runs on Dirichlet(1) draws over
    them (``reduced_mixture``, expanded by ``expand`` and scored by ``run``, a full mixture
    -> its per-domain losses), the log-linear law fitted on the reduced coordinates, and
    ``propose`` over them with the prior q = (sum_U n, n_A) / sum n and the repetition caps
    (U's the sum of its domains'). With no affected domain (only removals) the previous
    ratios over the remaining domains are the answer and no run is trained."""
    plan = plan_reuse(previous, names, affected)
    frozen = dict(zip(plan.unaffected, plan.frozen.tolist()))
    if not plan.affected:
        return Reuse(plan.expand(np.array([1.0])), 0, frozen, plan.reduced_names)
    if runs < len(plan.reduced_names) + 2:
        raise ValueError(f"olmix_reuse: runs = {runs}, but a law over {len(plan.reduced_names)} coordinates needs "
                         f"runs >= {len(plan.reduced_names) + 2}")
    R = np.stack([reduced_mixture(len(plan.reduced_names), r, seed) for r in range(runs)])
    Y = np.stack([np.asarray(run(plan.expand(r)), dtype=np.float64) for r in R])
    weights, _ = fit_reuse(plan, R, Y, train_tokens, lam, budget_tokens, max_repetition, seed, delta)
    return Reuse(weights, runs, frozen, plan.reduced_names)


# --- The registered method ---------------------------------------------------------------------


def held_out_runs_needed(k: int, folds: int | None) -> int:
    """The fewest runs n for which the law over k weights (k + 1 parameters per evaluation
    domain) is determined on the whole swarm (n >= k + 2) and on every fold's complement
    (n - ceil(n / folds) >= k + 2; leave-one-out when ``folds`` is None: n - 1 >= k + 2)."""
    n = k + 2
    while n - (1 if folds is None else -(-n // folds)) < k + 2:
        n += 1
    return n


def fit_and_propose(mixtures: np.ndarray, losses: np.ndarray, names: Sequence[str], train_tokens: np.ndarray,
                    params, swarm_cost: Cost, seed: int, what: str = "olmix") -> MethodResult:  # noqa: ANN001
    """Olmix on a swarm: ``fit_law`` to the runs' (mixture, per-domain loss) pairs, its
    ``held_out_quality`` (leave-one-out unless ``params.folds``), and ``propose`` with
    lam = ``params.lam``, the natural distribution q as prior and the repetition caps
    u_j = min(1, rho n_j / B) (rho = ``params.max_repetition``, B = ``params.budget_tokens``;
    no cap when B is None). The cost is ``swarm_cost`` plus the fit's wall time (its FLOPs,
    a few thousand evaluations of an (n x k) law, are negligible beside one run's)."""
    R = np.asarray(mixtures, dtype=np.float64)
    Y = np.asarray(losses, dtype=np.float64)
    names = list(names)
    n, k = R.shape
    need = held_out_runs_needed(k, params.folds)
    if n < need:
        raise ValueError(f"{what}: {n} swarm runs, but the law over {k} domains and its held-out check need "
                         f"runs >= {need}: raise methods.regmix.runs (or lower methods.olmix.folds)")
    t0 = time.perf_counter()
    law = fit_law(R, Y, params.delta, seed)
    quality = held_out_quality(R, Y, n if params.folds is None else params.folds, params.delta, seed)
    caps = None if params.budget_tokens is None else repetition_caps(train_tokens, params.budget_tokens,
                                                                       params.max_repetition)
    weights = propose(law, baselines.natural(train_tokens), params.lam, caps)
    cost = swarm_cost + Cost.of(f"{what}_fit", 0.0, time.perf_counter() - t0, 0)
    observed = Y.mean(axis=1)
    best = int(np.argmin(observed))
    notes = []
    if not (quality["rank_correlation"] or 0) > 0:
        notes.append(f"the law's held-out rank correlation is {quality['rank_correlation']}: it does not rank the "
                     "swarm's runs better than chance, so its proposal is not supported by the swarm")
    if caps is None:
        notes.append("no token budget given: no repetition cap")
    details = {"runs": n, "held_out_mae": quality["mae"], "rank_correlation": quality["rank_correlation"],
               "folds": params.folds or n, "lam": params.lam, "max_repetition": params.max_repetition,
               "budget_tokens": params.budget_tokens,
               "caps": None if caps is None else {d: float(u) for d, u in zip(names, caps)},
               "predicted_mean_loss": law.mean_loss(weights),
               "best_run": {"index": best, "mean_loss": float(observed[best])},
               "law": {"c": law.c.tolist(), "k": law.k.tolist(), "t": law.t.tolist()}}
    return MethodResult(weights, cost, trajectory=None, details=details, notes=notes)


def reuse_result(plan: ReusePlan, reduced: np.ndarray, losses: np.ndarray, train_tokens: np.ndarray, params,  # noqa: ANN001
                 swarm_cost: Cost, seed: int, removed: Sequence[str] = ()) -> MethodResult:
    """``olmix_reuse``'s mixture from its reduced swarm (``reduced``: (n, |A| + 1), ``losses``:
    (n, m); none when no domain is affected): ``fit_reuse`` with ``params``' lam, delta,
    repetition limit and budget, its ``held_out_quality`` on the reduced coordinates where
    the runs allow it, and the frozen ratios, affected and ``removed`` domains in the details.
    The cost is the reduced swarm's plus the fit's wall time."""
    t0 = time.perf_counter()
    details: dict = {"affected": list(plan.affected), "removed": list(removed),
                     "frozen": dict(zip(plan.unaffected, plan.frozen.tolist())), "runs": len(reduced),
                     "held_out_mae": None, "rank_correlation": None}
    notes = []
    if not plan.affected:
        weights = plan.expand(np.array([1.0]))
        notes.append("no domain added or edited: the previous proposal's ratios over the remaining domains, no run")
    else:
        R = np.asarray(reduced, dtype=np.float64)
        Y = np.asarray(losses, dtype=np.float64)
        weights, law = fit_reuse(plan, R, Y, train_tokens, params.lam, params.budget_tokens, params.max_repetition,
                                 seed, params.delta)
        if len(R) >= held_out_runs_needed(R.shape[1], params.folds):
            quality = held_out_quality(R, Y, len(R) if params.folds is None else params.folds, params.delta, seed)
            details.update(held_out_mae=quality["mae"], rank_correlation=quality["rank_correlation"])
        else:
            notes.append(f"{len(R)} runs are too few for the held-out check over {R.shape[1]} coordinates")
        details.update(predicted_mean_loss=law.mean_loss(plan.reduce(weights)),
                       reduced={n: float(v) for n, v in zip(plan.reduced_names, plan.reduce(weights))})
    cost = swarm_cost + Cost.of("olmix_reuse_fit", 0.0, time.perf_counter() - t0, 0)
    return MethodResult(weights, cost, trajectory=None, details=details, notes=notes)


@register
class Olmix:
    """Olmix: a log-linear law L_i(r) = c_i + k_i exp(t_i . r) per domain, fitted to RegMix's
    swarm runs, and the mixture minimising the mean predicted loss plus a KL pull towards
    the natural distribution, each domain repeated at most ``max_repetition`` times."""

    name = "olmix"
    needs = frozenset({"tokens", "corpora", "proxy"})
    proxy_recipe = False  # in the graph it fits RegMix's swarm; its section holds only the fit's settings
    swarm = "regmix"  # whose swarm runs (partitions ``<swarm>_run``) its fit reads
    also_serves = ("olmix_reuse",)  # the reuse mixture: its own reduced swarm and fit (module docstring)

    @settings
    class Params:
        """The fit: ``delta`` the Huber threshold, ``folds`` of the held-out check (None:
        leave one out). The proposal: ``lam`` the KL weight, ``max_repetition`` rho the
        epochs any domain may be repeated over ``budget_tokens`` B (None: the base models'
        budget in the graph, no cap in ``compute``). ``runs``: the first runs of the swarm
        the fit reads (None: all of ``methods.regmix.runs``; in ``compute``, how many it
        trains, None: ``held_out_runs_needed``). ``reuse_runs``: the reduced swarm of
        ``olmix_reuse`` (at least the affected domains + 3)."""

        lam: NonNegativeFloat = 0.05
        max_repetition: PositiveFloat = 4.0
        delta: PositiveFloat = 0.01
        folds: PositiveInt | None = None
        budget_tokens: PositiveInt | None = None
        runs: PositiveInt | None = None
        reuse_runs: PositiveInt = 8

        def check(self) -> None:
            if self.folds is not None and self.folds < 2:
                raise InvalidSetting("folds", "must be at least 2 (or null: leave one out)", self.folds)

    def compute(self, domains: DomainSet, params: Params, proxy: ProxyRecipe | None = None) -> MethodResult:
        from chameleon_assets.core.methods import regmix

        empty = [d for d, n in zip(domains.names, domains.train_tokens) if n <= 0]
        if empty:
            raise ValueError(f"olmix: domain(s) {', '.join(empty)} have no training tokens")
        runs = params.runs or held_out_runs_needed(domains.k, params.folds)
        prior = baselines.natural(domains.train_tokens)
        swarm = regmix.RegMix.Params(runs=runs, model=proxy.model, train=proxy.train)
        done = [regmix.train_run(domains, regmix.swarm_mixture(prior, r, proxy.seed, swarm), proxy, swarm, r)
                for r in range(runs)]
        return fit_and_propose(np.array([r.mixture for r in done]),
                               np.array([[r.val_nll[d] for d in domains.names] for r in done]), domains.names,
                               domains.train_tokens, params, sum((r.cost for r in done), Cost()), proxy.seed)
