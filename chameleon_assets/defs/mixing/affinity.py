"""The domain affinity matrix: a centred linear kernel over the domains' mean embeddings
(``core.krls``), for the pretraining and the finetuning domains.
"""

import dagster as dg

from chameleon_assets import paths
from chameleon_assets.core.artifacts import atomic_dir, point_current, prune_versions, sha256_text, write_json
from chameleon_assets.defs import plots, policy
from chameleon_assets.defs.io import one_writer, stored_value, versions_text
from chameleon_assets.defs.sources import domain_registry, finetune_registry
from chameleon_assets.defs.values import AffinityMatrix, DomainEmbedding

AFFINITY_CODE_VERSION = "affinity-v3"


def _affinity_asset(name: str, embeddings_asset: str, registry: dg.SourceAsset, stage: str, asset_group: str,
                    extra_condition: dg.AutomationCondition | None = None) -> dg.AssetsDefinition:
    """The affinity asset over every partition of ``embeddings``."""
    condition = policy.FOLLOWS if extra_condition is None else (policy.FOLLOWS & extra_condition)

    @dg.asset(
        name=name,
        ins={"embeddings": dg.AssetIn(embeddings_asset, partition_mapping=dg.AllPartitionMapping(),
                                      metadata={"as_dict": True})},
        deps=[registry],
        group_name=asset_group,
        code_version=AFFINITY_CODE_VERSION,
        automation_condition=condition,
        kinds={"numpy"},
    )
    @one_writer
    def _affinity(context: dg.AssetExecutionContext, embeddings: dict) -> dg.Output[AffinityMatrix]:
        """Domain affinity: the linear kernel of the domain mean embeddings, K = E E^T, and
        its centred form K_c = H K H (H = I - 11^T/k), the matrix KRLS is computed on.
        """
        return affinity_of(context, embeddings, name, embeddings_asset=embeddings_asset, stage=stage)

    return _affinity


def affinity_of(context: dg.AssetExecutionContext, embeddings: dict, asset: str, embeddings_asset: str,
                stage: str) -> dg.Output[AffinityMatrix]:
    """The body of both affinity assets: K and K_c of ``{domain: DomainEmbedding}``."""
    import numpy as np
    import pandas as pd

    from chameleon_assets.core.krls import center_kernel, linear_kernel

    emb: dict[str, DomainEmbedding] = embeddings
    domains = list(emb)
    proxies = sorted({e.proxy_version for e in emb.values()})
    if len(proxies) > 1:
        context.log.warning(f"domain embeddings come from different proxies: {proxies}")
    version = sha256_text(AFFINITY_CODE_VERSION, versions_text({d: e.data_version for d, e in emb.items()}))[:24]
    out = paths.affinity_dir(version, stage)
    value = stored_value(asset, None, version)
    if value is None:
        means = np.array([emb[d].mean for d in domains])
        kern = linear_kernel(means)
        kern_c = center_kernel(kern)
        with atomic_dir(out) as tmp:
            plots.heatmap(kern_c, domains, "centred affinity K_c", tmp / "affinity_heatmap.png")
            write_json(tmp / "affinity.json", {"domains": domains, "kernel": kern, "kernel_centered": kern_c})
        value = AffinityMatrix(version, str(out), domains, kern.tolist(), kern_c.tolist(), proxies,
                               str(out / "affinity_heatmap.png"), {d: e.corpus_version for d, e in emb.items()},
                               {d: e.train_tokens for d, e in emb.items()}, {d: e.data_version for d, e in emb.items()},
                               embeddings_asset)
    point_current(out)
    prune_versions(out.parent)
    b64 = plots.file_b64(out / "affinity_heatmap.png")
    table = pd.DataFrame(value.kernel_centered, index=domains, columns=domains).round(4)
    return dg.Output(value, data_version=dg.DataVersion(version), metadata={
        "domains": len(domains),
        "affinity_centered": dg.MetadataValue.md(table.to_markdown()),
        "heatmap": dg.MetadataValue.md(plots.markdown_image(b64, "centred affinity heatmap")),
        "heatmap_path": dg.MetadataValue.path(value.heatmap_path),
    })


affinity_matrix = _affinity_asset("affinity_matrix", "domain_embeddings", domain_registry, "pretrain", "mixing")
# With no finetuning domain registered the finetuning stage has nothing to compute: it waits.
finetune_affinity = _affinity_asset(
    "finetune_affinity", "finetune_embeddings", finetune_registry, "finetune", "finetune",
    extra_condition=dg.AutomationCondition.any_deps_match(~dg.AutomationCondition.missing()).allow(
        dg.AssetSelection.assets("finetune_embeddings")).with_label("a finetuning domain is registered"))
