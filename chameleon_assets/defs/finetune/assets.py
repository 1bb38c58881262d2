"""The finetuning stage: finetuned_model[mixture|seed] -> finetune_evaluation[mixture|seed] -> finetune_comparison.

Each finetuned model continues training a start model on the finetuning domains with
one of finetune_weights' mixtures: seed ``s`` starts from ``base_model[<finetune.base>|s]``
(default: the uniform pretraining mixture) or, with ``finetune.checkpoint``, from a
local Hugging Face causal-LM folder. Every mixture gets the same start, token budget,
schedule and seeds, so the mixtures are all that differs. The evaluation scores the
finetuned model and its start on the same held-out windows: the finetuning domains
(the gain) and the pretraining domains (forgetting).
"""


import json
from dataclasses import dataclass

import dagster as dg

from chameleon_assets import paths
from chameleon_assets.core.artifacts import point_current, prune_versions, sha256_text
from chameleon_assets.defs import launch, policy
from chameleon_assets.defs.io import ArtefactDamaged, latest_version, load_value, load_version, one_writer, stored_value
from chameleon_assets.defs.io import versions_text
from chameleon_assets.defs.models.assets import mixture_version
from chameleon_assets.defs.partitions import (
    ALL_EXISTING,
    LINEAGE_ONLY,
    SEED_OF_MODEL,
    domain_partitions,
    finetune_model_partitions,
    split_model_key,
)
from chameleon_assets.defs.resources import ChameleonConfig
from chameleon_assets.defs.sources import config_deps, domain_registry, finetune_model_registry, finetune_start
from chameleon_assets.defs.stage import (StageModel, comparison_output, current_evaluations, held_out_windows,
                                         mixture_of, model_output, score_metrics, score_windows, store_evaluation,
                                         train_stage_model)
from chameleon_assets.defs.tracking import MLflowTracking
from chameleon_assets.defs.values import ComparisonTable, FinetunedModel, FinetuneEvaluation, MixtureTable

FINETUNE_CODE_VERSION = "finetune-v1"
FINETUNE_EVAL_CODE_VERSION = "finetune-eval-v1"
FINETUNE_COMPARISON_CODE_VERSION = "finetune-comparison-v1"


@dataclass(frozen=True)
class Start:
    """The model a finetuned model starts from."""

    name: str  # "base_model[uniform|0]" or the folder
    version: str  # its data version (a base model) or content fingerprint (a folder)
    family: str  # what every seed's start shares (the base mixture's version, or the fingerprint)
    path: str
    mlflow_run_id: str = ""
    corpus_versions: dict | None = None  # pretraining domain -> the corpus version it trained on


def start_model(instance: dg.DagsterInstance, chameleon: ChameleonConfig, seed: int) -> Start:
    """Where seed ``seed``'s finetuned models start: the profile's ``finetune.checkpoint``
    folder, else the latest ``base_model[<finetune.base>|<seed>]``. Clear errors otherwise."""
    from chameleon_assets.settings import checkpoint_fingerprint

    profile = chameleon.profile()
    ft = profile.finetune
    if ft.checkpoint:
        folder = paths.resolve(ft.checkpoint)
        fingerprint = checkpoint_fingerprint(profile, ft.checkpoint, "finetune.checkpoint")
        return Start(str(folder), fingerprint, fingerprint, str(folder))
    key = f"{ft.base}|{seed}"
    mixtures = chameleon.mixtures().mixtures
    if ft.base not in mixtures:
        raise ValueError(f"finetune.base: '{ft.base}' is not a mixture of conf/mixtures.yaml ({', '.join(mixtures)}); "
                         "name one, or set finetune.checkpoint to a local Hugging Face model folder")
    try:
        base = load_value(instance, "base_model", key)
    except FileNotFoundError as exc:  # never materialised, or its files are damaged (ArtefactDamaged)
        raise ValueError(f"finetune.base: the start model base_model[{key}] is not available ({exc}); "
                         f"`chameleon run --mixtures {ft.base}` trains it") from exc
    family = mixture_version(base.config_version, base.weights, base.corpus_versions,
                             getattr(base, "online", None)) if base.config_version else (
        base.mlflow_parent_run_id or base.data_version)
    return Start(f"base_model[{key}]", base.data_version, family, base.path, base.mlflow_run_id,
                 dict(base.corpus_versions))


def finetune_family(section_version: str, weights: dict[str, float], corpus_versions: dict[str, str],
                    start_family: str) -> str:
    """hash(code, `config_finetune`, the mixture's weights, its domains' data, the start's family):
    what a finetune mixture's seeds share (their MLflow parent run is keyed by it)."""
    w = json.dumps({d: round(x, 12) for d, x in sorted(weights.items())})
    return sha256_text(FINETUNE_CODE_VERSION, section_version, w, versions_text(corpus_versions), start_family)[:24]


def finetuned_model_version(family: str, start_version: str, seed: int) -> str:
    """hash(family, the start model's own version, seed): one finetuned model's data version.

    The start's version is in it, so a retrained base model gives new finetuned models,
    and a checkpoint of another start is never resumed."""
    return sha256_text(family, start_version, f"seed={seed}")[:24]


@dg.asset(
    partitions_def=finetune_model_partitions,
    # Which base model is the start is a profile value; finetune_start observes that one
    # model's version per seed, so only its retraining stales the seed's finetuned models.
    # The base_model edge draws the lineage.
    deps=[dg.AssetDep("base_model", partition_mapping=LINEAGE_ONLY),
          dg.AssetDep(finetune_start, partition_mapping=SEED_OF_MODEL),
          dg.AssetDep("finetune_corpus", partition_mapping=LINEAGE_ONLY), *config_deps("finetuned_model")],
    group_name="finetune",
    code_version=FINETUNE_CODE_VERSION,
    kinds={"pytorch", "mlflow"},
    pool=launch.GPU_POOL,
)
@one_writer
def finetuned_model(
    context: dg.AssetExecutionContext,
    chameleon: ChameleonConfig,
    mlflow_tracking: MLflowTracking,
    finetune_weights: MixtureTable,
) -> dg.Output[FinetunedModel]:
    """A start model trained further on the finetuning domains with one finetune mixture
    and one seed (partition `<mixture>|<seed>`).

    The start is `base_model[<finetune.base>|<seed>]` (default: uniform) or the folder
    `finetune.checkpoint`; the metadata, the model card and the MLflow run name it. AdamW
    from a fresh state with linear warmup and cosine decay (`finetune.train`, a lower
    learning rate than pretraining); every mixture gets the same start, budget, schedule
    and seed. Runs on request. Data version = hash(`config_finetune`, the mixture's
    weights, its domains' data, the start model's version, seed); a version trained
    before is reused, and an interrupted run resumes only a checkpoint of that version.
    """
    mixture, seed = split_model_key(context.partition_key)
    weights, corpus_versions = mixture_of(finetune_weights, mixture, "finetune_mixtures of conf/mixtures.yaml")
    start = start_model(context.instance, chameleon, seed)
    section = chameleon.section_version("finetune")
    family = finetune_family(section, weights, corpus_versions, start.family)
    version = finetuned_model_version(family, start.version, seed)
    model = stored_value("finetuned_model", context.partition_key, version)
    reused = model is not None
    if model is None:
        shards = {d: load_version("finetune_corpus", d, v) for d, v in corpus_versions.items()}
        model = _finetune(context, chameleon, mlflow_tracking, mixture, seed, weights, shards, start, version, family,
                          finetune_weights, section)
    out = paths.finetuned_model_dir(mixture, seed, version)
    point_current(out)
    prune_versions(out.parent)
    return model_output(model, weights, reused, "finetuning loss", extra={
        "start": model.start, "start_version": model.start_version, "start_mlflow_run_id": model.start_mlflow_run_id})


def context_length(model, profile) -> int:  # noqa: ANN001
    """The sequence length to train and score with: the base models' (profile), which the
    start model must support and whose vocabulary must cover the project tokenizer."""
    from chameleon_assets.core.tokenizer import load_tokenizer

    ctx = profile.base_model.model.context_length
    limit = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    if limit is not None and limit < ctx:
        raise ValueError(f"finetune start model: it supports {limit} positions, fewer than the base models' context "
                         f"length {ctx} (base_model.model.context_length in the profile)")
    vocab = len(load_tokenizer(profile.tokenizer))
    if model.config.vocab_size < vocab:
        raise ValueError(f"finetune start model: vocabulary {model.config.vocab_size} is smaller than the project "
                         f"tokenizer's {vocab}; the model must use the project tokenizer ('{profile.tokenizer}')")
    return ctx


def _finetune(context, chameleon, tracking, mixture, seed, weights, shards, start: Start, version,  # noqa: ANN001
              family, table, section) -> FinetunedModel:
    from chameleon_assets.core.model import load_model
    from chameleon_assets.core.tokenizer import load_tokenizer, tokenizer_fingerprint

    profile = chameleon.profile()
    cfg = profile.finetune.train
    for d in weights:
        shards[d].require_tokenizer(tokenizer_fingerprint(profile.tokenizer), profile.tokenizer)
    tok = load_tokenizer(profile.tokenizer)
    model = load_model(start.path)
    model.train()
    # The parent is every seed's: it names the start's mixture (or folder), each run its own model.
    start_of_all = profile.finetune.checkpoint or f"base_model[{profile.finetune.base}|*]"
    spec = StageModel(
        asset="finetuned_model", stage="finetune", mixture=mixture, seed=seed, weights=weights, shards=shards,
        version=version, family=family, table=table, train=cfg, context_length=context_length(model, profile),
        out=paths.finetuned_model_dir(mixture, seed, version),
        checkpoints=paths.checkpoint_dir(f"finetuned_model/{mixture}/seed-{seed}", version),
        description=f"causal LM: {start.name} (version `{start.version}`) finetuned with peak lr {cfg.lr:g} on "
                    f"the `{mixture}` mixture of the finetuning domains with seed {seed}",
        parent_name=f"finetune:{mixture}", parent_tags={"start": start_of_all},
        tags={"base_model": start.name, "base_model_version": start.version, "base_run_id": start.mlflow_run_id},
        params={"start": start.name},
        record={"start": start.name, "start_version": start.version, "start_path": start.path},
        plot_title=f"finetuned_model[{mixture}|{seed}] from {start.name}",
    )
    t = train_stage_model(context, profile, tracking, spec, model, tok)
    r = t.result
    return FinetunedModel(version, mixture, seed, str(spec.out), weights, t.corpus_versions, start.name,
                          start.version, start.path, start.mlflow_run_id, dict(start.corpus_versions or {}), r.tokens,
                          r.steps, t.final_loss, r.tokens_per_s, r.epochs, t.mlflow_run_id, t.mlflow_parent_run_id,
                          section, r.resumed_from)


@dg.asset(
    partitions_def=finetune_model_partitions,
    # The pretraining domains scored for forgetting are those the start model trained on; for a
    # checkpoint start, the registered ones now: so a changed domain set or domain stales this.
    deps=[dg.AssetDep("finetune_corpus", partition_mapping=LINEAGE_ONLY),
          dg.AssetDep("domain_corpus", partition_mapping=dg.AllPartitionMapping()), domain_registry,
          *config_deps("finetune_evaluation")],
    group_name="finetune",
    code_version=FINETUNE_EVAL_CODE_VERSION,
    kinds={"pytorch", "mlflow"},
    automation_condition=policy.FOLLOWS,
)
@one_writer
def finetune_evaluation(
    context: dg.AssetExecutionContext,
    chameleon: ChameleonConfig,
    mlflow_tracking: MLflowTracking,
    finetuned_model: FinetunedModel,
) -> dg.Output[FinetuneEvaluation]:
    """Held-out NLL, bits per byte and perplexity of one finetuned model and of the model it
    started from, on the same windows (`evaluation.ppl_windows` per domain): every
    finetuning domain (what finetuning should improve) and every pretraining domain
    (forgetting = mean pretraining bits per byte, finetuned minus start). Logged to the
    finetuned model's MLflow run. Follows its model.
    """
    import pandas as pd

    model = finetuned_model
    pretrain_versions = dict(model.start_corpus_versions) or _current_pretraining_versions(context.instance)
    val_versions = {**pretrain_versions, **model.corpus_versions}
    version = sha256_text(FINETUNE_EVAL_CODE_VERSION, chameleon.section_version("evaluation"), model.data_version,
                          versions_text(val_versions))[:24]
    result = stored_value("finetune_evaluation", context.partition_key, version)
    if result is None:
        result = _evaluate(context, chameleon, mlflow_tracking, model, version, pretrain_versions)
    out = paths.finetune_evaluation_dir(model.mixture, model.seed, version)
    point_current(out)
    prune_versions(out.parent)
    frame = pd.DataFrame({"finetuned": {**result.bits_per_byte, **result.pretrain_bits_per_byte},
                          "start": {**result.start_bits_per_byte, **result.start_pretrain_bits_per_byte}})
    frame["group"] = ["finetune" if d in result.bits_per_byte else "pretrain" for d in frame.index]
    return dg.Output(result, data_version=dg.DataVersion(version), metadata={
        "bits_per_byte_avg": result.bits_per_byte_avg,
        "forgetting_bpb": result.forgetting,
        "bits_per_byte": dg.MetadataValue.md(frame.round(4).to_markdown()),
        "start": result.start,
        "seed": model.seed,
        "finetuned_model_version": model.data_version,
    })


def _current_pretraining_versions(instance: dg.DagsterInstance) -> dict[str, str]:
    """The latest corpus version of every registered pretraining domain (for a checkpoint start,
    which names no training data of ours)."""
    out = {}
    for d in sorted(instance.get_dynamic_partitions(domain_partitions.name)):
        v = latest_version(instance, "domain_corpus", d)
        if v:
            out[d] = v
    return out


# (start path, start version, device, window settings, windows' corpus versions) -> the
# start model's held-out scores; see _evaluate.
_START_SCORES: dict[tuple, dict] = {}


def _evaluate(context, chameleon, tracking, model: FinetunedModel, version: str,  # noqa: ANN001
              pretrain_versions: dict) -> FinetuneEvaluation:
    import numpy as np

    from chameleon_assets.core.model import load_model, resolve_device
    from chameleon_assets.core.tokenizer import load_tokenizer

    profile = chameleon.profile()
    cfg = profile.evaluation
    device = resolve_device(profile.device)
    tok = load_tokenizer(profile.tokenizer)
    ctx = profile.base_model.model.context_length
    groups = {"finetune": {d: load_version("finetune_corpus", d, v) for d, v in model.corpus_versions.items()},
              "pretrain": {d: load_version("domain_corpus", d, v) for d, v in pretrain_versions.items()}}
    windows = {(group, d): held_out_windows(d, s, cfg.ppl_windows, ctx)
               for group, shards in groups.items() for d, s in shards.items()}

    def score(path: str) -> dict:
        return score_windows(load_model(path, device), windows, cfg.batch_size, device, tok)

    # Every finetune mixture of a seed starts from one model: its scores on the same windows
    # are computed once per process (the key names the start's version and every window).
    start_key = (model.start_path, model.start_version, str(device), cfg.ppl_windows, cfg.batch_size, ctx,
                 tuple(sorted((g, d, s.data_version) for g, shards in groups.items() for d, s in shards.items())))
    if start_key not in _START_SCORES:
        _START_SCORES.clear()  # one start at a time is all a run needs
        _START_SCORES[start_key] = score(model.start_path)
    scores = {"finetuned": score(model.path), "start": _START_SCORES[start_key]}

    def pick(who: str, group: str, metric: str) -> dict[str, float]:
        return {d: v.get(metric, float("nan")) for (g, d), v in scores[who].items() if g == group}

    result = FinetuneEvaluation(
        data_version=version, mixture=model.mixture, seed=model.seed,
        path=str(paths.finetune_evaluation_dir(model.mixture, model.seed, version)),
        model_version=model.data_version, start=model.start,
        bits_per_byte=pick("finetuned", "finetune", "bits_per_byte"), nll=pick("finetuned", "finetune", "nll"),
        perplexity=pick("finetuned", "finetune", "perplexity"),
        pretrain_bits_per_byte=pick("finetuned", "pretrain", "bits_per_byte"),
        pretrain_nll=pick("finetuned", "pretrain", "nll"),
        start_bits_per_byte=pick("start", "finetune", "bits_per_byte"),
        start_pretrain_bits_per_byte=pick("start", "pretrain", "bits_per_byte"),
        config_version=chameleon.section_version("evaluation"),
        val_versions={**pretrain_versions, **model.corpus_versions},
    )
    start_avg = float(np.mean(list(result.start_bits_per_byte.values())))
    metrics = {
        **score_metrics(result),
        **{f"pretrain_bpb.{d}": v for d, v in result.pretrain_bits_per_byte.items()},
        "bpb_avg": result.bits_per_byte_avg,
        "start_bpb_avg": start_avg,
        "gain_bpb": result.bits_per_byte_avg - start_avg,
        "pretrain_bpb_avg": float(np.mean(list(result.pretrain_bits_per_byte.values()))),
        "forgetting_bpb": result.forgetting,
    }
    store_evaluation(context, tracking, result, model.mlflow_run_id, metrics,
                     [s for group in groups.values() for s in group.values()])
    return result


@dg.asset(
    ins={"finetune_evaluation": ALL_EXISTING},
    # A staling dependency, not an input (see mixture_comparison): a retrained model stales
    # the table even while its new evaluation is missing, and so does a removed partition.
    deps=[dg.AssetDep("finetuned_model", partition_mapping=dg.AllPartitionMapping()), *config_deps("finetune_comparison"),
          finetune_model_registry],
    group_name="finetune",
    code_version=FINETUNE_COMPARISON_CODE_VERSION,
    kinds={"pandas", "mlflow"},
    automation_condition=policy.follows_any_input("finetune_weights", "finetune_evaluation"),
)
@one_writer
def finetune_comparison(
    context: dg.AssetExecutionContext,
    chameleon: ChameleonConfig,
    mlflow_tracking: MLflowTracking,
    finetune_weights: MixtureTable,
    finetune_evaluation: dict,
) -> dg.Output[ComparisonTable]:
    """One row per finetune mixture over the seeds whose evaluation is of the current model:
    mean bits per byte over the finetuning domains with its 95% interval over seeds, the
    paired difference against `uniform` (`*` = significant), per-domain bits per byte and
    perplexity; the start model's finetuning-domain bpb (`start_bpb_avg`) and the gain;
    and forgetting: mean pretraining-domain bpb (`pretrain_bpb_avg`) and its increase over
    the start model (`forgetting_bpb`), with intervals. Aggregates go to each mixture's
    MLflow parent run.
    """
    models, excluded = {}, {}
    for key in finetune_evaluation:
        try:
            models[key] = load_value(context.instance, "finetuned_model", key)
        except ArtefactDamaged as exc:
            excluded[key] = f"its model's files are damaged ({exc})"
    current, included, left_out = finetune_inputs(
        finetune_weights, models, {k: e for k, e in finetune_evaluation.items() if k in models},
        chameleon.section_version("evaluation"), chameleon.section_version("finetune"))
    excluded.update(left_out)
    if not current:
        context.log.warning(f"no evaluation of a current finetuned model yet (stale: {excluded}); run `chameleon run`")
    table = finetune_table(current, finetune_weights)
    return comparison_output(context, mlflow_tracking, "finetune_comparison", "finetune",
                             FINETUNE_COMPARISON_CODE_VERSION, table, finetune_summary_cells(table),
                             finetune_weights.data_version, models, included, excluded)


def finetune_inputs(table: MixtureTable, models: dict, evaluations: dict, eval_config: str, finetune_config: str
                    ) -> tuple[dict[str, dict[int, FinetuneEvaluation]], dict, dict]:
    """The current evaluations by mixture and seed, their versions, and why others were left out
    (``stage.current_evaluations``): beyond being of the latest finetuned model, trained on
    the mixture's current weights, an evaluation counts only if that model was trained on
    the current finetuning data with the current `config_finetune` (and so from the
    current start), and it was scored with the current evaluation settings.
    """
    def older_data(ev: FinetuneEvaluation, model: FinetunedModel, weights: dict) -> str | None:
        if any(model.corpus_versions.get(d) != v for d, v in table.corpus_versions.items()):
            return "finetuned on older domain data"
        return None

    def other_recipe(ev: FinetuneEvaluation, model: FinetunedModel, weights: dict) -> str | None:
        if model.config_version != finetune_config:
            return "finetuned with other finetune settings or from another start model"
        return None

    def other_settings(ev: FinetuneEvaluation, model: FinetunedModel, weights: dict) -> str | None:
        return "evaluated with other evaluation settings" if ev.config_version != eval_config else None

    return current_evaluations(table, models, evaluations, [older_data, other_recipe, other_settings],
                               lambda model, ev: {"finetuned_model": model.data_version,
                                                  "finetune_evaluation": ev.data_version, "start": model.start,
                                                  "start_version": model.start_version},
                               "finetuned model")


def finetune_table(current: dict[str, dict[int, FinetuneEvaluation]], weights: MixtureTable):  # noqa: ANN201
    """``core.compare.compare`` over the finetuning domains, plus the start model's score, the
    gain and forgetting per mixture (means over seeds with 95% intervals)."""
    import numpy as np

    from chameleon_assets.core import compare, stats

    mixture_weights = {m: dict(zip(weights.domains, weights.weights[m])) for m in current}
    table = compare.compare(current, mixture_weights)
    for m, by_seed in current.items():
        evs = list(by_seed.values())
        row = table.rows[m]
        start = [float(np.mean(list(ev.start_bits_per_byte.values()))) for ev in evs]
        pretrain = [float(np.mean(list(ev.pretrain_bits_per_byte.values()))) for ev in evs]
        row.update(compare.interval_columns("start_bpb_avg", stats.mean_interval(start)))
        row.update(compare.interval_columns("gain_bpb", stats.mean_interval(
            [ev.bits_per_byte_avg - s for ev, s in zip(evs, start)])))
        row.update(compare.interval_columns("pretrain_bpb_avg", stats.mean_interval(pretrain)))
        row.update(compare.interval_columns("forgetting_bpb", stats.mean_interval([ev.forgetting for ev in evs])))
    return table


def finetune_summary_cells(table) -> dict[str, dict[str, str]]:  # noqa: ANN001 (core.compare.Comparison)
    """The headline finetuning table as strings: finetuning-domain bpb and its paired
    difference against uniform, then the start model's bpb, the gain and forgetting."""
    from chameleon_assets.core import compare

    cells = compare.summary_cells(table)
    for m, row in table.rows.items():
        cells[m] = {
            **{k: v for k, v in cells[m].items() if not k.startswith("ppl")},
            "start bpb": compare.ci_text(row, "start_bpb_avg"),
            "gain (bpb - start)": compare.ci_text(row, "gain_bpb"),
            "pretraining bpb [95% CI]": compare.ci_text(row, "pretrain_bpb_avg"),
            "forgetting (pretraining bpb - start)": compare.ci_text(row, "forgetting_bpb"),
        }
    return cells
