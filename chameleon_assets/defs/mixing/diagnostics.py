"""How far to trust CHAMELEON's weights: weight_diagnostics beside mixture_weights, and
finetune_diagnostics beside finetune_weights (the same body, over the finetuning domains).

mixture_weights + affinity_matrix (+ the domain_embeddings versions the affinity names)
-> weight_diagnostics: the centred kernel's spectrum, d_eff, the weights over lambda and
T_pt, leverage-score stability over window subsets, and near-duplicate domains.
"""

import dataclasses
from pathlib import Path

import dagster as dg

from chameleon_assets import paths
from chameleon_assets.core.artifacts import (
    atomic_dir,
    point_current,
    prune_versions,
    read_json,
    sha256_text,
    write_json,
)
from chameleon_assets.defs import plots, policy
from chameleon_assets.defs.io import load_version, one_writer, stored_value
from chameleon_assets.defs.partitions import LINEAGE_ONLY
from chameleon_assets.defs.values import AffinityMatrix, MixtureTable, WeightDiagnostics

DIAGNOSTICS_CODE_VERSION = "diagnostics-v1"


def _diagnostics_asset(name: str, weights_asset: str, affinity_asset: str, embeddings_asset: str, stage: str,
                       asset_group: str) -> dg.AssetsDefinition:
    """The diagnostics of one stage's weights (``weights_asset`` computed from ``affinity_asset``)."""

    @dg.asset(
        name=name,
        ins={"table": dg.AssetIn(weights_asset), "affinity": dg.AssetIn(affinity_asset)},
        # The embeddings read are exactly the versions the affinity names, so this edge is lineage only.
        deps=[dg.AssetDep(embeddings_asset, partition_mapping=LINEAGE_ONLY)],
        group_name=asset_group,
        code_version=DIAGNOSTICS_CODE_VERSION,
        kinds={"numpy"},
        automation_condition=policy.FOLLOWS,
        description=DIAGNOSTICS_DOC,
    )
    @one_writer
    def _diagnostics(context: dg.AssetExecutionContext, table: MixtureTable, affinity: AffinityMatrix
                     ) -> dg.Output[WeightDiagnostics]:
        return diagnose_weights(context, table, affinity, name, weights_asset, affinity_name=affinity_asset,
                                stage=stage)

    return _diagnostics


DIAGNOSTICS_DOC = """How sensitive the CHAMELEON weights are, and to what; look here before trusting them.

Spectrum s_j of K_c and trace(K_c) = sum_j s_j; d_eff = sum_i tau_i (raw) =
sum_j s_j / (s_j + lambda k); the chameleon weights over lambda (0.1..1000, or
1e-4..1 with the relative ridge; log axis) and T_pt (2..20); leverage stability:
tau from 4 disjoint subsets of each domain's windows (mean, spread, mean Spearman
rank correlation); near-duplicate domains (means closer than 0.1x the median
distance between domains, or than 3x the sampling noise of the means) with the
share each mixture gives the pair, as a warning. Parameters are the ones the
weights were computed with.
"""


def diagnose_weights(context: dg.AssetExecutionContext, table: MixtureTable, affinity: AffinityMatrix, asset: str,
                     weights_name: str, affinity_name: str, stage: str) -> dg.Output[WeightDiagnostics]:
    """The body of both diagnostics assets."""
    if table.affinity_version and table.affinity_version != affinity.data_version:
        raise ValueError(f"{weights_name} {table.data_version} was computed from {affinity_name} "
                         f"{table.affinity_version}, but the latest {affinity_name} is {affinity.data_version}: "
                         f"materialise {weights_name} first")
    version = sha256_text(DIAGNOSTICS_CODE_VERSION, table.data_version, affinity.data_version)[:24]
    value = stored_value(asset, None, version)
    if value is None:
        value = _diagnose(table, affinity, version, stage)
    out = Path(value.path)
    point_current(out)
    prune_versions(out.parent)
    for warning in value.warnings:
        context.log.warning(warning)
    return dg.Output(value, data_version=dg.DataVersion(version), metadata=_metadata(value, out))


def _windows(affinity: AffinityMatrix) -> dict | None:
    """Each domain's window embeddings (N x d) at the version the affinity was computed from;
    None for an affinity stored before it recorded those versions."""
    import numpy as np

    versions = getattr(affinity, "embedding_versions", None) or {}
    if set(versions) != set(affinity.domains):
        return None
    asset = getattr(affinity, "embeddings_asset", "domain_embeddings")
    return {d: np.load(Path(load_version(asset, d, versions[d]).path) / "embeddings.npy") for d in affinity.domains}


def _diagnose(table: MixtureTable, affinity: AffinityMatrix, version: str, stage: str = "pretrain"
              ) -> WeightDiagnostics:
    """Run the diagnostics with the weights' own parameters; write the version's folder."""
    import numpy as np

    from chameleon_assets.core.diagnostics import diagnose

    domains = list(affinity.domains)
    params = table.params
    ridge = params.get("ridge", "absolute")  # weights stored before the option existed used the absolute ridge
    lam, t_pt, t_ft = params["lambda"], params["t_pretrain"], params["t_finetune"]
    found = diagnose(domains, np.asarray(affinity.kernel), table.weights, lam, t_pt, t_ft, ridge, _windows(affinity))
    stab = found.stability
    value = WeightDiagnostics(
        data_version=version, path=str(paths.diagnostics_dir(version, stage)), domains=domains,
        weights_version=table.data_version, affinity_version=affinity.data_version, ridge=ridge, lam=lam,
        lam_effective=found.lam_effective, lam_relative=_finite(found.lam_relative), trace=found.trace,
        eigenvalues=found.eigenvalues.tolist(), d_eff=found.d_eff,
        rank_correlation=None if stab is None else _finite(stab.rank_correlation),
        near_duplicates=[_duplicate(d) for d in found.duplicates], warnings=found.warnings,
    )
    grid, temps = found.lambdas, found.temperatures
    with atomic_dir(Path(value.path)) as tmp:
        write_json(tmp / "diagnostics.json", {
            **{k: v for k, v in dataclasses.asdict(value).items() if k not in ("data_version", "path")},
            "t_pretrain": t_pt, "t_finetune": t_ft, "krls_raw": found.krls_raw,
            "lambda_grid": {"lambda": grid.values, "d_eff": grid.d_eff, **grid.weights},
            "temperature_grid": {"t_pretrain": temps.values, **temps.weights},
            "stability": None if stab is None else {
                "subsets": stab.subsets, "windows_per_subset": stab.windows_per_subset, "krls": stab.krls,
                "krls_mean": stab.krls_mean, "krls_std": stab.krls_std, "pretrain": stab.pretrain,
                "pretrain_mean": stab.pretrain.mean(axis=0), "pretrain_std": stab.pretrain.std(axis=0, ddof=1),
                "rank_correlation": value.rank_correlation},
        })
        x_label = "lambda (relative: units of trace(K_c)/k)" if ridge == "relative" else "lambda (absolute ridge)"
        plots.weights_over(grid.values, grid.weights, domains, x_label, tmp / "weights_vs_lambda.png", mark=lam)
        plots.weights_over(temps.values, temps.weights, domains, "pretraining temperature T_pt",
                           tmp / "weights_vs_temperature.png", mark=t_pt)
        plots.spectrum(found.eigenvalues, tmp / "eigenvalues.png", ridge=found.lam_effective * len(domains),
                       title=f"centred kernel: trace {found.trace:.4g}, d_eff {found.d_eff:.3g}")
    return value


def _finite(x: float) -> float | None:
    import math

    return float(x) if math.isfinite(x) else None


def _show(x: float | None) -> str:
    return "n/a (needs 3 domains)" if x is None else f"{x:.3f}"


def _duplicate(d) -> dict:  # noqa: ANN001 (core.diagnostics.NearDuplicate)
    return {"a": d.a, "b": d.b, "distance_ratio": _finite(d.distance_ratio), "noise_ratio": _finite(d.noise_ratio),
            "shares": d.shares}


def _metadata(value: WeightDiagnostics, out: Path) -> dict:
    """What a person checks first: the spectrum, d_eff, the grids as tables, stability, warnings, plots."""
    import pandas as pd

    data = read_json(out / "diagnostics.json")
    domains = data["domains"]
    grid = data["lambda_grid"]
    lam_rows = [f"{v:g}" + (" (configured)" if v == value.lam else "") for v in grid["lambda"]]
    pretrain = pd.DataFrame(grid["chameleon_pretrain"], index=lam_rows, columns=domains)
    pretrain.insert(0, "d_eff", grid["d_eff"])
    finetune = pd.DataFrame(grid["chameleon_finetune"], index=lam_rows, columns=domains)
    pretrain.index.name = finetune.index.name = "lambda"
    temps = data["temperature_grid"]
    temperature = pd.DataFrame(temps["chameleon_pretrain"], columns=domains,
                               index=[f"{t:g}" + (" (configured)" if t == data["t_pretrain"] else "")
                                      for t in temps["t_pretrain"]])
    temperature.index.name = "T_pt"
    stab = data["stability"]
    if stab is None:
        stability = "not computed (the affinity does not name its embedding versions, or a domain has one window)"
    else:
        rows = {"krls mean": stab["krls_mean"], "krls std": stab["krls_std"],
                "chameleon_pretrain mean": stab["pretrain_mean"], "chameleon_pretrain std": stab["pretrain_std"]}
        stability = (pd.DataFrame(rows, index=domains).T.to_markdown(floatfmt=".4g")
                     + f"\n\n{stab['subsets']} disjoint subsets of {stab['windows_per_subset']}+ windows per domain "
                     "(the spread of an estimate from all windows is about sqrt(subsets) times smaller); "
                     f"mean pairwise Spearman rank correlation of tau: {_show(stab['rank_correlation'])}")
    ridge = value.lam_effective * len(domains)
    lam_text = f"{value.lam:g} ({value.ridge} ridge; lambda k = {ridge:.4g}"
    if value.lam_relative is not None:
        lam_text += f"; as a relative lam: {value.lam_relative:.4g}"
    return {
        "trace": value.trace,
        "eigenvalues": dg.MetadataValue.json([round(s, 6) for s in value.eigenvalues]),
        "d_eff": value.d_eff,
        "lambda": lam_text + ")",
        "rank_correlation": value.rank_correlation,
        "warnings": "; ".join(value.warnings) or "none",
        "lambda_grid": dg.MetadataValue.md(
            "chameleon_pretrain (and d_eff)\n\n" + pretrain.to_markdown(floatfmt=".4f")
            + "\n\nchameleon_finetune\n\n" + finetune.to_markdown(floatfmt=".4f")),
        "temperature_grid": dg.MetadataValue.md(temperature.to_markdown(floatfmt=".4f")),
        "stability": dg.MetadataValue.md(stability),
        "weights_vs_lambda": dg.MetadataValue.md(
            plots.markdown_image(plots.file_b64(out / "weights_vs_lambda.png"), "weights over lambda")),
        "weights_vs_temperature": dg.MetadataValue.md(
            plots.markdown_image(plots.file_b64(out / "weights_vs_temperature.png"), "weights over T_pt")),
        "eigenvalue_spectrum": dg.MetadataValue.md(
            plots.markdown_image(plots.file_b64(out / "eigenvalues.png"), "eigenvalues of K_c")),
        "near_duplicates": dg.MetadataValue.json(value.near_duplicates),
        "weights_version": value.weights_version,
        "path": dg.MetadataValue.path(str(out)),
    }


weight_diagnostics = _diagnostics_asset("weight_diagnostics", "mixture_weights", "affinity_matrix",
                                        "domain_embeddings", "pretrain", "mixing")
finetune_diagnostics = _diagnostics_asset("finetune_diagnostics", "finetune_weights", "finetune_affinity",
                                          "finetune_embeddings", "finetune", "finetune")
