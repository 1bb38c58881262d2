"""Exact, small statistics for comparing mixtures over training seeds.

Every mixture (uniform, natural, chameleon_pretrain, ...) trains one base model per seed,
and each model is evaluated on the same validation windows per domain. So for a metric
such as bits per byte (bpb) we have values x[m][s][d] for mixture m, seed s, domain d.

Over seeds (n values x_1..x_n):

    mean       = (1/n) sum_i x_i
    s          = sqrt( sum_i (x_i - mean)^2 / (n - 1) )          sample std, ddof = 1
    half_width = t_{(1+c)/2, n-1} * s / sqrt(n)                  Student-t, confidence c
    interval   = [mean - half_width, mean + half_width]

Paired comparison of mixture a against mixture b (usually `uniform`): the models share
seeds and evaluation windows, so the per-seed differences d_s = a_s - b_s are analysed
(a paired t-test), which removes the seed-to-seed variation both mixtures share:

    mean_d, s_d as above on the d_s,   t = mean_d / (s_d / sqrt(n)),
    p = 2 * P(T_{n-1} >= |t|)          (two-sided; identical to scipy.stats.ttest_rel)
    significant  <=>  p < 1 - c  <=>  the interval of mean_d excludes 0

Primary aggregate: for each seed, the arithmetic mean over domains of bpb (or NLL), then
the statistics above over seeds. Arithmetic-mean perplexity can be summarised with the
same functions but is a secondary column: it is dominated by the worst domains.

Caveats, stated so that a table built from this module does not overclaim:

* Per-domain tests are NOT corrected for multiple comparisons (no Holm-Bonferroni): with
  k domains at c = 0.95, about 0.05 * k of them are expected to be flagged by chance
  when nothing differs. The aggregate (domain mean) test is a single test.
* With few seeds the t interval is wide: with 2 seeds t_{0.975,1} = 12.71, so only a
  difference far larger than the seed noise is significant; with 3 seeds t_{0.975,2} =
  4.30. A single seed gives no interval at all (NaN bounds, never significant).
* The t interval assumes the per-seed values (or differences) are roughly normal.

Pure numpy + scipy.stats, no pandas, no Dagster: callable from a notebook.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np

Seed = Hashable


def _scipy_stats():  # noqa: ANN202
    """scipy.stats, imported on first use (it takes most of a second to import)."""
    from scipy import stats

    return stats

PerSeedDomains = Mapping[Seed, Mapping[str, float]]


@dataclass(frozen=True)
class Interval:
    """A mean with a symmetric interval: [low, high] = mean -/+ half_width over n values.

    With n == 1 there is no spread estimate: low, high and half_width are NaN.
    """

    mean: float
    low: float
    high: float
    n: int
    half_width: float
    confidence: float = 0.95


@dataclass(frozen=True)
class PairedDifference:
    """Paired comparison a - b over the seeds both mixtures have.

    mean: mean of the per-seed differences a_s - b_s; interval: its Student-t interval;
    n: number of paired seeds (`seeds`, sorted); p_value: two-sided paired t-test
    (NaN when n < 2); significant: p_value < 1 - confidence (False when n < 2).
    """

    mean: float
    interval: Interval
    n: int
    p_value: float
    significant: bool
    seeds: tuple[Seed, ...]
    confidence: float = 0.95


@dataclass(frozen=True)
class DomainComparison:
    """Paired comparison of two mixtures per domain and on the per-seed domain mean.

    per_domain: {domain: PairedDifference}, each over the paired seeds (uncorrected for
    multiple comparisons); mean: PairedDifference of the per-seed means over domains,
    the primary aggregate.
    """

    per_domain: dict[str, PairedDifference]
    mean: PairedDifference


@dataclass(frozen=True)
class MixtureSummary:
    """One mixture over seeds: an Interval per domain and of the per-seed domain mean."""

    per_domain: dict[str, Interval]
    mean: Interval
    seeds: tuple[Seed, ...]


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence}")


def _finite_array(values: Iterable[float], what: str) -> np.ndarray:
    x = np.asarray(list(values), dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"{what} must be a flat sequence of numbers, got shape {x.shape}")
    bad = np.flatnonzero(~np.isfinite(x))
    if bad.size:
        raise ValueError(
            f"{what} contains non-finite values (NaN or inf) at positions {bad.tolist()}: {x[bad].tolist()}"
        )
    return x


def _sorted_seeds(seeds: Iterable[Seed]) -> tuple[Seed, ...]:
    seeds = list(seeds)
    try:
        return tuple(sorted(seeds))
    except TypeError:  # mixed key types: any fixed order will do
        return tuple(sorted(seeds, key=repr))


def mean_interval(values: Iterable[float], confidence: float = 0.95) -> Interval:
    """Mean and Student-t interval over n values.

    mean = sum(x) / n;  s = sample std with ddof = 1;
    half_width = t_{(1+c)/2, n-1} * s / sqrt(n);  [low, high] = mean -/+ half_width.

    Example: [1, 2, 3] -> mean 2, s 1, half_width = 4.302653 / sqrt(3) = 2.484138.

    n == 1: mean is the value, low, high and half_width are NaN (no spread estimate).
    n == 0 raises ValueError; NaN or infinite values raise ValueError. All values equal
    (n >= 2) gives half_width 0.
    """
    _check_confidence(confidence)
    x = _finite_array(values, "mean_interval values")
    n = int(x.size)
    if n == 0:
        raise ValueError("mean_interval needs at least one value, got an empty sequence")
    mean = float(x.mean())
    if n == 1:
        return Interval(mean=mean, low=math.nan, high=math.nan, n=1, half_width=math.nan, confidence=confidence)
    s = float(x.std(ddof=1))
    half = float(_scipy_stats().t.ppf((1.0 + confidence) / 2.0, n - 1)) * s / math.sqrt(n)
    return Interval(mean=mean, low=mean - half, high=mean + half, n=n, half_width=half, confidence=confidence)


def _paired_from_differences(d: np.ndarray, seeds: tuple[Seed, ...], confidence: float) -> PairedDifference:
    """Paired t statistics from the per-seed differences d (already finite, n >= 1)."""
    interval = mean_interval(d, confidence)
    n = int(d.size)
    if n < 2:
        p = math.nan
    elif np.ptp(d) == 0.0:
        # Zero variance: t = mean / 0 is undefined. All differences exactly equal:
        # exactly zero -> no difference (p = 1); the same nonzero value every seed ->
        # a difference with no noise at all (p = 0).
        p = 1.0 if d[0] == 0.0 else 0.0
    else:
        s = float(d.std(ddof=1))
        t = float(d.mean()) / (s / math.sqrt(n))
        p = float(2.0 * _scipy_stats().t.sf(abs(t), n - 1))
    significant = bool(n >= 2 and p < 1.0 - confidence)
    return PairedDifference(
        mean=interval.mean,
        interval=interval,
        n=n,
        p_value=p,
        significant=significant,
        seeds=seeds,
        confidence=confidence,
    )


def paired_difference(a: Mapping[Seed, float], b: Mapping[Seed, float], confidence: float = 0.95) -> PairedDifference:
    """Paired comparison of a - b over the seeds present in both {seed: value} maps.

    d_s = a[s] - b[s] for the common seeds (seeds in only one map are ignored);
    mean = mean(d), interval = mean_interval(d, confidence);
    p = two-sided paired t-test, t = mean(d) / (sd(d, ddof=1) / sqrt(n)), n - 1 dof
    (the same as scipy.stats.ttest_rel(a, b));
    significant = p < 1 - confidence, equivalently the interval excludes 0.

    n == 1: p is NaN, interval bounds NaN, significant False.
    Zero variance (n >= 2, every d_s exactly equal): all zero -> p = 1, not significant;
    the same nonzero value -> p = 0, significant (the interval collapses to that value).
    No common seed, or a NaN/infinite value at a common seed, raises ValueError.
    """
    _check_confidence(confidence)
    seeds = _sorted_seeds(set(a) & set(b))
    if not seeds:
        raise ValueError(
            f"paired_difference: no seed in common (a has {list(_sorted_seeds(a))}, b has {list(_sorted_seeds(b))})"
        )
    xa = _finite_array((a[s] for s in seeds), f"values of a at seeds {list(seeds)}")
    xb = _finite_array((b[s] for s in seeds), f"values of b at seeds {list(seeds)}")
    return _paired_from_differences(xa - xb, seeds, confidence)


def domain_mean(per_domain: Mapping[str, float]) -> float:
    """Arithmetic mean over domains: (1/k) sum_d x_d. Empty or non-finite raises ValueError."""
    if not per_domain:
        raise ValueError("domain_mean needs at least one domain, got none")
    bad = {d: v for d, v in per_domain.items() if not math.isfinite(float(v))}
    if bad:
        raise ValueError(f"domain_mean: non-finite values (NaN or inf) for domains {sorted(bad)}: {bad}")
    return float(np.mean([float(v) for v in per_domain.values()]))


def _domain_set(per_seed: PerSeedDomains, seeds: tuple[Seed, ...], what: str) -> list[str]:
    """The one domain set shared by every listed seed, else ValueError naming the difference."""
    first = seeds[0]
    domains = set(per_seed[first])
    if not domains:
        raise ValueError(f"{what}: seed {first!r} has no domains")
    for s in seeds[1:]:
        other = set(per_seed[s])
        if other != domains:
            raise ValueError(
                f"{what}: domains differ between seeds {first!r} and {s!r}: "
                f"only at seed {first!r}: {sorted(domains - other)}, only at seed {s!r}: {sorted(other - domains)}"
            )
    return sorted(domains)


def summarise_mixture(per_seed: PerSeedDomains, confidence: float = 0.95) -> MixtureSummary:
    """One mixture over seeds, from {seed: {domain: value}}.

    per_domain[d] = mean_interval([x[s][d] for s in seeds]);
    mean = mean_interval([domain_mean(x[s]) for s in seeds]) (the primary aggregate).
    Every seed must have the same domains, else ValueError naming those that differ;
    no seed raises ValueError.
    """
    _check_confidence(confidence)
    seeds = _sorted_seeds(per_seed)
    if not seeds:
        raise ValueError("summarise_mixture needs at least one seed, got none")
    domains = _domain_set(per_seed, seeds, "summarise_mixture")
    per_domain = {d: mean_interval((per_seed[s][d] for s in seeds), confidence) for d in domains}
    mean = mean_interval((domain_mean(per_seed[s]) for s in seeds), confidence)
    return MixtureSummary(per_domain=per_domain, mean=mean, seeds=seeds)


def paired_domain_differences(a: PerSeedDomains, b: PerSeedDomains, confidence: float = 0.95) -> DomainComparison:
    """Paired a - b per domain and on the per-seed domain mean, over the seeds both have.

    For each common seed s: d_s[dom] = a[s][dom] - b[s][dom] and
    m_s = domain_mean(a[s]) - domain_mean(b[s]) (= mean over domains of d_s).
    per_domain[dom] = paired_difference over s of a[s][dom] vs b[s][dom];
    mean = paired_difference over s of domain_mean(a[s]) vs domain_mean(b[s]).
    Seeds in only one mixture are ignored. The domains must be the same for both mixtures
    and every common seed, else ValueError naming the domains that differ; no common seed
    raises ValueError. Per-domain p-values are not corrected for multiple comparisons.
    """
    _check_confidence(confidence)
    seeds = _sorted_seeds(set(a) & set(b))
    if not seeds:
        raise ValueError(
            "paired_domain_differences: no seed in common "
            f"(a has {list(_sorted_seeds(a))}, b has {list(_sorted_seeds(b))})"
        )
    for s in seeds:
        da, db = set(a[s]), set(b[s])
        if da != db:
            raise ValueError(
                f"paired_domain_differences: domains differ between the mixtures at seed {s!r}: "
                f"only in a: {sorted(da - db)}, only in b: {sorted(db - da)}"
            )
    domains = _domain_set(a, seeds, "paired_domain_differences")
    per_domain = {
        d: paired_difference({s: a[s][d] for s in seeds}, {s: b[s][d] for s in seeds}, confidence) for d in domains
    }
    mean = paired_difference(
        {s: domain_mean(a[s]) for s in seeds}, {s: domain_mean(b[s]) for s in seeds}, confidence
    )
    return DomainComparison(per_domain=per_domain, mean=mean)


def fewshot_interval(acc: float, stderr: float, z: float = 1.96) -> Interval:
    """Normal (Wald) interval for one few-shot accuracy with lm-eval's standard error.

    [low, high] = acc -/+ z * stderr, n = 1 (one evaluation; the interval comes from the
    examples, not from seeds), confidence = 2 * Phi(z) - 1 (0.95 for z = 1.96). Not
    clipped to [0, 1]. Non-finite acc/stderr or a negative stderr raises ValueError.
    """
    if not (math.isfinite(acc) and math.isfinite(stderr)):
        raise ValueError(f"fewshot_interval: acc and stderr must be finite, got acc={acc}, stderr={stderr}")
    if stderr < 0:
        raise ValueError(f"fewshot_interval: stderr must be >= 0, got {stderr}")
    if z <= 0:
        raise ValueError(f"fewshot_interval: z must be positive, got {z}")
    half = z * stderr
    confidence = float(2.0 * _scipy_stats().norm.cdf(z) - 1.0)
    return Interval(mean=float(acc), low=acc - half, high=acc + half, n=1, half_width=half, confidence=confidence)
