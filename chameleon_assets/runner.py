"""Bring the instance up to date in-process: the command-line side of ``defs.policy``.

``converge`` is the body of ``chameleon run`` and ``chameleon sync``:

1. make the ``domain`` and ``mixture`` partitions equal the configuration files;
2. record an observation for every configuration section and domain source whose
   version changed (nothing else is re-read: unchanged raw files are not hashed again);
3. ask Dagster which asset partitions the policy requests (``policy.requested``, the
   automation conditions the UI's automation sensor evaluates), materialise those of the
   first asset in topological order, and repeat until nothing is requested.

With ``parallel > 1`` the partitions of one wave (the domains of ``domain_corpus``, the
mixtures of ``base_model``...) run as that many concurrent Dagster runs, one per
partition, each in its own process. Every artefact is a pure function of its inputs, so
they come out the same as in a sequential run (``tests/test_parallel.py``). Training
steps carry the concurrency pool ``gpu``: on a machine with GPUs it gets one slot per GPU
and each process its own GPU, so N trainings run at once on N devices; elsewhere an
instance limit on it (``dagster instance concurrency set gpu 1``) keeps concurrent runs
from sharing a device.

It never decides staleness itself. Runs land in the instance that ``make ui`` shows.
"""

from __future__ import annotations

import os
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import dagster as dg

from chameleon_assets import paths

warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)

# Step failures are summarised in one line by ``converge``; the full log stays in the
# instance's event log (Dagster UI, Runs).
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
# Every run the CLI starts carries its process, so a later CLI can tell a run that is
# still going from one whose process was killed (it would otherwise stay STARTED, and
# its partitions "in progress", forever).
PID_TAG, HOST_TAG = "chameleon/pid", "chameleon/host"
MAX_WAVES = 200
# Dagster stops tracking partition-level data version dependencies beyond this many partitions.
STALENESS_PARTITION_LIMIT = 100


# The embedded instance's settings: no telemetry, and no first-visit "Join the Dagster
# community" dialog (``nux``), so a first visit to the UI lands on the lineage.
INSTANCE_YAML = "telemetry:\n  enabled: false\nnux:\n  enabled: false\n"
_OLD_INSTANCE_YAML = "telemetry:\n  enabled: false\n"  # what homes made before the nux setting hold


def get_instance() -> dg.DagsterInstance:
    """The persistent instance under ``$DAGSTER_HOME`` (default ``data/dagster_home``).

    With ``$CHAMELEON_INSTANCE`` set (a dagster.yaml such as conf/instance/postgres.yaml, the
    team instance), that file becomes the instance's dagster.yaml; otherwise the embedded
    SQLite defaults are used.
    """
    home = paths.dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    chosen = os.environ.get("CHAMELEON_INSTANCE")
    if chosen:
        source = Path(chosen)
        if not source.is_file():
            raise FileNotFoundError(f"CHAMELEON_INSTANCE={chosen}: no such instance configuration file")
        if not (home / "dagster.yaml").exists() or (home / "dagster.yaml").read_text() != source.read_text():
            (home / "dagster.yaml").write_text(source.read_text())
    elif not (home / "dagster.yaml").exists() or (home / "dagster.yaml").read_text() == _OLD_INSTANCE_YAML:
        (home / "dagster.yaml").write_text(INSTANCE_YAML)
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
        tags={PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()},
    )


def fail_orphaned_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark as failed the CLI runs of this host still STARTED whose process is gone; return their ids."""
    from chameleon_assets.core.artifacts import pid_alive

    host = socket.gethostname()
    runs = instance.get_runs(filters=dg.RunsFilter(
        statuses=[dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING], tags={HOST_TAG: host}))
    orphaned = []
    for run in runs:
        pid = int(run.tags.get(PID_TAG, "0"))
        if pid and pid != os.getpid() and not pid_alive(pid):
            instance.report_run_failed(run, f"its process ({pid}) ended without finishing the run (killed?)")
            orphaned.append(run.run_id)
    return orphaned


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


def project_lock_path():  # noqa: ANN201
    """The lock one ``chameleon run``/``sync`` holds while it converges (``<data>/.chameleon.lock``)."""
    return paths.data_dir() / ".chameleon.lock"


def converge(
    mode: str = "run",
    mixtures: Sequence[str] | None = None,
    instance: dg.DagsterInstance | None = None,
    dry_run: bool = False,
    wait: bool = True,
    parallel: int = 1,
) -> ConvergeReport:
    """Materialise what ``defs.policy`` requests until nothing is requested.

    ``mode="run"``: everything missing, stale or damaged, proxy and base models included
    (base models of ``mixtures``, default the profile's list). ``mode="sync"``: the assets
    that follow their inputs, and the proxy only if there is none. With ``dry_run``
    nothing is recorded or run: it reports the partition changes, the sources that
    changed and what is stale or damaged.

    One converge at a time per data directory: a second one waits for the project lock
    (``wait=False``: raises ``LockBusy`` naming the holder) and then finds the work done.
    Runs the UI launches meanwhile are kept apart per asset partition (``io.one_writer``).
    ``parallel``: how many partitions of one asset run at once (see the module docstring).
    """
    from chameleon_assets.core.artifacts import check_writable
    from chameleon_assets.core.locks import file_lock

    if parallel < 1:
        raise ValueError(f"parallel must be at least 1 (got {parallel})")
    if dry_run:
        return _converge(mode, mixtures, instance, dry_run)
    check_writable(paths.data_dir())

    def waiting(who: str) -> None:
        print(f"waiting: {who} (lock {project_lock_path()}); this run starts when it ends", flush=True)

    with file_lock(project_lock_path(), f"chameleon {mode}", wait=wait, on_wait=waiting):
        return _converge(mode, mixtures, instance, dry_run, parallel)


def _converge(
    mode: str, mixtures: Sequence[str] | None, instance: dg.DagsterInstance | None, dry_run: bool, parallel: int = 1
) -> ConvergeReport:
    from chameleon_assets.defs import policy
    from chameleon_assets.defs.io import adopt_legacy_artefacts, latest_version
    from chameleon_assets.defs.partitions import partition_changes, remove_unregistered_domain_artefacts
    from chameleon_assets.defs.resources import ChameleonConfig
    from chameleon_assets.defs.sources import record_observations, source_observations

    chameleon = ChameleonConfig()
    # Every step reads the profile and the mixtures: a bad value in either stops here, before
    # anything is planned, as one ConfigError naming the file and the field.
    chameleon.profile()
    chameleon.mixtures()
    instance = instance or get_instance()
    report = ConvergeReport()
    mixture_names: list[str] = chameleon.mixtures().mixtures
    finetune_names = chameleon.mixtures().finetune_mixtures
    finetune_mixtures: list[str] | None = []
    finetune_domains = [s.name for s in chameleon.finetune_registry()]
    if mode == "run":
        ft = chameleon.profile().finetune
        mixtures = list(mixtures or chameleon.profile().base_model.mixtures)
        unknown = [m for m in mixtures if m not in mixture_names]
        if unknown:
            raise ValueError(f"mixtures {unknown} are not in conf/mixtures.yaml (known: {mixture_names})")
        finetune_mixtures = list(ft.mixtures) if finetune_domains else []
        unknown = [m for m in finetune_mixtures if m not in finetune_names]
        if unknown:
            raise ValueError(f"finetune.mixtures {unknown} of the profile are not in finetune_mixtures of "
                             f"conf/mixtures.yaml (known: {finetune_names})")
        if finetune_mixtures and not ft.checkpoint:
            if ft.base not in mixture_names:
                raise ValueError(f"finetune.base: '{ft.base}' is not a mixture of conf/mixtures.yaml "
                                 f"({', '.join(mixture_names)}); name one, or set finetune.checkpoint to a local "
                                 "Hugging Face model folder")
            if ft.base not in mixtures:
                mixtures.append(ft.base)  # the finetuned models start from it
    domains = [s.name for s in chameleon.registry()]
    if len(domains) >= STALENESS_PARTITION_LIMIT:
        print(f"warning: {len(domains)} domains: Dagster's stale status ignores edges from {STALENESS_PARTITION_LIMIT} "
              "or more partitions, so an edited domain will not mark affinity_matrix stale (see README)", flush=True)
    seeds = chameleon.profile().seeds
    models = len(mixture_names) * len(seeds)
    if models >= STALENESS_PARTITION_LIMIT:
        print(f"warning: {len(mixture_names)} mixtures x {len(seeds)} seeds = {models} model partitions: Dagster's "
              f"stale status ignores edges from {STALENESS_PARTITION_LIMIT} or more partitions, so a retrained model "
              "will not mark mixture_comparison stale (see README)", flush=True)
    finetune_models = len(finetune_names) * len(seeds)
    if max(len(finetune_domains), finetune_models) >= STALENESS_PARTITION_LIMIT:
        print(f"warning: {len(finetune_domains)} finetuning domains, {finetune_models} finetuned-model partitions: "
              f"Dagster's stale status ignores edges from {STALENESS_PARTITION_LIMIT} or more partitions (see README)",
              flush=True)
    from chameleon_assets.settings import method_params

    runs = method_params(chameleon.profile(), "regmix").runs
    reuse_runs = method_params(chameleon.profile(), "olmix").reuse_runs
    changes = partition_changes(instance, domains, mixture_names, seeds, finetune_domains, finetune_names, runs,
                                reuse_runs)
    if not dry_run:
        for run_id in fail_orphaned_runs(instance):
            print(f"run {run_id} was killed before it finished: marked failed, its work is redone", flush=True)
    report.partition_changes = changes.describe()
    if dry_run:
        print(f"partitions: {report.partition_changes}", flush=True)
    if not changes.empty and not dry_run:
        changes.apply(instance)
        print(f"partitions: {report.partition_changes}", flush=True)
    if not dry_run:
        adopted = adopt_legacy_artefacts()
        if adopted:
            print(f"gave {len(adopted)} artefact folder(s) from before manifests existed a manifest", flush=True)
        for folder in remove_unregistered_domain_artefacts(instance):
            print(f"removed {folder} (its domain is no longer registered)", flush=True)
    observations, errors = source_observations(instance, chameleon)
    report.source_errors.update(errors)
    for what, message in report.source_errors.items():
        print(f"warning: {what}: {message}", flush=True)
    report.observed = [o.asset_key.to_user_string() + (f"[{o.partition}]" if o.partition else "") for o in observations]
    if dry_run:
        if report.observed:
            print(f"changed sources (not recorded by a dry run): {', '.join(report.observed)}", flush=True)
        changed = [o.partition for o in observations if o.asset_key.to_user_string() == "domain_source"]
        changed += changes.add.get("domain", [])  # new domains: not partitions yet, so not observed
        changed += [d for d in domains if d not in changed and latest_version(instance, "domain_corpus", d) is None]
        changed += [o.partition for o in observations if o.asset_key.to_user_string() == "finetune_source"]
        changed += changes.add.get("finetune_domain", [])
        changed += [d for d in finetune_domains
                    if d not in changed and latest_version(instance, "finetune_corpus", d) is None]
        for what, message in check_documents(chameleon, changed).items():
            report.source_errors[what] = message
            print(f"refused: {message}", flush=True)
        defs = load_defs()
        report.planned = sorted(f"{k}[{p}]" if p else k for k, p in policy.stale_partitions(defs, instance))
        print(f"stale now: {', '.join(report.planned) or 'nothing'}", flush=True)
        damaged = policy.damaged_partitions(defs, instance)
        for (k, p), why in sorted(damaged.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
            report.planned.append(f"{k}[{p}]" if p else k)
            print(f"damaged: {k}[{p}]: {why}" if p else f"damaged: {k}: {why}", flush=True)
        return report
    record_observations(instance, observations)
    if report.observed:
        print(f"changed sources: {', '.join(report.observed)}", flush=True)

    base = load_defs()
    defs = dg.Definitions(assets=policy.with_requests(base.assets, mode, mixtures if mode == "run" else None),
                          asset_checks=base.asset_checks,
                          resources=base.resources)
    # A failed partition is not retried within this call. What depends on it is held back
    # by the policy itself (its input stays missing or stale); everything else goes on.
    failed: set[tuple[dg.AssetKey, str | None]] = set()
    done: set[tuple[dg.AssetKey, str | None]] = set()
    for _ in range(MAX_WAVES):
        wanted = [w for w in policy.requested(defs, instance, mixtures if mode == "run" else [],
                                              finetune_mixtures if mode == "run" else []) if w not in failed]
        if not wanted:
            break
        key = wanted[0][0]
        wave = [w for w in wanted if w[0] == key]
        if mode == "run" and key.to_user_string() in REPEAT_CHECKS:
            for line in repeat_warnings(instance, chameleon, key.to_user_string(), [p for _, p in wave]):
                print(line, flush=True)
        for k, p in wave:
            if (k, p) in done:
                name = k.to_user_string() + (f"[{p}]" if p else "")
                raise RuntimeError(f"{name} is requested again right after it was materialised: the policy does not "
                                   "converge (a data version that changes on every run?)")
        for (k, p), ok, message, seconds in _materialize_wave(base, instance, wave, parallel):
            name = k.to_user_string() + (f"[{p}]" if p else "")
            done.add((k, p))
            if ok:
                report.materialized.append(name)
                print(f"  {name} {seconds:.1f}s", flush=True)
            else:
                failed.add((k, p))
                report.failed[name] = message
                print(f"  FAILED {name}: {report.failed[name]}", flush=True)
        if key == dg.AssetKey("base_model"):
            # A (re)trained base model is the start of finetuned models: observe finetune_start
            # now, so that this same run finetunes from it.
            record_observations(instance, source_observations(instance, chameleon)[0])
    else:
        raise RuntimeError(f"more than {MAX_WAVES} waves of materialisations: the policy does not converge")
    return report


# Before a wave of trainings: the table their weights come from and the budget they spend.
REPEAT_CHECKS = {"base_model": ("mixture_table", "base_model.train.tokens"),
                 "finetuned_model": ("finetune_weights", "finetune.train.tokens")}


def repeat_warnings(instance: dg.DagsterInstance, chameleon, asset: str, partitions: Sequence[str]) -> list[str]:  # noqa: ANN001
    """One warning per mixture of ``partitions`` (``<mixture>|<seed>``) whose training
    budget would read a domain more than ``core.epochs.MAX_EPOCHS`` times, from the stored
    weights table; none when there is no table yet (its asset fails on its own)."""
    from chameleon_assets.core.epochs import expected_epochs, repeat_warning
    from chameleon_assets.defs.io import load_value

    table_asset, budget_field = REPEAT_CHECKS[asset]
    try:
        table = load_value(instance, table_asset)
    except FileNotFoundError:
        return []
    profile = chameleon.profile()
    budget = profile.base_model.train.tokens if asset == "base_model" else profile.finetune.train.tokens
    lines = []
    for mixture in sorted({p.split("|")[0] for p in partitions if p}):
        if mixture in table.weights:
            epochs = expected_epochs(dict(zip(table.domains, table.weights[mixture])), table.train_tokens, budget)
            line = repeat_warning(f"{asset}[{mixture}]", epochs, budget, budget_field)
            if line:
                lines.append(line)
    return lines


def _materialize_wave(defs: dg.Definitions, instance: dg.DagsterInstance, wave: list, parallel: int):  # noqa: ANN202
    """Materialise each (asset key, partition) of ``wave``, one run each; yield
    ``((key, partition), success, failure message, seconds)`` as each finishes.

    Sequential in this process when ``parallel`` is 1 or there is one partition; else up
    to ``parallel`` at a time, each in a fresh (spawned) process of its own. On a machine
    with GPUs each process is given its own (``CUDA_VISIBLE_DEVICES``): a wave of steps
    that train (the ``gpu`` pool) runs one process per set of ``training.nproc_per_node``
    GPUs (one GPU each for in-process training), so concurrent trainings never share a
    device; other waves' processes take one GPU each, round robin.
    """
    if parallel <= 1 or len(wave) <= 1:
        for k, p in wave:
            t0 = time.perf_counter()
            result = materialize(defs, instance, [k], partition_key=p, raise_on_error=False)
            yield (k, p), result.success, "" if result.success else _failure_message(result), time.perf_counter() - t0
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from chameleon_assets.defs.launch import GPU_POOL
    from chameleon_assets.settings import load_profile

    # Spawned, not forked: the parent holds threads (Dagster, torch) that a fork would copy
    # in an arbitrary state. Each child reads the same environment (profile, data, home)
    # and gets an equal share of the cores: torch's default of every core per process
    # makes two concurrent trainings on two cores about ten times slower, not half as fast.
    gpus = visible_gpus()
    training = load_profile().training
    training_sets = gpu_sets(gpus, training.nproc_per_node if training.distributed else 1)
    trains = bool(gpus) and defs.resolve_assets_def(wave[0][0]).op.pool == GPU_POOL
    sets = training_sets if trains else [[g] for g in gpus]
    workers = min(parallel, len(wave), len(sets) if trains else parallel)
    threads = max(1, (os.cpu_count() or 1) // workers)
    initialise_pools(instance, len(training_sets))
    context = multiprocessing.get_context("spawn")
    slots = context.Queue()
    for slot in range(workers):
        slots.put(slot)
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_start_child,
                             initargs=(slots, [",".join(s) for s in sets], threads)) as pool:
        futures = {pool.submit(_materialize_in_child, k.to_user_string(), p): (k, p) for k, p in wave}
        for future in as_completed(futures):
            ok, message, seconds = future.result()
            yield futures[future], ok, message, seconds


def gpu_sets(gpus: list[str], per_training: int) -> list[list[str]]:
    """The GPUs split into disjoint sets of ``per_training`` (what one training uses: its
    DDP processes); all of them as one set when there are fewer."""
    if not gpus:
        return []
    if per_training >= len(gpus):
        return [gpus]
    return [gpus[i * per_training:(i + 1) * per_training] for i in range(len(gpus) // per_training)]


def visible_gpus() -> list[str]:
    """The GPUs concurrent steps are spread over: ``$CHAMELEON_GPUS`` (a count, or ids such
    as ``0,2,3``), else those ``CUDA_VISIBLE_DEVICES`` names, else every GPU torch counts
    (without initialising CUDA in this process). None on a machine without one."""
    given = os.environ.get("CHAMELEON_GPUS", "").strip()
    if given:
        return [str(i) for i in range(int(given))] if given.isdigit() else [g.strip() for g in given.split(",")]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip() and not g.strip().startswith("-")]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def initialise_pools(instance: dg.DagsterInstance, gpus: int = 0) -> None:
    """Give the ``gpu`` pool its slots before concurrent runs start: ``gpus`` (one per GPU,
    or per set of GPUs one training uses) on a machine with GPUs, else the instance's
    default limit.

    Dagster creates a pool lazily, on its first claim, by counting its slots and adding the
    missing ones; two runs claiming at the same moment can both count none and both add
    one (seen: two base models under ``default_limit: 1`` trained at the same time). A pool
    that exists already (a limit set with ``dagster instance concurrency set``) is left as is.
    """
    from chameleon_assets.defs.launch import GPU_POOL

    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits or GPU_POOL in storage.get_concurrency_keys():
        return
    if gpus:
        storage.set_concurrency_slots(GPU_POOL, gpus)
    elif instance.global_op_concurrency_default_limit is not None:
        storage.initialize_concurrency_limit_to_default(GPU_POOL)


def _start_child(slots, gpus: list[str], threads: int) -> None:  # noqa: ANN001 (a multiprocessing queue)
    """A worker process of ``_materialize_wave``: its share of the cores and, with GPUs, its
    own (``gpus``: one ``CUDA_VISIBLE_DEVICES`` value per slot; set before torch is
    imported, so CUDA never sees the others)."""
    slot = slots.get()
    os.environ["CHAMELEON_DEVICE_SLOT"] = str(slot)
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
    os.environ["RAYON_NUM_THREADS"] = str(threads)  # the Rust tokenizers' pool (core.tokenizer.rust_threads)
    import torch

    torch.set_num_threads(threads)


def _materialize_in_child(key: str, partition: str | None) -> tuple[bool, str, float]:
    """One partition's run in a worker process of ``_materialize_wave``."""
    t0 = time.perf_counter()
    result = materialize(load_defs(), get_instance(), [dg.AssetKey.from_user_string(key)], partition_key=partition,
                         raise_on_error=False)
    return result.success, "" if result.success else _failure_message(result), time.perf_counter() - t0


def check_documents(chameleon, domains: Sequence[str]) -> dict[str, str]:  # noqa: ANN001
    """Read every document of ``domains`` as ``domain_corpus`` will; return what it would refuse.

    Catches what the registry's own checks cannot see without reading the data: bad
    JSON lines, non-UTF-8 text, a missing text field, and fewer than ``MIN_DOCUMENTS``
    non-empty documents. (The token minimum needs the tokenizer; ``domain_corpus``
    checks it.) Keys are ``domain_source[<domain>]``.
    """
    from chameleon_assets.core.corpus import CorpusMinimum
    from chameleon_assets.core.registry import iter_documents

    errors = {}
    specs = {s.name: s for s in [*chameleon.registry(), *chameleon.finetune_registry()]}
    for name in domains:
        spec = specs.get(name)
        if spec is None:
            continue
        try:
            count = sum(1 for _ in iter_documents(spec))
            CorpusMinimum(train_tokens=0, source=str(spec.source), registry=str(chameleon.registry_file())).check(
                name, count)
        except (ValueError, OSError) as exc:  # RegistryError and CorpusTooSmall are ValueErrors
            source = "domain_source" if spec.group == "pretrain" else "finetune_source"
            errors[f"{source}[{name}]"] = str(exc)
    return errors


def _failure_message(result: dg.ExecuteInProcessResult) -> str:
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            error = event.step_failure_data.error
            while error.cause is not None and error.cls_name in ("DagsterExecutionStepExecutionError",):
                error = error.cause
            return error.message.strip()
    return "the run failed (see the Dagster UI for its event log)"


def sync(dry_run: bool = False, instance: dg.DagsterInstance | None = None, wait: bool = True,
         parallel: int = 1) -> ConvergeReport:
    """Bring partitions, corpus, embeddings and weights in line with the configuration.

    The proxy is trained only if none exists; stale models wait for ``chameleon run``.
    """
    report = converge("sync", instance=instance, dry_run=dry_run, wait=wait, parallel=parallel)
    if report.empty and not dry_run:
        print("up to date: nothing to do", flush=True)
    return report


def run_everything(
    mixtures: Sequence[str] | None = None, instance: dg.DagsterInstance | None = None, wait: bool = True,
    parallel: int = 1,
) -> ConvergeReport:
    """Materialise the whole graph (the body of ``make run``), recomputing only what is missing
    or stale; ``parallel`` partitions of an asset at a time."""
    instance = instance or get_instance()
    t_start = time.perf_counter()
    report = converge("run", mixtures=mixtures, instance=instance, wait=wait, parallel=parallel)
    if report.empty:
        print("up to date: nothing to do", flush=True)
    print(f"\ndone in {time.perf_counter() - t_start:.0f}s", flush=True)
    try:
        print(weights_report(instance), flush=True)
        print(comparison_report(instance), flush=True)
    except FileNotFoundError as exc:
        print(f"no table to show yet: {exc}", flush=True)
    try:
        print(weights_report(instance, "finetune_weights"), flush=True)
        print(finetune_report(instance), flush=True)
    except FileNotFoundError:
        pass  # no finetuning domain registered, or finetune.mixtures is empty
    return report


def weights_report(instance: dg.DagsterInstance | None = None, asset: str = "mixture_table") -> str:
    """The current weights table (mixtures x domains), KRLS and what each mixture's weights
    cost (FLOPs, wall seconds), as text (``asset``: ``mixture_table``, ``mixture_weights``
    or ``finetune_weights``)."""
    from chameleon_assets.defs.io import load_value
    from chameleon_assets.defs.models.assets import text_table

    table = load_value(instance or get_instance(), asset)
    cells = {m: {d: f"{w:.4f}" for d, w in zip(table.domains, ws)} for m, ws in table.weights.items()}
    for m, c in getattr(table, "costs", {}).items():
        if m in cells:
            cells[m].update({"cost FLOPs": f"{c.get('flops', 0.0):.3g}", "cost wall s": f"{c.get('wall_s', 0.0):.1f}"})
    cells["krls"] = {d: f"{t:.4f}" for d, t in zip(table.domains, table.krls)}
    title = "\nFinetuning weights" if asset == "finetune_weights" else "Mixture weights"
    lines = [f"{title} (rows: mixtures, columns: domains; version {table.data_version})", text_table(cells)]
    if asset == "mixture_table":
        from chameleon_assets.defs.policy import method_assets

        computed = {m for served in method_assets().values() for m in served}
        lines += [f"not in the table: {m}: {why}" for m, why in table.skipped.items() if m in computed]
    return "\n".join(lines)


def comparison_report(instance: dg.DagsterInstance | None = None) -> str:
    """The mixture comparison as text: means and 95% intervals over seeds, the paired
    difference against uniform (``*`` = significant), few-shot accuracy, per-domain bpb."""
    from chameleon_assets.core import compare
    from chameleon_assets.defs.io import load_value

    return _comparison_text(load_value(instance or get_instance(), "mixture_comparison"), "Mixture comparison",
                            "domain", compare.summary_cells)


def finetune_report(instance: dg.DagsterInstance | None = None) -> str:
    """The finetuning comparison as text: finetuning-domain bits per byte with intervals and
    the paired difference against uniform, the gain over the start model, forgetting."""
    from chameleon_assets.defs.finetune.assets import finetune_summary_cells
    from chameleon_assets.defs.io import load_value

    table = load_value(instance or get_instance(), "finetune_comparison")
    starts = sorted({v["start"] for v in table.included.values()})
    return _comparison_text(table, f"Finetuning comparison (from {', '.join(starts)})", "finetuning domain",
                            finetune_summary_cells)


def _comparison_text(table, title: str, what: str, summary_cells) -> str:  # noqa: ANN001
    """A stored comparison as the text tables ``make run`` prints: the summary (means, 95%
    intervals, paired differences), bits per byte per ``what``, notes and what was left out."""
    from chameleon_assets.core import compare
    from chameleon_assets.defs.models.assets import text_table

    if not table.rows:
        return "\nNo evaluation of a current model to compare: " + "; ".join(
            f"{m}: {why}" for m, why in table.excluded.items())
    comp = compare.Comparison(table.rows, table.domains, table.tasks, table.baseline, table.notes)
    lines = [f"\n{title}, version {table.data_version}: bits per byte, means over seeds with 95% intervals; "
             "* = paired difference significant", text_table(summary_cells(comp), "mixture"),
             f"\nBits per byte per {what} (mean ±95% half-width; paired difference vs uniform)",
             text_table(compare.domain_cells(comp), "mixture")]
    lines += [f"note: {n}" for n in table.notes]
    if table.excluded:
        lines.append("not compared (stale): " + "; ".join(f"{m}: {why}" for m, why in table.excluded.items()))
    return "\n".join(lines)
