"""Seed statistics against numbers worked out by hand, and planted / absent differences."""

import math

import numpy as np
import pytest
from scipy import stats

from chameleon_assets.core.stats import (
    Interval,
    domain_mean,
    fewshot_interval,
    mean_interval,
    paired_difference,
    paired_domain_differences,
    summarise_mixture,
)

# Student-t quantiles in closed form, to check scipy's against:
#   1 dof: t_q = tan(pi (q - 1/2));   t_{0.975,1} = tan(0.475 pi) = 12.706205
#   2 dof: t_q = (2q - 1) / sqrt(2 q (1 - q));   t_{0.975,2} = 0.95 / sqrt(0.04875) = 4.302653
T975_1 = math.tan(0.475 * math.pi)
T975_2 = 0.95 / math.sqrt(0.04875)


def test_closed_form_quantiles_are_the_usual_table_values() -> None:
    assert T975_1 == pytest.approx(12.706205, abs=1e-6)
    assert T975_2 == pytest.approx(4.302653, abs=1e-6)


def test_three_values_by_hand() -> None:
    # [1, 2, 3]: mean 2; squared deviations 1 + 0 + 1 = 2, s^2 = 2 / (3 - 1) = 1, s = 1;
    # half_width = 4.302653 * 1 / sqrt(3) = 2.484138; interval [-0.484138, 4.484138].
    iv = mean_interval([1.0, 2.0, 3.0])
    assert isinstance(iv, Interval)
    assert iv.n == 3
    assert iv.mean == pytest.approx(2.0, abs=1e-12)
    assert iv.half_width == pytest.approx(T975_2 / math.sqrt(3), rel=1e-12)
    assert iv.half_width == pytest.approx(2.484138, abs=1e-6)
    assert iv.low == pytest.approx(2.0 - 2.484138, abs=1e-6)
    assert iv.high == pytest.approx(2.0 + 2.484138, abs=1e-6)
    assert iv.confidence == 0.95


def test_two_seeds_give_the_wide_one_dof_interval() -> None:
    # [1, 3]: mean 2; s^2 = (1 + 1) / 1 = 2, s = sqrt(2); s / sqrt(2) = 1;
    # half_width = t_{0.975,1} * 1 = 12.706205.
    iv = mean_interval([1.0, 3.0])
    assert iv.mean == pytest.approx(2.0)
    assert iv.half_width == pytest.approx(T975_1, rel=1e-12)
    assert (iv.low, iv.high) == pytest.approx((2.0 - T975_1, 2.0 + T975_1), rel=1e-12)


def test_other_confidence_level() -> None:
    # 2 dof, c = 0.90 -> q = 0.95: t = 0.9 / sqrt(2 * 0.95 * 0.05) = 0.9 / sqrt(0.095) = 2.919986;
    # [1, 2, 3]: half_width = 2.919986 / sqrt(3) = 1.685854.
    iv = mean_interval([1.0, 2.0, 3.0], confidence=0.90)
    assert iv.half_width == pytest.approx(0.9 / math.sqrt(0.095) / math.sqrt(3), rel=1e-12)
    assert iv.half_width == pytest.approx(1.685854, abs=1e-6)
    assert iv.confidence == 0.90


def test_single_value_has_nan_bounds() -> None:
    iv = mean_interval([5.0])
    assert iv.mean == 5.0 and iv.n == 1
    assert math.isnan(iv.low) and math.isnan(iv.high) and math.isnan(iv.half_width)


def test_equal_values_give_a_zero_width_interval() -> None:
    iv = mean_interval([0.5, 0.5, 0.5])
    assert (iv.mean, iv.low, iv.high, iv.half_width) == (0.5, 0.5, 0.5, 0.0)


def test_empty_nan_and_bad_confidence_raise() -> None:
    with pytest.raises(ValueError, match="at least one value"):
        mean_interval([])
    with pytest.raises(ValueError, match="non-finite"):
        mean_interval([1.0, float("nan"), 3.0])
    with pytest.raises(ValueError, match="non-finite"):
        mean_interval([1.0, float("inf")])
    with pytest.raises(ValueError, match="confidence"):
        mean_interval([1.0, 2.0], confidence=95)


def test_domain_mean_is_the_arithmetic_mean() -> None:
    # (0.9 + 1.2 + 1.5) / 3 = 3.6 / 3 = 1.2
    assert domain_mean({"web": 0.9, "code": 1.2, "law": 1.5}) == pytest.approx(1.2, rel=1e-12)
    with pytest.raises(ValueError, match="at least one domain"):
        domain_mean({})
    with pytest.raises(ValueError, match="code"):
        domain_mean({"web": 0.9, "code": float("nan")})


def test_summarise_mixture_by_hand() -> None:
    # seed 0: x=1, y=3 (mean 2); seed 1: x=2, y=4 (mean 3); seed 2: x=3, y=5 (mean 4).
    # x over seeds [1, 2, 3], y [3, 4, 5], domain means [2, 3, 4]: each has s = 1, so
    # every half_width is 4.302653 / sqrt(3) = 2.484138; means 2, 4 and 3.
    per_seed = {0: {"x": 1.0, "y": 3.0}, 1: {"x": 2.0, "y": 4.0}, 2: {"x": 3.0, "y": 5.0}}
    summary = summarise_mixture(per_seed)
    assert summary.seeds == (0, 1, 2)
    assert sorted(summary.per_domain) == ["x", "y"]
    assert summary.per_domain["x"].mean == pytest.approx(2.0)
    assert summary.per_domain["y"].mean == pytest.approx(4.0)
    assert summary.mean.mean == pytest.approx(3.0)
    for iv in [*summary.per_domain.values(), summary.mean]:
        assert iv.n == 3
        assert iv.half_width == pytest.approx(2.484138, abs=1e-6)


def test_summarise_mixture_rejects_seeds_with_different_domains() -> None:
    with pytest.raises(ValueError, match=r"only at seed 1: \['z'\]"):
        summarise_mixture({0: {"x": 1.0, "y": 2.0}, 1: {"x": 1.0, "y": 2.0, "z": 3.0}})


def test_paired_difference_by_hand() -> None:
    # d = a - b = [0.5, 1.0, 1.5]: mean 1; s^2 = (0.25 + 0 + 0.25) / 2 = 0.25, s = 0.5;
    # se = 0.5 / sqrt(3) = 0.288675; t = 1 / 0.288675 = sqrt(12) = 3.464102.
    # 2 dof: P(T > t) = (1 - t / sqrt(t^2 + 2)) / 2, so p = 1 - sqrt(12) / sqrt(14) = 0.074180.
    # half_width = 4.302653 * 0.288675 = 1.242069: [-0.242069, 2.242069] contains 0, and
    # p = 0.074 > 0.05: not significant at 95 %; at 90 % (p < 0.10) it is.
    a = {0: 1.0, 1: 2.0, 2: 4.0}
    b = {0: 0.5, 1: 1.0, 2: 2.5}
    pd = paired_difference(a, b)
    assert pd.n == 3 and pd.seeds == (0, 1, 2)
    assert pd.mean == pytest.approx(1.0, rel=1e-12)
    assert pd.p_value == pytest.approx(1 - math.sqrt(12 / 14), rel=1e-9)
    assert pd.p_value == pytest.approx(0.074180, abs=1e-6)
    assert pd.interval.half_width == pytest.approx(1.242069, abs=1e-6)
    assert pd.interval.low < 0 < pd.interval.high
    assert not pd.significant
    pd90 = paired_difference(a, b, confidence=0.90)
    assert pd90.significant and pd90.interval.low > 0


def test_p_value_matches_scipy_ttest_rel() -> None:
    rng = np.random.default_rng(7)
    xa = rng.normal(1.0, 0.1, size=6)
    xb = xa - 0.05 + rng.normal(0.0, 0.05, size=6)
    pd = paired_difference(dict(enumerate(xa)), dict(enumerate(xb)))
    ref = stats.ttest_rel(xa, xb)
    assert pd.p_value == pytest.approx(float(ref.pvalue), rel=1e-10)
    assert pd.significant == (float(ref.pvalue) < 0.05)
    # The interval excludes 0 exactly when p < 0.05.
    assert pd.significant == (pd.interval.low > 0 or pd.interval.high < 0)


def test_seeds_in_only_one_mixture_are_ignored() -> None:
    # Seed 0 only in a (with a wild value), seed 4 only in b: pairs are seeds 1, 2, 3,
    # d = [0.1, 0.2, 0.3] -> mean 0.2.
    a = {0: 100.0, 1: 1.1, 2: 1.2, 3: 1.3}
    b = {1: 1.0, 2: 1.0, 3: 1.0, 4: -50.0}
    pd = paired_difference(a, b)
    assert pd.seeds == (1, 2, 3) and pd.n == 3
    assert pd.mean == pytest.approx(0.2, rel=1e-12)
    assert pd.p_value == pytest.approx(float(stats.ttest_rel([1.1, 1.2, 1.3], [1.0, 1.0, 1.0]).pvalue), rel=1e-10)


def test_one_common_seed_is_never_significant_and_none_raises() -> None:
    pd = paired_difference({0: 2.0, 1: 3.0}, {1: 1.0})
    assert pd.n == 1 and pd.mean == 2.0
    assert math.isnan(pd.p_value) and not pd.significant
    assert math.isnan(pd.interval.low)
    with pytest.raises(ValueError, match="no seed in common"):
        paired_difference({0: 1.0}, {1: 1.0})
    with pytest.raises(ValueError, match="non-finite"):
        paired_difference({0: 1.0, 1: float("nan")}, {0: 1.0, 1: 1.0})


def test_zero_variance_differences() -> None:
    # Identical: every d_s = 0 -> mean 0, p = 1, not significant.
    same = paired_difference({0: 1.0, 1: 2.0, 2: 3.0}, {0: 1.0, 1: 2.0, 2: 3.0})
    assert (same.mean, same.p_value, same.significant) == (0.0, 1.0, False)
    assert same.interval.half_width == 0.0
    # The same nonzero difference every seed (0.25, exact in binary) -> p = 0, significant.
    shift = paired_difference({0: 1.25, 1: 2.25, 2: 3.25}, {0: 1.0, 1: 2.0, 2: 3.0})
    assert (shift.mean, shift.p_value, shift.significant) == (0.25, 0.0, True)
    assert (shift.interval.low, shift.interval.high) == (0.25, 0.25)


DOMAINS = ["web", "code", "law", "recipes", "papers"]
SEEDS = [0, 1, 2]


def _mixture(gap: float, noise_seed: int) -> dict[int, dict[str, float]]:
    """bpb = per-domain base + per-seed shift (shared by mixtures) + gap + small noise."""
    base = {d: 0.8 + 0.15 * i for i, d in enumerate(DOMAINS)}
    seed_shift = {0: 0.0, 1: 0.02, 2: -0.015}
    rng = np.random.default_rng(noise_seed)
    return {s: {d: base[d] + seed_shift[s] + gap + float(rng.normal(0.0, 0.01)) for d in DOMAINS} for s in SEEDS}


def test_planted_difference_is_significant_on_aggregate_and_per_domain() -> None:
    a = _mixture(gap=0.3, noise_seed=1)
    b = _mixture(gap=0.0, noise_seed=2)
    cmp = paired_domain_differences(a, b)
    assert sorted(cmp.per_domain) == sorted(DOMAINS)
    assert cmp.mean.n == 3 and cmp.mean.seeds == (0, 1, 2)
    assert cmp.mean.mean == pytest.approx(0.3, abs=0.03)
    assert cmp.mean.significant and cmp.mean.interval.low > 0
    for domain, pd in cmp.per_domain.items():
        assert pd.significant, domain
        assert pd.mean == pytest.approx(0.3, abs=0.05)
    # The aggregate is the paired test of the per-seed domain means.
    ma = [domain_mean(a[s]) for s in SEEDS]
    mb = [domain_mean(b[s]) for s in SEEDS]
    assert cmp.mean.p_value == pytest.approx(float(stats.ttest_rel(ma, mb).pvalue), rel=1e-10)
    # Reversed order: the same test, negative difference.
    rev = paired_domain_differences(b, a)
    assert rev.mean.mean == pytest.approx(-cmp.mean.mean) and rev.mean.significant


def test_identical_mixtures_are_not_significant() -> None:
    a = _mixture(gap=0.0, noise_seed=1)
    cmp = paired_domain_differences(a, {s: dict(v) for s, v in a.items()})
    assert cmp.mean.mean == 0.0 and cmp.mean.p_value == 1.0 and not cmp.mean.significant
    for pd in cmp.per_domain.values():
        assert pd.mean == 0.0 and not pd.significant


def test_difference_that_cancels_over_seeds_is_not_significant() -> None:
    # d per seed = +0.01, -0.01, 0.0 in every domain: mean 0, t = 0, p = 1.
    b = _mixture(gap=0.0, noise_seed=3)
    wobble = {0: 0.01, 1: -0.01, 2: 0.0}
    a = {s: {d: v + wobble[s] for d, v in b[s].items()} for s in SEEDS}
    cmp = paired_domain_differences(a, b)
    assert cmp.mean.mean == pytest.approx(0.0, abs=1e-12)
    assert cmp.mean.p_value == pytest.approx(1.0, abs=1e-9)
    assert not cmp.mean.significant
    assert not any(pd.significant for pd in cmp.per_domain.values())


def test_mismatched_domains_raise_naming_them() -> None:
    a = _mixture(gap=0.0, noise_seed=1)
    b = _mixture(gap=0.0, noise_seed=2)
    b[1]["poetry"] = b[1].pop("law")
    with pytest.raises(ValueError, match=r"seed 1.*only in a: \['law'\], only in b: \['poetry'\]"):
        paired_domain_differences(a, b)
    # The same domains in both mixtures but not at every seed: also refused.
    c = _mixture(gap=0.0, noise_seed=1)
    d = _mixture(gap=0.0, noise_seed=2)
    for m in (c, d):
        del m[2]["law"]
    with pytest.raises(ValueError, match=r"only at seed 0: \['law'\]"):
        paired_domain_differences(c, d)


def test_per_domain_pairing_ignores_unpaired_seeds() -> None:
    a = _mixture(gap=0.3, noise_seed=1)
    b = _mixture(gap=0.0, noise_seed=2)
    a[7] = {"only": 9.0}  # not in b: its domains do not matter
    del b[0]
    cmp = paired_domain_differences(a, b)
    assert cmp.mean.seeds == (1, 2)
    assert all(pd.n == 2 for pd in cmp.per_domain.values())
    with pytest.raises(ValueError, match="no seed in common"):
        paired_domain_differences({0: {"x": 1.0}}, {1: {"x": 1.0}})


def test_fewshot_interval() -> None:
    # 0.6 -/+ 1.96 * 0.05 = 0.6 -/+ 0.098 -> [0.502, 0.698]
    iv = fewshot_interval(0.6, 0.05)
    assert (iv.low, iv.high) == pytest.approx((0.502, 0.698), abs=1e-12)
    assert iv.half_width == pytest.approx(0.098) and iv.n == 1
    assert iv.confidence == pytest.approx(0.95, abs=1e-4)
    with pytest.raises(ValueError, match="stderr"):
        fewshot_interval(0.6, -0.1)
