"""CHAMELEON's weights and the closed-form baselines' beside them, for pretraining
(``mixture_weights``) and for finetuning (``finetune_weights``): KRLS of the affinity matrix
(``core.krls``) and every closed-form method of ``core.methods``, with what each cost.

The steps before, as in the paper's method section: ``proxy_model`` ->
``domain_embeddings[domain]`` -> ``affinity_matrix`` -> ``mixture_weights`` (and the same
with the same proxy for the finetuning domains). Every asset computes its data version up
front from its inputs' data versions, its configuration section and its code version,
writes its artefacts into a folder named by that version, and reuses what it stored if
that exact version was built before.
"""

from pathlib import Path

import dagster as dg

from chameleon_assets import paths
from chameleon_assets.core.artifacts import atomic_dir, point_current, prune_versions, sha256_text, write_json
from chameleon_assets.defs import plots, policy
from chameleon_assets.defs.io import one_writer, stored_value, versions_text
from chameleon_assets.defs.partitions import LINEAGE_ONLY
from chameleon_assets.defs.resources import ChameleonConfig
from chameleon_assets.defs.sources import config_deps
from chameleon_assets.defs.tracking import MLflowTracking
from chameleon_assets.defs.values import AffinityMatrix, MixtureTable

WEIGHTS_CODE_VERSION = "weights-v2"


@dg.asset(
    deps=[dg.AssetDep("domain_corpus", partition_mapping=LINEAGE_ONLY), *config_deps("mixture_weights")],
    group_name="mixing",
    code_version=WEIGHTS_CODE_VERSION,
    kinds={"pandas", "mlflow"},
    automation_condition=policy.FOLLOWS,
)
@one_writer
def mixture_weights(
    context: dg.AssetExecutionContext,
    chameleon: ChameleonConfig,
    mlflow_tracking: MLflowTracking,
    affinity_matrix: AffinityMatrix,
) -> dg.Output[MixtureTable]:
    """Mixture weights over the domains, CHAMELEON's and the baselines' side by side.

    KRLS tau_i = [K_c (K_c + lambda k I)^-1]_ii, normalised to sum 1 (with
    `chameleon.ridge: relative`, lambda = lam * trace(K_c)/k: scale-free);
    chameleon_pretrain = softmax((1/tau)/T_pt) (favour what domains share),
    chameleon_finetune = softmax(tau/T_ft) (favour what is unique).
    Baselines: uniform, natural (by train tokens), temperature (n^(1/T)), UniMax, and
    the presets of conf/mixtures.yaml whose domain names match. Each materialisation is
    logged to MLflow as a new weights version, tagged with its domain set. Token counts
    are those of the corpus versions the affinity's embeddings were computed from.
    """
    return weights_output(context, chameleon, mlflow_tracking, affinity_matrix, "mixture_weights", "pretrain")


@dg.asset(
    deps=[dg.AssetDep("finetune_corpus", partition_mapping=LINEAGE_ONLY), *config_deps("finetune_weights")],
    group_name="finetune",
    code_version=WEIGHTS_CODE_VERSION,
    kinds={"pandas", "mlflow"},
    automation_condition=policy.FOLLOWS,
)
@one_writer
def finetune_weights(
    context: dg.AssetExecutionContext,
    chameleon: ChameleonConfig,
    mlflow_tracking: MLflowTracking,
    finetune_affinity: AffinityMatrix,
) -> dg.Output[MixtureTable]:
    """Mixture weights over the finetuning domains (`finetune_mixtures` of conf/mixtures.yaml).

    The finetuning domains are embedded with the same proxy as the pretraining ones;
    KRLS tau_i = [K_c (K_c + lambda k I)^-1]_ii over their centred affinity, normalised
    to sum 1, and chameleon_finetune = softmax(tau / T_ft): the more a domain differs from
    the others, the more weight (the paper's finetuning rule). Beside it: uniform and
    natural (by train tokens), and temperature, chameleon_pretrain or presets when listed.
    Same lambda, ridge and temperatures as mixture_weights; logged to MLflow likewise.
    """
    return weights_output(context, chameleon, mlflow_tracking, finetune_affinity, "finetune_weights", "finetune")


def weights_output(context: dg.AssetExecutionContext, chameleon: ChameleonConfig, tracking: MLflowTracking,
                   affinity_matrix: AffinityMatrix, asset: str, stage: str) -> dg.Output[MixtureTable]:
    """The body of both weights assets: the stage's mixtures over the affinity's domains."""
    domains = list(affinity_matrix.domains)
    corpus_versions = dict(affinity_matrix.corpus_versions)
    section = "mixing" if stage == "pretrain" else "finetune_mixing"
    version = sha256_text(WEIGHTS_CODE_VERSION, chameleon.section_version(section), affinity_matrix.data_version,
                          versions_text(corpus_versions))[:24]
    table = stored_value(asset, None, version)
    if table is None:
        table = _compute_weights(chameleon, affinity_matrix, version, stage)
        table.mlflow_run_id = _log_weights_version(tracking, table, context.run_id, asset, stage)
    out = paths.weights_dir(version, stage)
    point_current(out)
    prune_versions(out.parent)
    frame = table.frame()
    krls_frame = frame.iloc[:0].copy()
    krls_frame.loc["krls (normalised)"] = table.krls
    krls_frame.loc["krls (raw)"] = table.krls_raw
    return dg.Output(table, data_version=dg.DataVersion(version), metadata={
        "weights": dg.MetadataValue.md(frame.round(4).to_markdown()),
        "krls": dg.MetadataValue.md(krls_frame.to_markdown(floatfmt=".4g")),
        "bar_chart": dg.MetadataValue.md(plots.markdown_image(plots.file_b64(out / "weights_bars.png"),
                                                              "mixture weights")),
        "cost": dg.MetadataValue.md(cost_markdown(table.costs)),
        "derived_from": dg.MetadataValue.md(_derived_from(affinity_matrix, table)),
        "domains": len(domains),
        "mixtures": ", ".join(table.weights),
        "skipped": dg.MetadataValue.json(table.skipped),
        "notes": "; ".join(table.notes) or "none",
        "csv": dg.MetadataValue.path(str(out / "weights.csv")),
        "mlflow_run_id": table.mlflow_run_id,
    })


def _derived_from(affinity: AffinityMatrix, table: MixtureTable) -> str:
    """Markdown: the partition versions these weights were computed from, one row per domain."""
    embeddings = getattr(affinity, "embedding_versions", None) or {}
    finetune = getattr(affinity, "embeddings_asset", "domain_embeddings") == "finetune_embeddings"
    corpus, embedding, affinity_asset = (("finetune_corpus", "finetune_embeddings", "finetune_affinity") if finetune
                                         else ("domain_corpus", "domain_embeddings", "affinity_matrix"))
    rows = [f"| domain | {corpus} version | {embedding} version | train tokens |", "|---|---|---|---|"]
    for d in table.domains:
        rows.append(f"| {d} | {table.corpus_versions.get(d, '?')} | {embeddings.get(d, '?')} | "
                    f"{table.train_tokens.get(d, 0):,} |")
    proxies = ", ".join(table.proxy_versions)
    return "\n".join(rows) + f"\n\n{affinity_asset} {affinity.data_version}; proxy_model {proxies}"


def _compute_weights(chameleon: ChameleonConfig, affinity: AffinityMatrix, version: str,
                     stage: str = "pretrain") -> MixtureTable:
    """KRLS and every closed-form baseline over the affinity's domains, through the method
    interface (``core.methods``); writes the version's folder.

    ``stage``: ``pretrain`` computes conf/mixtures.yaml's ``mixtures``, ``finetune`` its
    ``finetune_mixtures`` (no UniMax: its budget is a pretraining one). Mixtures of methods
    that train proxies (DoReMi, DoGE, RegMix) have their own assets; ``mixture_table``
    joins them. Each mixture's cost is its method's own, plus for CHAMELEON the proxy
    training and the embedding passes it reads (``_chameleon_inputs_cost``).
    """
    import dataclasses
    import shutil

    import numpy as np

    from chameleon_assets.core import methods
    from chameleon_assets.core.krls import chameleon_weights
    from chameleon_assets.sections import pretraining_presets
    from chameleon_assets.settings import mixture_method_params

    profile = chameleon.profile()
    mix = chameleon.mixtures()
    domains = list(affinity.domains)
    tokens = np.array([affinity.train_tokens[d] for d in domains], dtype=np.float64)
    domain_set = methods.DomainSet(domains, tokens, kernel=np.asarray(affinity.kernel))
    p = mix.chameleon
    cw = chameleon_weights(domains, np.asarray(affinity.kernel), p.lam, p.t_pretrain, p.t_finetune, p.ridge)
    budget = profile.base_model.train.tokens  # what a method's settings may default to (UniMax's budget)
    names = mix.mixtures if stage == "pretrain" else mix.finetune_mixtures
    closed_form = methods.closed_form_methods(stage)
    results: dict[str, methods.MethodResult] = {}
    for name in names:
        if name in closed_form:  # each method says where in conf/mixtures.yaml its settings are
            results[name] = methods.run(name, domain_set, mixture_method_params(mix, name, budget))
    skipped = {}
    for name, preset in mix.presets.items():
        if name not in (names if stage == "finetune" else pretraining_presets(mix)):
            continue  # each stage considers its own presets (settings.pretraining_presets)
        try:
            result = methods.run("preset", domain_set, methods.get("preset").Params(weights=preset))
        except ValueError:
            skipped[name] = f"domain names do not match ({', '.join(sorted(preset))})"
            continue
        if name in names:
            results[name] = result
    computed = set(methods.computed_mixtures())  # their own assets compute them; mixture_table joins them
    for name in names:
        if name not in results and name not in skipped and name not in computed:
            skipped[name] = "not computed"
    weights = {name: [float(x) for x in results[name].weights] for name in names if name in results}
    upstream = _chameleon_inputs_cost(chameleon, affinity) if any(n.startswith("chameleon") for n in weights) else None
    costs = {name: (results[name].cost + upstream if name.startswith("chameleon") else results[name].cost).as_dict()
             for name in weights}
    params_out = {"lambda": p.lam, "ridge": p.ridge, "lambda_effective": cw.lam_effective, "t_pretrain": p.t_pretrain,
                  "t_finetune": p.t_finetune, "temperature": mix.temperature}
    if "unimax" in weights:
        unimax = mixture_method_params(mix, "unimax", budget)
        params_out.update({"unimax_budget": unimax.budget_tokens, "unimax_max_epochs": unimax.max_epochs})
    online = {name: dataclasses.asdict(mixture_method_params(mix, name, budget))
              for name in weights if name in methods.online_methods()}
    out = paths.weights_dir(version, stage)
    asset = "mixture_weights" if stage == "pretrain" else "finetune_weights"
    table = MixtureTable(
        data_version=version,
        path=str(out),
        domains=domains,
        weights=weights,
        krls=[float(x) for x in cw.krls],
        krls_raw=[float(x) for x in cw.krls_raw],
        params=params_out,
        skipped=skipped,
        notes=cw.notes,
        train_tokens={d: int(t) for d, t in zip(domains, tokens)},
        corpus_versions=dict(affinity.corpus_versions),
        proxy_versions=list(affinity.proxy_versions),
        heatmap_path=str(out / "affinity_heatmap.png"),
        affinity_version=affinity.data_version,
        costs=costs,
        sources={name: f"{asset} {version}" for name in weights},
        online=online,
    )
    frame = table.frame()
    with atomic_dir(out) as tmp:
        write_weights(table, tmp)
        shutil.copyfile(affinity.heatmap_path, tmp / "affinity_heatmap.png")
        plots.grouped_bars({m: frame.loc[m].tolist() for m in frame.index}, domains, "mixture weights",
                           tmp / "weights_bars.png")
    return table


def _chameleon_inputs_cost(chameleon: ChameleonConfig, affinity: AffinityMatrix):  # noqa: ANN202 - core.cost.Cost
    """What CHAMELEON's weights read beyond the KRLS solve: the proxy's training (if this
    pipeline trained it: a user's checkpoint cost nothing here) and each domain's embedding
    pass up to the middle layer, with their recorded wall times.

    FLOPs (core.cost): proxy 6 N T + 6 L n_ctx d T over its training tokens; embeddings
    2 N_m T + 2 m n_ctx d T over the embedded tokens, with N_m the parameters of the m
    layers run (m = the middle layer).
    """
    from chameleon_assets.core.artifacts import read_json
    from chameleon_assets.core.cost import Cost, forward_flops_per_token, layer_parameters, train_flops_per_token
    from chameleon_assets.defs.io import ArtefactDamaged, load_version

    profile = chameleon.profile()
    cost = Cost()
    for version in affinity.proxy_versions:
        try:
            proxy = load_version("proxy_model", None, version)
        except ArtefactDamaged:
            continue  # pruned since: its cost is no longer on record
        if proxy.trained_here:
            info = read_json(Path(proxy.path) / "training.json")
            tokens = int(info["tokens"])
            flops = train_flops_per_token(proxy.parameters, proxy.num_layers, profile.proxy.model.context_length,
                                          proxy.hidden_size) * tokens
            cost = cost + Cost.of("proxy_training", flops, tokens / max(info["tokens_per_s"], 1e-9), tokens)
        m = proxy.middle_layer
        per_layer = layer_parameters(profile.proxy.model.arch, proxy.hidden_size, profile.proxy.model.intermediate_size)
        for domain, version_e in affinity.embedding_versions.items():
            try:
                emb = load_version(affinity.embeddings_asset, domain, version_e)
            except ArtefactDamaged:
                continue
            if emb.proxy_version != proxy.data_version:
                continue
            tokens = emb.tokens or emb.num_samples * profile.embedding.sample_length
            flops = forward_flops_per_token(m * per_layer, m, profile.embedding.sample_length, proxy.hidden_size)
            cost = cost + Cost.of("embeddings", flops * tokens, emb.wall_s, tokens)
    return cost


def _log_weights_version(tracking: MLflowTracking, table: MixtureTable, dagster_run_id: str,
                         asset: str = "mixture_weights", stage: str = "pretrain") -> str:
    """One MLflow run per weights computation: weights as params, KRLS as metrics."""
    import mlflow

    tags = {"kind": "weights", "stage": stage, "domains": ",".join(table.domains),
            "num_domains": str(len(table.domains)),
            "dagster_run_id": dagster_run_id, "weights_version": table.data_version,
            "proxy_versions": ",".join(table.proxy_versions),
            **{f"data_version.{d}": v for d, v in table.corpus_versions.items()}}
    with tracking.start_run(run_name=f"{asset}[{len(table.domains)} domains]", tags=tags) as run:
        mlflow.log_params({f"{m}.{d}": round(w, 6) for m, ws in table.weights.items() for d, w in zip(table.domains, ws)})
        mlflow.log_params({f"param.{k}": v for k, v in table.params.items()})
        mlflow.log_metrics({f"krls.{d}": t for d, t in zip(table.domains, table.krls)})
        mlflow.log_metrics(cost_metrics(table.costs))
        for name in ("weights.json", "weights.csv", "weights_bars.png"):
            mlflow.log_artifact(f"{table.path}/{name}")
        mlflow.log_artifact(table.heatmap_path)
        return run.info.run_id


def cost_metrics(costs: dict[str, dict]) -> dict[str, float]:
    """MLflow metrics of each mixture's cost: ``cost_flops.<mixture>``, ``cost_wall_s.<mixture>``."""
    out = {}
    for name, c in costs.items():
        out[f"cost_flops.{name}"] = float(c.get("flops", 0.0))
        out[f"cost_wall_s.{name}"] = float(c.get("wall_s", 0.0))
    return out


def cost_markdown(costs: dict[str, dict]) -> str:
    """A markdown table: per mixture, the FLOPs and wall seconds its weights cost, and where the FLOPs went."""
    rows = ["| mixture | FLOPs | wall s | tokens | FLOPs by part |", "|---|---|---|---|---|"]
    for name, c in costs.items():
        parts = ", ".join(f"{k} {v:.3g}" for k, v in (c.get("parts") or {}).items()) or "-"
        rows.append(f"| {name} | {c.get('flops', 0.0):.3g} | {c.get('wall_s', 0.0):.1f} | {int(c.get('tokens', 0)):,} "
                    f"| {parts} |")
    return "\n".join(rows)


def write_weights(table: MixtureTable, out) -> None:  # noqa: ANN001
    """A weights table's weights.json and weights.csv in folder ``out``."""
    from chameleon_assets.core.artifacts import atomic_file

    write_json(out / "weights.json", {
        "data_version": table.data_version, "domains": table.domains, "weights": table.weights, "krls": table.krls,
        "krls_raw": table.krls_raw, "params": table.params, "skipped": table.skipped, "notes": table.notes,
        "train_tokens": table.train_tokens, "corpus_versions": table.corpus_versions,
        "proxy_versions": table.proxy_versions, "costs": table.costs, "sources": table.sources,
        **({"online": table.online} if getattr(table, "online", None) else {}),
    })
    with atomic_file(out / "weights.csv") as fh:
        frame = table.frame()
        frame.loc["krls"] = table.krls
        frame.to_csv(fh, float_format="%.6f")
