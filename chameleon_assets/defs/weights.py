"""CHAMELEON's weights, step by step as in the paper's method section:

proxy_model -> domain_embeddings[domain] -> affinity_matrix -> mixture_weights
"""

import json
from dataclasses import dataclass, field

import dagster as dg
import numpy as np
import pandas as pd

from chameleon_assets import paths
from chameleon_assets.core import baselines
from chameleon_assets.core.artifacts import atomic_dir, atomic_file, remove_tree, write_json
from chameleon_assets.core.corpus import CorpusShards, domain_seed
from chameleon_assets.core.embed import embed_windows, middle_layer, sample_windows
from chameleon_assets.core.krls import center_kernel, chameleon_weights, linear_kernel
from chameleon_assets.core.model import build_model, count_parameters, load_model, model_identity, resolve_device
from chameleon_assets.core.tokenizer import load_tokenizer, tokenizer_identity
from chameleon_assets.core.train import WeightedDomainSampler, train_causal_lm
from chameleon_assets.defs import plots
from chameleon_assets.defs.partitions import domain_partitions
from chameleon_assets.defs.resources import ChameleonConfig
from chameleon_assets.defs.tracking import MLflowTracking

ALL_DOMAINS = dg.AllPartitionMapping()


def by_domain(value) -> dict:
    """Normalise an all-partitions input to ``{domain: value}``.

    Dagster's IO managers hand over a dict keyed by partition, except when exactly one
    upstream partition exists: then they pass the bare object. Every value here knows
    its own domain, so both shapes map to the same dict.
    """
    if isinstance(value, dict):
        return dict(sorted(value.items()))
    return {value.domain: value}


@dataclass(frozen=True)
class ProxyModel:
    path: str
    identity: str
    num_layers: int
    hidden_size: int
    middle_layer: int
    parameters: int
    trained_here: bool
    tokenizer: str


@dataclass(frozen=True)
class DomainEmbedding:
    domain: str
    path: str
    num_samples: int
    dim: int
    mean: tuple
    proxy_identity: str


@dataclass(frozen=True)
class AffinityMatrix:
    domains: list
    kernel: list
    kernel_centered: list
    proxy_identity: str
    heatmap_path: str


@dataclass
class MixtureTable:
    """Every mixture's weights over ``domains`` (each list sums to 1), plus KRLS details."""

    domains: list
    weights: dict
    krls: list
    krls_raw: list
    params: dict
    skipped: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    train_tokens: dict = field(default_factory=dict)
    proxy_identity: str = ""

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.weights, index=self.domains).T


@dg.asset(
    ins={"domain_corpus": dg.AssetIn(partition_mapping=ALL_DOMAINS)},
    group_name="chameleon",
    code_version="proxy-v1",
    kinds={"pytorch"},
)
def proxy_model(context: dg.AssetExecutionContext, chameleon: ChameleonConfig, domain_corpus) -> ProxyModel:
    """The small proxy LM whose middle layer embeds every domain.

    Trained once from scratch on the *uniform* mixture of the domains that exist at the
    time (or, with `proxy.checkpoint`, a user's own local HF causal LM is used as is).
    It is deliberately NOT re-materialised when domains are added, edited or removed:
    new domains are embedded with the proxy that exists, which is CHAMELEON's point:
    weights adapt to new data without retraining.
    """
    profile = chameleon.profile()
    tok = load_tokenizer(profile.tokenizer)
    device = resolve_device(profile.device)
    if profile.proxy.checkpoint:
        path = paths.resolve(profile.proxy.checkpoint)
        model = load_model(path)
        if model.config.vocab_size < len(tok):
            raise ValueError(
                f"proxy.checkpoint {path}: vocabulary {model.config.vocab_size} is smaller than the "
                f"project tokenizer's {len(tok)}; the checkpoint must use the project tokenizer"
            )
        trained_here, out_dir = False, path
    else:
        shards = by_domain(domain_corpus)
        cfg = profile.proxy
        model = build_model(cfg.model, len(tok), tok.eos_token_id, profile.seed)
        sampler = WeightedDomainSampler(
            {d: s.train() for d, s in shards.items()}, {d: 1.0 for d in shards}, cfg.model.context_length, profile.seed
        )
        out_dir = paths.proxy_dir()
        result = train_causal_lm(
            model, sampler, cfg.train, device,
            checkpoint_dir=out_dir.parent / "proxy_model.checkpoint",
            run_key=json.dumps(sorted(shards)) + repr(cfg.model) + str(profile.seed),
            desc="proxy",
        )
        with atomic_dir(out_dir) as tmp:
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            write_json(tmp / "training.json", {"domains": sorted(shards), "losses": result.losses,
                                               "tokens": result.tokens, "tokens_per_s": result.tokens_per_s})
        trained_here = True
        context.add_output_metadata({
            "train_domains": ", ".join(sorted(shards)),
            "train_tokens": result.tokens,
            "final_loss": float(np.mean(result.losses[-5:])),
            "tokens_per_s": round(result.tokens_per_s),
        })
        remove_tree(out_dir.parent / "proxy_model.checkpoint")
    layers = model.config.num_hidden_layers
    proxy = ProxyModel(
        path=str(out_dir),
        identity=model_identity(out_dir),
        num_layers=layers,
        hidden_size=model.config.hidden_size,
        middle_layer=middle_layer(layers),
        parameters=count_parameters(model),
        trained_here=trained_here,
        tokenizer=f"{profile.tokenizer} ({tokenizer_identity(tok)})",
    )
    context.add_output_metadata({
        "identity": proxy.identity,
        "parameters": proxy.parameters,
        "layers": layers,
        "embedding_layer": f"hidden_states[{proxy.middle_layer}] of {layers + 1}",
        "path": dg.MetadataValue.path(proxy.path),
    })
    return proxy


@dg.asset(
    partitions_def=domain_partitions,
    group_name="chameleon",
    code_version="embed-v1",
    kinds={"pytorch"},
)
def domain_embeddings(
    context: dg.AssetExecutionContext, chameleon: ChameleonConfig, domain_corpus: CorpusShards, proxy_model: ProxyModel
) -> DomainEmbedding:
    """`num_samples` windows of `sample_length` train tokens (seeded by the domain's name,
    so independent of the other domains), run through the proxy up to its middle layer
    only, mean-pooled over real tokens: an (N x d) matrix and its mean, the domain's
    embedding.
    """
    profile = chameleon.profile()
    cfg = profile.embedding
    domain = context.partition_key
    tok = load_tokenizer(profile.tokenizer)
    device = resolve_device(profile.device)
    model = load_model(proxy_model.path, device)
    windows = sample_windows(domain_corpus.train(), cfg.num_samples, cfg.sample_length, domain_seed(profile.seed, domain))
    emb = embed_windows(model, windows, cfg.batch_size, tok.pad_token_id, device, progress=True, desc=f"embed {domain}")
    mean = emb.mean(axis=0)
    out = paths.embeddings_dir(domain)
    with atomic_dir(out) as tmp:
        np.save(tmp / "embeddings.npy", emb)
        np.save(tmp / "mean.npy", mean)
        write_json(tmp / "meta.json", {"domain": domain, "proxy": proxy_model.identity, "shape": list(emb.shape)})
    norms = np.linalg.norm(emb, axis=1)
    context.add_output_metadata({
        "num_samples": emb.shape[0],
        "dim": emb.shape[1],
        "norm_mean": float(norms.mean()),
        "norm_std": float(norms.std()),
        "mean_norm": float(np.linalg.norm(mean)),
        "proxy_identity": proxy_model.identity,
        "path": dg.MetadataValue.path(str(out)),
    })
    return DomainEmbedding(domain, str(out), emb.shape[0], emb.shape[1], tuple(float(x) for x in mean), proxy_model.identity)


@dg.asset(
    ins={"domain_embeddings": dg.AssetIn(partition_mapping=ALL_DOMAINS)},
    group_name="chameleon",
    code_version="affinity-v1",
    automation_condition=dg.AutomationCondition.eager(),
    kinds={"numpy"},
)
def affinity_matrix(context: dg.AssetExecutionContext, domain_embeddings) -> AffinityMatrix:
    """Domain affinity: the linear kernel of the domain mean embeddings, K = E E^T, and
    its centred form K_c = H K H (H = I - 11^T/k), the matrix KRLS is computed on.
    """
    emb = by_domain(domain_embeddings)
    domains = list(emb)
    proxies = {e.proxy_identity for e in emb.values()}
    if len(proxies) > 1:
        context.log.warning(f"domain embeddings come from different proxies: {sorted(proxies)}")
    means = np.array([emb[d].mean for d in domains])
    kern = linear_kernel(means)
    kern_c = center_kernel(kern)
    out = paths.weights_dir() / "affinity_heatmap.png"
    b64 = plots.heatmap(kern_c, domains, "centred affinity K_c", out)
    table = pd.DataFrame(kern_c, index=domains, columns=domains).round(4)
    context.add_output_metadata({
        "domains": len(domains),
        "affinity_centered": dg.MetadataValue.md(table.to_markdown()),
        "heatmap": dg.MetadataValue.md(plots.markdown_image(b64, "centred affinity heatmap")),
        "heatmap_path": dg.MetadataValue.path(str(out)),
    })
    return AffinityMatrix(domains, kern.tolist(), kern_c.tolist(), ",".join(sorted(proxies)), str(out))


@dg.asset(
    ins={"domain_corpus": dg.AssetIn(partition_mapping=ALL_DOMAINS)},
    group_name="chameleon",
    code_version="weights-v1",
    kinds={"pandas", "mlflow"},
    automation_condition=dg.AutomationCondition.eager(),
)
def mixture_weights(
    context: dg.AssetExecutionContext,
    chameleon: ChameleonConfig,
    mlflow_tracking: MLflowTracking,
    affinity_matrix: AffinityMatrix,
    domain_corpus,
) -> MixtureTable:
    """Mixture weights over the domains, CHAMELEON's and the baselines' side by side.

    KRLS tau_i = [K_c (K_c + lambda k I)^-1]_ii, normalised to sum 1;
    chameleon_pretrain = softmax((1/tau)/T_pt) (favour what domains share),
    chameleon_finetune = softmax(tau/T_ft) (favour what is unique).
    Baselines: uniform, natural (by train tokens), temperature (n^(1/T)), UniMax, and
    the presets of conf/mixtures.yaml whose domain names match. Each materialisation is
    logged to MLflow as a new weights version, tagged with its domain set.
    """
    profile = chameleon.profile()
    mix = chameleon.mixtures()
    domains = list(affinity_matrix.domains)
    shards = by_domain(domain_corpus)
    missing = [d for d in domains if d not in shards]
    if missing:
        raise ValueError(f"domains {missing} have embeddings but no domain_corpus partition")
    tokens = np.array([shards[d].train_tokens for d in domains], dtype=np.float64)
    p = mix.chameleon
    cw = chameleon_weights(domains, np.asarray(affinity_matrix.kernel), p.lam, p.t_pretrain, p.t_finetune)
    budget = mix.unimax_budget_tokens or profile.base_model.train.tokens
    candidates = {
        "uniform": baselines.uniform(len(domains)),
        "natural": baselines.natural(tokens),
        "temperature": baselines.temperature(tokens, mix.temperature),
        "unimax": baselines.unimax(tokens, budget, mix.unimax_max_epochs),
        "chameleon_pretrain": cw.pretrain,
        "chameleon_finetune": cw.finetune,
    }
    skipped = {}
    for name, preset in mix.presets.items():
        w = baselines.preset(domains, preset)
        if w is None:
            skipped[name] = f"domain names do not match ({', '.join(sorted(preset))})"
        else:
            candidates[name] = w
    weights = {name: [float(x) for x in candidates[name]] for name in mix.mixtures if name in candidates}
    for name in mix.mixtures:
        if name not in weights and name not in skipped:
            skipped[name] = "not computed"
    table = MixtureTable(
        domains=domains,
        weights=weights,
        krls=[float(x) for x in cw.krls],
        krls_raw=[float(x) for x in cw.krls_raw],
        params={"lambda": p.lam, "t_pretrain": p.t_pretrain, "t_finetune": p.t_finetune,
                "temperature": mix.temperature, "unimax_budget": budget, "unimax_max_epochs": mix.unimax_max_epochs},
        skipped=skipped,
        notes=cw.notes,
        train_tokens={d: int(t) for d, t in zip(domains, tokens)},
        proxy_identity=affinity_matrix.proxy_identity,
    )
    for note in cw.notes:
        context.log.warning(note)
    _write_weights(table)
    frame = table.frame()
    b64 = plots.grouped_bars(weights, domains, "mixture weights", paths.weights_dir() / "weights_bars.png")
    run_id = _log_weights_version(mlflow_tracking, table, context.run_id)
    krls_frame = pd.DataFrame({"krls": table.krls, "krls_raw": table.krls_raw}, index=domains)
    context.add_output_metadata({
        "weights": dg.MetadataValue.md(frame.round(4).to_markdown()),
        "krls": dg.MetadataValue.md(krls_frame.to_markdown(floatfmt=".4g")),
        "bar_chart": dg.MetadataValue.md(plots.markdown_image(b64, "mixture weights")),
        "domains": len(domains),
        "mixtures": ", ".join(weights),
        "skipped": dg.MetadataValue.json(skipped),
        "notes": "; ".join(cw.notes) or "none",
        "csv": dg.MetadataValue.path(str(paths.weights_dir() / "weights.csv")),
        "mlflow_run_id": run_id,
    })
    return table


def _log_weights_version(tracking: MLflowTracking, table: MixtureTable, dagster_run_id: str) -> str:
    """One MLflow run per weights computation: weights as params, KRLS as metrics."""
    import mlflow

    tags = {"kind": "weights", "domains": ",".join(table.domains), "num_domains": str(len(table.domains)),
            "dagster_run_id": dagster_run_id, "proxy_identity": table.proxy_identity}
    with tracking.start_run(run_name=f"mixture_weights[{len(table.domains)} domains]", tags=tags) as run:
        mlflow.log_params({f"{m}.{d}": round(w, 6) for m, ws in table.weights.items() for d, w in zip(table.domains, ws)})
        mlflow.log_params({f"param.{k}": v for k, v in table.params.items()})
        mlflow.log_metrics({f"krls.{d}": t for d, t in zip(table.domains, table.krls)})
        for name in ("weights.json", "weights.csv", "affinity_heatmap.png", "weights_bars.png"):
            mlflow.log_artifact(str(paths.weights_dir() / name))
        return run.info.run_id


def _write_weights(table: MixtureTable) -> None:
    out = paths.weights_dir()
    write_json(out / "weights.json", {
        "domains": table.domains, "weights": table.weights, "krls": table.krls, "krls_raw": table.krls_raw,
        "params": table.params, "skipped": table.skipped, "notes": table.notes, "train_tokens": table.train_tokens,
    })
    with atomic_file(out / "weights.csv") as fh:
        frame = table.frame()
        frame.loc["krls"] = table.krls
        frame.to_csv(fh, float_format="%.6f")
