"""CHAMELEON behind the method interface: KRLS of the domain kernel (formulas in ``core.krls``).

``chameleon_pretrain`` = softmax((1 / tau) / T_pt), ``chameleon_finetune`` = softmax(tau / T_ft),
with tau_i = [K_c (K_c + lambda k I)^-1]_ii normalised to sum 1. Its own compute is the
k x k solve; the proxy training and embedding passes it reads are costed where they run
(``mixture_weights`` adds them to its cost row).
"""

from __future__ import annotations

import time
from typing import Any, Literal, Mapping


from chameleon_assets.core.cost import Cost
from chameleon_assets.core.krls import chameleon_weights
from chameleon_assets.core.methods import DomainSet, MethodResult, register
from chameleon_assets.core.schema import PositiveFloat, settings


@settings
class KRLSParams:
    """KRLS ridge ``lam`` and the softmax temperatures of the two CHAMELEON mixtures.

    ``ridge``: how ``lam`` is read. ``absolute`` (the paper's): tau_i = [K_c (K_c + lam k I)^-1]_ii.
    ``relative`` (scale-free): lam is in units of trace(K_c) / k, the mean eigenvalue of
    K_c, so the ridge is lam * trace(K_c) and the weights do not depend on the proxy's
    embedding scale (``core.krls.effective_lambda``).
    """

    lam: PositiveFloat = 10.0
    t_pretrain: PositiveFloat = 5.0
    t_finetune: PositiveFloat = 0.2
    ridge: Literal["absolute", "relative"] = "absolute"


def _krls_settings(self: Any, mixtures: Mapping[str, Any], budget_tokens: int) -> dict[str, Any]:
    """``chameleon:`` in conf/mixtures.yaml (shared by both CHAMELEON mixtures)."""
    return dict(mixtures["chameleon"])


def _krls(domains: DomainSet, params: KRLSParams, stage: str) -> MethodResult:
    t0 = time.perf_counter()
    cw = chameleon_weights(domains.names, domains.kernel, params.lam, params.t_pretrain, params.t_finetune,
                           params.ridge)
    k = domains.k
    w = cw.pretrain if stage == "pretrain" else cw.finetune
    # The kernel, its centring and the solve: about k^3 multiply-adds each.
    return MethodResult(w, Cost.of("krls", 3 * 2 * k**3, time.perf_counter() - t0, 0),
                        details={"krls": cw.krls.tolist(), "krls_raw": cw.krls_raw.tolist(),
                                 "lambda_effective": cw.lam_effective},
                        notes=list(cw.notes))


@register
class ChameleonPretrain:
    """Inverse KRLS: favour what domains share."""

    name = "chameleon_pretrain"
    needs = frozenset({"kernel"})
    Params = KRLSParams
    mixture_settings = _krls_settings

    def compute(self, domains: DomainSet, params: KRLSParams, proxy=None) -> MethodResult:  # noqa: ANN001
        return _krls(domains, params, "pretrain")


@register
class ChameleonFinetune:
    """KRLS: favour what is unique."""

    name = "chameleon_finetune"
    needs = frozenset({"kernel"})
    Params = KRLSParams
    mixture_settings = _krls_settings

    def compute(self, domains: DomainSet, params: KRLSParams, proxy=None) -> MethodResult:  # noqa: ANN001
        return _krls(domains, params, "finetune")
