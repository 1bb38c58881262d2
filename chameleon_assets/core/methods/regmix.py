"""RegMix (Liu et al., 2024): data mixture as regression.

A swarm of small models, each trained on a mixture w^(r) drawn at random around the
natural distribution p and scored on every domain's held-out windows, gives pairs
(w^(r), y^(r)) with y the target loss (the mean over domains of the per-token
validation NLL, or one named domain's). A regression fitted to them predicts the target
of any mixture; the proposal is the mean of the ``top_k`` mixtures with the lowest
predicted target among ``candidates`` fresh draws from the same distribution.

The swarm distribution follows the authors' ``mixture_config/synthesize_mixture.py``:

    centre   c   = p^a / sum_j p_j^a                       a = ``prior_power`` (their TEMP, 0.5)
    strength s   ~ uniform over ``concentration_levels`` values log-spaced in
                   [``min_concentration``, ``max_concentration``]   (their 15 in [0.1, 5])
    mixture  w   ~ Dirichlet(s c)
    w_i < ``min_weight`` (except the largest) set to 0, then w renormalised   (their MINIMUM)
    kept only if w_i <= min(``max_usage`` p_i, 1) for every i, else drawn again (their MAXIMUM_USAGE)

s is the Dirichlet's total concentration sum_i alpha_i: small s gives sparse mixtures
near a corner of the simplex (one or two domains dominate), large s mixtures close to
c; mixing strengths exposes the regression to both. Two departures, both because each
run here is computed on its own (one Dagster partition per run): every run draws from
its own generator seeded by (seed, run), where the authors draw one pool, deduplicate it
and sample it; and the cap is checked after the small weights are zeroed (theirs
before), so it holds for the mixture actually trained. The authors also round weights
to multiples of their minimum, only to write them into config files; not done here.

Regression (``regression``): the authors fit LightGBM, gradient-boosted regression trees
(``fit_lightgbm``: L(w) = sum_t f_t(w), each f_t a tree fitted to the residuals, their
``regression_fitting`` recipe of 1000 rounds at learning rate 0.01); the paper reports
beside it linear regression of the target on the weights (``fit_regression``). Trees
need many runs to split the simplex usefully, so ``"auto"`` (the default) fits LightGBM
when the swarm has at least ``lightgbm_min_runs`` runs (64: the gpu profile's swarm) and
the linear law below that. Whenever LightGBM is fitted the linear law is fitted too, and
both held-out rank correlations are reported. A linear law is minimised at a corner of
the simplex (all weight on the domain with the lowest coefficient), so the proposal
moves towards that domain as far as the candidates (their Dirichlet and the
``max_usage`` cap) reach; averaging the best ``top_k`` only smooths where the predicted
target is flat among them. Trees can place the minimum inside the simplex.

Torch is imported inside functions: ``registered()`` imports this module when the Dagster
code location loads.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Callable, Literal, Sequence

import numpy as np

from chameleon_assets.core import baselines
from chameleon_assets.core.cost import Cost, forward_flops_per_token
from chameleon_assets.core.methods import DomainSet, MethodResult, ProxyRecipe, out_of_fold_predictions, register
from chameleon_assets.core.config import ModelConfig, TrainConfig
from chameleon_assets.core.schema import InvalidSetting, NonEmptyStr, PositiveFloat, PositiveInt, UnitInterval, settings

# The generator streams: (seed, _SWARM, run) for run ``run``'s mixture, (seed, _CANDIDATES)
# for the candidates, so neither depends on the other or on how many runs there are.
_SWARM, _CANDIDATES = 0, 1
# Rounds of redrawing the mixtures the max_usage cap rejects before giving up.
_MAX_ROUNDS = 1000
_MIN_BATCH = 256
# LightGBM's recipe (the RegMix authors' regression_fitting notebook): rounds and step.
_LGBM_ROUNDS, _LGBM_LEARNING_RATE = 1000, 1e-2
# Folds of LightGBM's held-out rank correlation (the linear law's is leave-one-out).
_LGBM_FOLDS = 8


@dataclass
class SwarmRun:
    """One swarm run: its index, the mixture it trained on (in the domain order), the
    held-out per-token NLL of each domain, the target computed from them when the run was
    made, and what training and scoring cost."""

    run: int
    mixture: list[float]
    val_nll: dict[str, float]
    target: float
    cost: Cost = field(default_factory=Cost)


@dataclass
class LinearMixtureLaw:
    """L(w) = sum_i c_i w_i: c_i is the law's target for the pure domain i."""

    coefficients: np.ndarray  # (k,)

    def predict(self, mixtures: np.ndarray) -> np.ndarray:
        """L(W) = W c for an (n, k) array of mixtures (or L(w) for one (k,) mixture)."""
        return np.asarray(mixtures, dtype=np.float64) @ self.coefficients


@dataclass
class GradientBoostedMixtureLaw:
    """L(w) = sum_t f_t(w): LightGBM's boosted regression trees over the k weights."""

    model: Any  # lightgbm.LGBMRegressor, fitted
    trees: int
    num_leaves: int

    def predict(self, mixtures: np.ndarray) -> np.ndarray:
        """L(W) = sum_t f_t(W) for an (n, k) array of mixtures (or L(w) for one (k,) mixture)."""
        W = np.asarray(mixtures, dtype=np.float64)
        out = self.model.predict(np.atleast_2d(W))
        return np.asarray(out, dtype=np.float64) if W.ndim == 2 else np.float64(out[0])

    def comparisons_per_prediction(self) -> float:
        """trees * ceil(log2 num_leaves): the splits a prediction passes, one per level of
        each tree (a balanced tree's depth; the cost's estimate of a prediction)."""
        return float(self.trees * max(1, math.ceil(math.log2(max(self.num_leaves, 2)))))


MixtureLaw = LinearMixtureLaw | GradientBoostedMixtureLaw


def min_runs(k: int) -> int:
    """max(k + 1, 3): k runs determine the k coefficients, one more lets every held-out
    (leave-one-out) fit be determined too, and a rank correlation needs three points."""
    return max(k + 1, 3)


def target_of(val_nll: dict[str, float], target: str) -> float:
    """The swarm's target: mean_d NLL_d over the domains when ``target`` is ``"mean"``,
    else NLL_target of the domain it names (a ValueError naming it when none is)."""
    if target == "mean":
        return float(np.mean([float(v) for v in val_nll.values()]))
    if target not in val_nll:
        raise ValueError(f"regmix target '{target}' is neither 'mean' nor a domain; domains: {', '.join(val_nll)}")
    return float(val_nll[target])


def _dirichlet_mixtures(prior: np.ndarray, n: int, rng: np.random.Generator, params) -> np.ndarray:  # noqa: ANN001
    """``n`` mixtures from the swarm distribution of the module docstring, drawn with ``rng``."""
    p = np.asarray(prior, dtype=np.float64)
    if p.ndim != 1 or not np.isfinite(p).all() or (p <= 0).any():
        raise ValueError(f"regmix needs a prior with a positive weight on every domain, got {p.tolist()}")
    p = p / p.sum()
    centre = p**params.prior_power / (p**params.prior_power).sum()
    cap = np.minimum(params.max_usage * p, 1.0)
    levels = np.geomspace(params.min_concentration, params.max_concentration, params.concentration_levels)
    kept: list[np.ndarray] = []
    have = 0
    for _ in range(_MAX_ROUNDS):
        m = max(n - have, _MIN_BATCH)
        level = rng.integers(len(levels), size=m)
        w = np.empty((m, len(p)))
        for i, s in enumerate(levels):
            rows = level == i
            w[rows] = rng.dirichlet(s * centre, size=int(rows.sum()))
        small = w < params.min_weight
        small[np.arange(m), w.argmax(axis=1)] = False
        w = np.where(small, 0.0, w)
        w /= w.sum(axis=1, keepdims=True)
        ok = w[(w <= cap).all(axis=1)]
        kept.append(ok)
        have += len(ok)
        if have >= n:
            return np.concatenate(kept)[:n]
    raise ValueError(f"regmix: max_usage = {params.max_usage} caps the weights at {cap.round(4).tolist()}, and "
                     f"{_MAX_ROUNDS} rounds of Dirichlet draws found only {have} of {n} mixtures within it; "
                     "raise max_usage")


def swarm_mixture(prior: np.ndarray, run: int, seed: int, params) -> np.ndarray:  # noqa: ANN001 - RegMix.Params
    """Run ``run``'s mixture: one draw of w ~ Dirichlet(s c) (centre c = p^a / sum p^a,
    strength s one of the log-spaced levels; small weights zeroed, the max_usage cap
    enforced by redrawing: the module docstring), from a generator seeded by
    (``seed``, ``run``) alone, so a run's mixture does not depend on the others or on
    their number."""
    return _dirichlet_mixtures(prior, 1, np.random.default_rng([seed, _SWARM, run]), params)[0]


def candidate_mixtures(prior: np.ndarray, params, seed: int) -> np.ndarray:  # noqa: ANN001
    """The ``params.candidates`` mixtures ``propose`` ranks: (candidates, k) draws from the
    swarm's distribution (``swarm_mixture``), from a generator seeded by ``seed`` and a
    stream of their own."""
    return _dirichlet_mixtures(prior, params.candidates, np.random.default_rng([seed, _CANDIDATES]), params)


def train_run(domains: DomainSet, mixture: np.ndarray, proxy: ProxyRecipe, params,  # noqa: ANN001
              run: int) -> SwarmRun:
    """Train a fresh small model (``params.model``, ``params.train``, seed ``proxy.seed + run``)
    on ``mixture`` and score it on ``params.val_windows`` held-out windows of each domain:

        NLL_d = - sum over the windows' predicted tokens of log p(x_t | x_<t) / their number
        cost  = (6 N + 6 L n_ctx d) T_train + (2 N + 2 L n_ctx d) T_scored

    (parts "swarm" and "swarm_eval"); ``target`` is ``target_of(NLL, params.target)``.
    """
    from chameleon_assets.core.evaluate import perplexity, validation_windows
    from chameleon_assets.core.model import count_parameters

    names = list(domains.names)
    w = np.asarray(mixture, dtype=np.float64)
    if w.shape != (len(names),) or (w < 0).any() or abs(w.sum() - 1.0) > 1e-6:
        raise ValueError(f"regmix run {run}: the mixture must be a distribution over the {len(names)} domains, "
                         f"got {w.tolist()}")
    target_of(dict.fromkeys(names, 0.0), params.target)  # an unknown target fails before training
    model, _, cost = proxy.train_on(domains.train, dict(zip(names, w.tolist())), part="swarm",
                                    seed=proxy.seed + run, train_cfg=params.train, model_cfg=params.model)
    cfg = params.model
    device = proxy.torch_device()
    t0 = time.perf_counter()
    val_nll, scored = {}, 0
    for d in names:
        windows = validation_windows(domains.val[d], params.val_windows, cfg.context_length)
        out = perplexity(model, windows, params.train.batch_size, device)
        val_nll[d] = float(out["nll"])
        scored += int(out["tokens"])
    forward = forward_flops_per_token(count_parameters(model), cfg.num_layers, cfg.context_length, cfg.hidden_size)
    cost = cost + Cost.of("swarm_eval", forward * scored, time.perf_counter() - t0, scored)
    return SwarmRun(run, w.tolist(), val_nll, target_of(val_nll, params.target), cost)


def fit_regression(mixtures: np.ndarray, targets: np.ndarray) -> LinearMixtureLaw:
    """Least squares without an intercept: c = argmin_c || W c - y ||^2 (the minimum-norm
    solution when W has rank below k).

    No intercept is needed, nor lost: every row of W sums to 1, so W c + b = W (c + b 1),
    and a law with an intercept is the same law with b added to every coefficient. (A
    column of ones beside W would be collinear with its columns and leave the fit
    undetermined.)
    """
    W = np.asarray(mixtures, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    if W.ndim != 2 or y.shape != (W.shape[0],) or W.shape[0] == 0:
        raise ValueError(f"regmix regression needs an (n, k) array of mixtures and n targets, "
                         f"got {W.shape} and {y.shape}")
    coefficients, *_ = np.linalg.lstsq(W, y, rcond=None)
    return LinearMixtureLaw(coefficients)


def fit_lightgbm(mixtures: np.ndarray, targets: np.ndarray, seed: int = 0) -> GradientBoostedMixtureLaw:
    """Gradient-boosted trees, L(w) = sum_{t=1}^{T} eta f_t(w) with T = 1000 rounds at eta =
    0.01, each f_t a regression tree (at most 31 leaves) fitted to the residuals
    y - sum_{s<t} eta f_s(W) under the squared loss (the RegMix authors' LightGBM recipe).
    A leaf holds at least max(2, min(20, n // 8)) runs: LightGBM's default 20 where the
    swarm is large, fewer for the 64-run swarms here, so that trees can split at all.
    Deterministic (one thread, ``seed``)."""
    import lightgbm

    W = np.asarray(mixtures, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    if W.ndim != 2 or y.shape != (W.shape[0],) or W.shape[0] < 2:
        raise ValueError(f"regmix LightGBM regression needs an (n, k) array of mixtures (n >= 2) and n targets, "
                         f"got {W.shape} and {y.shape}")
    leaves = 31
    model = lightgbm.LGBMRegressor(
        objective="regression", n_estimators=_LGBM_ROUNDS, learning_rate=_LGBM_LEARNING_RATE, num_leaves=leaves,
        min_child_samples=max(2, min(20, len(y) // 8)), min_data_in_bin=1, random_state=seed, n_jobs=1,
        deterministic=True, force_row_wise=True, verbose=-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # feature-name and "no further splits" chatter
        model.fit(W, y)
    return GradientBoostedMixtureLaw(model, int(model.booster_.num_trees()), leaves)


def uses_lightgbm(params, runs: int) -> bool:  # noqa: ANN001 - RegMix.Params
    """Whether the fit is LightGBM: ``regression`` "lightgbm", or "auto" with runs >=
    ``lightgbm_min_runs``; otherwise the linear law."""
    return params.regression == "lightgbm" or (params.regression == "auto" and runs >= params.lightgbm_min_runs)


def held_out_rank_correlation(mixtures: np.ndarray, targets: np.ndarray, folds: int | None = None,
                              fit: Callable[[np.ndarray, np.ndarray], MixtureLaw] = fit_regression) -> float:
    """Spearman's rho between the observed targets and out-of-fold predictions: run r is
    predicted by the law ``fit`` (default the linear one) fitted to the runs outside its
    fold (fold = r mod ``folds``; ``folds`` = None: leave one out). NaN when the ranks are
    undefined (constant targets or predictions).
    """
    from scipy.stats import spearmanr

    W = np.asarray(mixtures, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    n = len(y)
    folds = n if folds is None else folds
    if not 2 <= folds <= n:
        raise ValueError(f"held-out rank correlation needs 2 <= folds <= runs ({n}), got {folds}")
    predicted = out_of_fold_predictions(W, y, folds, fit)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant input: rho is undefined, NaN says so
        return float(spearmanr(predicted, y).statistic)


def propose(law: MixtureLaw, prior: np.ndarray, params, seed: int) -> tuple[np.ndarray, dict]:  # noqa: ANN001
    """The mean of the ``top_k`` candidates (``candidate_mixtures``) with the lowest predicted
    target: w* = (1 / K) sum_{j in top K of argsort L(W_cand)} W_cand[j]. RegMix averages
    the best-predicted mixtures rather than taking the single best, for robustness to the
    regression's error (the authors' notebook: the best 128 of 100,000)."""
    candidates = candidate_mixtures(prior, params, seed)
    predicted = law.predict(candidates)
    best = np.argsort(predicted, kind="stable")[: params.top_k]
    w = candidates[best].mean(axis=0)
    w = w / w.sum()
    return w, {"predicted_target": float(law.predict(w)), "best_candidate_predicted": float(predicted[best[0]]),
               "candidates": len(candidates), "top_k": len(best)}


def fit_and_propose(runs: Sequence[SwarmRun], prior: np.ndarray, params, seed: int,  # noqa: ANN001
                    names: Sequence[str] | None = None) -> MethodResult:
    """Fit the mixture law to the swarm's (mixture, target) pairs and propose its minimiser.

    The law is LightGBM's trees when ``uses_lightgbm(params, runs)`` (then the linear law
    is fitted beside it, for comparison), else the linear law. The targets are recomputed
    from each run's ``val_nll`` with ``params.target`` (the target is a setting of the fit,
    not of the runs). ``names`` (default: the domains of the first run's ``val_nll``, in
    its order) label the coefficients. The cost is the runs' plus the regression's,
    counted as the candidates' predictions (2 k FLOPs each for the linear law; for trees,
    ``comparisons_per_prediction`` each; the fits themselves are smaller).
    ``details["rank_correlation"]`` is the chosen law's ``held_out_rank_correlation``
    (None where it is undefined; leave-one-out for the linear law, 8-fold for trees),
    ``details["rank_correlations"]`` both laws' (LightGBM's None when it was not fitted),
    with a note when the chosen one is not positive; another note says when the proposal
    is a single domain.
    """
    k = len(prior)
    if len(runs) < min_runs(k):
        raise ValueError(f"regmix has {len(runs)} swarm runs; a linear law over {k} domains needs runs >= "
                         f"{min_runs(k)} (k + 1, and at least 3): raise methods.regmix.runs")
    indices = [r.run for r in runs]
    if len(set(indices)) != len(indices):
        raise ValueError(f"regmix swarm runs repeat: {sorted(indices)}")
    names = list(names if names is not None else runs[0].val_nll)
    if len(names) != k:
        raise ValueError(f"regmix: {len(names)} domain names for a prior over {k} domains")
    for r in runs:
        if len(r.mixture) != k or set(r.val_nll) != set(names):
            raise ValueError(f"regmix run {r.run} is over other domains ({len(r.mixture)} weights, "
                             f"{', '.join(r.val_nll)}) than {', '.join(names)}")
    W = np.array([r.mixture for r in runs], dtype=np.float64)
    y = np.array([target_of(r.val_nll, params.target) for r in runs])
    t0 = time.perf_counter()
    linear = fit_regression(W, y)
    rhos: dict[str, float | None] = {"linear": held_out_rank_correlation(W, y), "lightgbm": None}
    law: MixtureLaw = linear
    regression = "linear"
    if uses_lightgbm(params, len(runs)):
        if len(runs) < _LGBM_FOLDS:
            raise ValueError(f"regmix: regression = lightgbm needs runs >= {_LGBM_FOLDS} (its {_LGBM_FOLDS}-fold "
                             f"held-out check), got {len(runs)}")
        law, regression = fit_lightgbm(W, y, seed), "lightgbm"
        rhos["lightgbm"] = held_out_rank_correlation(W, y, _LGBM_FOLDS, fit=lambda a, b: fit_lightgbm(a, b, seed))
    rho = rhos[regression]
    weights, found = propose(law, prior, params, seed)
    per_prediction = 2.0 * k if regression == "linear" else law.comparisons_per_prediction()
    fit_cost = Cost.of("regression", per_prediction * found["candidates"], time.perf_counter() - t0, 0)
    cost = sum((r.cost for r in runs), Cost()) + fit_cost
    best = int(np.argmin(y))
    notes = []
    if not rho > 0:
        notes.append(f"the {regression} law's held-out rank correlation is {rho:.3f}: it does not rank the swarm's "
                     "runs better than chance, so its proposal is not supported by the swarm")
    if weights.max() > 1 - 1e-9 and regression == "linear":
        notes.append(f"the proposal is domain {names[int(weights.argmax())]} alone: a linear law is lowest at a "
                     "corner of the simplex, and every one of the best candidates sits there; methods.regmix.max_usage "
                     "bounds each domain at that many times its natural share")
    rhos = {m: (r if r is not None and np.isfinite(r) else None) for m, r in rhos.items()}
    details = {"rank_correlation": rhos[regression], "regression": regression, "rank_correlations": rhos,
               "coefficients": {d: float(c) for d, c in zip(names, linear.coefficients)}, "runs": len(runs),
               "target": params.target, "predicted_target": found["predicted_target"],
               "best_candidate_predicted": found["best_candidate_predicted"], "candidates": found["candidates"],
               "top_k": found["top_k"], "best_run": {"run": runs[best].run, "target": float(y[best])}}
    return MethodResult(weights, cost, trajectory=None, details=details, notes=notes)


@register
class RegMix:
    """RegMix: a swarm of small models on Dirichlet mixtures around the natural
    distribution, a linear regression from mixture to validation loss, and the mean of the
    best-predicted candidate mixtures."""

    name = "regmix"
    needs = frozenset({"tokens", "corpora", "proxy"})
    proxy_recipe = False  # its Params carry the swarm's small model and budget
    # adding runs or refitting retrains no run
    fit_fields = ("runs", "target", "candidates", "top_k", "regression", "lightgbm_min_runs")

    @settings
    class Params:
        """The swarm: ``runs`` small models (``model``, trained as ``train``), each scored on
        ``val_windows`` held-out windows per domain. The Dirichlet (module docstring, the
        authors' defaults): ``prior_power`` a flattens the natural distribution into the
        centre p^a (1: natural, 0: uniform); the total concentration is drawn from
        ``concentration_levels`` log-spaced values in [``min_concentration``,
        ``max_concentration``] (small: sparse mixtures, large: near the centre); weights
        under ``min_weight`` are zeroed; no weight exceeds ``max_usage`` times the domain's
        natural share. The fit: ``target`` ("mean" over domains or a domain's name), and
        the proposal is the mean of the ``top_k`` best of ``candidates`` draws; ``regression``
        the law ("auto": LightGBM from ``lightgbm_min_runs`` runs on, linear below)."""

        runs: PositiveInt = 16
        model: ModelConfig = field(default_factory=lambda: ModelConfig(
            hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128, context_length=128))
        train: TrainConfig = field(default_factory=lambda: TrainConfig(
            tokens=40_000, batch_size=16, lr=3e-3, warmup_steps=5))
        prior_power: UnitInterval = 0.5
        min_concentration: PositiveFloat = 0.1
        max_concentration: PositiveFloat = 5.0
        concentration_levels: PositiveInt = 15
        min_weight: UnitInterval = 2e-4
        max_usage: PositiveFloat = 15.0
        val_windows: PositiveInt = 16
        target: NonEmptyStr = "mean"
        candidates: PositiveInt = 100_000
        top_k: PositiveInt = 100
        regression: Literal["auto", "linear", "lightgbm"] = "auto"
        lightgbm_min_runs: PositiveInt = 64

        def check(self) -> None:
            if self.min_concentration > self.max_concentration:
                raise InvalidSetting("min_concentration", f"must not exceed max_concentration "
                                     f"({self.max_concentration})", self.min_concentration)
            if self.top_k > self.candidates:
                raise InvalidSetting("top_k", f"must not exceed candidates ({self.candidates})", self.top_k)
            if self.max_usage <= 1:
                raise InvalidSetting("max_usage", "must exceed 1: at 1 only the natural mixture itself stays "
                                     "under every cap", self.max_usage)

    @staticmethod
    def fit_section(fitted: dict) -> dict:
        """The fit's settings as their section hashes them: the law the fit uses in place of
        ``regression`` and ``lightgbm_min_runs``, left out when it is the linear law (the only
        one before LightGBM), so that linear fits keep their data versions and a change of
        law, and only that, stales the weights."""
        params = {k: v for k, v in fitted.items() if k not in ("regression", "lightgbm_min_runs")}
        if uses_lightgbm(SimpleNamespace(**fitted), fitted["runs"]):
            params["regression"] = "lightgbm"
        return params

    def compute(self, domains: DomainSet, params: Params, proxy: ProxyRecipe | None = None) -> MethodResult:
        target_of(dict.fromkeys(domains.names, 0.0), params.target)
        if params.runs < min_runs(domains.k):
            raise ValueError(f"regmix: runs = {params.runs}, but a linear law over {domains.k} domains needs "
                             f"runs >= {min_runs(domains.k)} (k + 1, and at least 3)")
        empty = [d for d, n in zip(domains.names, domains.train_tokens) if n <= 0]
        if empty:
            raise ValueError(f"regmix: domain(s) {', '.join(empty)} have no training tokens")
        prior = baselines.natural(domains.train_tokens)
        runs = [train_run(domains, swarm_mixture(prior, r, proxy.seed, params), proxy, params, r)
                for r in range(params.runs)]
        return fit_and_propose(runs, prior, params, proxy.seed, names=domains.names)
