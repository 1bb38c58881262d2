"""Asset checks: what a person would verify first about the affinity and the weights.

Each check applies to both stages: the pretraining assets and their finetuning twins.
"""

import dagster as dg

from chameleon_assets.defs.methods.assets import mixture_table
from chameleon_assets.defs.mixing.affinity import affinity_matrix, finetune_affinity
from chameleon_assets.defs.mixing.diagnostics import finetune_diagnostics, weight_diagnostics
from chameleon_assets.defs.mixing.weights import finetune_weights, mixture_weights
from chameleon_assets.defs.values import AffinityMatrix, MixtureTable, WeightDiagnostics

SUM_TOLERANCE = 1e-9
DOMINANCE_LIMIT = 0.9


def weights_are_distributions(mixture_weights: MixtureTable) -> dg.AssetCheckResult:
    """Every mixture's weights are finite, non-negative and sum to 1 within 1e-9."""
    import numpy as np

    bad = {}
    for name, w in mixture_weights.weights.items():
        w = np.asarray(w, dtype=np.float64)
        if not np.isfinite(w).all():
            bad[name] = "non-finite weight"
        elif (w < 0).any():
            bad[name] = f"negative weight {w.min():.3g}"
        elif abs(w.sum() - 1.0) > SUM_TOLERANCE:
            bad[name] = f"sums to {w.sum():.12f}"
    return dg.AssetCheckResult(passed=not bad, metadata={"problems": dg.MetadataValue.json(bad)})


def no_mixture_dominated_by_one_domain(mixture_weights: MixtureTable) -> dg.AssetCheckResult:
    """Warn when any mixture puts more than 90% of its weight on one domain."""
    import numpy as np

    heavy = {
        name: f"{mixture_weights.domains[int(np.argmax(w))]}: {max(w):.3f}"
        for name, w in mixture_weights.weights.items()
        if max(w) > DOMINANCE_LIMIT and len(w) > 1
    }
    return dg.AssetCheckResult(
        passed=not heavy, severity=dg.AssetCheckSeverity.WARN, metadata={"dominated": dg.MetadataValue.json(heavy)}
    )


def affinity_is_symmetric(affinity_matrix: AffinityMatrix) -> dg.AssetCheckResult:
    """The centred affinity matrix K_c = H K H is symmetric (and finite)."""
    import numpy as np

    kc = np.asarray(affinity_matrix.kernel_centered, dtype=np.float64)
    asym = float(np.abs(kc - kc.T).max()) if kc.size else 0.0
    scale = max(float(np.abs(kc).max()), 1e-12) if kc.size else 1.0
    return dg.AssetCheckResult(
        passed=bool(np.isfinite(kc).all() and asym <= 1e-9 * scale),
        metadata={"max_asymmetry": asym},
    )


def no_near_duplicate_domains(weight_diagnostics: WeightDiagnostics) -> dg.AssetCheckResult:
    """Warn when two domains' mean embeddings nearly coincide (core.diagnostics.near_duplicates):
    each makes the other look shared (low leverage), so chameleon_pretrain gives their
    content more than it would give it as one domain."""
    return dg.AssetCheckResult(
        passed=not weight_diagnostics.near_duplicates,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"near_duplicates": dg.MetadataValue.json(weight_diagnostics.near_duplicates)},
    )


def _checks() -> list[dg.AssetChecksDefinition]:
    """Every check on the pretraining asset and on its finetuning twin (blocking ones block)."""
    specs = [
        (weights_are_distributions, (mixture_weights, mixture_table, finetune_weights), True),
        (no_mixture_dominated_by_one_domain, (mixture_weights, finetune_weights), False),
        (affinity_is_symmetric, (affinity_matrix, finetune_affinity), True),
        (no_near_duplicate_domains, (weight_diagnostics, finetune_diagnostics), False),
    ]
    return [dg.asset_check(asset=asset, name=fn.__name__, blocking=blocking)(fn)
            for fn, assets, blocking in specs for asset in assets]


CHECKS = _checks()
