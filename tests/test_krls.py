"""KRLS and CHAMELEON weights against numbers worked out by hand."""

import math

import numpy as np
import pytest

from chameleon_assets.core.krls import (
    center_kernel,
    chameleon_weights,
    effective_lambda,
    finetune_weights,
    krls,
    linear_kernel,
    pretrain_weights,
    softmax,
)


def _softmax(xs: list[float]) -> list[float]:
    z = [math.exp(x) for x in xs]
    return [v / sum(z) for v in z]


def test_two_identical_domains_and_one_distinct_match_the_closed_form() -> None:
    # e1 = e2 = (1, 0), e3 = (0, 1). Centred: c1 = c2 = (1/3, -1/3), c3 = (-2/3, 2/3), so
    # K_c = v v^T with v = a (1, 1, -2), a^2 = 2/9, |v|^2 = 4/3. For a rank-one kernel
    # K_c (K_c + mu I)^-1 = v v^T / (|v|^2 + mu), mu = lam k = 30:
    # tau_raw = (2/9, 2/9, 8/9) / (4/3 + 30) = (1/141, 1/141, 4/141); normalised (1/6, 1/6, 2/3).
    means = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    w = chameleon_weights(["a", "b", "c"], linear_kernel(means), lam=10.0, t_pretrain=5.0, t_finetune=0.2)
    np.testing.assert_allclose(w.krls_raw, [1 / 141, 1 / 141, 4 / 141], rtol=1e-12)
    np.testing.assert_allclose(w.krls, [1 / 6, 1 / 6, 2 / 3], rtol=1e-12)
    np.testing.assert_allclose(w.pretrain, _softmax([6 / 5, 6 / 5, 1.5 / 5]), rtol=1e-12)
    np.testing.assert_allclose(w.finetune, _softmax([(1 / 6) / 0.2, (1 / 6) / 0.2, (2 / 3) / 0.2]), rtol=1e-12)
    # The distinct domain: largest KRLS, largest finetune weight, smallest pretrain weight.
    assert np.argmax(w.krls) == np.argmax(w.finetune) == np.argmin(w.pretrain) == 2


def test_the_relative_ridge_reads_lam_in_units_of_the_mean_eigenvalue() -> None:
    # The rank-one example above: trace(K_c) = |v|^2 = 4/3, so relative lam = 1 gives
    # lambda = 1 * (4/3) / 3 = 4/9 and mu = lambda k = 4/3 = trace(K_c):
    # tau_raw = (2/9, 2/9, 8/9) / (4/3 + 4/3) = (1/12, 1/12, 1/3).
    means = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    w = chameleon_weights(["a", "b", "c"], linear_kernel(means), lam=1.0, ridge="relative")
    assert w.lam_effective == pytest.approx(4 / 9, rel=1e-12)
    np.testing.assert_allclose(w.krls_raw, [1 / 12, 1 / 12, 1 / 3], rtol=1e-12)
    assert chameleon_weights(["a", "b", "c"], linear_kernel(means), lam=1.0).lam_effective == 1.0
    # A zero kernel has no scale: lam is used as is (and every score is 0).
    assert effective_lambda(np.zeros((2, 2)), 3.0, "relative") == 3.0
    with pytest.raises(ValueError, match="ridge"):
        effective_lambda(np.eye(2), 1.0, "proportional")


def test_the_relative_ridge_is_scale_free_and_the_absolute_one_is_not() -> None:
    # Embeddings x10 multiply K_c and trace(K_c) by 100: the relative ridge follows, the absolute does not.
    rng = np.random.default_rng(5)
    e = rng.normal(size=(5, 8))
    names = list("abcde")
    for lam in (0.01, 0.3, 10.0):
        one = chameleon_weights(names, linear_kernel(e), lam=lam, ridge="relative")
        ten = chameleon_weights(names, linear_kernel(10 * e), lam=lam, ridge="relative")
        np.testing.assert_allclose(ten.krls_raw, one.krls_raw, rtol=1e-10, atol=0)
        np.testing.assert_allclose(ten.pretrain, one.pretrain, rtol=1e-10, atol=0)
        np.testing.assert_allclose(ten.finetune, one.finetune, rtol=1e-10, atol=0)
    one = chameleon_weights(names, linear_kernel(e), lam=1.0)
    ten = chameleon_weights(names, linear_kernel(10 * e), lam=1.0)
    assert np.abs(ten.pretrain - one.pretrain).max() > 1e-3


def test_centred_kernel_is_the_kernel_of_centred_embeddings() -> None:
    rng = np.random.default_rng(0)
    e = rng.normal(size=(5, 7))
    c = e - e.mean(axis=0)
    np.testing.assert_allclose(center_kernel(linear_kernel(e)), c @ c.T, atol=1e-12)


def test_krls_equals_the_explicit_inverse_formula() -> None:
    rng = np.random.default_rng(1)
    e = rng.normal(size=(6, 4))
    kc = center_kernel(linear_kernel(e))
    explicit = np.diag(kc @ np.linalg.inv(kc + 2.5 * 6 * np.eye(6)))
    np.testing.assert_allclose(krls(kc, 2.5), explicit, rtol=1e-10)


def test_lambda_limits() -> None:
    # Generic domains (centred means span k - 1 dimensions): as lam -> 0 the leverage
    # scores become the diagonal of the projection onto range(K_c) = I - 11^T/k, i.e.
    # 1 - 1/k for every domain, so every CHAMELEON mixture tends to uniform.
    rng = np.random.default_rng(2)
    e = rng.normal(size=(4, 6))
    kern = linear_kernel(e)
    small = chameleon_weights(list("abcd"), kern, lam=1e-9)
    np.testing.assert_allclose(small.krls_raw, [0.75] * 4, atol=1e-6)
    np.testing.assert_allclose(small.pretrain, [0.25] * 4, atol=1e-6)
    np.testing.assert_allclose(small.finetune, [0.25] * 4, atol=1e-6)
    # As lam -> inf, tau_raw ~ diag(K_c) / (lam k) -> 0, so the normalised scores tend to
    # diag(K_c) / trace(K_c) and softmax(tau_raw / T) (the un-normalised finetune rule) to uniform.
    big = chameleon_weights(list("abcd"), kern, lam=1e9)
    kc = center_kernel(kern)
    np.testing.assert_allclose(big.krls, np.diag(kc) / np.trace(kc), rtol=1e-6)
    np.testing.assert_allclose(finetune_weights(big.krls_raw, 0.2), [0.25] * 4, atol=1e-8)


def test_single_domain_gets_weight_one_with_a_message() -> None:
    w = chameleon_weights(["only"], linear_kernel(np.array([[0.3, -1.2]])))
    assert w.pretrain.tolist() == [1.0] and w.finetune.tolist() == [1.0]
    assert "only one domain" in w.notes[0]


def test_identical_domains_get_uniform_weights_with_a_message() -> None:
    w = chameleon_weights(["a", "b", "c"], linear_kernel(np.ones((3, 4))))
    np.testing.assert_allclose(w.pretrain, [1 / 3] * 3)
    assert "coincide" in w.notes[0]


def test_a_domain_at_the_centroid_takes_all_pretraining_weight() -> None:
    # Zero leverage score -> 1/tau = +inf: the softmax limit puts all mass there.
    assert pretrain_weights(np.array([0.5, 0.0, 0.5]), 5.0).tolist() == [0.0, 1.0, 0.0]
    assert softmax(np.array([np.inf, 1.0, np.inf])).tolist() == [0.5, 0.0, 0.5]


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="k x k"):
        chameleon_weights(["a", "b"], np.eye(3))
    with pytest.raises(ValueError, match="NaN"):
        chameleon_weights(["a", "b"], np.array([[1.0, np.nan], [np.nan, 1.0]]))
    with pytest.raises(ValueError, match="positive"):
        krls(np.eye(2), 0.0)
