"""Each domain's embedding through the proxy: sampled windows, the middle layer only,
mean-pooled over real tokens (``core.embed``), for the pretraining and the finetuning domains.
"""

import dagster as dg

from chameleon_assets import paths
from chameleon_assets.core.artifacts import atomic_dir, point_current, prune_versions, sha256_text, write_json
from chameleon_assets.core.corpus import CorpusShards
from chameleon_assets.defs import policy
from chameleon_assets.defs.io import one_writer, stored_value
from chameleon_assets.defs.partitions import domain_partitions, finetune_domain_partitions
from chameleon_assets.defs.resources import ChameleonConfig
from chameleon_assets.defs.sources import config_deps
from chameleon_assets.defs.values import DomainEmbedding, ProxyModel

EMBED_CODE_VERSION = "embed-v4"


EMBED_DOC = """`num_samples` windows of `sample_length` train tokens of {what} (seeded by
the domain's name, so independent of the other domains), run through the proxy up to its
middle layer only, mean-pooled over real tokens: an (N x d) matrix and its mean, the
domain's embedding. Data version = hash(corpus version, proxy version, `config_embedding`).
"""


def _embeddings_asset(name: str, partitions_def: dg.PartitionsDefinition, corpus: str, asset_group: str,
                      what: str) -> dg.AssetsDefinition:
    """The embedding asset of one registry group: ``corpus``'s partitions through the proxy."""

    @dg.asset(
        name=name,
        partitions_def=partitions_def,
        ins={"corpus": dg.AssetIn(corpus)},
        deps=config_deps(name),
        group_name=asset_group,
        code_version=EMBED_CODE_VERSION,
        kinds={"pytorch"},
        automation_condition=policy.FOLLOWS,
        description=EMBED_DOC.format(what=what),
    )
    @one_writer
    def _embeddings(context: dg.AssetExecutionContext, chameleon: ChameleonConfig, corpus: CorpusShards,
                    proxy_model: ProxyModel) -> dg.Output[DomainEmbedding]:
        return embed_domain(context, chameleon, corpus, proxy_model, name)

    return _embeddings


def embed_domain(context: dg.AssetExecutionContext, chameleon: ChameleonConfig, domain_corpus: CorpusShards,
                 proxy_model: ProxyModel, asset: str) -> dg.Output[DomainEmbedding]:
    """The body of both embedding assets (``asset``: which one, for its stored values)."""
    import numpy as np

    from chameleon_assets.core.tokenizer import tokenizer_fingerprint

    profile = chameleon.profile()
    domain = context.partition_key
    if proxy_model.tokenizer_fingerprint != tokenizer_fingerprint(profile.tokenizer):
        raise ValueError(
            f"domain '{domain}': proxy_model was trained with tokenizer '{proxy_model.tokenizer}' "
            f"({proxy_model.tokenizer_fingerprint}) but the profile now uses '{profile.tokenizer}'; "
            "run `chameleon run` to retrain the proxy first"
        )
    domain_corpus.require_tokenizer(proxy_model.tokenizer_fingerprint, proxy_model.tokenizer)
    version = sha256_text(EMBED_CODE_VERSION, chameleon.section_version("embedding"),
                          domain_corpus.data_version, proxy_model.data_version)[:24]
    out = paths.embeddings_dir(domain, version)
    emb_value = stored_value(asset, domain, version)
    if emb_value is None:
        import time

        t0 = time.perf_counter()
        emb = _embed(profile, domain, domain_corpus, proxy_model)
        seconds = time.perf_counter() - t0
        mean = emb.mean(axis=0)
        with atomic_dir(out) as tmp:
            np.save(tmp / "embeddings.npy", emb)
            np.save(tmp / "mean.npy", mean)
            write_json(tmp / "meta.json", {"domain": domain, "proxy": proxy_model.data_version,
                                           "corpus": domain_corpus.data_version, "shape": list(emb.shape)})
        emb_value = DomainEmbedding(version, domain, str(out), emb.shape[0], emb.shape[1],
                                    tuple(float(x) for x in mean), proxy_model.data_version,
                                    domain_corpus.data_version, domain_corpus.train_tokens, seconds,
                                    emb.shape[0] * profile.embedding.sample_length)
    emb = np.load(out / "embeddings.npy")
    point_current(out)
    prune_versions(out.parent)
    norms = np.linalg.norm(emb, axis=1)
    return dg.Output(emb_value, data_version=dg.DataVersion(version), metadata={
        "num_samples": emb.shape[0],
        "dim": emb.shape[1],
        "dtype": profile.embedding.dtype,
        "norm_mean": float(norms.mean()),
        "norm_std": float(norms.std()),
        "mean_norm": float(np.linalg.norm(np.asarray(emb_value.mean))),
        "proxy_version": proxy_model.data_version,
        "path": dg.MetadataValue.path(str(out)),
    })


def _embed(profile, domain: str, shards: CorpusShards, proxy: ProxyModel):  # noqa: ANN001, ANN202
    from chameleon_assets.core.corpus import domain_seed
    from chameleon_assets.core.embed import embed_windows, sample_windows
    from chameleon_assets.core.model import load_model, resolve_device
    from chameleon_assets.core.tokenizer import load_tokenizer

    cfg = profile.embedding
    tok = load_tokenizer(profile.tokenizer)
    device = resolve_device(profile.device)
    model = load_model(proxy.path, device)
    windows = sample_windows(shards.train(), cfg.num_samples, cfg.sample_length, domain_seed(profile.seed, domain))
    return embed_windows(model, windows, cfg.batch_size, tok.pad_token_id, device, progress=True,
                         desc=f"embed {domain}", dtype=cfg.dtype)


domain_embeddings = _embeddings_asset("domain_embeddings", domain_partitions, "domain_corpus", "mixing",
                                      "a pretraining domain")
finetune_embeddings = _embeddings_asset("finetune_embeddings", finetune_domain_partitions, "finetune_corpus",
                                        "finetune", "a finetuning domain, with the same proxy")
