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


def materialize_partitions(instance: dg.DagsterInstance, keys: Sequence[str], selection: Sequence) -> None:
    """Materialise the partitioned ``selection`` for each partition key, one run per key."""
    defs = load_defs()
    for d in keys:
        t0 = time.perf_counter()
        materialize(defs, instance, selection, partition_key=d)
        print(f"  {' + '.join(a.key.to_user_string() for a in selection)}[{d}] {time.perf_counter() - t0:.1f}s", flush=True)


def run_everything(mixtures: Sequence[str] | None = None, instance: dg.DagsterInstance | None = None) -> None:
    """Materialise the whole graph for every registered domain (the body of ``make run``).

    The proxy is trained only if it was never materialised; base models are trained for
    ``mixtures`` (default: the profile's ``base_model.mixtures``).
    """
    from chameleon_assets.defs.corpus import domain_corpus
    from chameleon_assets.defs.models import base_model, evaluation, mixture_comparison
    from chameleon_assets.defs.partitions import mixture_partitions
    from chameleon_assets.defs.resources import ChameleonConfig
    from chameleon_assets.defs.weights import affinity_matrix, domain_embeddings, mixture_weights, proxy_model

    instance = instance or get_instance()
    defs = load_defs()
    config = ChameleonConfig()
    profile = config.profile()
    mixtures = list(mixtures or profile.base_model.mixtures)
    unknown = [m for m in mixtures if m not in mixture_partitions.get_partition_keys()]
    if unknown:
        raise ValueError(f"mixtures {unknown} are not in conf/mixtures.yaml (known: {mixture_partitions.get_partition_keys()})")
    domains = [s.name for s in config.registry()]
    add_domain_partitions(instance, domains)
    t_start = time.perf_counter()
    print(f"profile '{profile.name}', {len(domains)} domains, mixtures to train: {', '.join(mixtures)}", flush=True)
    print("[1/7] domain_corpus", flush=True)
    materialize_partitions(instance, domains, [domain_corpus])
    if not _has_materialization(instance, "proxy_model"):
        print("[2/7] proxy_model (trained once, on the uniform mixture)", flush=True)
        _timed(lambda: materialize(defs, instance, [proxy_model]), "proxy_model")
    else:
        print("[2/7] proxy_model exists: reused, not retrained", flush=True)
    print("[3/7] domain_embeddings", flush=True)
    materialize_partitions(instance, domains, [domain_embeddings])
    print("[4/7] affinity_matrix + mixture_weights", flush=True)
    _timed(lambda: materialize(defs, instance, [affinity_matrix, mixture_weights]), "affinity + weights")
    print(weights_report(), flush=True)
    print("[5/7] base_model", flush=True)
    materialize_partitions(instance, mixtures, [base_model])
    print("[6/7] evaluation", flush=True)
    materialize_partitions(instance, mixtures, [evaluation])
    print("[7/7] mixture_comparison", flush=True)
    materialize(defs, instance, [mixture_comparison])
    print(f"\ndone in {time.perf_counter() - t_start:.0f}s", flush=True)
    print(comparison_report())


def _timed(fn, label: str) -> None:
    t0 = time.perf_counter()
    fn()
    print(f"  {label} {time.perf_counter() - t0:.1f}s", flush=True)


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
