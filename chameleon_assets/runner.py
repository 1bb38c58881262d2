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


def run_everything(mixtures: Sequence[str] | None = None, instance: dg.DagsterInstance | None = None) -> None:
    """Materialise every asset for every registered domain (the body of ``make run``)."""
    from chameleon_assets.defs.corpus import domain_corpus
    from chameleon_assets.defs.resources import ChameleonConfig

    instance = instance or get_instance()
    defs = load_defs()
    registry = ChameleonConfig().registry()
    add_domain_partitions(instance, [s.name for s in registry])
    for spec in registry:
        t0 = time.perf_counter()
        materialize(defs, instance, [domain_corpus], partition_key=spec.name)
        print(f"domain_corpus[{spec.name}] {time.perf_counter() - t0:.1f}s", flush=True)
