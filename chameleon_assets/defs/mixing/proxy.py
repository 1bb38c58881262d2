"""The proxy language model CHAMELEON embeds every domain with: trained once on the uniform
mixture of the registered domains (or a user's own Hugging Face checkpoint), and never
retrained when domains are added, changed or removed.
"""

import dagster as dg

from chameleon_assets import paths
from chameleon_assets.core.artifacts import atomic_dir, point_current, prune_versions, sha256_text, write_json
from chameleon_assets.core.corpus import CorpusShards
from chameleon_assets.defs import launch
from chameleon_assets.defs.io import load_value, one_writer, stored_value, versions_text
from chameleon_assets.defs.partitions import LINEAGE_ONLY, domain_partitions
from chameleon_assets.defs.resources import ChameleonConfig
from chameleon_assets.defs.sources import config_deps
from chameleon_assets.defs.values import ProxyModel

PROXY_CODE_VERSION = "proxy-v2"


@dg.asset(
    # The proxy's inputs are the domains it was trained on (recorded in its value and
    # metadata), not every current partition: adding, editing or removing a domain never stales it.
    deps=[
        dg.AssetDep("domain_corpus", partition_mapping=LINEAGE_ONLY),
        *config_deps("proxy_model"),
    ],
    group_name="mixing",
    code_version=PROXY_CODE_VERSION,
    kinds={"pytorch"},
    pool=launch.GPU_POOL,
)
@one_writer
def proxy_model(context: dg.AssetExecutionContext, chameleon: ChameleonConfig) -> dg.Output[ProxyModel]:
    """The small proxy LM whose middle layer embeds every domain.

    Trained from scratch on the *uniform* mixture of the domains registered when it is
    trained (or, with `proxy.checkpoint`, a user's own local HF causal LM is used as is).
    It runs on request only: a domain added, edited or removed is embedded with the
    existing proxy, which is CHAMELEON's point. A changed `config_proxy` (model size,
    budget, tokenizer, seed) marks it stale; `chameleon run` then retrains it.
    """
    from chameleon_assets.core.embed import middle_layer
    from chameleon_assets.core.model import count_parameters, load_model
    from chameleon_assets.core.tokenizer import load_tokenizer, tokenizer_fingerprint

    profile = chameleon.profile()
    section = chameleon.section_version("proxy")
    tok = load_tokenizer(profile.tokenizer)
    tok_fp = tokenizer_fingerprint(profile.tokenizer)
    if profile.proxy.checkpoint:
        path = paths.resolve(profile.proxy.checkpoint)
        version = sha256_text(PROXY_CODE_VERSION, section)[:24]
        model = load_model(path)
        if model.config.vocab_size < len(tok):
            raise ValueError(
                f"proxy.checkpoint {path}: vocabulary {model.config.vocab_size} is smaller than the "
                f"project tokenizer's {len(tok)}; the checkpoint must use the project tokenizer"
            )
        proxy = ProxyModel(version, str(path), model.config.num_hidden_layers, model.config.hidden_size,
                           middle_layer(model.config.num_hidden_layers), count_parameters(model), False,
                           profile.tokenizer, tok_fp)
    else:
        shards = _damaged_proxy_inputs(context.instance, section)
        if shards is None:  # new, stale or requested: train on the domains registered now
            domains = sorted(context.instance.get_dynamic_partitions(domain_partitions.name))
            if not domains:
                raise ValueError("no domain is registered: add one to conf/domains.yaml and run `chameleon sync`")
            shards = {d: load_value(context.instance, "domain_corpus", d) for d in domains}
        for s in shards.values():
            s.require_tokenizer(tok_fp, profile.tokenizer)
        train_versions = {d: s.data_version for d, s in shards.items()}
        version = sha256_text(PROXY_CODE_VERSION, section, versions_text(train_versions))[:24]
        proxy = stored_value("proxy_model", None, version)
        if proxy is None:
            proxy = _train_proxy(context, profile, tok, tok_fp, shards, version)
    if proxy.trained_here:
        point_current(paths.proxy_dir(version))
        prune_versions(paths.proxy_dir(version).parent)
    return dg.Output(proxy, data_version=dg.DataVersion(version), metadata={
        "parameters": proxy.parameters,
        "layers": proxy.num_layers,
        "embedding_layer": f"hidden_states[{proxy.middle_layer}] of {proxy.num_layers + 1}",
        "tokenizer": f"{proxy.tokenizer} ({proxy.tokenizer_fingerprint})",
        "train_domains": dg.MetadataValue.json(proxy.train_domains),
        "path": dg.MetadataValue.path(proxy.path),
    })


def _damaged_proxy_inputs(instance: dg.DagsterInstance, section: str) -> dict[str, CorpusShards] | None:
    """The shards the current proxy was trained on, when it must be rebuilt as it was.

    When the recorded proxy's files are damaged but its configuration is unchanged, it
    is retrained on exactly the corpus versions it recorded, giving the same data
    version, so no embedding goes stale (a damaged proxy is not a domain change). None
    when the proxy is not damaged, its configuration changed, or those corpus versions
    are gone (then it trains on the domains registered now, a new version).
    """
    from chameleon_assets.defs.io import ArtefactDamaged, artefact_problem, latest_version, load_version, stored_descriptor

    version = latest_version(instance, "proxy_model")
    previous = stored_descriptor("proxy_model", None, version) if version else None
    if previous is None or not previous.trained_here or not previous.train_domains:
        return None
    if sha256_text(PROXY_CODE_VERSION, section, versions_text(previous.train_domains))[:24] != version:
        return None
    if artefact_problem(previous) is None:
        return None
    try:
        return {d: load_version("domain_corpus", d, v) for d, v in previous.train_domains.items()}
    except ArtefactDamaged:
        return None


def _train_proxy(context, profile, tok, tok_fp: str, shards: dict, version: str) -> ProxyModel:  # noqa: ANN001
    import numpy as np

    from chameleon_assets.core.artifacts import remove_tree
    from chameleon_assets.core.embed import middle_layer
    from chameleon_assets.core.model import build_model, count_parameters

    cfg = profile.proxy
    model = build_model(cfg.model, len(tok), tok.eos_token_id, profile.seed)
    checkpoints = paths.checkpoint_dir("proxy_model", version)
    job = launch.TrainJob(dict(shards), {d: 1.0 for d in shards}, cfg.model.context_length, profile.seed, cfg.train,
                          checkpoints, version, "proxy")
    result = launch.train(context, profile, model, job)
    out = paths.proxy_dir(version)
    train_versions = {d: s.data_version for d, s in shards.items()}
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        write_json(tmp / "training.json", {"domains": train_versions, "losses": result.losses,
                                           "tokens": result.tokens, "tokens_per_s": result.tokens_per_s})
    remove_tree(checkpoints)
    context.add_output_metadata({
        "train_tokens": result.tokens,
        "final_loss": float(np.mean(result.losses[-5:])),
        "tokens_per_s": round(result.tokens_per_s),
    })
    layers = model.config.num_hidden_layers
    return ProxyModel(version, str(out), layers, model.config.hidden_size, middle_layer(layers),
                      count_parameters(model), True, profile.tokenizer, tok_fp, train_versions)
