"""Materialise the asset graph in-process on a persistent Dagster instance.

Used by ``chameleon run`` (and so ``make run``), ``chameleon sync`` and the tests. Runs
land in the instance that ``make ui`` shows, so every materialisation can be browsed.
"""

from __future__ import annotations

import os
import time
import warnings
from typing import TYPE_CHECKING, Sequence

import dagster as dg

warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}

from chameleon_assets import paths
from chameleon_assets.defs.partitions import domain_partitions

if TYPE_CHECKING:
    from chameleon_assets.sync import SyncPlan


def get_instance() -> dg.DagsterInstance:
    """The persistent instance under ``$DAGSTER_HOME`` (default ``data/dagster_home``)."""
    home = paths.dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    os.environ["DAGSTER_HOME"] = str(home)
    return dg.DagsterInstance.get()


def load_defs() -> dg.Definitions:
    from chameleon_assets.definitions import defs

    return defs


def domain_partition_keys(instance: dg.DagsterInstance) -> list[str]:
    return list(instance.get_dynamic_partitions(domain_partitions.name))


def add_domain_partitions(instance: dg.DagsterInstance, names: Sequence[str]) -> list[str]:
    """Register the domains that are not partitions yet; return those added."""
    existing = set(domain_partition_keys(instance))
    new = [n for n in names if n not in existing]
    if new:
        instance.add_dynamic_partitions(domain_partitions.name, new)
    return new


def materialize(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    selection: Sequence[dg.AssetsDefinition],
    partition_key: str | None = None,
) -> dg.ExecuteInProcessResult:
    """Materialise ``selection`` (one partition, or unpartitioned) with the location's resources."""
    return dg.materialize(
        assets=list(defs.assets or []) + list(defs.asset_checks or []),
        selection=[key for a in selection for key in (a.keys if hasattr(a, "keys") else [a.key])],
        instance=instance,
        partition_key=partition_key,
        resources=dict(defs.resources or {}),
        run_config=QUIET,
    )


def materialize_partitions(instance: dg.DagsterInstance, keys: Sequence[str], selection: Sequence) -> None:
    """Materialise the partitioned ``selection`` for each partition key, one run per key."""
    defs = load_defs()
    for d in keys:
        t0 = time.perf_counter()
        materialize(defs, instance, selection, partition_key=d)
        names = " + ".join(a.key.to_user_string() for a in selection)
        print(f"  {names}[{d}] {time.perf_counter() - t0:.1f}s", flush=True)


def sync(dry_run: bool = False, instance: dg.DagsterInstance | None = None) -> "SyncPlan":
    """Bring the instance in line with the registry (see ``chameleon_assets.sync``).

    Builds corpus and embeddings only for new or changed domains, deletes removed
    domains' partitions, and recomputes affinity and weights if anything changed (or
    they were never computed). The proxy is trained only if none exists yet.
    """
    from chameleon_assets.defs.corpus import domain_corpus, domain_source
    from chameleon_assets.defs.resources import ChameleonConfig
    from chameleon_assets.defs.weights import affinity_matrix, domain_embeddings, mixture_weights, proxy_model
    from chameleon_assets.sync import plan_sync

    instance = instance or get_instance()
    config = ChameleonConfig()
    plan = plan_sync(instance, config.registry(), config.profile())
    print(plan.describe(), flush=True)
    if dry_run:
        return plan
    defs = load_defs()
    add_domain_partitions(instance, plan.added)
    for name in plan.removed:
        instance.delete_dynamic_partition(domain_partitions.name, name)
    if not plan.empty:
        materialize(defs, instance, [domain_source])  # record the new source versions (UI staleness)
    materialize_partitions(instance, plan.to_build, [domain_corpus])
    if not _has_materialization(instance, "proxy_model"):
        print("proxy_model: none yet, training it once on the uniform mixture", flush=True)
        _timed(lambda: materialize(defs, instance, [proxy_model]), "proxy_model")
    materialize_partitions(instance, plan.to_build, [domain_embeddings])
    if not plan.empty or not _has_materialization(instance, "mixture_weights"):
        _timed(lambda: materialize(defs, instance, [affinity_matrix, mixture_weights]), "affinity_matrix + mixture_weights")
    return plan


def run_everything(mixtures: Sequence[str] | None = None, instance: dg.DagsterInstance | None = None) -> None:
    """Materialise the whole graph (the body of ``make run``), reusing what is up to date.

    Domains are synced first (``sync``); then a base model is trained and evaluated for
    each of ``mixtures`` (default: the profile's ``base_model.mixtures``) unless its
    latest materialisation is newer than the weights it was trained on.
    """
    from chameleon_assets.defs.models import base_model, evaluation, mixture_comparison
    from chameleon_assets.defs.partitions import mixture_partitions
    from chameleon_assets.defs.resources import ChameleonConfig

    instance = instance or get_instance()
    defs = load_defs()
    profile = ChameleonConfig().profile()
    mixtures = list(mixtures or profile.base_model.mixtures)
    known = mixture_partitions.get_partition_keys()
    unknown = [m for m in mixtures if m not in known]
    if unknown:
        raise ValueError(f"mixtures {unknown} are not in conf/mixtures.yaml (known: {known})")
    t_start = time.perf_counter()
    print(f"[1/4] domains -> proxy -> embeddings -> weights (profile '{profile.name}')", flush=True)
    sync(instance=instance)
    print(weights_report(), flush=True)
    print(f"[2/4] base_model for {', '.join(mixtures)}", flush=True)
    stale = [m for m in mixtures if not _newer(instance, ("base_model", m), ("mixture_weights", None))]
    materialize_partitions(instance, stale, [base_model])
    print("[3/4] evaluation", flush=True)
    stale = [m for m in mixtures if not _newer(instance, ("evaluation", m), ("base_model", m))]
    materialize_partitions(instance, stale, [evaluation])
    print("[4/4] mixture_comparison", flush=True)
    materialize(defs, instance, [mixture_comparison])
    print(f"\ndone in {time.perf_counter() - t_start:.0f}s", flush=True)
    print(comparison_report())


def _latest_storage_id(instance: dg.DagsterInstance, key: str, partition: str | None) -> int | None:
    from chameleon_assets.sync import latest_materialization

    record = latest_materialization(instance, key, partition)
    return record.storage_id if record else None


def _newer(instance: dg.DagsterInstance, target: tuple, source: tuple) -> bool:
    """Whether ``target``'s latest materialisation came after ``source``'s latest one."""
    t, s = _latest_storage_id(instance, *target), _latest_storage_id(instance, *source)
    return t is not None and s is not None and t > s


def _timed(fn, label: str) -> None:
    t0 = time.perf_counter()
    fn()
    print(f"  {label} {time.perf_counter() - t0:.1f}s", flush=True)


def _has_materialization(instance: dg.DagsterInstance, key: str) -> bool:
    return _latest_storage_id(instance, key, None) is not None


def weights_report() -> str:
    """The current weights table (mixtures x domains) and KRLS, as text."""
    import pandas as pd

    from chameleon_assets.core.artifacts import read_json

    data = read_json(paths.weights_dir() / "weights.json")
    frame = pd.DataFrame(data["weights"], index=data["domains"]).T
    frame.loc["krls"] = data["krls"]
    return "Mixture weights (rows: mixtures, columns: domains)\n" + frame.round(4).to_string()


def comparison_report() -> str:
    """The mixture comparison (weights, perplexities, accuracies) as text, best marked with *."""
    import pandas as pd

    from chameleon_assets.defs.models import mark_best

    frame = pd.read_csv(paths.comparison_dir() / "mixture_comparison.csv", index_col=0)
    weights = frame[[c for c in frame.columns if c.startswith("w.")]]
    scores = frame[[c for c in frame.columns if not c.startswith("w.")]]
    return (
        "Mixture weights\n" + weights.round(3).to_string()
        + "\n\nHeld-out perplexity per domain, averages, few-shot accuracy (* = best)\n"
        + mark_best(scores).to_string()
    )
