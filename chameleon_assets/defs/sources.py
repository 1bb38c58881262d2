"""What the graph observes: each configuration section and each domain's raw files.

These are observable source assets. Their data version is a hash of what they stand
for (a normalised configuration section; a domain's source bytes), so Dagster marks
stale exactly the assets that read something that changed. ``source_observations``
computes the current versions and returns observations only for those that differ
from the latest recorded; ``chameleon run``/``sync`` record them directly and the
registry sensor emits them as asset events. Raw files are re-read only when their size
or modification time changed (``core.fingerprint``).
"""

from __future__ import annotations

import dagster as dg

from chameleon_assets.defs.io import DATA_VERSION_TAG, latest_version
from chameleon_assets.defs.partitions import domain_partitions, finetune_domain_partitions, seed_partitions
from chameleon_assets.defs.resources import ChameleonConfig
from chameleon_assets.sections import Section, config_sections

def _config_source(section: Section) -> dg.SourceAsset:
    @dg.observable_source_asset(
        name=f"config_{section.name}",
        group_name="config",
        description=f"Configuration section `{section.name}`: {section.doc} Read by "
                    f"{', '.join(section.read_by)}. Data version = sha256 of the normalised section.",
    )
    def _observe(chameleon: ChameleonConfig) -> dg.DataVersion:
        return dg.DataVersion(chameleon.section_version(section.name))

    return _observe


CONFIG_SOURCES = {name: _config_source(section) for name, section in config_sections().items()}


def config_deps(asset: str) -> list[dg.SourceAsset]:
    """The ``config_<section>`` sources of every section that ``asset`` reads (its ``read_by``)."""
    return [CONFIG_SOURCES[name] for name, section in config_sections().items() if asset in section.read_by]


@dg.observable_source_asset(
    partitions_def=domain_partitions,
    group_name="corpus",
    description="The raw files of each registered domain (conf/domains.yaml). Data version = sha256 of the "
                "domain's source bytes and reading options, so exactly the domains whose files changed are stale.",
)
def domain_source(chameleon: ChameleonConfig) -> dg.DataVersionsByPartition:
    """One data version per registered domain: the fingerprint of its source bytes."""
    return dg.DataVersionsByPartition(chameleon.domain_versions())


@dg.observable_source_asset(
    group_name="corpus",
    description="The set of registered domains (the names in conf/domains.yaml). Data version = sha256 of the "
                "sorted names, so adding or removing a domain stales affinity_matrix (Dagster's stale status "
                "sees new and changed upstream partitions, not removed ones).",
)
def domain_registry(chameleon: ChameleonConfig) -> dg.DataVersion:
    """The registered domain set."""
    return dg.DataVersion(registry_version([s.name for s in chameleon.registry()]))


@dg.observable_source_asset(
    partitions_def=finetune_domain_partitions,
    group_name="finetune",
    description="The raw files of each finetuning domain (`finetune_domains:` in conf/domains.yaml). Data version = "
                "sha256 of the domain's source bytes and reading options.",
)
def finetune_source(chameleon: ChameleonConfig) -> dg.DataVersionsByPartition:
    """One data version per finetuning domain: the fingerprint of its source bytes."""
    return dg.DataVersionsByPartition(chameleon.domain_versions(chameleon.finetune_registry()))


@dg.observable_source_asset(
    group_name="finetune",
    description="The set of finetuning domains. Data version = sha256 of the sorted names, so adding or removing "
                "one stales finetune_affinity (and nothing of the pretraining stage).",
)
def finetune_registry(chameleon: ChameleonConfig) -> dg.DataVersion:
    """The registered finetuning domain set."""
    return dg.DataVersion(registry_version([s.name for s in chameleon.finetune_registry()]))


@dg.observable_source_asset(
    partitions_def=seed_partitions,
    group_name="finetune",
    description="The model each seed's finetuned models start from: the latest data version of "
                "base_model[<finetune.base>|<seed>], or the fingerprint of the `finetune.checkpoint` folder. "
                "Observed, so that retraining that one base model stales exactly that seed's finetuned models "
                "(and no other base model does).",
)
def finetune_start(context, chameleon: ChameleonConfig) -> dg.DataVersionsByPartition:  # noqa: ANN001
    """One data version per seed: the version of the model its finetuned models start from."""
    seeds = [int(s) for s in context.instance.get_dynamic_partitions(seed_partitions.name)]
    return dg.DataVersionsByPartition(start_versions(context.instance, chameleon, seeds))


def start_versions(instance: dg.DagsterInstance, chameleon: ChameleonConfig, seeds: list[int]) -> dict[str, str]:
    """``{seed: version of its finetuning start}`` (``missing:<key>`` while that base model is not materialised)."""
    from chameleon_assets.settings import checkpoint_fingerprint

    profile = chameleon.profile()
    ft = profile.finetune
    if ft.checkpoint:
        fingerprint = checkpoint_fingerprint(profile, ft.checkpoint, "finetune.checkpoint")
        return {str(s): f"checkpoint:{fingerprint}" for s in seeds}
    out = {}
    for s in seeds:
        out[str(s)] = latest_version(instance, "base_model", f"{ft.base}|{s}") or f"missing:{ft.base}|{s}"
    return out


@dg.observable_source_asset(
    group_name="finetune",
    description="The (finetune mixture, seed) partitions that exist: `finetune_mixtures` of conf/mixtures.yaml and "
                "the profile's seeds. Data version = sha256 of both, so removing one stales finetune_comparison.",
)
def finetune_model_registry(chameleon: ChameleonConfig) -> dg.DataVersion:
    """The set of (finetune mixture, seed) model partitions."""
    return dg.DataVersion(models_version(chameleon.mixtures().finetune_mixtures, chameleon.profile().seeds))


@dg.observable_source_asset(
    group_name="models",
    description="The (mixture, seed) partitions that exist: the mixtures of conf/mixtures.yaml and the profile's "
                "seeds. Data version = sha256 of both sorted lists, so removing a seed or a mixture stales "
                "mixture_comparison (Dagster's stale status sees new and changed upstream partitions, not "
                "removed ones).",
)
def model_registry(chameleon: ChameleonConfig) -> dg.DataVersion:
    """The set of (mixture, seed) model partitions."""
    return dg.DataVersion(models_version(chameleon.mixtures().mixtures, chameleon.profile().seeds))


def models_version(mixtures: list[str], seeds: list[int]) -> str:
    """``registry_version`` of the mixture names and seeds, each marked with its dimension."""
    return registry_version([f"mixture:{m}" for m in mixtures] + [f"seed:{s}" for s in seeds])


def registry_version(domains: list[str]) -> str:
    """sha256 of the sorted domain names (24 hex digits)."""
    import hashlib

    return hashlib.sha256("\n".join(sorted(domains)).encode()).hexdigest()[:24]


def current_source_versions(
    chameleon: ChameleonConfig, instance: dg.DagsterInstance | None = None
) -> tuple[dict[tuple[str, str | None], str], dict[str, str]]:
    """``{(asset, partition): version}`` of every source now, and ``{what: error}`` for those that failed.

    A section or registry that fails to load is reported, not raised: the rest is still
    observed, and the asset that reads the broken part fails with the same message.
    """
    versions: dict[tuple[str, str | None], str] = {}
    errors: dict[str, str] = {}
    for section in CONFIG_SOURCES:
        try:
            versions[(f"config_{section}", None)] = chameleon.section_version(section)
        except (ValueError, OSError) as exc:
            errors[f"config_{section}"] = str(exc)
    try:
        mixtures, seeds = chameleon.mixtures(), chameleon.profile().seeds
        versions[("model_registry", None)] = models_version(mixtures.mixtures, seeds)
        versions[("finetune_model_registry", None)] = models_version(mixtures.finetune_mixtures, seeds)
    except (ValueError, OSError) as exc:
        errors["model_registry"] = str(exc)
    for source, registry, specs in (("domain_source", "domain_registry", chameleon.registry),
                                    ("finetune_source", "finetune_registry", chameleon.finetune_registry)):
        try:
            domain_versions = chameleon.domain_versions(specs())
            versions[(registry, None)] = registry_version(list(domain_versions))
            for domain, version in domain_versions.items():
                versions[(source, domain)] = version
        except (ValueError, OSError) as exc:
            errors[source] = str(exc)
    if instance is not None:
        try:
            seeds = [int(s) for s in instance.get_dynamic_partitions(seed_partitions.name)]
            for seed, version in start_versions(instance, chameleon, seeds).items():
                versions[("finetune_start", seed)] = version
        except (ValueError, OSError) as exc:
            errors["finetune_start"] = str(exc)
    return versions, errors


def source_observations(
    instance: dg.DagsterInstance, chameleon: ChameleonConfig
) -> tuple[list[dg.AssetObservation], dict[str, str]]:
    """Observations for the sources whose current version differs from the latest recorded one."""
    versions, errors = current_source_versions(chameleon, instance)
    partitions = {"domain_source": set(instance.get_dynamic_partitions(domain_partitions.name)),
                  "finetune_source": set(instance.get_dynamic_partitions(finetune_domain_partitions.name)),
                  "finetune_start": set(instance.get_dynamic_partitions(seed_partitions.name))}
    recorded = _recorded_versions(instance, sorted({key for key, _ in versions}),
                                  {k: sorted(v) for k, v in partitions.items()})
    out = []
    for (key, partition), version in sorted(versions.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        if partition is not None and partition not in partitions.get(key, set()):
            continue  # registered by partition_changes first
        if recorded.get((key, partition)) != version:
            out.append(dg.AssetObservation(asset_key=key, partition=partition, tags={DATA_VERSION_TAG: version}))
    return out, errors


def _recorded_versions(
    instance: dg.DagsterInstance, keys: list[str], partitions: dict[str, list[str]]
) -> dict[tuple[str, str | None], str]:
    """The latest observed data version of each source (one query per partitioned source for
    all its partitions; ``partitions``: ``{source: its partition keys}``)."""
    out: dict[tuple[str, str | None], str] = {}
    for key in keys:
        if key not in partitions:
            version = latest_version(instance, key, observed=True)
            if version:
                out[(key, None)] = version
        elif partitions[key]:
            tags = instance.event_log_storage.get_latest_tags_by_partition(
                dg.AssetKey(key), dg.DagsterEventType.ASSET_OBSERVATION, [DATA_VERSION_TAG], partitions[key]
            )
            out.update({(key, p): t[DATA_VERSION_TAG] for p, t in tags.items() if DATA_VERSION_TAG in t})
    return out


def record_observations(instance: dg.DagsterInstance, observations: list[dg.AssetObservation]) -> None:
    """Store observations in the event log without a run (what the sensor's asset events do)."""
    for obs in observations:
        instance.report_runless_asset_event(obs)
