"""How far to trust a set of CHAMELEON weights: what they depend on, and how strongly.

With domain means e_i (rows of E, k x d), K = E E^T, K_c = H K H and the ridge mu =
lambda * k of ``core.krls`` (lambda = lam, or lam * trace(K_c) / k with the relative ridge):

    spectrum        s_1 >= ... >= s_k >= 0, the eigenvalues of K_c;
                    trace(K_c) = sum_j s_j = sum_i |e_i - mean_j e_j|^2
    d_eff           = sum_i tau_i (raw scores) = trace(K_c (K_c + mu I)^-1) = sum_j s_j / (s_j + mu):
                    how many directions of domain variation the ridge keeps
    grids           the CHAMELEON weights recomputed over lambda and over T_pt
    stability       the scores recomputed from B disjoint subsets of each domain's windows
    near-duplicates pairs of domains whose means nearly coincide, and the share they get

The weights are a function of K_c only, so all of this is read off the kernel and, for
stability and the sampling-noise test, the per-window embeddings. numpy and scipy, no Dagster.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from chameleon_assets.core.krls import (
    Ridge,
    center_kernel,
    chameleon_weights,
    effective_lambda,
    linear_kernel,
    pretrain_weights,
)

LAMBDA_GRID = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)
# With the relative ridge lam is in units of trace(K_c) / k, the mean eigenvalue: the
# scores change where lam * trace(K_c) passes the eigenvalues, i.e. lam from about 1e-4 to 1.
RELATIVE_LAMBDA_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0)
TEMPERATURE_GRID = (2.0, 3.0, 5.0, 10.0, 20.0)
STABILITY_SUBSETS = 4
STABILITY_SEED = 0
DUPLICATE_DISTANCE_RATIO = 0.1
DUPLICATE_NOISE_RATIO = 3.0


def kernel_spectrum(kernel_c: np.ndarray) -> np.ndarray:
    """Eigenvalues s_1 >= ... >= s_k of the centred kernel K_c, largest first.

    K_c is symmetric positive semi-definite with K_c 1 = 0, so one eigenvalue is 0;
    rounding can make it slightly negative, so eigenvalues are clipped at 0.
    """
    return np.clip(np.linalg.eigvalsh(np.asarray(kernel_c, dtype=np.float64))[::-1], 0.0, None)


def effective_dimension(kernel_c: np.ndarray, lam: float, ridge: Ridge = "absolute") -> float:
    """d_eff = sum_j s_j / (s_j + lambda * k) over the eigenvalues s_j of K_c.

    This is trace(K_c (K_c + lambda k I)^-1), the sum of the raw leverage scores tau_i
    (before their normalisation to sum 1); lambda is ``effective_lambda(K_c, lam, ridge)``.
    It lies between 0 (lambda -> inf) and rank(K_c) <= k - 1 (lambda -> 0).
    """
    kc = np.asarray(kernel_c, dtype=np.float64)
    mu = effective_lambda(kc, lam, ridge) * kc.shape[0]
    s = kernel_spectrum(kc)
    return float(np.sum(s / (s + mu)))


@dataclass
class WeightGrid:
    """CHAMELEON weights recomputed over values of one parameter; the rest as configured."""

    parameter: str  # "lambda" or "t_pretrain"
    values: list[float]
    domains: list[str]
    weights: dict[str, np.ndarray]  # mixture -> (len(values) x k)
    d_eff: list[float] = field(default_factory=list)  # per value (the lambda grid only)


def _grid_values(grid: Sequence[float], configured: float) -> list[float]:
    """``grid`` with the configured value added, ascending."""
    return sorted({float(v) for v in grid} | {float(configured)})


def lambda_grid(
    domains: list[str],
    kernel: np.ndarray,
    t_pretrain: float,
    t_finetune: float,
    ridge: Ridge = "absolute",
    lam: float | None = None,
    grid: Sequence[float] | None = None,
) -> WeightGrid:
    """chameleon_pretrain and chameleon_finetune weights (and d_eff) for each lambda of ``grid``.

    ``grid`` defaults to LAMBDA_GRID (absolute ridge) or RELATIVE_LAMBDA_GRID (relative
    ridge, lam in units of trace(K_c) / k); the configured ``lam`` is added to it.
    """
    grid = grid if grid is not None else (RELATIVE_LAMBDA_GRID if ridge == "relative" else LAMBDA_GRID)
    values = _grid_values(grid, lam) if lam is not None else sorted(float(v) for v in grid)
    kern_c = center_kernel(np.asarray(kernel, dtype=np.float64))
    rows = [chameleon_weights(domains, kernel, v, t_pretrain, t_finetune, ridge) for v in values]
    return WeightGrid(
        "lambda", values, list(domains),
        {"chameleon_pretrain": np.array([r.pretrain for r in rows]),
         "chameleon_finetune": np.array([r.finetune for r in rows])},
        [effective_dimension(kern_c, v, ridge) for v in values],
    )


def temperature_grid(
    domains: list[str], tau: np.ndarray, t_pretrain: float | None = None, grid: Sequence[float] = TEMPERATURE_GRID
) -> WeightGrid:
    """chameleon_pretrain = softmax((1/tau) / T_pt) for each T_pt of ``grid`` (plus the configured one).

    ``tau``: the normalised scores. As T_pt grows the weights flatten towards uniform.
    """
    values = _grid_values(grid, t_pretrain) if t_pretrain is not None else sorted(float(v) for v in grid)
    tau = np.asarray(tau, dtype=np.float64)
    return WeightGrid("t_pretrain", values, list(domains),
                      {"chameleon_pretrain": np.array([pretrain_weights(tau, t) for t in values])})


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation: the Pearson correlation of the (tie-averaged) ranks
    (``scipy.stats.spearmanr``); nan if a side is constant."""
    import warnings

    from scipy.stats import spearmanr

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(spearmanr(x, y).statistic)


@dataclass
class Stability:
    """Scores from B disjoint subsets of each domain's windows (row b: subset b of every domain)."""

    domains: list[str]
    subsets: int
    windows_per_subset: int  # the smallest subset
    krls: np.ndarray  # (B x k) normalised tau
    pretrain: np.ndarray  # (B x k) chameleon_pretrain weights

    @property
    def krls_mean(self) -> np.ndarray:
        return self.krls.mean(axis=0)

    @property
    def krls_std(self) -> np.ndarray:
        """Sample standard deviation over subsets (ddof = 1)."""
        return self.krls.std(axis=0, ddof=1)

    @property
    def rank_correlation(self) -> float:
        """Mean over subset pairs b < b' of spearman(tau_b, tau_b'); nan with fewer than 3 domains."""
        if len(self.domains) < 3:
            return float("nan")
        pairs = [spearman(self.krls[a], self.krls[b]) for a in range(self.subsets) for b in range(a + 1, self.subsets)]
        return float(np.nanmean(pairs)) if not np.isnan(pairs).all() else float("nan")


def _subset_seed(seed: int, domain: str) -> list[int]:
    """A domain's own random stream: its subsets do not depend on which other domains exist."""
    return [seed, zlib.crc32(domain.encode())]


def leverage_stability(
    windows: Mapping[str, np.ndarray],
    lam: float,
    t_pretrain: float,
    ridge: Ridge = "absolute",
    subsets: int = STABILITY_SUBSETS,
    seed: int = STABILITY_SEED,
) -> Stability | None:
    """KRLS recomputed on B = ``subsets`` disjoint random subsets of each domain's windows.

    Each domain's N window embeddings (rows of ``windows[d]``) are permuted (seeded by
    ``seed`` and the domain's name) and split into B parts of N/B; subset b's mean
    embeddings give K_b = E_b E_b^T and tau_b, normalised. The spread of tau_b over b is
    the spread of an estimate from N/B windows, about sqrt(B) times that of the estimate
    from all N. B is lowered to the fewest windows of any domain; None if that is < 2.
    """
    domains = list(windows)
    b = min([subsets] + [len(windows[d]) for d in domains])
    if b < 2 or not domains:
        return None
    parts = {}
    for d in domains:
        emb = np.asarray(windows[d], dtype=np.float64)
        order = np.random.default_rng(_subset_seed(seed, d)).permutation(len(emb))
        parts[d] = [emb[idx].mean(axis=0) for idx in np.array_split(order, b)]
    krls_rows, pretrain_rows = [], []
    for i in range(b):
        w = chameleon_weights(domains, linear_kernel(np.stack([parts[d][i] for d in domains])), lam, t_pretrain,
                              ridge=ridge)
        krls_rows.append(w.krls)
        pretrain_rows.append(w.pretrain)
    smallest = min(len(windows[d]) for d in domains) // b
    return Stability(domains, b, smallest, np.array(krls_rows), np.array(pretrain_rows))


def mean_distances(kernel_c: np.ndarray) -> np.ndarray:
    """D_ij = |e_i - e_j| = sqrt(K_ii + K_jj - 2 K_ij) (k x k); the same from K or K_c, K_c rounds less."""
    kc = np.asarray(kernel_c, dtype=np.float64)
    diag = np.diag(kc)
    return np.sqrt(np.clip(diag[:, None] + diag[None, :] - 2 * kc, 0.0, None))


def sampling_noise(windows: np.ndarray) -> float:
    """tr(Sigma) / N: the expected squared distance of the mean of N windows from the domain's true mean.

    Sigma is the sample covariance of the window embeddings (rows), so tr(Sigma) is the sum
    of the per-dimension variances (ddof = 1).
    """
    emb = np.asarray(windows, dtype=np.float64)
    if len(emb) < 2:
        return float("nan")
    return float(emb.var(axis=0, ddof=1).sum() / len(emb))


@dataclass
class NearDuplicate:
    """Two domains whose mean embeddings nearly coincide, and the weight they jointly get."""

    a: str
    b: str
    distance_ratio: float  # D_ab / median pairwise distance of domain means
    noise_ratio: float  # D_ab^2 / (tr Sigma_a / N_a + tr Sigma_b / N_b); nan without windows
    shares: dict[str, float]  # mixture -> w_a + w_b

    def message(self) -> str:
        """One line naming the pair, why it is flagged, and its joint share under each mixture."""
        why = []
        if np.isfinite(self.distance_ratio):
            why.append(f"distance of means {self.distance_ratio:.2g}x the median between domains")
        if np.isfinite(self.noise_ratio):
            why.append(f"squared distance {self.noise_ratio:.2g}x the sampling noise")
        shares = ", ".join(f"{m} {s:.3f}" for m, s in self.shares.items())
        return f"near-duplicate domains '{self.a}' and '{self.b}' ({'; '.join(why)}) jointly receive: {shares}"


def near_duplicates(
    domains: list[str],
    kernel_c: np.ndarray,
    weights: Mapping[str, Sequence[float]],
    windows: Mapping[str, np.ndarray] | None = None,
    distance_ratio: float = DUPLICATE_DISTANCE_RATIO,
    noise_ratio: float = DUPLICATE_NOISE_RATIO,
) -> list[NearDuplicate]:
    """Pairs of domains (a, b) whose means are near-identical, with w_a + w_b under each mixture.

    With D_ab = |e_a - e_b| (``mean_distances``), a pair is a near-duplicate when either
      (1) D_ab <= distance_ratio * median_{p<q} D_pq (0.1): relative to how far apart the
          domains are, the two sit at one point, which is what KRLS sees; needs k >= 3
          (with two domains the only distance is its own reference); or
      (2) D_ab^2 <= noise_ratio * (tr Sigma_a / N_a + tr Sigma_b / N_b) (3): the means
          differ by no more than the sampling noise of means of N windows (the expected
          D_ab^2 of two samples of one distribution is exactly that sum), so the windows
          cannot tell the two domains apart; needs ``windows`` (domain -> N x d).
    Both sides of each test scale alike with the embeddings, so the criterion is scale-free.
    Each of such a pair makes the other look shared (low leverage), so chameleon_pretrain
    gives their content more than it would give it as one domain.
    """
    k = len(domains)
    dist = mean_distances(kernel_c)
    upper = dist[np.triu_indices(k, 1)]
    median = float(np.median(upper)) if k >= 3 else float("nan")
    noise = {d: sampling_noise(windows[d]) for d in domains} if windows else {}
    out = []
    for i in range(k):
        for j in range(i + 1, k):
            d_ij = float(dist[i, j])
            rel = d_ij / median if median > 0 else (0.0 if d_ij == 0 else float("nan"))
            se2 = noise.get(domains[i], np.nan) + noise.get(domains[j], np.nan)
            by_noise = d_ij**2 / se2 if se2 > 0 else float("nan")
            if (k >= 3 and rel <= distance_ratio) or by_noise <= noise_ratio:
                shares = {m: float(w[i] + w[j]) for m, w in weights.items()}
                out.append(NearDuplicate(domains[i], domains[j], rel, by_noise, shares))
    return out


@dataclass
class Diagnostics:
    """Everything ``diagnose`` reports about one set of CHAMELEON weights."""

    domains: list[str]
    ridge: str
    lam: float
    lam_effective: float  # the lambda in K_c + lambda k I
    lam_relative: float  # the same ridge as a relative lam: lambda * k / trace(K_c)
    trace: float
    eigenvalues: np.ndarray
    d_eff: float
    krls_raw: np.ndarray
    lambdas: WeightGrid
    temperatures: WeightGrid
    stability: Stability | None
    duplicates: list[NearDuplicate]

    @property
    def warnings(self) -> list[str]:
        return [d.message() for d in self.duplicates]


def diagnose(
    domains: list[str],
    kernel: np.ndarray,
    weights: Mapping[str, Sequence[float]],
    lam: float,
    t_pretrain: float,
    t_finetune: float,
    ridge: Ridge = "absolute",
    windows: Mapping[str, np.ndarray] | None = None,
) -> Diagnostics:
    """All diagnostics of the weights ``weights`` (mixture -> per-domain weights) computed
    from the uncentred kernel ``kernel`` with these parameters; ``windows`` (domain -> N x d
    window embeddings) adds leverage stability and the sampling-noise duplicate test."""
    kern = np.asarray(kernel, dtype=np.float64)
    cw = chameleon_weights(domains, kern, lam, t_pretrain, t_finetune, ridge)
    kc = cw.kernel_centered
    trace = float(np.trace(kc))
    return Diagnostics(
        domains=list(domains),
        ridge=ridge,
        lam=float(lam),
        lam_effective=cw.lam_effective,
        lam_relative=cw.lam_effective * len(domains) / trace if trace > 0 else float("nan"),
        trace=trace,
        eigenvalues=kernel_spectrum(kc),
        d_eff=effective_dimension(kc, lam, ridge),
        krls_raw=cw.krls_raw,
        lambdas=lambda_grid(domains, kern, t_pretrain, t_finetune, ridge, lam),
        temperatures=temperature_grid(domains, cw.krls, t_pretrain),
        stability=leverage_stability(windows, lam, t_pretrain, ridge) if windows else None,
        duplicates=near_duplicates(domains, kc, weights, windows),
    )
