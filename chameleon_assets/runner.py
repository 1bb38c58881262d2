"""Bring the instance up to date in-process: the command-line side of ``defs.policy``.

``converge`` is the body of ``chameleon run`` and ``chameleon sync``:

1. make the ``domain`` and ``mixture`` partitions equal the configuration files;
2. record an observation for every configuration section and domain source whose
   version changed (nothing else is re-read: unchanged raw files are not hashed again);
3. ask Dagster which asset partitions the policy requests (``policy.requested``, the
   automation conditions the UI's automation sensor evaluates), materialise those of the
   first asset in topological order, and repeat until nothing is requested.

It never decides staleness itself. Runs land in the instance that ``make ui`` shows.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import dagster as dg

from chameleon_assets import paths

warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)

# Step failures are summarised in one line by ``converge``; the full log stays in the
# instance's event log (Dagster UI, Runs).
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
MAX_WAVES = 200


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


def materialize(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    selection: Sequence,
    partition_key: str | None = None,
    raise_on_error: bool = True,
) -> dg.ExecuteInProcessResult:
    """Materialise ``selection`` (asset definitions or keys; one partition, or unpartitioned)."""
    keys = []
    for a in selection:
        keys += list(a.keys) if isinstance(a, dg.AssetsDefinition) else [a.key if hasattr(a, "key") else a]
    return dg.materialize(
        assets=list(defs.assets or []) + list(defs.asset_checks or []),
        selection=keys,
        instance=instance,
        partition_key=partition_key,
        resources=dict(defs.resources or {}),
        run_config=QUIET,
        raise_on_error=raise_on_error,
    )


@dataclass
class ConvergeReport:
    """What one ``converge`` did."""

    partition_changes: str = ""
    observed: list[str] = field(default_factory=list)
    materialized: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    source_errors: dict[str, str] = field(default_factory=dict)
    planned: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.materialized or self.failed or self.planned)


def converge(
    mode: str = "run",
    mixtures: Sequence[str] | None = None,
    instance: dg.DagsterInstance | None = None,
    dry_run: bool = False,
) -> ConvergeReport:
    """Materialise what ``defs.policy`` requests until nothing is requested.

    ``mode="run"``: everything missing or stale, proxy and base models included (base
    models of ``mixtures``, default the profile's list). ``mode="sync"``: the assets that
    follow their inputs, and the proxy only if there is none. With ``dry_run`` only the
    first wave is reported (later waves depend on what it produces).
    """
    from chameleon_assets.defs import policy
    from chameleon_assets.defs.partitions import partition_changes
    from chameleon_assets.defs.resources import ChameleonConfig
    from chameleon_assets.defs.sources import record_observations, source_observations

    instance = instance or get_instance()
    chameleon = ChameleonConfig()
    mix_cfg = chameleon.mixtures()
    if mode == "run":
        mixtures = list(mixtures or chameleon.profile().base_model.mixtures)
        unknown = [m for m in mixtures if m not in mix_cfg.mixtures]
        if unknown:
            raise ValueError(f"mixtures {unknown} are not in conf/mixtures.yaml (known: {mix_cfg.mixtures})")
    report = ConvergeReport()
    changes = partition_changes(instance, [s.name for s in chameleon.registry()], mix_cfg.mixtures)
    report.partition_changes = changes.describe()
    if dry_run:
        print(f"partitions: {report.partition_changes}", flush=True)
    if not changes.empty and not dry_run:
        changes.apply(instance)
        print(f"partitions: {report.partition_changes}", flush=True)
    observations, report.source_errors = source_observations(instance, chameleon)
    for what, message in report.source_errors.items():
        print(f"warning: {what}: {message}", flush=True)
    report.observed = [o.asset_key.to_user_string() + (f"[{o.partition}]" if o.partition else "") for o in observations]
    if dry_run:
        if report.observed:
            print(f"changed sources: {', '.join(report.observed)} (recorded by the real run)", flush=True)
        return report
    record_observations(instance, observations)
    if report.observed:
        print(f"changed sources: {', '.join(report.observed)}", flush=True)

    base = load_defs()
    defs = dg.Definitions(assets=policy.with_requests(base.assets, mode), asset_checks=base.asset_checks,
                          resources=base.resources)
    graph = defs.resolve_asset_graph()
    blocked: set[dg.AssetKey] = set()
    done: set[tuple[dg.AssetKey, str | None]] = set()
    for _ in range(MAX_WAVES):
        wanted = [(k, p) for k, p in policy.requested(defs, instance, mixtures if mode == "run" else []) if k not in blocked]
        if not wanted:
            break
        key = wanted[0][0]
        for k, p in (w for w in wanted if w[0] == key):
            name = k.to_user_string() + (f"[{p}]" if p else "")
            if (k, p) in done:
                raise RuntimeError(f"{name} is requested again right after it was materialised: the policy does not "
                                   "converge (a data version that changes on every run?)")
            t0 = time.perf_counter()
            result = materialize(base, instance, [k], partition_key=p, raise_on_error=False)
            done.add((k, p))
            if result.success:
                report.materialized.append(name)
                print(f"  {name} {time.perf_counter() - t0:.1f}s", flush=True)
            else:
                report.failed[name] = _failure_message(result)
                print(f"  FAILED {name}: {report.failed[name]}", flush=True)
                blocked |= _descendants(graph, key)
    else:
        raise RuntimeError(f"more than {MAX_WAVES} waves of materialisations: the policy does not converge")
    return report


def _descendants(graph, key: dg.AssetKey) -> set[dg.AssetKey]:  # noqa: ANN001
    out, todo = {key}, [key]
    while todo:
        for child in graph.get(todo.pop()).child_keys:
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def _failure_message(result: dg.ExecuteInProcessResult) -> str:
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            error = event.step_failure_data.error
            while error.cause is not None and error.cls_name in ("DagsterExecutionStepExecutionError",):
                error = error.cause
            return error.message.strip()
    return "the run failed (see the Dagster UI for its event log)"


def sync(dry_run: bool = False, instance: dg.DagsterInstance | None = None) -> ConvergeReport:
    """Bring partitions, corpus, embeddings and weights in line with the configuration.

    The proxy is trained only if none exists; stale models wait for ``chameleon run``.
    """
    report = converge("sync", instance=instance, dry_run=dry_run)
    if report.empty and not dry_run:
        print("up to date: nothing to do", flush=True)
    return report


def run_everything(mixtures: Sequence[str] | None = None, instance: dg.DagsterInstance | None = None) -> ConvergeReport:
    """Materialise the whole graph (the body of ``make run``), recomputing only what is missing or stale."""
    instance = instance or get_instance()
    t_start = time.perf_counter()
    report = converge("run", mixtures=mixtures, instance=instance)
    if report.empty:
        print("up to date: nothing to do", flush=True)
    print(f"\ndone in {time.perf_counter() - t_start:.0f}s", flush=True)
    try:
        print(weights_report(instance), flush=True)
        print(comparison_report(instance), flush=True)
    except FileNotFoundError as exc:
        print(f"no table to show yet: {exc}", flush=True)
    return report


def weights_report(instance: dg.DagsterInstance | None = None) -> str:
    """The current weights table (mixtures x domains) and KRLS, as text."""
    from chameleon_assets.defs.io import load_value

    table = load_value(instance or get_instance(), "mixture_weights")
    frame = table.frame()
    frame.loc["krls"] = table.krls
    return f"Mixture weights (rows: mixtures, columns: domains; version {table.data_version})\n" + \
        frame.round(4).to_string()


def comparison_report(instance: dg.DagsterInstance | None = None) -> str:
    """The mixture comparison (weights, perplexities, accuracies) as text, best marked with *."""
    import pandas as pd

    from chameleon_assets.defs.io import load_value
    from chameleon_assets.defs.models import mark_best

    table = load_value(instance or get_instance(), "mixture_comparison")
    if not table.rows:
        return "\nNo evaluation of a current model to compare: " + "; ".join(
            f"{m}: {why}" for m, why in table.excluded.items())
    frame = pd.DataFrame.from_dict(table.rows, orient="index")
    scores = frame[[c for c in frame.columns if not c.startswith("w.")]]
    lines = ["\nHeld-out perplexity per domain, averages, few-shot accuracy (* = best; version "
             f"{table.data_version})", mark_best(scores).to_string()]
    if table.excluded:
        lines.append("not compared (stale): " + "; ".join(f"{m}: {why}" for m, why in table.excluded.items()))
    return "\n".join(lines)
