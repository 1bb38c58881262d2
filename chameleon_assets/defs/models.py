"""From weights to evidence: base_model[mixture] -> evaluation[mixture] -> mixture_comparison."""

import json

import dagster as dg

from chameleon_assets import paths
from chameleon_assets.core.artifacts import atomic_dir, atomic_file, point_current, prune_versions, sha256_text, write_json
from chameleon_assets.defs import plots, policy
from chameleon_assets.defs.io import ArtefactDamaged, load_value, load_version, one_writer, stored_value, versions_text
from chameleon_assets.defs.partitions import ALL_EXISTING, LINEAGE_ONLY, mixture_partitions
from chameleon_assets.defs.resources import ChameleonConfig
from chameleon_assets.defs.sources import CONFIG_SOURCES
from chameleon_assets.defs.tracking import MLflowTracking
from chameleon_assets.defs.values import BaseModel, ComparisonTable, Evaluation, MixtureTable

BASE_CODE_VERSION = "base-v2"
EVAL_CODE_VERSION = "eval-v2"
COMPARISON_CODE_VERSION = "comparison-v2"


def base_model_version(section_version: str, weights: dict[str, float], corpus_versions: dict[str, str]) -> str:
    """hash(code, `config_base_model`, the mixture's weights, the data versions of its domains).

    Only this mixture's own weights count: a new lambda changes CHAMELEON's weights, not
    uniform's, so the uniform model's version (and its folder) stays the same. Every
    domain of the mixture counts, also at weight 0: its evaluation scores them all.
    """
    w = json.dumps({d: round(x, 12) for d, x in sorted(weights.items())})
    v = versions_text({d: corpus_versions[d] for d in weights})
    return sha256_text(BASE_CODE_VERSION, section_version, w, v)[:24]


@dg.asset(
    partitions_def=mixture_partitions,
    deps=[dg.AssetDep("domain_corpus", partition_mapping=LINEAGE_ONLY), CONFIG_SOURCES["base_model"]],
    group_name="models",
    code_version=BASE_CODE_VERSION,
    kinds={"pytorch", "mlflow"},
)
@one_writer
def base_model(
    context: dg.AssetExecutionContext,
    chameleon: ChameleonConfig,
    mlflow_tracking: MLflowTracking,
    mixture_weights: MixtureTable,
) -> dg.Output[BaseModel]:
    """A causal LM trained from scratch on one mixture. Every partition uses the same
    model config, seed, token budget and schedule; only the domain sampling differs:
    each training sequence's domain is drawn with probability equal to the mixture's
    weight. Runs on request (`chameleon run` or the UI). Its data version covers its
    own weights, its domains' data and `config_base_model`; a version trained before
    is reused, and an interrupted run resumes only a checkpoint of the same version.
    """
    mixture = context.partition_key
    if mixture not in mixture_weights.weights:
        reason = mixture_weights.skipped.get(mixture, "not in conf/mixtures.yaml")
        raise ValueError(f"mixture '{mixture}' has no weights: {reason}")
    weights = dict(zip(mixture_weights.domains, mixture_weights.weights[mixture]))
    corpus_versions = {d: mixture_weights.corpus_versions[d] for d in weights}
    version = base_model_version(chameleon.section_version("base_model"), weights, corpus_versions)
    model = stored_value("base_model", mixture, version)
    reused = model is not None
    if model is None:
        # The corpus versions the weights were computed over, exactly.
        shards = {d: load_version("domain_corpus", d, v) for d, v in corpus_versions.items()}
        model = _train_base_model(context, chameleon, mlflow_tracking, mixture, weights, shards, version,
                                  mixture_weights)
    out = paths.base_model_dir(mixture, version)
    point_current(out)
    prune_versions(out.parent)
    return dg.Output(model, data_version=dg.DataVersion(version), metadata={
        "weights": dg.MetadataValue.json({d: round(w, 4) for d, w in weights.items()}),
        "epochs_per_domain": dg.MetadataValue.json({d: round(e, 3) for d, e in model.epochs.items()}),
        "tokens": model.tokens,
        "steps": model.steps,
        "final_loss": model.final_loss,
        "tokens_per_s": round(model.tokens_per_s),
        "mlflow_run_id": model.mlflow_run_id,
        "reused_existing_version": reused,
        "resumed_from_step": model.resumed_from_step,
        "loss_curve": dg.MetadataValue.md(plots.markdown_image(plots.file_b64(out / "loss.png"), "training loss")),
        "path": dg.MetadataValue.path(model.path),
    })


def _train_base_model(context, chameleon, tracking, mixture, weights, shards, version, table) -> BaseModel:  # noqa: ANN001
    from dataclasses import asdict

    import numpy as np

    from chameleon_assets.core.artifacts import remove_tree
    from chameleon_assets.core.model import build_model, count_parameters, resolve_device
    from chameleon_assets.core.tokenizer import load_tokenizer
    from chameleon_assets.core.train import WeightedDomainSampler, train_causal_lm

    from chameleon_assets.core.tokenizer import tokenizer_fingerprint

    profile = chameleon.profile()
    cfg = profile.base_model
    for d in weights:
        shards[d].require_tokenizer(tokenizer_fingerprint(profile.tokenizer), profile.tokenizer)
    tok = load_tokenizer(profile.tokenizer)
    model = build_model(cfg.model, len(tok), tok.eos_token_id, profile.seed)
    sampler = WeightedDomainSampler({d: shards[d].train() for d in weights}, weights, cfg.model.context_length,
                                    profile.seed)
    checkpoints = paths.checkpoint_dir(f"base_model/{mixture}", version)
    # The resume key is the data version: it names the weights, every domain's data
    # version (so the tokenizer too) and the configuration. A checkpoint of other data
    # is never resumed.
    result = train_causal_lm(model, sampler, cfg.train, resolve_device(profile.device),
                             checkpoint_dir=checkpoints, run_key=version, desc=f"base[{mixture}]")
    if result.resumed_from:
        context.log.info(f"resumed from checkpoint at step {result.resumed_from}")
    corpus_versions = {d: shards[d].data_version for d in weights}
    out = paths.base_model_dir(mixture, version)
    final_loss = float(np.mean(result.losses[-5:]))
    tags = {"dagster_run_id": context.run_id, "asset_partition": mixture, "stage": "pretrain",
            "model_version": version, "weights_version": table.data_version,
            "proxy_versions": ",".join(table.proxy_versions),
            **{f"data_version.{d}": v for d, v in corpus_versions.items()}}
    with tracking.start_run(run_name=f"base_model[{mixture}]", tags=tags) as run:
        import mlflow

        mlflow.log_params({
            "mixture": mixture, "seed": profile.seed, "token_budget": cfg.train.tokens, "profile": profile.name,
            **{f"weight.{d}": round(w, 6) for d, w in weights.items()},
            **{f"model.{k}": v for k, v in asdict(cfg.model).items()},
            **{f"train.{k}": v for k, v in asdict(cfg.train).items()},
        })
        mlflow.log_metrics({"tokens_per_s": result.tokens_per_s, "final_loss": final_loss})
        mlflow.log_artifact(f"{table.path}/weights.csv")
        mlflow.log_artifact(table.heatmap_path)
        run_id = run.info.run_id
    tracking.log_series(run_id, "train_loss", result.losses)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        write_json(tmp / "training.json", {
            "mixture": mixture, "weights": weights, "losses": result.losses, "tokens": result.tokens,
            "tokens_per_s": result.tokens_per_s, "epochs": result.epochs, "draws": result.draws,
            "data_versions": corpus_versions, "mlflow_run_id": run_id, "data_version": version,
        })
        (tmp / "README.md").write_text(_model_card(mixture, weights, result, cfg, count_parameters(model), version))
        plots.line_plot({mixture: result.losses}, "step", "train loss", f"base_model[{mixture}]", tmp / "loss.png")
    with tracking.start_run(run_id=run_id):
        import mlflow

        mlflow.log_artifact(str(out / "README.md"))
    remove_tree(checkpoints)
    return BaseModel(version, mixture, str(out), weights, corpus_versions, result.tokens, result.steps, final_loss,
                     result.tokens_per_s, result.epochs, run_id, result.resumed_from)


def _model_card(mixture: str, weights: dict, result, cfg, params: int, version: str) -> str:  # noqa: ANN001
    rows = "\n".join(f"| {d} | {w:.4f} | {result.epochs.get(d, 0.0):.3f} |" for d, w in weights.items())
    return (
        f"# base_model[{mixture}]\n\nA {params:,}-parameter {cfg.model.arch} causal LM trained from scratch "
        f"on the `{mixture}` mixture ({result.tokens:,} tokens, {result.steps} steps) by chameleon-assets. "
        f"Data version `{version}`.\n\n"
        f"| domain | weight | epochs |\n|---|---|---|\n{rows}\n\n"
        f"Load with `AutoModelForCausalLM.from_pretrained(<this folder>)`; evaluate with `lm_eval --model hf "
        f"--model_args pretrained=<this folder>`.\n"
    )


@dg.asset(
    partitions_def=mixture_partitions,
    deps=[dg.AssetDep("domain_corpus", partition_mapping=LINEAGE_ONLY), CONFIG_SOURCES["evaluation"]],
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
    """Per-domain held-out perplexity (the same validation windows for every mixture),
    their average and bits per byte, plus few-shot accuracy on lm-eval tasks
    (offline local tasks by default). Logged to the model's MLflow run. Follows its
    model: a new base model version or a changed `config_evaluation` re-evaluates.
    """
    import pandas as pd

    mixture = context.partition_key
    val_versions = dict(base_model.corpus_versions)  # the held-out split of the data it trained on
    version = sha256_text(EVAL_CODE_VERSION, chameleon.section_version("evaluation"), base_model.data_version,
                          versions_text(val_versions))[:24]
    result = stored_value("evaluation", mixture, version)
    if result is None:
        shards = {d: load_version("domain_corpus", d, v) for d, v in val_versions.items()}
        result = _evaluate(context, chameleon, mlflow_tracking, base_model, shards, version, val_versions)
    out = paths.evaluation_dir(mixture, version)
    point_current(out)
    prune_versions(out.parent)
    return dg.Output(result, data_version=dg.DataVersion(version), metadata={
        "perplexity_avg": result.perplexity_avg,
        "bits_per_byte_avg": result.bits_per_byte_avg,
        "perplexity": dg.MetadataValue.md(pd.Series(result.perplexity, name="ppl").round(2).to_frame().to_markdown()),
        "tasks": dg.MetadataValue.json(result.tasks),
        "base_model_version": base_model.data_version,
    })


def _evaluate(context, chameleon, tracking, base_model: BaseModel, shards: dict, version: str,  # noqa: ANN001
              val_versions: dict) -> Evaluation:
    import numpy as np

    from chameleon_assets.core.evaluate import perplexity, run_lm_eval, validation_windows
    from chameleon_assets.core.model import load_model, resolve_device
    from chameleon_assets.core.tokenizer import load_tokenizer

    from chameleon_assets.core.tokenizer import tokenizer_fingerprint

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
        if shards[d].val_tokens < 2:
            raise ValueError(
                f"domain '{d}': no held-out tokens ({shards[d].val_documents} validation documents); "
                "give it more documents or raise val_fraction in the profile"
            )
        windows = validation_windows(shards[d].val(), cfg.ppl_windows, ctx)
        ppl[d] = perplexity(model, windows, cfg.batch_size, device, decode=tok.decode)
    tasks = run_lm_eval(model, tok, list(cfg.tasks), cfg.num_fewshot, cfg.limit, cfg.batch_size, ctx, device,
                        profile.seed) if cfg.tasks else {}
    out = paths.evaluation_dir(base_model.mixture, version)
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
    )
    with atomic_dir(out) as tmp:
        write_json(tmp / "evaluation.json", {**result.__dict__, "mlflow_run_id": base_model.mlflow_run_id})
    metrics = {
        **{f"ppl.{d}": v for d, v in result.perplexity.items()},
        **{f"bpb.{d}": v for d, v in result.bits_per_byte.items()},
        "ppl_avg": result.perplexity_avg,
        "bpb_avg": result.bits_per_byte_avg,
        **{f"acc.{t}": m["acc"] for t, m in tasks.items() if "acc" in m},
        **{f"acc_norm.{t}": m["acc_norm"] for t, m in tasks.items() if "acc_norm" in m},
    }
    with tracking.start_run(run_id=base_model.mlflow_run_id):
        import mlflow

        mlflow.log_metrics(metrics)
        mlflow.set_tag("evaluated_by_dagster_run", context.run_id)
        mlflow.set_tag("evaluation_version", version)
    return result


@dg.asset(
    ins={"evaluation": ALL_EXISTING},
    # Not an input (it loads the latest model of each evaluated mixture itself), but a
    # staling dependency: a retrained model makes the table stale even while its new
    # evaluation is missing or failing, so the old row is dropped, not shown as current.
    deps=[dg.AssetDep("base_model", partition_mapping=dg.AllPartitionMapping()), CONFIG_SOURCES["evaluation"]],
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
    mixture_weights: MixtureTable,
    evaluation: dict,
) -> dg.Output[ComparisonTable]:
    """One table across the mixtures whose evaluation is of the *current* model: its
    domain weights, per-domain held-out perplexity, the average perplexity and bits per
    byte, and each task's accuracy, with the model and evaluation data versions. An
    evaluation of an older model, of a model trained on other weights or domains, or
    made with other evaluation settings or validation data is left out and listed
    under `excluded`. Best value per column marked with `*`.
    """
    import pandas as pd

    eval_config = chameleon.section_version("evaluation")
    models, damaged = {}, {}
    for m in evaluation:
        try:
            models[m] = load_value(context.instance, "base_model", m)
        except ArtefactDamaged as exc:  # a model nobody requests may stay damaged: leave its row out
            damaged[m] = f"its model's files are damaged ({exc}); `chameleon run --mixtures {m}` rebuilds it"
    rows, included, excluded = comparison_rows(mixture_weights, models, {m: e for m, e in evaluation.items()
                                                                         if m in models}, eval_config)
    excluded = {**excluded, **damaged}
    if not rows:
        context.log.warning(f"no evaluation of a current model yet (stale: {excluded}); run `chameleon run`")
    version = sha256_text(COMPARISON_CODE_VERSION, mixture_weights.data_version,
                          json.dumps([included, excluded], sort_keys=True))[:24]
    out = paths.comparison_dir(version)
    value = stored_value("mixture_comparison", None, version)
    if value is None:
        frame = pd.DataFrame.from_dict(rows, orient="index", columns=None if rows else ["ppl_avg"])
        with atomic_dir(out) as tmp:
            with atomic_file(tmp / "mixture_comparison.csv") as fh:
                frame.to_csv(fh, float_format="%.6g")
            plots.grouped_bars({"avg perplexity": frame["ppl_avg"].tolist()}, list(frame.index),
                               "average held-out perplexity", tmp / "perplexity.png", ylabel="perplexity")
            write_json(tmp / "provenance.json", {"weights_version": mixture_weights.data_version,
                                                 "included": included, "excluded": excluded})
        with mlflow_tracking.start_run(run_name="mixture_comparison", tags={"dagster_run_id": context.run_id,
                                                                             "kind": "comparison",
                                                                             "comparison_version": version}):
            import mlflow

            mlflow.log_artifact(str(out / "mixture_comparison.csv"))
            mlflow.log_artifact(str(out / "perplexity.png"))
            mlflow.log_text(mark_best(frame).to_markdown(), "mixture_comparison.md")
        value = ComparisonTable(version, str(out), rows, included, excluded)
    point_current(out)
    prune_versions(out.parent)
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=None if rows else ["ppl_avg"])
    return dg.Output(value, data_version=dg.DataVersion(version), metadata={
        "table": dg.MetadataValue.md(mark_best(frame).to_markdown()),
        "plot": dg.MetadataValue.md(plots.markdown_image(plots.file_b64(out / "perplexity.png"), "average perplexity")),
        "mixtures": len(frame),
        "versions": dg.MetadataValue.json(included),
        "excluded": dg.MetadataValue.json(excluded),
        "csv": dg.MetadataValue.path(str(out / "mixture_comparison.csv")),
    })


def comparison_rows(
    table: MixtureTable, models: dict, evaluations: dict, eval_config: str
) -> tuple[dict, dict, dict]:
    """Rows of the comparison, their versions, and why other evaluated mixtures were left out.

    An evaluation counts only if it is of the latest base model of its mixture, that
    model was trained on the mixture's current weights over the current domain data,
    and the evaluation used the current settings (``eval_config``) and validation data.
    """
    rows, included, excluded = {}, {}, {}
    for name, ev in sorted(evaluations.items()):
        model = models.get(name)
        current = dict(zip(table.domains, table.weights.get(name, [])))
        if name not in table.weights:
            excluded[name] = "no current weights"
        elif model is None or ev.base_model_version != model.data_version:
            excluded[name] = "evaluation of an older base model"
        elif set(model.weights) != set(current) or any(abs(model.weights[d] - current[d]) > 1e-12 for d in current):
            excluded[name] = "base model trained on other weights or domains (retrain with `chameleon run`)"
        elif any(model.corpus_versions.get(d) != v for d, v in table.corpus_versions.items() if current[d] > 0):
            excluded[name] = "base model trained on older domain data"
        elif ev.config_version != eval_config:
            excluded[name] = "evaluated with other evaluation settings"
        elif any(ev.val_versions.get(d) != table.corpus_versions[d] for d in current):
            excluded[name] = "evaluated on older validation data"
        else:
            row = {f"w.{d}": w for d, w in current.items()}
            row.update({f"ppl.{d}": v for d, v in ev.perplexity.items()})
            row["ppl_avg"] = ev.perplexity_avg
            row["bpb_avg"] = ev.bits_per_byte_avg
            row.update({f"acc.{t}": m.get("acc", float("nan")) for t, m in ev.tasks.items()})
            rows[name] = row
            included[name] = {"base_model": model.data_version, "evaluation": ev.data_version}
    order = [m for m in table.weights if m in rows]
    return {m: rows[m] for m in order}, {m: included[m] for m in order}, excluded


def star_best(rows: dict[str, dict[str, float]]) -> dict[str, dict[str, str]]:
    """Format every number with 3 decimals and star the best per column (with two rows or more).

    Best is the lowest for ``ppl*``/``bpb*`` columns, the highest for the others;
    weights (``w.*``) are never starred.
    """
    import math

    columns = list(dict.fromkeys(c for row in rows.values() for c in row))
    shown = {name: {} for name in rows}
    for col in columns:
        values = {name: row.get(col, float("nan")) for name, row in rows.items()}
        finite = {n: v for n, v in values.items() if isinstance(v, (int, float)) and not math.isnan(v)}
        best = None
        if not col.startswith("w.") and finite and len(rows) > 1:
            pick = min if col.startswith(("ppl", "bpb")) else max
            best = pick(finite, key=finite.get)
        for name, v in values.items():
            shown[name][col] = f"{v:.3f}" + ("*" if name == best else "")
    return shown


def mark_best(frame):  # noqa: ANN001, ANN201 (pandas is imported on use)
    """``star_best`` on a DataFrame (rows: mixtures), returned as a DataFrame of strings."""
    import pandas as pd

    shown = star_best({name: {c: float(v) for c, v in row.items()} for name, row in frame.iterrows()})
    return pd.DataFrame.from_dict(shown, orient="index", columns=list(frame.columns))


def text_table(cells: dict[str, dict[str, str]], index_title: str = "") -> str:
    """A plain-text table (rows x columns of strings), right-aligned; no pandas needed."""
    columns = list(dict.fromkeys(c for row in cells.values() for c in row))
    header = [index_title] + columns
    body = [[name] + [row.get(c, "") for c in columns] for name, row in cells.items()]
    widths = [max(len(str(r[i])) for r in [header] + body) for i in range(len(header))]
    fmt = lambda r: "  ".join(str(v).ljust(widths[0]) if i == 0 else str(v).rjust(widths[i])  # noqa: E731
                              for i, v in enumerate(r))
    return "\n".join(fmt(r) for r in [header] + body)
