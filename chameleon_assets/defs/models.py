"""From weights to evidence: base_model[mixture|seed] -> evaluation[mixture|seed] -> mixture_comparison."""

import json

import dagster as dg

from chameleon_assets import paths
from chameleon_assets.core.artifacts import atomic_dir, atomic_file, point_current, prune_versions, sha256_text, write_json
from chameleon_assets.defs import launch, plots, policy
from chameleon_assets.defs.io import ArtefactDamaged, load_value, load_version, one_writer, stored_value, versions_text
from chameleon_assets.defs.partitions import ALL_EXISTING, LINEAGE_ONLY, model_partitions, split_model_key
from chameleon_assets.defs.resources import ChameleonConfig
from chameleon_assets.defs.sources import config_deps, model_registry
from chameleon_assets.defs.tracking import MLflowTracking
from chameleon_assets.defs.values import BaseModel, ComparisonTable, Evaluation, MixtureTable

BASE_CODE_VERSION = "base-v3"
EVAL_CODE_VERSION = "eval-v3"
COMPARISON_CODE_VERSION = "comparison-v4"


def mixture_version(section_version: str, weights: dict[str, float], corpus_versions: dict[str, str]) -> str:
    """hash(code, `config_base_model`, the mixture's weights, the data versions of its domains).

    What every seed of a mixture shares (its MLflow parent run is keyed by it). Only this
    mixture's own weights count: a new lambda changes CHAMELEON's weights, not uniform's,
    so the uniform models' versions (and folders) stay the same. Every domain of the
    mixture counts, also at weight 0: its evaluation scores them all.
    """
    w = json.dumps({d: round(x, 12) for d, x in sorted(weights.items())})
    v = versions_text({d: corpus_versions[d] for d in weights})
    return sha256_text(BASE_CODE_VERSION, section_version, w, v)[:24]


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
    if mixture not in mixture_table.weights:
        reason = mixture_table.skipped.get(mixture, "not in conf/mixtures.yaml")
        raise ValueError(f"mixture '{mixture}' has no weights: {reason}")
    weights = dict(zip(mixture_table.domains, mixture_table.weights[mixture]))
    corpus_versions = {d: mixture_table.corpus_versions[d] for d in weights}
    family = mixture_version(chameleon.section_version("base_model"), weights, corpus_versions)
    version = base_model_version(family, seed)
    model = stored_value("base_model", context.partition_key, version)
    reused = model is not None
    if model is None:
        # The corpus versions the weights were computed over, exactly.
        shards = {d: load_version("domain_corpus", d, v) for d, v in corpus_versions.items()}
        model = _train_base_model(context, chameleon, mlflow_tracking, mixture, seed, weights, shards, version,
                                  family, mixture_table)
    out = paths.base_model_dir(mixture, seed, version)
    point_current(out)
    prune_versions(out.parent)
    return dg.Output(model, data_version=dg.DataVersion(version), metadata={
        "weights": dg.MetadataValue.json({d: round(w, 4) for d, w in weights.items()}),
        "seed": seed,
        "epochs_per_domain": dg.MetadataValue.json({d: round(e, 3) for d, e in model.epochs.items()}),
        "tokens": model.tokens,
        "steps": model.steps,
        "final_loss": model.final_loss,
        "tokens_per_s": round(model.tokens_per_s),
        "mlflow_run_id": model.mlflow_run_id,
        "mlflow_parent_run_id": model.mlflow_parent_run_id,
        "reused_existing_version": reused,
        "resumed_from_step": model.resumed_from_step,
        "loss_curve": dg.MetadataValue.md(plots.markdown_image(plots.file_b64(out / "loss.png"), "training loss")),
        "path": dg.MetadataValue.path(model.path),
    })


def _train_base_model(context, chameleon, tracking, mixture, seed, weights, shards, version, family,  # noqa: ANN001
                      table) -> BaseModel:
    from dataclasses import asdict

    import numpy as np

    from chameleon_assets.core.artifacts import remove_tree
    from chameleon_assets.core.model import build_model, count_parameters
    from chameleon_assets.core.tokenizer import load_tokenizer, tokenizer_fingerprint

    profile = chameleon.profile()
    cfg = profile.base_model
    for d in weights:
        shards[d].require_tokenizer(tokenizer_fingerprint(profile.tokenizer), profile.tokenizer)
    tok = load_tokenizer(profile.tokenizer)
    model = build_model(cfg.model, len(tok), tok.eos_token_id, seed)
    checkpoints = paths.checkpoint_dir(f"base_model/{mixture}/seed-{seed}", version)
    # The resume key is the data version: it names the weights, every domain's data
    # version (so the tokenizer too), the configuration and the seed. A checkpoint of
    # other data is never resumed.
    job = launch.TrainJob({d: shards[d] for d in weights}, weights, cfg.model.context_length, seed, cfg.train,
                          checkpoints, version, f"base[{mixture}|{seed}]")
    result = launch.train(context, profile, model, job)
    if result.resumed_from:
        context.log.info(f"resumed from checkpoint at step {result.resumed_from}")
    corpus_versions = {d: shards[d].data_version for d in weights}
    out = paths.base_model_dir(mixture, seed, version)
    final_loss = float(np.mean(result.losses[-5:]))
    shared = {"mixture": mixture, "stage": "pretrain", "mixture_version": family,
              "weights_version": table.data_version, "weights_source": table.sources.get(mixture, "")}
    parent = tracking.parent_run(f"{mixture}", f"pretrain-{family}", tags={"kind": "mixture", **shared})
    tags = {"dagster_run_id": context.run_id, "asset_partition": context.partition_key, "seed": str(seed),
            "model_version": version, "proxy_versions": ",".join(table.proxy_versions), **shared,
            **{f"data_version.{d}": v for d, v in corpus_versions.items()}}
    with tracking.start_run(run_name=f"base_model[{mixture}|{seed}]", tags=tags, parent_run_id=parent) as run:
        import mlflow

        mlflow.log_params({
            "mixture": mixture, "seed": seed, "token_budget": cfg.train.tokens, "profile": profile.name,
            **{f"weight.{d}": round(w, 6) for d, w in weights.items()},
            **{f"model.{k}": v for k, v in asdict(cfg.model).items()},
            **{f"train.{k}": v for k, v in asdict(cfg.train).items()},
        })
        cost = table.costs.get(mixture, {})  # what computing this mixture's weights cost
        mlflow.log_metrics({"tokens_per_s": result.tokens_per_s, "final_loss": final_loss,
                            "weights_cost_flops": float(cost.get("flops", 0.0)),
                            "weights_cost_wall_s": float(cost.get("wall_s", 0.0)),
                            **launch.mlflow_metrics(result)})
        mlflow.set_tags(launch.mlflow_tags(result))
        mlflow.log_artifact(f"{table.path}/weights.csv")
        mlflow.log_artifact(table.heatmap_path)
        run_id = run.info.run_id
    tracking.log_series(run_id, "train_loss", result.losses)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        write_json(tmp / "training.json", {
            "mixture": mixture, "seed": seed, "weights": weights, "losses": result.losses, "tokens": result.tokens,
            "tokens_per_s": result.tokens_per_s, "epochs": result.epochs, "draws": result.draws,
            "data_versions": corpus_versions, "mlflow_run_id": run_id, "mlflow_parent_run_id": parent,
            "data_version": version,
        })
        (tmp / "README.md").write_text(_model_card(mixture, seed, weights, result, cfg, count_parameters(model),
                                                   version))
        plots.line_plot({f"{mixture}, seed {seed}": result.losses}, "step", "train loss",
                        f"base_model[{mixture}|{seed}]", tmp / "loss.png")
    with tracking.start_run(run_id=run_id):
        import mlflow

        mlflow.log_artifact(str(out / "README.md"))
    remove_tree(checkpoints)
    return BaseModel(version, mixture, str(out), weights, corpus_versions, result.tokens, result.steps, final_loss,
                     result.tokens_per_s, result.epochs, run_id, result.resumed_from, seed=seed,
                     mlflow_parent_run_id=parent, config_version=chameleon.section_version("base_model"))


def _model_card(mixture: str, seed: int, weights: dict, result, cfg, params: int, version: str) -> str:  # noqa: ANN001
    rows = "\n".join(f"| {d} | {w:.4f} | {result.epochs.get(d, 0.0):.3f} |" for d, w in weights.items())
    return (
        f"# base_model[{mixture}|{seed}]\n\nA {params:,}-parameter {cfg.model.arch} causal LM trained from scratch "
        f"on the `{mixture}` mixture with seed {seed} ({result.tokens:,} tokens, {result.steps} steps) by "
        f"chameleon-assets. Data version `{version}`.\n\n"
        f"| domain | weight | epochs |\n|---|---|---|\n{rows}\n\n"
        f"Load with `AutoModelForCausalLM.from_pretrained(<this folder>)`; evaluate with `lm_eval --model hf "
        f"--model_args pretrained=<this folder>`.\n"
    )


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

    from chameleon_assets.core.evaluate import perplexity, run_lm_eval
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
    ppl = {}
    for d in base_model.weights:
        windows = held_out_windows(d, shards[d], cfg.ppl_windows, ctx)
        ppl[d] = perplexity(model, windows, cfg.batch_size, device, decode=tok.decode)
    # The model's seed also seeds lm-eval: two mixtures of one seed see the same shots.
    tasks = run_lm_eval(model, tok, list(cfg.tasks), cfg.num_fewshot, cfg.limit, cfg.batch_size, ctx, device,
                        base_model.seed) if cfg.tasks else {}
    out = paths.evaluation_dir(base_model.mixture, base_model.seed, version)
    result = Evaluation(
        data_version=version,
        mixture=base_model.mixture,
        path=str(out),
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
    with atomic_dir(out) as tmp:
        write_json(tmp / "evaluation.json", {**result.__dict__, "mlflow_run_id": base_model.mlflow_run_id})
    metrics = {
        **{f"ppl.{d}": v for d, v in result.perplexity.items()},
        **{f"bpb.{d}": v for d, v in result.bits_per_byte.items()},
        **{f"nll.{d}": v for d, v in result.nll.items()},
        "ppl_avg": result.perplexity_avg,
        "bpb_avg": result.bits_per_byte_avg,
        "nll_avg": float(np.mean(list(result.nll.values()))),
        **{f"{m}.{t}": v for t, scores in tasks.items() for m, v in scores.items()
           if isinstance(v, (int, float)) and m in ("acc", "acc_norm", "acc_stderr", "acc_norm_stderr")},
    }
    log_evaluation(tracking, base_model.mlflow_run_id, metrics, context.run_id, version)
    return result


def held_out_windows(domain: str, shards, count: int, length: int) -> list:  # noqa: ANN001 (CorpusShards)
    """The same ``count`` validation windows of ``length`` tokens for every model scored on
    ``domain``; a clear error when the domain has no held-out tokens."""
    from chameleon_assets.core.evaluate import validation_windows

    if shards.val_tokens < 2:
        raise ValueError(f"domain '{domain}': no held-out tokens ({shards.val_documents} validation documents); "
                         "give it more documents or raise val_fraction in the profile")
    return validation_windows(shards.val(), count, length)


def log_evaluation(tracking: MLflowTracking, run_id: str, metrics: dict, dagster_run_id: str, version: str) -> None:
    """An evaluation's metrics on its model's MLflow run, tagged with the evaluating run and version."""
    with tracking.start_run(run_id=run_id):
        import mlflow

        mlflow.log_metrics(metrics)
        mlflow.set_tag("evaluated_by_dagster_run", dagster_run_id)
        mlflow.set_tag("evaluation_version", version)


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


def comparison_output(context, tracking: MLflowTracking, asset: str, stage: str, code_version: str,  # noqa: ANN001
                      table, summary_cells: dict, weights_version: str, models: dict, included: dict,
                      excluded: dict) -> dg.Output[ComparisonTable]:
    """Store, log and describe one stage's comparison (``core.compare.Comparison``): its version
    (hash of code, weights and the included and excluded evaluations), ``<asset>.csv``,
    ``<asset>.md``, the per-domain plot and ``provenance.json`` in a folder of that version,
    an MLflow run with those files, the aggregates on each mixture's parent run, and the
    step's metadata. A version computed before is reused."""
    from chameleon_assets.core import compare

    version = sha256_text(code_version, weights_version, json.dumps([included, excluded], sort_keys=True))[:24]
    out = paths.comparison_dir(version, stage)
    what = "domain" if stage == "pretrain" else "finetuning domain"
    plot = "bits_per_byte.png" if stage == "pretrain" else "finetune_bits_per_byte.png"
    summary = compare.markdown(summary_cells)
    per_domain = compare.markdown(compare.domain_cells(table))
    value = stored_value(asset, None, version)
    if value is None:
        import pandas as pd

        frame = pd.DataFrame.from_dict(table.rows, orient="index", columns=None if table.rows else ["bpb_avg"])
        with atomic_dir(out) as tmp:
            with atomic_file(tmp / f"{asset}.csv") as fh:
                frame.to_csv(fh, float_format="%.6g")
            (tmp / f"{asset}.md").write_text(f"{summary}\n\nBits per byte per {what} (mean ±95% "
                                             f"half-width; paired difference vs uniform)\n\n{per_domain}\n")
            _bpb_plot(table, tmp / plot, what)
            write_json(tmp / "provenance.json", {"weights_version": weights_version,
                                                 "included": included, "excluded": excluded, "notes": table.notes})
        with tracking.start_run(run_name=asset, tags={"dagster_run_id": context.run_id, "kind": "comparison",
                                                      "stage": stage, "comparison_version": version}):
            import mlflow

            for name in (f"{asset}.csv", f"{asset}.md", plot):
                mlflow.log_artifact(str(out / name))
        log_aggregates(context, tracking, table, models, included)
        value = ComparisonTable(version, str(out), table.rows, included, excluded, domains=table.domains,
                                tasks=table.tasks, baseline=table.baseline, notes=table.notes)
    point_current(out)
    prune_versions(out.parent)
    return dg.Output(value, data_version=dg.DataVersion(version), metadata={
        "table": dg.MetadataValue.md(summary),
        "bits_per_byte_per_domain": dg.MetadataValue.md(per_domain),
        "plot": dg.MetadataValue.md(plots.markdown_image(plots.file_b64(out / plot), f"bits per byte per {what}")),
        "mixtures": len(table.rows),
        "seeds": dg.MetadataValue.json({m: int(r["seeds"]) for m, r in table.rows.items()}),
        "versions": dg.MetadataValue.json(included),
        "excluded": dg.MetadataValue.json(excluded),
        "notes": dg.MetadataValue.json(table.notes),
        "csv": dg.MetadataValue.path(str(out / f"{asset}.csv")),
    })


def _bpb_plot(table, path, what: str = "domain") -> None:  # noqa: ANN001
    """Bits per byte per ``what`` (domain), one bar per mixture, with 95% interval bars over seeds."""
    import math

    bars = {m: [row[f"bpb.{d}"] for d in table.domains] for m, row in table.rows.items()}
    errors = {m: [(row[f"bpb.{d}_hi"] - row[f"bpb.{d}_lo"]) / 2 if math.isfinite(row[f"bpb.{d}_lo"]) else 0.0
                  for d in table.domains] for m, row in table.rows.items()}
    seeds = sorted({int(r["seeds"]) for r in table.rows.values()})
    title = f"held-out bits per byte per {what} (lower is better)"
    note = f"mean over {'/'.join(map(str, seeds))} seed(s); bars: 95% interval" if table.rows else "no current evaluation"
    plots.grouped_bars(bars, table.domains, f"{title}\n{note}", path, ylabel="bits per byte", errors=errors,
                       xlabel=what)


def log_aggregates(context, tracking: MLflowTracking, table, models: dict, included: dict) -> None:  # noqa: ANN001
    """Each mixture's aggregates over seeds on its MLflow parent run (a parent deleted in
    MLflow meanwhile is reported, not fatal: the table itself is already written)."""
    for mixture, row in table.rows.items():
        keys = [k for k in included if split_model_key(k)[0] == mixture]
        parents = {models[k].mlflow_parent_run_id for k in keys if models[k].mlflow_parent_run_id}
        seeds = ",".join(str(s) for s in sorted(split_model_key(k)[1] for k in keys))
        for parent in parents:
            try:
                tracking.log_values(parent, {k: v for k, v in row.items() if not k.startswith(("w.", "ppl."))},
                                    tags={"seeds": seeds})
            except Exception as exc:  # noqa: BLE001 - MLflow raises its own types
                context.log.warning(f"could not log {mixture}'s aggregates to MLflow run {parent}: {exc}")


def comparison_inputs(
    table: MixtureTable, models: dict, evaluations: dict, eval_config: str, model_config: str | None = None
) -> tuple[dict[str, dict[int, Evaluation]], dict, dict]:
    """The current evaluations by mixture and seed, their versions, and why others were left out.

    Keys of ``models`` and ``evaluations`` are ``<mixture>|<seed>`` partition keys. An
    evaluation counts only if it is of the latest base model of its partition, that model
    was trained on the mixture's current weights over the current domain data, and the
    evaluation used the current settings (``eval_config``) and validation data. With
    ``model_config``, the model must also have been trained with those base-model settings
    (so a mixture's seeds never mix two recipes). Non-finite scores (a diverged model) are
    left out with the reason, not allowed to fail the table.
    """
    import math

    current: dict[str, dict[int, Evaluation]] = {}
    included, excluded = {}, {}
    for key, ev in sorted(evaluations.items()):
        name, seed = split_model_key(key)
        model = models.get(key)
        weights = dict(zip(table.domains, table.weights.get(name, [])))
        if name not in table.weights:
            excluded[key] = "no current weights"
        elif model is None or ev.base_model_version != model.data_version:
            excluded[key] = "evaluation of an older base model"
        elif set(model.weights) != set(weights) or any(abs(model.weights[d] - weights[d]) > 1e-12 for d in weights):
            excluded[key] = "base model trained on other weights or domains (retrain with `chameleon run`)"
        elif any(model.corpus_versions.get(d) != v for d, v in table.corpus_versions.items() if weights[d] > 0):
            excluded[key] = "base model trained on older domain data"
        elif ev.config_version != eval_config:
            excluded[key] = "evaluated with other evaluation settings"
        elif any(ev.val_versions.get(d) != table.corpus_versions[d] for d in weights):
            excluded[key] = "evaluated on older validation data"
        elif model_config is not None and model.config_version and model.config_version != model_config:
            excluded[key] = "base model trained with other base-model settings (retrain with `chameleon run`)"
        elif not all(math.isfinite(v) for v in [*ev.bits_per_byte.values(), *ev.nll.values()]):
            excluded[key] = "non-finite bits per byte or NLL (the model diverged?)"
        else:
            current.setdefault(name, {})[seed] = ev
            included[key] = {"base_model": model.data_version, "evaluation": ev.data_version}
    order = [m for m in table.weights if m in current]
    return ({m: dict(sorted(current[m].items())) for m in order},
            {k: included[k] for m in order for k in sorted(included) if split_model_key(k)[0] == m}, excluded)


def text_table(cells: dict[str, dict[str, str]], index_title: str = "") -> str:
    """A plain-text table (rows x columns of strings), right-aligned; no pandas needed."""
    columns = list(dict.fromkeys(c for row in cells.values() for c in row))
    header = [index_title] + columns
    body = [[name] + [row.get(c, "") for c in columns] for name, row in cells.items()]
    widths = [max(len(str(r[i])) for r in [header] + body) for i in range(len(header))]
    fmt = lambda r: "  ".join(str(v).ljust(widths[0]) if i == 0 else str(v).rjust(widths[i])  # noqa: E731
                              for i, v in enumerate(r))
    return "\n".join(fmt(r) for r in [header] + body)
