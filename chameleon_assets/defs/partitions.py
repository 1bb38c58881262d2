"""Partitions, defined once: one per registered domain, one per (mixture, seed), and the
same two for the finetuning stage.

All are dynamic: loading the code location reads no configuration file. Which
partitions exist is reconciled with ``conf/domains.yaml``, ``conf/mixtures.yaml`` and the
profile's ``seeds`` by ``partition_changes``, which ``chameleon run``/``sync`` apply
directly and the registry sensor issues as dynamic-partition requests.

Trained models and their evaluations are partitioned by ``model_partitions``, the
product of the mixture and seed dimensions; a key reads ``<mixture>|<seed>`` (Dagster
joins the dimensions in name order), e.g. ``uniform|0``. Adding a seed adds one
partition per mixture and changes nothing that exists.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import dagster as dg

from chameleon_assets import paths

domain_partitions = dg.DynamicPartitionsDefinition(name="domain")
mixture_partitions = dg.DynamicPartitionsDefinition(name="mixture")
seed_partitions = dg.DynamicPartitionsDefinition(name="seed")
model_partitions = dg.MultiPartitionsDefinition({"mixture": mixture_partitions, "seed": seed_partitions})
finetune_domain_partitions = dg.DynamicPartitionsDefinition(name="finetune_domain")
finetune_mixture_partitions = dg.DynamicPartitionsDefinition(name="finetune_mixture")
finetune_model_partitions = dg.MultiPartitionsDefinition(
    {"finetune_mixture": finetune_mixture_partitions, "seed": seed_partitions})
# RegMix's swarm: one partition per run ("0", "1", ...), as many as the profile's
# `methods.regmix.runs`; raising it adds runs and changes none that exist.
regmix_run_partitions = dg.DynamicPartitionsDefinition(name="regmix_run")
# Olmix's reuse swarm: one partition per reduced run, as many as `methods.olmix.reuse_runs`.
olmix_reuse_run_partitions = dg.DynamicPartitionsDefinition(name="olmix_reuse_run")

# finetuned_model[<mixture>|<seed>] depends on the finetune_start source of its seed.
SEED_OF_MODEL = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="seed")


def split_model_key(key: str) -> tuple[str, int]:
    """(mixture, seed) of a ``model_partitions`` or ``finetune_model_partitions`` key (a
    ``MultiPartitionKey`` or its string)."""
    mixture, _, seed = str(key).rpartition("|")
    if not mixture or not seed.isdigit():
        raise ValueError(f"{key!r} is not a <mixture>|<seed> partition key")
    return mixture, int(seed)

# Inputs that read every partition of an upstream asset, as ``{partition: value}``; with
# ALL_EXISTING, partitions never materialised (mixtures nobody trained) are left out.
ALL_PARTITIONS = dg.AssetIn(partition_mapping=dg.AllPartitionMapping(), metadata={"as_dict": True})
ALL_EXISTING = dg.AssetIn(partition_mapping=dg.AllPartitionMapping(),
                          metadata={"as_dict": True, "existing_only": True})

# A dependency drawn in the lineage that stales nothing: the step reads the exact
# upstream versions that its other inputs name (the proxy: the domains it trains on; the
# weights, base models and evaluations: the corpus versions named by affinity, weights
# and base model), so the version chain, not this edge, carries the provenance.
LINEAGE_ONLY = dg.SpecificPartitionsPartitionMapping([])


@dataclass
class PartitionChanges:
    """Partitions to add and delete, per partitions definition name."""

    add: dict[str, list[str]] = field(default_factory=dict)
    delete: dict[str, list[str]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not any(self.add.values()) and not any(self.delete.values())

    def describe(self) -> str:
        parts = [f"+{name}: {', '.join(keys)}" for name, keys in self.add.items() if keys]
        parts += [f"-{name}: {', '.join(keys)}" for name, keys in self.delete.items() if keys]
        return "; ".join(parts) or "partitions match the configuration"

    def apply(self, instance: dg.DagsterInstance) -> None:
        for name, keys in self.add.items():
            if keys:
                instance.add_dynamic_partitions(name, keys)
        for name, keys in self.delete.items():
            for key in keys:
                instance.delete_dynamic_partition(name, key)

    def requests(self) -> list:
        """The same changes as sensor dynamic-partition requests."""
        defs = {p.name: p for p in (domain_partitions, mixture_partitions, seed_partitions,
                                    finetune_domain_partitions, finetune_mixture_partitions, regmix_run_partitions,
                                    olmix_reuse_run_partitions)}
        out = [defs[n].build_add_request(keys) for n, keys in self.add.items() if keys]
        out += [defs[n].build_delete_request(keys) for n, keys in self.delete.items() if keys]
        return out


def partition_changes(
    instance: dg.DagsterInstance,
    domains: Sequence[str],
    mixtures: Sequence[str] | None,
    seeds: Sequence[int] | None = None,
    finetune_domains: Sequence[str] | None = None,
    finetune_mixtures: Sequence[str] | None = None,
    regmix_runs: int | None = None,
    olmix_reuse_runs: int | None = None,
) -> PartitionChanges:
    """What to add and delete so that partitions equal the registered domains, mixtures and
    seeds, the finetuning domains and mixtures, RegMix's swarm runs and Olmix's reuse runs.

    ``None`` leaves that definition's partitions as they are: ``mixtures`` and
    ``finetune_mixtures`` when ``conf/mixtures.yaml`` does not load, ``seeds``,
    ``regmix_runs`` and ``olmix_reuse_runs`` when the profile does not, ``finetune_domains``
    when not given.
    """
    changes = PartitionChanges()
    wanted_seeds = None if seeds is None else [str(s) for s in seeds]
    wanted_runs = None if regmix_runs is None else [str(r) for r in range(regmix_runs)]
    wanted_reuse = None if olmix_reuse_runs is None else [str(r) for r in range(olmix_reuse_runs)]
    for pdef, wanted in ((domain_partitions, domains), (mixture_partitions, mixtures), (seed_partitions, wanted_seeds),
                         (finetune_domain_partitions, finetune_domains),
                         (finetune_mixture_partitions, finetune_mixtures), (regmix_run_partitions, wanted_runs),
                         (olmix_reuse_run_partitions, wanted_reuse)):
        if wanted is None:
            continue
        existing = list(instance.get_dynamic_partitions(pdef.name))
        changes.add[pdef.name] = [k for k in wanted if k not in existing]
        changes.delete[pdef.name] = sorted(k for k in existing if k not in wanted)
    return changes


# What is derived from one domain alone, per domain partition: its token shards and its
# embeddings (folders under artifacts/<kind>/<domain>/, for both groups: a name is unique
# across them) and their stored values.
DOMAIN_ARTEFACTS = ("corpus", "embeddings")
DOMAIN_ASSETS = ("domain_corpus", "domain_embeddings", "finetune_corpus", "finetune_embeddings")


def remove_unregistered_domain_artefacts(instance: dg.DagsterInstance) -> list[Path]:
    """Delete the shards, embeddings and stored values of domains that are no longer partitions.

    Run once the partitions match the registry (after ``PartitionChanges.apply``, and by
    the registry sensor on the tick after its delete request). Only folders under the
    artefacts directory are touched, never a domain's raw data; with no domain
    registered at all nothing is deleted. A removed domain that is registered again is
    tokenised and embedded anew. Returns what was deleted.
    """
    from chameleon_assets.defs.io import value_path

    registered = set(instance.get_dynamic_partitions(domain_partitions.name))
    if not registered:  # an emptied registry is more likely a mistake than a wish to lose every embedding
        return []
    registered |= set(instance.get_dynamic_partitions(finetune_domain_partitions.name))
    roots = [paths.artifacts_dir() / kind for kind in DOMAIN_ARTEFACTS]
    roots += [value_path(dg.AssetKey(a), "x", "v").parent.parent for a in DOMAIN_ASSETS]
    removed = []
    for root in roots:
        if not root.is_dir():
            continue
        for folder in sorted(root.iterdir()):
            if folder.is_dir() and not folder.name.startswith(".") and folder.name not in registered:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
    return removed
