"""``domain_corpus``: each domain's documents, tokenised and packed into train/val shards."""

import dagster as dg

from chameleon_assets import paths
from chameleon_assets.core.artifacts import sha256_text
from chameleon_assets.core.corpus import CorpusShards, write_shards
from chameleon_assets.core.registry import DomainSpec, iter_documents, source_fingerprint
from chameleon_assets.core.tokenizer import encode_documents, load_tokenizer, tokenizer_identity
from chameleon_assets.defs.partitions import domain_partitions
from chameleon_assets.defs.resources import ChameleonConfig
from chameleon_assets.settings import Profile

# Bump when the tokenising/packing code changes what it writes: it is part of every
# domain's data version, so Dagster then marks all domain partitions stale.
CORPUS_CODE_VERSION = "corpus-v1"


def corpus_data_version(spec: DomainSpec, tokenizer_id: str, profile: Profile) -> str:
    """hash(raw bytes, tokenizer identity, code version, split settings)."""
    return sha256_text(
        source_fingerprint(spec), tokenizer_id, CORPUS_CODE_VERSION, str(profile.val_fraction), str(profile.seed)
    )[:24]


SOURCE_DESCRIPTION = (
    "The raw files of each registered domain (conf/domains.yaml). Observing it records the hash of "
    "every domain's source bytes, so the UI marks exactly the domains whose files changed as stale. "
    "`chameleon sync` and the registry sensor observe it."
)


@dg.observable_source_asset(partitions_def=domain_partitions, group_name="corpus", description=SOURCE_DESCRIPTION)
def domain_source(chameleon: ChameleonConfig) -> dg.DataVersionsByPartition:
    """See SOURCE_DESCRIPTION (shown in the UI)."""
    return dg.DataVersionsByPartition({s.name: dg.DataVersion(source_fingerprint(s)[:24]) for s in chameleon.registry()})


@dg.asset(
    partitions_def=domain_partitions,
    deps=[domain_source],
    code_version=CORPUS_CODE_VERSION,
    group_name="corpus",
    kinds={"numpy"},
)
def domain_corpus(context: dg.AssetExecutionContext, chameleon: ChameleonConfig) -> dg.Output[CorpusShards]:
    """A domain's documents tokenised with the project tokenizer, each followed by
    <|endoftext|>, split by document (seeded, default 95/5) into train and validation
    token arrays on disk that later steps memory-map.

    Data version = hash(raw bytes, tokenizer identity, code version), so Dagster marks
    only the domains whose data changed as stale.
    """
    domain = context.partition_key
    spec = chameleon.domain(domain)
    profile = chameleon.profile()
    tok = load_tokenizer(profile.tokenizer)
    tok_id = tokenizer_identity(tok)
    version = corpus_data_version(spec, tok_id, profile)
    texts = list(iter_documents(spec))
    shards = write_shards(
        domain=domain,
        texts=texts,
        token_ids=encode_documents(tok, texts),
        eos_id=tok.eos_token_id,
        vocab_size=len(tok),
        out_dir=paths.corpus_dir(domain),
        val_fraction=profile.val_fraction,
        seed=profile.seed,
        data_version=version,
    )
    preview = texts[0][:300].replace("\n", " ") if texts else ""
    return dg.Output(
        shards,
        data_version=dg.DataVersion(version),
        metadata={
            "documents": shards.train_documents + shards.val_documents,
            "train_documents": shards.train_documents,
            "val_documents": shards.val_documents,
            "bytes": shards.text_bytes + shards.val_text_bytes,
            "train_tokens": shards.train_tokens,
            "val_tokens": shards.val_tokens,
            "dtype": shards.dtype,
            "tokenizer": f"{profile.tokenizer} ({tok_id})",
            "source": dg.MetadataValue.path(str(spec.source)),
            "shards": dg.MetadataValue.path(shards.directory),
            "data_version": version,
            "preview": dg.MetadataValue.text(preview),
        },
    )
