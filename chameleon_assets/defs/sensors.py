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

``lost_run_worker_sensor`` fails a started run whose worker process has died (killed,
out of memory), which Dagster's default run launcher does not notice by itself: its
partition is then missing again, and the automation requests it.

Every sensor runs at most once per ``$CHAMELEON_SENSOR_INTERVAL`` seconds (default 30);
the daemon looks at the sensors every 5 seconds on top of that.
"""

import os
from pathlib import Path

import dagster as dg

from chameleon_assets.defs.io import adopt_legacy_artefacts
from chameleon_assets.defs.partitions import partition_changes, remove_unregistered_domain_artefacts
from chameleon_assets.defs.resources import ChameleonConfig
from chameleon_assets.defs.sources import source_observations
from chameleon_assets.settings import ConfigError, method_params

SENSOR_INTERVAL_S = int(os.environ.get("CHAMELEON_SENSOR_INTERVAL", "30"))


@dg.sensor(minimum_interval_seconds=SENSOR_INTERVAL_S, default_status=dg.DefaultSensorStatus.RUNNING)
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
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    # The policy's stale condition is this project's own code: evaluate it where the code lives.
    use_user_code_server=True,
    description="Evaluates defs.policy: assets that follow their inputs are requested when missing or stale "
                "and their inputs are ready. proxy_model, base_model and finetuned_model run on request only.",
)


# Dagster's own record of a launched run's process: the engine event that the code server's
# run worker writes first ("Started process for run (pid: N).", metadata ``pid``).
WORKER_STARTED = "Started process for run"


def run_worker_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The pid of the process that executes run ``run_id``, from Dagster's engine event; None
    for a run executed in the process that started it (``chameleon run``), which records none."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT, limit=20).records
    for record in records:
        event = record.event_log_entry.dagster_event
        if event is not None and (event.message or "").startswith(WORKER_STARTED):
            pid = event.engine_event_data.metadata.get("pid")
            return int(pid.value) if pid is not None else None
    return None


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host and is not a zombie (a killed child of the
    code server stays one until the server reaps it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process under that pid
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


@dg.sensor(minimum_interval_seconds=SENSOR_INTERVAL_S, default_status=dg.DefaultSensorStatus.RUNNING)
def lost_run_worker_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    """Reports as failed every STARTED run whose run worker process is gone.

    Only with Dagster's default run launcher, whose run workers are processes of the code
    server on the host where this sensor is evaluated (the team's one server: docs/pages/team.md).
    Runs that ``chameleon run`` executes in its own process record no worker pid and are
    left alone. A run is failed within ``$CHAMELEON_SENSOR_INTERVAL`` + 5 seconds of its worker's death.
    """
    instance = context.instance
    if not isinstance(instance.run_launcher, dg.DefaultRunLauncher):
        return dg.SkipReason(f"runs are launched by {type(instance.run_launcher).__name__}, not as local processes")
    failed = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
        pid = run_worker_pid(instance, run.run_id)
        if pid is None or process_alive(pid):
            continue
        # A worker writes its run's end before it exits: read the status again now that it is gone.
        latest = instance.get_run_by_id(run.run_id)
        if latest is None or latest.status != dg.DagsterRunStatus.STARTED:
            continue
        instance.report_run_failed(latest, message=f"The run worker (pid {pid}) is gone: killed or out of "
                                                   "memory. Its partitions are requested again.")
        context.log.error(f"run {run.run_id}: worker pid {pid} is gone; marked failed")
        failed.append(run.run_id)
    return dg.SkipReason(f"marked failed: {', '.join(failed)}" if failed else "every started run's worker is alive")
