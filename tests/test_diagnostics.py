"""Weight diagnostics against numbers worked out by hand, and the weight_diagnostics asset."""

from __future__ import annotations

import numpy as np
import pytest

from chameleon_assets.core.diagnostics import (
    diagnose,
    effective_dimension,
    kernel_spectrum,
    lambda_grid,
    leverage_stability,
    near_duplicates,
    spearman,
    temperature_grid,
)
from chameleon_assets.core.krls import center_kernel, krls, linear_kernel

# Four domains at +-a e1 and +-b e2 (a = 2, b = 1): the centroid is 0, so K_c = K is
# block diagonal with eigenvalues 2a^2 = 8 (u = (1, -1, 0, 0)/sqrt 2) and 2b^2 = 2
# (u = (0, 0, 1, -1)/sqrt 2), and for mu = lambda k = 4 lambda
#   tau_raw = (a^2 / (2a^2 + mu), same, b^2 / (2b^2 + mu), same) = (4/(8 + mu), 4/(8 + mu), 1/(2 + mu), 1/(2 + mu)).
CROSS = np.array([[2.0, 0.0], [-2.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
CROSS_NAMES = ["a1", "a2", "b1", "b2"]


def _softmax(x: list[float]) -> np.ndarray:
    z = np.exp(np.asarray(x) - max(x))
    return z / z.sum()


def test_spectrum_trace_and_effective_dimension_of_the_cross() -> None:
    kc = center_kernel(linear_kernel(CROSS))
    np.testing.assert_allclose(kernel_spectrum(kc), [8.0, 2.0, 0.0, 0.0], atol=1e-12)
    assert np.trace(kc) == pytest.approx(10.0)
    # lambda = 1, mu = 4: d_eff = 8/12 + 2/6 = 1.
    assert effective_dimension(kc, 1.0) == pytest.approx(1.0, rel=1e-12)
    # relative lam = 0.4: lambda = 0.4 * 10 / 4 = 1, the same ridge.
    assert effective_dimension(kc, 0.4, "relative") == pytest.approx(1.0, rel=1e-12)


def test_effective_dimension_is_the_sum_of_raw_leverage_scores() -> None:
    # The rank-one kernel of test_krls: |v|^2 = 4/3, mu = 30, so d_eff = (4/3) / (4/3 + 30) = 2/47.
    kc = center_kernel(linear_kernel(np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])))
    assert effective_dimension(kc, 10.0) == pytest.approx(2 / 47, rel=1e-12)
    rng = np.random.default_rng(3)
    kc = center_kernel(linear_kernel(rng.normal(size=(6, 9)) * 40.0))
    for lam in (0.1, 10.0, 1000.0):
        assert effective_dimension(kc, lam) == pytest.approx(krls(kc, lam).sum(), rel=1e-10)


def test_the_lambda_grid_at_one_point_and_its_direction() -> None:
    grid = lambda_grid(CROSS_NAMES, linear_kernel(CROSS), t_pretrain=5.0, t_finetune=0.2, lam=10.0)
    assert grid.values == [0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0]
    # lambda = 1: tau_raw = (1/3, 1/3, 1/6, 1/6), already summing to 1.
    at_one = grid.values.index(1.0)
    np.testing.assert_allclose(grid.weights["chameleon_pretrain"][at_one], _softmax([3 / 5, 3 / 5, 6 / 5, 6 / 5]),
                               rtol=1e-12)
    np.testing.assert_allclose(grid.weights["chameleon_finetune"][at_one],
                               _softmax([(1 / 3) / 0.2, (1 / 3) / 0.2, (1 / 6) / 0.2, (1 / 6) / 0.2]), rtol=1e-12)
    assert grid.d_eff[at_one] == pytest.approx(1.0)
    # tau_a / tau_b = 4 (2 + 4 lambda) / (8 + 4 lambda) grows from 1 to 4 with lambda: the
    # wide pair's pretraining weight falls, its finetuning weight rises, d_eff falls.
    pre, fine = grid.weights["chameleon_pretrain"][:, 0], grid.weights["chameleon_finetune"][:, 0]
    assert (np.diff(pre) < 0).all() and (np.diff(fine) > 0).all() and (np.diff(grid.d_eff) < 0).all()


def test_the_configured_values_join_the_grids_and_higher_temperature_flattens() -> None:
    grid = lambda_grid(CROSS_NAMES, linear_kernel(CROSS), 5.0, 0.2, lam=7.0)
    assert 7.0 in grid.values and grid.values == sorted(grid.values)
    temps = temperature_grid(CROSS_NAMES, np.array([0.1, 0.2, 0.3, 0.4]), t_pretrain=4.0)
    assert temps.values == [2.0, 3.0, 4.0, 5.0, 10.0, 20.0]
    w = temps.weights["chameleon_pretrain"]
    np.testing.assert_allclose(w[0], _softmax([10 / 2, 5 / 2, (10 / 3) / 2, 2.5 / 2]), rtol=1e-12)
    entropy = -(w * np.log(w)).sum(axis=1)
    assert (np.diff(entropy) > 0).all()


def test_spearman_of_hand_ranked_vectors() -> None:
    assert spearman(np.array([1.0, 2.0, 3.0, 4.0]), np.array([10.0, 20.0, 30.0, 40.0])) == pytest.approx(1.0)
    assert spearman(np.array([1.0, 2.0, 3.0]), np.array([3.0, 2.0, 1.0])) == pytest.approx(-1.0)
    # ranks (0, 1, 2, 3) against (0, 2, 1, 3): 1 - 6 * 2 / (4 * 15) = 0.8
    assert spearman(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 3.0, 2.0, 4.0])) == pytest.approx(0.8)
    assert np.isnan(spearman(np.array([1.0, 1.0, 1.0]), np.array([1.0, 2.0, 3.0])))


def _windows(centres: np.ndarray, noise: float, n: int = 64, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"d{i}": c + noise * rng.normal(size=(n, len(c))) for i, c in enumerate(centres)}


def test_separated_domains_give_stable_leverage_ranks() -> None:
    # Orthogonal means at distances 1..5: distinct, well-separated scores; window noise 0.01.
    centres = np.diag([1.0, 2.0, 3.0, 4.0, 5.0])
    stab = leverage_stability(_windows(centres, 0.01), lam=0.1, t_pretrain=5.0)
    assert stab.subsets == 4 and stab.windows_per_subset == 16 and stab.krls.shape == (4, 5)
    assert stab.rank_correlation == pytest.approx(1.0)
    assert (stab.krls_std < 0.01).all()
    np.testing.assert_allclose(stab.krls.sum(axis=1), 1.0)


def test_noisy_domains_give_unstable_leverage_ranks_and_few_windows_fewer_subsets() -> None:
    centres = np.diag([1.0, 1.1, 1.2, 1.3, 1.4])
    noisy = leverage_stability(_windows(centres, 3.0), lam=0.1, t_pretrain=5.0)
    assert noisy.rank_correlation < 0.9
    few = leverage_stability(_windows(centres, 0.1, n=3), lam=0.1, t_pretrain=5.0)
    assert few.subsets == 3 and few.windows_per_subset == 1
    assert leverage_stability(_windows(centres, 0.1, n=1), lam=0.1, t_pretrain=5.0) is None


def _duplicated(scale: float = 1.0) -> tuple[list[str], dict[str, np.ndarray]]:
    """d0..d3 with random means; d1 is a second sample of d0's distribution (a near-copy)."""
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(4, 16))
    centres[1] = centres[0]
    windows = {d: scale * w for d, w in _windows(centres, 0.3, seed=8).items()}
    return list(windows), windows


def test_a_duplicated_domain_is_named_with_the_share_the_pair_receives() -> None:
    domains, windows = _duplicated()
    kernel = linear_kernel(np.stack([windows[d].mean(axis=0) for d in domains]))
    weights = {"uniform": [0.25] * 4, "chameleon_pretrain": [0.3, 0.35, 0.2, 0.15]}
    (dup,) = near_duplicates(domains, center_kernel(kernel), weights, windows)
    assert (dup.a, dup.b) == ("d0", "d1")
    assert dup.shares == pytest.approx({"uniform": 0.5, "chameleon_pretrain": 0.65})
    assert dup.noise_ratio < 3 and dup.distance_ratio < 0.1
    message = dup.message()
    assert "'d0' and 'd1'" in message and "chameleon_pretrain 0.650" in message and "uniform 0.500" in message
    # From the means alone the distance test still finds them.
    assert [(d.a, d.b) for d in near_duplicates(domains, center_kernel(kernel), weights)] == [("d0", "d1")]


def test_diagnose_warns_about_the_duplicate_and_not_about_distinct_domains() -> None:
    domains, windows = _duplicated()
    kernel = linear_kernel(np.stack([windows[d].mean(axis=0) for d in domains]))
    from chameleon_assets.core.krls import chameleon_weights

    cw = chameleon_weights(domains, kernel)
    found = diagnose(domains, kernel, {"chameleon_pretrain": cw.pretrain}, 10.0, 5.0, 0.2, windows=windows)
    (warning,) = found.warnings
    assert f"chameleon_pretrain {cw.pretrain[0] + cw.pretrain[1]:.3f}" in warning and "'d0' and 'd1'" in warning

    distinct = _windows(np.random.default_rng(7).normal(size=(4, 16)), 0.3, seed=8)
    kernel = linear_kernel(np.stack([w.mean(axis=0) for w in distinct.values()]))
    cw = chameleon_weights(list(distinct), kernel)
    clean = diagnose(list(distinct), kernel, {"chameleon_pretrain": cw.pretrain}, 10.0, 5.0, 0.2, windows=distinct)
    assert clean.warnings == [] and clean.duplicates == []


def test_diagnostics_under_the_relative_ridge_do_not_change_when_embeddings_are_scaled() -> None:
    domains, windows = _duplicated()
    _, ten = _duplicated(scale=10.0)
    out = []
    for w in (windows, ten):
        kernel = linear_kernel(np.stack([w[d].mean(axis=0) for d in domains]))
        out.append(diagnose(domains, kernel, {"uniform": [0.25] * 4}, 0.01, 5.0, 0.2, "relative", windows=w))
    one, scaled = out
    assert scaled.trace == pytest.approx(100 * one.trace, rel=1e-10)
    assert scaled.d_eff == pytest.approx(one.d_eff, rel=1e-10)
    for name in ("chameleon_pretrain", "chameleon_finetune"):
        np.testing.assert_allclose(scaled.lambdas.weights[name], one.lambdas.weights[name], rtol=1e-9, atol=0)
    np.testing.assert_allclose(scaled.stability.krls, one.stability.krls, rtol=1e-9, atol=0)
    assert [(d.a, d.b) for d in scaled.duplicates] == [(d.a, d.b) for d in one.duplicates] == [("d0", "d1")]
    assert one.lam_relative == pytest.approx(0.01)


def test_the_asset_warns_about_a_copied_domain_and_shows_its_plots(project) -> None:  # noqa: ANN001
    import json

    import dagster as dg

    from chameleon_assets.defs.corpus.assets import domain_corpus
    from chameleon_assets.defs.mixing.affinity import affinity_matrix
    from chameleon_assets.defs.mixing.diagnostics import weight_diagnostics
    from chameleon_assets.defs.mixing.embeddings import domain_embeddings
    from chameleon_assets.defs.mixing.proxy import proxy_model
    from chameleon_assets.defs.mixing.weights import mixture_weights
    from chameleon_assets.runner import get_instance, load_defs, materialize
    from tests.conftest import TOPICS, current, register, write_domain, write_registry

    domains = ["alpha", "alpha_copy", "beta", "gamma"]
    for d in ("alpha", "beta", "gamma"):
        write_domain(project / "raw", d)
    write_domain(project / "raw", "alpha_copy", text=TOPICS["alpha"])  # the same documents under another name
    write_registry(project, domains)
    instance, defs = get_instance(), load_defs()
    register(instance, domains)
    for d in domains:
        materialize(defs, instance, [domain_corpus], partition_key=d)
    materialize(defs, instance, [proxy_model])
    for d in domains:
        materialize(defs, instance, [domain_embeddings], partition_key=d)
    result = materialize(defs, instance, [affinity_matrix, mixture_weights, weight_diagnostics])

    table = result.output_for_node("mixture_weights")
    value = result.output_for_node("weight_diagnostics")
    (dup,) = value.near_duplicates
    assert (dup["a"], dup["b"]) == ("alpha", "alpha_copy")
    pretrain = table.weights["chameleon_pretrain"]
    assert dup["shares"]["chameleon_pretrain"] == pytest.approx(pretrain[0] + pretrain[1])
    assert dup["shares"]["uniform"] == pytest.approx(0.5)
    assert "'alpha' and 'alpha_copy'" in value.warnings[0]
    (check,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "no_near_duplicate_domains"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    # The numbers are those of the weights it describes: d_eff is the sum of their raw scores.
    assert value.weights_version == table.data_version and value.lam == 10.0 and value.ridge == "absolute"
    assert value.d_eff == pytest.approx(sum(table.krls_raw), rel=1e-9)
    assert value.trace == pytest.approx(sum(value.eigenvalues), rel=1e-9)
    (mat,) = result.asset_materializations_for_node("weight_diagnostics")
    assert "10 (configured)" in mat.metadata["lambda_grid"].value
    assert "alpha_copy" in mat.metadata["warnings"].value
    for plot in ("weights_vs_lambda", "weights_vs_temperature", "eigenvalue_spectrum"):
        assert "data:image/png;base64," in mat.metadata[plot].value
    folder = current(project, "diagnostics")
    assert folder.name == value.data_version and (folder / "weights_vs_lambda.png").stat().st_size > 1000
    stored = json.loads((folder / "diagnostics.json").read_text())
    assert stored["stability"]["subsets"] == 4 and stored["stability"]["windows_per_subset"] == 2
    # Materialised again with nothing changed: the stored version is reused, not recomputed.
    again = materialize(defs, instance, [weight_diagnostics]).output_for_node("weight_diagnostics")
    assert again == value and current(project, "diagnostics") == folder
