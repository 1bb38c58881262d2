"""Materialise the asset graph in-process on a persistent Dagster instance.

Used by ``chameleon run`` (and so ``make run``), ``chameleon sync`` and the tests. Runs
land in the instance that ``make ui`` shows, so every materialisation can be browsed.
"""

from __future__ import annotations

import os
import time
import warnings
from typing import Sequence

import dagster as dg

warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}

from chameleon_assets import paths
from chameleon_assets.defs.partitions import domain_partitions


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
        selection=[key for a in selection for key in a.keys],
        instance=instance,
        partition_key=partition_key,
        resources=dict(defs.resources or {}),
        run_config=QUIET,
    )


def materialize_domains(instance: dg.DagsterInstance, domains: Sequence[str], selection: Sequence) -> None:
    """Materialise the partitioned ``selection`` for each domain, one run per domain."""
    defs = load_defs()
    for d in domains:
        t0 = time.perf_counter()
        materialize(defs, instance, selection, partition_key=d)
        print(f"  {' + '.join(a.key.to_user_string() for a in selection)}[{d}] {time.perf_counter() - t0:.1f}s", flush=True)


def run_everything(mixtures: Sequence[str] | None = None, instance: dg.DagsterInstance | None = None) -> None:
    """Materialise every asset for every registered domain (the body of ``make run``)."""
    from chameleon_assets.defs.corpus import domain_corpus
    from chameleon_assets.defs.resources import ChameleonConfig
    from chameleon_assets.defs.weights import affinity_matrix, domain_embeddings, mixture_weights, proxy_model

    instance = instance or get_instance()
    defs = load_defs()
    registry = ChameleonConfig().registry()
    domains = [s.name for s in registry]
    add_domain_partitions(instance, domains)
    t_start = time.perf_counter()
    print(f"[1/4] domain_corpus for {len(domains)} domains", flush=True)
    materialize_domains(instance, domains, [domain_corpus])
    if not _has_materialization(instance, "proxy_model"):
        print("[2/4] proxy_model (trained once on the uniform mixture)", flush=True)
        materialize(defs, instance, [proxy_model])
    else:
        print("[2/4] proxy_model exists: reused, not retrained", flush=True)
    print("[3/4] domain_embeddings", flush=True)
    materialize_domains(instance, domains, [domain_embeddings])
    print("[4/4] affinity_matrix + mixture_weights", flush=True)
    materialize(defs, instance, [affinity_matrix, mixture_weights])
    print(f"done in {time.perf_counter() - t_start:.0f}s", flush=True)
    print(weights_report())


def _has_materialization(instance: dg.DagsterInstance, key: str, partition: str | None = None) -> bool:
    return instance.get_latest_materialization_event(dg.AssetKey(key)) is not None if partition is None else bool(
        instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(key), asset_partitions=[partition]), limit=1
        ).records
    )


def weights_report() -> str:
    """The current weights table (mixtures x domains) and KRLS, as text."""
    import pandas as pd

    from chameleon_assets.core.artifacts import read_json

    data = read_json(paths.weights_dir() / "weights.json")
    frame = pd.DataFrame(data["weights"], index=data["domains"]).T
    frame.loc["krls"] = data["krls"]
    return "Mixture weights (rows: mixtures, columns: domains)\n" + frame.round(4).to_string()
