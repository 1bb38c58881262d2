"""From weights to evidence: base_model[mixture|seed] -> evaluation[mixture|seed] -> mixture_comparison."""

import json

import dagster as dg

from chameleon_assets import paths
from chameleon_assets.core.artifacts import point_current, prune_versions, sha256_text
from chameleon_assets.defs import launch, policy
from chameleon_assets.defs.io import ArtefactDamaged, load_value, load_version, one_writer, stored_value, versions_text
from chameleon_assets.defs.partitions import ALL_EXISTING, LINEAGE_ONLY, model_partitions, split_model_key
from chameleon_assets.defs.resources import ChameleonConfig
from chameleon_assets.defs.sources import config_deps, model_registry
from chameleon_assets.defs.stage import (StageModel, comparison_output, current_evaluations, held_out_windows,
                                         mixture_of, model_output, score_metrics, score_windows, store_evaluation,
                                         train_stage_model)
from chameleon_assets.defs.tracking import MLflowTracking
from chameleon_assets.defs.values import BaseModel, ComparisonTable, Evaluation, MixtureTable

BASE_CODE_VERSION = "base-v3"
EVAL_CODE_VERSION = "eval-v3"
COMPARISON_CODE_VERSION = "comparison-v4"


def mixture_version(section_version: str, weights: dict[str, float], corpus_versions: dict[str, str],
                    online: dict | None = None) -> str:
    """hash(code, `config_base_model`, the mixture's weights, the data versions of its domains
    [, the settings of its online method]).

    What every seed of a mixture shares (its MLflow parent run is keyed by it). Only this
    mixture's own weights count: a new lambda changes CHAMELEON's weights, not uniform's,
    so the uniform models' versions (and folders) stay the same. Every domain of the
    mixture counts, also at weight 0: its evaluation scores them all. ``online``: the
    settings of a mixture that changes during training (Aioli's interval, step size, ...),
    hashed for that mixture alone: changing them retrains its models and no other's.
    """
    w = json.dumps({d: round(x, 12) for d, x in sorted(weights.items())})
    v = versions_text({d: corpus_versions[d] for d in weights})
    extra = [json.dumps(online, sort_keys=True)] if online else []
    return sha256_text(BASE_CODE_VERSION, section_version, w, v, *extra)[:24]


def base_model_version(mixture_version_: str, seed: int) -> str:
    """hash(the mixture's version, seed): the data version of one (mixture, seed) model."""
    return sha256_text(mixture_version_, f"seed={seed}")[:24]


@dg.asset(
    partitions_def=model_partitions,
    deps=[dg.AssetDep("domain_corpus", partition_mapping=LINEAGE_ONLY), *config_deps("base_model")],
    group_name="models",
    code_version=BASE_CODE_VERSION,
    kinds={"pytorch", "mlflow"},
    pool=launch.GPU_POOL,
)
@one_writer
def base_model(
    context: dg.AssetExecutionContext,
    chameleon: ChameleonConfig,
    mlflow_tracking: MLflowTracking,
    mixture_table: MixtureTable,
) -> dg.Output[BaseModel]:
    """A causal LM trained from scratch on one mixture with one seed (partition
    `<mixture>|<seed>`). Every partition uses the same model config, token budget and
    schedule; the mixture decides the domain sampling (each training sequence's domain is
    drawn with probability equal to its weight), the seed the initialisation and the
    sampled stream. Runs on request (`chameleon run` or the UI). Its data version covers
    its weights, its domains' data, `config_base_model` and its seed; a version trained
    before is reused, and an interrupted run resumes only a checkpoint of the same version.
    """
    mixture, seed = split_model_key(context.partition_key)
    weights, corpus_versions = mixture_of(mixture_table, mixture, "conf/mixtures.yaml")
    online = getattr(mixture_table, "online", {}).get(mixture)  # a table stored before `online` has none
    family = mixture_version(chameleon.section_version("base_model"), weights, corpus_versions, online)
    version = base_model_version(family, seed)
    model = stored_value("base_model", context.partition_key, version)
    reused = model is not None
    if model is None:
        # The corpus versions the weights were computed over, exactly.
        shards = {d: load_version("domain_corpus", d, v) for d, v in corpus_versions.items()}
        model = _train_base_model(context, chameleon, mlflow_tracking, mixture, seed, weights, shards, version,
                                  family, mixture_table, online)
    out = paths.base_model_dir(mixture, seed, version)
    point_current(out)
    prune_versions(out.parent)
    return model_output(model, weights, reused, "training loss")


def _train_base_model(context, chameleon, tracking, mixture, seed, weights, shards, version, family,  # noqa: ANN001
                      table, online: dict | None = None) -> BaseModel:
    from dataclasses import asdict

    from chameleon_assets.core.model import build_model
    from chameleon_assets.core.tokenizer import load_tokenizer, tokenizer_fingerprint

    profile = chameleon.profile()
    cfg = profile.base_model
    for d in weights:
        shards[d].require_tokenizer(tokenizer_fingerprint(profile.tokenizer), profile.tokenizer)
    tok = load_tokenizer(profile.tokenizer)
    model = build_model(cfg.model, len(tok), tok.eos_token_id, seed)
    cost = table.costs.get(mixture, {})  # what computing this mixture's weights cost
    spec = StageModel(
        asset="base_model", stage="pretrain", mixture=mixture, seed=seed, weights=weights, shards=shards,
        version=version, family=family, table=table, train=cfg.train, context_length=cfg.model.context_length,
        out=paths.base_model_dir(mixture, seed, version),
        checkpoints=paths.checkpoint_dir(f"base_model/{mixture}/seed-{seed}", version),
        description=f"{cfg.model.arch} causal LM trained from scratch on the `{mixture}` mixture with seed {seed}",
        tags={"proxy_versions": ",".join(table.proxy_versions)},
        params={f"model.{k}": v for k, v in asdict(cfg.model).items()},
        metrics={"weights_cost_flops": float(cost.get("flops", 0.0)),
                 "weights_cost_wall_s": float(cost.get("wall_s", 0.0))},
        artifacts=[table.heatmap_path],
        card_footer="Load with `AutoModelForCausalLM.from_pretrained(<this folder>)`; evaluate with `lm_eval "
                    "--model hf --model_args pretrained=<this folder>`.",
        online={"method": mixture, "params": online} if online else None,
    )
    t = train_stage_model(context, profile, tracking, spec, model, tok)
    r = t.result
    return BaseModel(version, mixture, str(spec.out), weights, t.corpus_versions, r.tokens, r.steps, t.final_loss,
                     r.tokens_per_s, r.epochs, t.mlflow_run_id, r.resumed_from, seed=seed,
                     mlflow_parent_run_id=t.mlflow_parent_run_id, config_version=chameleon.section_version("base_model"),
                     online=online or {})


@dg.asset(
    partitions_def=model_partitions,
    deps=[dg.AssetDep("domain_corpus", partition_mapping=LINEAGE_ONLY), *config_deps("evaluation")],
    group_name="evaluation",
    code_version=EVAL_CODE_VERSION,
    kinds={"pytorch", "mlflow"},
    automation_condition=policy.FOLLOWS,
)
@one_writer
def evaluation(
    context: dg.AssetExecutionContext,
    chameleon: ChameleonConfig,
    mlflow_tracking: MLflowTracking,
    base_model: BaseModel,
) -> dg.Output[Evaluation]:
    """Per-domain held-out NLL, bits per byte and perplexity of one (mixture, seed) model
    (the same validation windows for every model), plus few-shot accuracy with its
    standard error on lm-eval tasks (offline local tasks by default; shots never come
    from the scored split). Logged to the model's MLflow run. Follows its model: a new
    base model version or a changed `config_evaluation` re-evaluates.
    """
    import pandas as pd

    val_versions = dict(base_model.corpus_versions)  # the held-out split of the data it trained on
    version = sha256_text(EVAL_CODE_VERSION, chameleon.section_version("evaluation"), base_model.data_version,
                          versions_text(val_versions))[:24]
    result = stored_value("evaluation", context.partition_key, version)
    if result is None:
        shards = {d: load_version("domain_corpus", d, v) for d, v in val_versions.items()}
        result = _evaluate(context, chameleon, mlflow_tracking, base_model, shards, version, val_versions)
    out = paths.evaluation_dir(base_model.mixture, base_model.seed, version)
    point_current(out)
    prune_versions(out.parent)
    per_domain = pd.DataFrame({"bits_per_byte": result.bits_per_byte, "nll": result.nll,
                               "perplexity": result.perplexity}).round(4)
    return dg.Output(result, data_version=dg.DataVersion(version), metadata={
        "bits_per_byte_avg": result.bits_per_byte_avg,
        "perplexity_avg": result.perplexity_avg,
        "per_domain": dg.MetadataValue.md(per_domain.to_markdown()),
        "tasks": dg.MetadataValue.json(result.tasks),
        "seed": base_model.seed,
        "base_model_version": base_model.data_version,
    })


def _evaluate(context, chameleon, tracking, base_model: BaseModel, shards: dict, version: str,  # noqa: ANN001
              val_versions: dict) -> Evaluation:
    import numpy as np

    from chameleon_assets.core.evaluate import run_lm_eval
    from chameleon_assets.core.model import load_model, resolve_device
    from chameleon_assets.core.tokenizer import load_tokenizer, tokenizer_fingerprint

    profile = chameleon.profile()
    cfg = profile.evaluation
    for d in base_model.weights:
        shards[d].require_tokenizer(tokenizer_fingerprint(profile.tokenizer), profile.tokenizer)
    device = resolve_device(profile.device)
    tok = load_tokenizer(profile.tokenizer)
    model = load_model(base_model.path, device)
    ctx = profile.base_model.model.context_length
    windows = {d: held_out_windows(d, shards[d], cfg.ppl_windows, ctx) for d in base_model.weights}
    ppl = score_windows(model, windows, cfg.batch_size, device, tok)
    # The model's seed also seeds lm-eval: two mixtures of one seed see the same shots.
    tasks = run_lm_eval(model, tok, list(cfg.tasks), cfg.num_fewshot, cfg.limit, cfg.batch_size, ctx, device,
                        base_model.seed) if cfg.tasks else {}
    result = Evaluation(
        data_version=version,
        mixture=base_model.mixture,
        path=str(paths.evaluation_dir(base_model.mixture, base_model.seed, version)),
        base_model_version=base_model.data_version,
        perplexity={d: v["perplexity"] for d, v in ppl.items()},
        bits_per_byte={d: v.get("bits_per_byte", float("nan")) for d, v in ppl.items()},
        perplexity_avg=float(np.mean([v["perplexity"] for v in ppl.values()])),
        bits_per_byte_avg=float(np.mean([v.get("bits_per_byte", np.nan) for v in ppl.values()])),
        tasks=tasks,
        num_fewshot=cfg.num_fewshot,
        limit=cfg.limit,
        config_version=chameleon.section_version("evaluation"),
        val_versions=val_versions,
        seed=base_model.seed,
        nll={d: v["nll"] for d, v in ppl.items()},
    )
    metrics = {
        **score_metrics(result),
        "ppl_avg": result.perplexity_avg,
        "bpb_avg": result.bits_per_byte_avg,
        "nll_avg": float(np.mean(list(result.nll.values()))),
        **{f"{m}.{t}": v for t, scores in tasks.items() for m, v in scores.items()
           if isinstance(v, (int, float)) and m in ("acc", "acc_norm", "acc_stderr", "acc_norm_stderr")},
    }
    store_evaluation(context, tracking, result, base_model.mlflow_run_id, metrics,
                     [shards[d] for d in base_model.weights])
    return result


@dg.asset(
    ins={"evaluation": ALL_EXISTING},
    # Not an input (it loads the latest model of each evaluated mixture itself), but a
    # staling dependency: a retrained model makes the table stale even while its new
    # evaluation is missing or failing, so the old row is dropped, not shown as current.
    # model_registry: a removed seed or mixture stales the table too (its row must go).
    deps=[dg.AssetDep("base_model", partition_mapping=dg.AllPartitionMapping()), *config_deps("mixture_comparison"),
          model_registry],
    group_name="evaluation",
    code_version=COMPARISON_CODE_VERSION,
    kinds={"pandas", "mlflow"},
    automation_condition=policy.FOLLOWS_ANY_INPUT,
)
@one_writer
def mixture_comparison(
    context: dg.AssetExecutionContext,
    chameleon: ChameleonConfig,
    mlflow_tracking: MLflowTracking,
    mixture_table: MixtureTable,
    evaluation: dict,
) -> dg.Output[ComparisonTable]:
    """One table across the mixtures, over the seeds whose evaluation is of the *current*
    model: mean bits per byte over domains with its 95% interval over seeds (the primary
    aggregate), the paired difference against `uniform` (same seeds and windows; `*` =
    significant), NLL, the arithmetic-mean perplexity (secondary), few-shot accuracy with
    lm-eval's standard error (flagged when within chance), and per-domain bits per byte.
    Evaluations of older models, other weights or domains, other evaluation settings or
    validation data are left out and listed under `excluded`. Aggregates go to each
    mixture's MLflow parent run.
    """
    from chameleon_assets.core import compare

    eval_config = chameleon.section_version("evaluation")
    models, damaged = {}, {}
    for key in evaluation:
        try:
            models[key] = load_value(context.instance, "base_model", key)
        except ArtefactDamaged as exc:  # a model nobody requests may stay damaged: leave its row out
            mixture, _ = split_model_key(key)
            damaged[key] = f"its model's files are damaged ({exc}); `chameleon run --mixtures {mixture}` rebuilds it"
    current, included, excluded = comparison_inputs(mixture_table, models, {k: e for k, e in evaluation.items()
                                                                              if k in models}, eval_config,
                                                    chameleon.section_version("base_model"))
    excluded = {**excluded, **damaged}
    if not current:
        context.log.warning(f"no evaluation of a current model yet (stale: {excluded}); run `chameleon run`")
    weights = {m: dict(zip(mixture_table.domains, mixture_table.weights[m])) for m in current}
    table = compare.compare(current, weights)
    return comparison_output(context, mlflow_tracking, "mixture_comparison", "pretrain", COMPARISON_CODE_VERSION,
                             table, compare.summary_cells(table), mixture_table.data_version, models, included,
                             excluded)


def comparison_inputs(
    table: MixtureTable, models: dict, evaluations: dict, eval_config: str, model_config: str | None = None
) -> tuple[dict[str, dict[int, Evaluation]], dict, dict]:
    """The current evaluations by mixture and seed, their versions, and why others were left out
    (``stage.current_evaluations``): beyond being of the latest base model, trained on the
    mixture's current weights, an evaluation counts only if that model trained on the
    current data of every domain it sampled, the evaluation used the current settings
    (``eval_config``) and validation data and, with ``model_config``, the model was trained
    with those base-model settings (so a mixture's seeds never mix two recipes).
    """
    def older_data(ev: Evaluation, model: BaseModel, weights: dict) -> str | None:
        if any(model.corpus_versions.get(d) != v for d, v in table.corpus_versions.items() if weights[d] > 0):
            return "base model trained on older domain data"
        return None

    def other_settings(ev: Evaluation, model: BaseModel, weights: dict) -> str | None:
        return "evaluated with other evaluation settings" if ev.config_version != eval_config else None

    def older_validation(ev: Evaluation, model: BaseModel, weights: dict) -> str | None:
        if any(ev.val_versions.get(d) != table.corpus_versions[d] for d in weights):
            return "evaluated on older validation data"
        return None

    def other_recipe(ev: Evaluation, model: BaseModel, weights: dict) -> str | None:
        if model_config is not None and model.config_version and model.config_version != model_config:
            return "base model trained with other base-model settings (retrain with `chameleon run`)"
        return None

    return current_evaluations(table, models, evaluations, [older_data, other_settings, older_validation, other_recipe],
                               lambda model, ev: {"base_model": model.data_version, "evaluation": ev.data_version},
                               "base model")


def text_table(cells: dict[str, dict[str, str]], index_title: str = "") -> str:
    """A plain-text table (rows x columns of strings), right-aligned; no pandas needed."""
    columns = list(dict.fromkeys(c for row in cells.values() for c in row))
    header = [index_title] + columns
    body = [[name] + [row.get(c, "") for c in columns] for name, row in cells.items()]
    widths = [max(len(str(r[i])) for r in [header] + body) for i in range(len(header))]
    fmt = lambda r: "  ".join(str(v).ljust(widths[0]) if i == 0 else str(v).rjust(widths[i])  # noqa: E731
                              for i, v in enumerate(r))
    return "\n".join(fmt(r) for r in [header] + body)
