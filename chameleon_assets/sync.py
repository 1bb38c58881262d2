"""Keep the instance in line with the domain registry, re-materialising only what changed.

``plan_sync`` compares ``conf/domains.yaml`` (and each domain's source bytes) with the
instance's ``domain`` partitions and their recorded data versions:

* a new domain: add its partition; build its corpus and embeddings;
* a domain whose source bytes changed: rebuild that partition only;
* a removed domain: delete its partition; nothing is recomputed for the others.

Then, if anything changed, the affinity matrix and the weights are recomputed from the
stored embeddings. The proxy model is never retrained. ``sync`` carries the plan out
in-process (``chameleon sync``); ``domain_registry_sensor`` issues the same work as
Dagster run requests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import dagster as dg

from chameleon_assets.core.registry import DomainSpec
from chameleon_assets.core.tokenizer import load_tokenizer, tokenizer_identity
from chameleon_assets.defs.corpus import corpus_data_version
from chameleon_assets.defs.partitions import domain_partitions
from chameleon_assets.settings import Profile


@dataclass
class SyncPlan:
    """What a sync must do; ``versions`` maps each domain to (re)build to its expected data version."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def to_build(self) -> list[str]:
        return self.added + self.changed

    @property
    def empty(self) -> bool:
        return not (self.added or self.changed or self.removed)

    def describe(self) -> str:
        if self.empty:
            return f"in sync: {len(self.unchanged)} domains unchanged, nothing to do"
        parts = [f"{label}: {', '.join(names)}" for label, names in
                 (("added", self.added), ("changed", self.changed), ("removed", self.removed)) if names]
        return "; ".join(parts) + f" ({len(self.unchanged)} unchanged)"


def latest_materialization(instance: dg.DagsterInstance, key: str, partition: str | None = None):
    """The event record of the latest materialisation of ``key`` (``[partition]``), or None."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(key), asset_partitions=[partition] if partition else None),
        limit=1,
    ).records
    return records[0] if records else None


def latest_data_version(instance: dg.DagsterInstance, key: str, partition: str) -> str | None:
    """The data version tag of the latest materialisation of ``key[partition]``, if any."""
    record = latest_materialization(instance, key, partition)
    return record.asset_materialization.tags.get("dagster/data_version") if record else None


def plan_sync(instance: dg.DagsterInstance, registry: list[DomainSpec], profile: Profile) -> SyncPlan:
    """Compare the registry with the instance; touch nothing."""
    partitions = set(instance.get_dynamic_partitions(domain_partitions.name))
    tok_id = tokenizer_identity(load_tokenizer(profile.tokenizer))
    plan = SyncPlan()
    for spec in registry:
        expected = corpus_data_version(spec, tok_id, profile)
        if spec.name not in partitions:
            plan.added.append(spec.name)
            plan.versions[spec.name] = expected
        elif (
            latest_data_version(instance, "domain_corpus", spec.name) != expected
            or latest_data_version(instance, "domain_embeddings", spec.name) is None
        ):
            plan.changed.append(spec.name)
            plan.versions[spec.name] = expected
        else:
            plan.unchanged.append(spec.name)
    names = {s.name for s in registry}
    plan.removed = sorted(p for p in partitions if p not in names)
    return plan
