"""``domain_corpus`` and ``finetune_corpus``: each domain's documents, tokenised and packed
into train/val shards (one asset body, once per registry group)."""

import dagster as dg

from chameleon_assets import paths
from chameleon_assets.core.artifacts import point_current, prune_versions, sha256_text, verify_dir
from chameleon_assets.core.corpus import CorpusShards
from chameleon_assets.defs import policy
from chameleon_assets.defs.io import one_writer
from chameleon_assets.defs.partitions import domain_partitions, finetune_domain_partitions
from chameleon_assets.defs.resources import ChameleonConfig
from chameleon_assets.defs.sources import config_deps, domain_source, finetune_source

# Bump when the tokenising/packing code changes what it writes: it is the asset's code
# version and part of every domain's data version, so all domain partitions go stale.
CORPUS_CODE_VERSION = "corpus-v4"  # v4: whitespace-only documents are skipped


def corpus_data_version(source_version: str, corpus_section_version: str) -> str:
    """hash(raw bytes fingerprint, corpus configuration section, code version)."""
    return sha256_text(source_version, corpus_section_version, CORPUS_CODE_VERSION)[:24]


CORPUS_DOC = """{what}'s documents tokenised with the project tokenizer, each followed by
<|endoftext|>, split by document (seeded, default 95/5) into train and validation
token arrays on disk that later steps memory-map.

Data version = hash(raw bytes, `config_corpus` (tokenizer fingerprint, seed,
val_fraction), code version); the shards live in a folder named by it, so a version
already built (say, after a configuration was changed and changed back) is reused.
"""


def _corpus_asset(name: str, partitions_def: dg.PartitionsDefinition, source: dg.SourceAsset, group: str,
                  asset_group: str, what: str) -> dg.AssetsDefinition:
    """The tokenise-and-split asset of one registry group (``pretrain`` or ``finetune``)."""

    @dg.asset(
        name=name,
        partitions_def=partitions_def,
        deps=[source, *config_deps(name)],
        code_version=CORPUS_CODE_VERSION,
        group_name=asset_group,
        kinds={"numpy"},
        automation_condition=policy.FOLLOWS,
        description=CORPUS_DOC.format(what=what),
    )
    @one_writer
    def _corpus(context: dg.AssetExecutionContext, chameleon: ChameleonConfig) -> dg.Output[CorpusShards]:
        return tokenise_domain(context, chameleon, group)

    return _corpus


def tokenise_domain(context: dg.AssetExecutionContext, chameleon: ChameleonConfig, group: str
                    ) -> dg.Output[CorpusShards]:
    """The body of both corpus assets: shards of the partition's domain of ``group``."""
    domain = context.partition_key
    spec = chameleon.domain(domain, group)
    profile = chameleon.profile()
    source_version = chameleon.domain_versions([spec])[domain]
    version = corpus_data_version(source_version, chameleon.section_version("corpus"))
    out = paths.corpus_dir(domain, version)
    reused = verify_dir(out, deep=True) is None  # built before and intact (else rebuilt in place)
    read: dict = {}
    if reused:
        shards = CorpusShards.load(out)
        preview = ""
    else:
        from chameleon_assets.core.corpus import CorpusMinimum, build_shards
        from chameleon_assets.core.tokenizer import load_tokenizer, tokenizer_fingerprint

        shards, report = build_shards(
            spec,
            load_tokenizer(profile.tokenizer),
            out_dir=out,
            val_fraction=profile.val_fraction,
            seed=profile.seed,
            data_version=version,
            tokenizer_fingerprint=tokenizer_fingerprint(profile.tokenizer),
            minimum=CorpusMinimum.for_embedding(profile.embedding, spec.source, chameleon.registry_file()),
        )
        preview = report.preview.replace("\n", " ")
        read = {"records_read": report.scan.records, "records_matched": report.scan.matched,
                "source_mb": round(report.scan.bytes / 1e6, 3), "read_units": report.units,
                "read_workers": report.workers, "read_seconds": round(report.seconds, 2),
                "text_mb_per_s": round(report.mb_per_s, 2), "source_mb_per_s": round(report.source_mb_per_s, 2)}
        if spec.where:
            read["where"] = spec.where_text()
    point_current(out)
    prune_versions(out.parent)
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
            "tokenizer": profile.tokenizer,
            "source": dg.MetadataValue.path(str(spec.source)),
            "source_version": source_version,
            "shards": dg.MetadataValue.path(shards.directory),
            "reused_existing_version": reused,
            "preview": dg.MetadataValue.text(preview),
            **read,
        },
    )


domain_corpus = _corpus_asset("domain_corpus", domain_partitions, domain_source, "pretrain", "corpus",
                              "A pretraining domain")
finetune_corpus = _corpus_asset("finetune_corpus", finetune_domain_partitions, finetune_source, "finetune",
                                "finetune", "A finetuning domain")
