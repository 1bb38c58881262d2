"""Sensors: the registry sensor (partitions and observations) and the automation sensor.

``domain_registry_sensor`` keeps the ``domain``, ``mixture`` and ``seed`` partitions (and
the finetuning stage's ``finetune_domain`` and ``finetune_mixture``) equal
to ``conf/domains.yaml``, ``conf/mixtures.yaml`` and the profile's ``seeds``, and records a new observation for each
configuration section or domain source whose version changed (raw files are re-read
only when their size or mtime changed). It requests no run itself: what to run is
decided by the automation conditions of ``defs.policy``, evaluated by
``chameleon_automation``. A failed partition stays missing or stale, so the next
evaluation requests it again. Once the partitions match, the shards, embeddings and
stored values of domains that are no longer registered are deleted (never raw data).
"""

import dagster as dg

from chameleon_assets.defs.io import adopt_legacy_artefacts
from chameleon_assets.defs.partitions import partition_changes, remove_unregistered_domain_artefacts
from chameleon_assets.defs.resources import ChameleonConfig
from chameleon_assets.defs.sources import source_observations
from chameleon_assets.settings import ConfigError, method_params


@dg.sensor(minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def domain_registry_sensor(context: dg.SensorEvaluationContext, chameleon: ChameleonConfig) -> dg.SensorResult:
    """Registers and deletes domain, mixture and seed partitions (and the finetuning stage's);
    observes changed config and sources (and each seed's finetuning start)."""
    try:
        mixtures: list[str] | None = chameleon.mixtures().mixtures
        finetune_mixtures: list[str] | None = chameleon.mixtures().finetune_mixtures
    except ConfigError as exc:  # domains still follow; mixture_weights fails with this message
        context.log.error(str(exc))
        mixtures = finetune_mixtures = None
    try:
        seeds: list[int] | None = chameleon.profile().seeds
        runs: int | None = method_params(chameleon.profile(), "regmix").runs
        reuse_runs: int | None = method_params(chameleon.profile(), "olmix").reuse_runs
    except ConfigError as exc:  # the steps that read the profile fail with this message
        context.log.error(str(exc))
        seeds = runs = reuse_runs = None
    changes = partition_changes(context.instance, [s.name for s in chameleon.registry()], mixtures, seeds,
                                [s.name for s in chameleon.finetune_registry()], finetune_mixtures, runs, reuse_runs)
    if not changes.empty:
        # Observe after the partitions exist (next tick): an observation of an unknown
        # partition would be dropped.
        context.log.info(changes.describe())
        return dg.SensorResult(dynamic_partitions_requests=changes.requests())
    adopt_legacy_artefacts()
    for folder in remove_unregistered_domain_artefacts(context.instance):
        context.log.info(f"removed {folder} (its domain is no longer registered)")
    observations, errors = source_observations(context.instance, chameleon)
    for what, message in errors.items():
        context.log.error(f"{what}: {message}")
    if not observations:
        return dg.SensorResult(skip_reason="partitions match the configuration; no source changed")
    context.log.info("observed: " + ", ".join(_name(o) for o in observations))
    return dg.SensorResult(asset_events=observations)


def _name(obs: dg.AssetObservation) -> str:
    return obs.asset_key.to_user_string() + (f"[{obs.partition}]" if obs.partition else "")


chameleon_automation = dg.AutomationConditionSensorDefinition(
    "chameleon_automation",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    # The policy's stale condition is this project's own code: evaluate it where the code lives.
    use_user_code_server=True,
    description="Evaluates defs.policy: assets that follow their inputs are requested when missing or stale "
                "and their inputs are ready. proxy_model, base_model and finetuned_model run on request only.",
)
