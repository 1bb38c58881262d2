"""From weights to evidence: base_model[mixture] -> evaluation[mixture] -> mixture_comparison."""

import json
from dataclasses import asdict, dataclass

import dagster as dg
import numpy as np
import pandas as pd

from chameleon_assets import paths
from chameleon_assets.core.artifacts import atomic_dir, atomic_file, read_json, remove_tree, write_json
from chameleon_assets.core.evaluate import perplexity, run_lm_eval, validation_windows
from chameleon_assets.core.model import build_model, count_parameters, load_model, model_identity, resolve_device
from chameleon_assets.core.tokenizer import load_tokenizer
from chameleon_assets.core.train import WeightedDomainSampler, train_causal_lm
from chameleon_assets.defs import plots
from chameleon_assets.defs.partitions import mixture_partitions
from chameleon_assets.defs.resources import ChameleonConfig
from chameleon_assets.defs.tracking import MLflowTracking
from chameleon_assets.defs.weights import ALL_DOMAINS, MixtureTable, by_domain


@dataclass(frozen=True)
class BaseModel:
    mixture: str
    path: str
    identity: str
    weights: dict
    tokens: int
    steps: int
    final_loss: float
    tokens_per_s: float
    epochs: dict
    mlflow_run_id: str


@dg.asset(
    partitions_def=mixture_partitions,
    ins={"domain_corpus": dg.AssetIn(partition_mapping=ALL_DOMAINS)},
    group_name="models",
    code_version="base-v1",
    kinds={"pytorch", "mlflow"},
)
def base_model(
    context: dg.AssetExecutionContext,
    chameleon: ChameleonConfig,
    mlflow_tracking: MLflowTracking,
    mixture_weights: MixtureTable,
    domain_corpus,
) -> BaseModel:
    """A causal LM trained from scratch on one mixture. Every partition uses the same
    model config, seed, token budget and schedule; only the domain sampling differs:
    each training sequence's domain is drawn with probability equal to the mixture's
    weight. Resumes from its last checkpoint if a previous run was interrupted.
    """
    mixture = context.partition_key
    if mixture not in mixture_weights.weights:
        reason = mixture_weights.skipped.get(mixture, "not in conf/mixtures.yaml")
        raise ValueError(f"mixture '{mixture}' has no weights: {reason}")
    profile = chameleon.profile()
    cfg = profile.base_model
    weights = dict(zip(mixture_weights.domains, mixture_weights.weights[mixture]))
    shards = by_domain(domain_corpus)
    tok = load_tokenizer(profile.tokenizer)
    device = resolve_device(profile.device)
    model = build_model(cfg.model, len(tok), tok.eos_token_id, profile.seed)
    sampler = WeightedDomainSampler(
        {d: shards[d].train() for d in weights}, weights, cfg.model.context_length, profile.seed
    )
    out = paths.base_model_dir(mixture)
    result = train_causal_lm(
        model, sampler, cfg.train, device,
        checkpoint_dir=out.parent / f"{mixture}.checkpoint",
        run_key=json.dumps(weights, sort_keys=True) + repr(cfg.model) + str(profile.seed),
        desc=f"base[{mixture}]",
    )
    if result.resumed_from:
        context.log.info(f"resumed from checkpoint at step {result.resumed_from}")
    data_versions = {d: shards[d].data_version for d in weights}
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        write_json(tmp / "training.json", {
            "mixture": mixture, "weights": weights, "losses": result.losses, "tokens": result.tokens,
            "tokens_per_s": result.tokens_per_s, "epochs": result.epochs, "draws": result.draws,
            "data_versions": data_versions,
        })
        (tmp / "README.md").write_text(_model_card(mixture, weights, result, cfg, count_parameters(model)))
    remove_tree(out.parent / f"{mixture}.checkpoint")
    identity = model_identity(out)

    tags = {
        "dagster_run_id": context.run_id,
        "asset_partition": mixture,
        "proxy_identity": mixture_weights.proxy_identity,
        "model_identity": identity,
        **{f"data_version.{d}": v for d, v in data_versions.items()},
    }
    with mlflow_tracking.start_run(run_name=f"base_model[{mixture}]", tags=tags) as run:
        import mlflow

        mlflow.log_params({
            "mixture": mixture, "seed": profile.seed, "token_budget": cfg.train.tokens, "profile": profile.name,
            **{f"weight.{d}": round(w, 6) for d, w in weights.items()},
            **{f"model.{k}": v for k, v in asdict(cfg.model).items()},
            **{f"train.{k}": v for k, v in asdict(cfg.train).items()},
        })
        mlflow.log_metrics({"tokens_per_s": result.tokens_per_s, "final_loss": float(np.mean(result.losses[-5:]))})
        mlflow.log_artifact(str(paths.weights_dir() / "weights.csv"))
        mlflow.log_artifact(str(paths.weights_dir() / "affinity_heatmap.png"))
        mlflow.log_artifact(str(out / "README.md"))
        run_id = run.info.run_id
    mlflow_tracking.log_series(run_id, "train_loss", result.losses)

    b64 = plots.line_plot({mixture: result.losses}, "step", "train loss", f"base_model[{mixture}]",
                          out.parent / f"{mixture}_loss.png")
    context.add_output_metadata({
        "weights": dg.MetadataValue.json({d: round(w, 4) for d, w in weights.items()}),
        "epochs_per_domain": dg.MetadataValue.json({d: round(e, 3) for d, e in result.epochs.items()}),
        "tokens": result.tokens,
        "steps": result.steps,
        "final_loss": float(np.mean(result.losses[-5:])),
        "tokens_per_s": round(result.tokens_per_s),
        "parameters": count_parameters(model),
        "loss_curve": dg.MetadataValue.md(plots.markdown_image(b64, "training loss")),
        "mlflow_run_id": run_id,
        "path": dg.MetadataValue.path(str(out)),
    })
    return BaseModel(mixture, str(out), identity, weights, result.tokens, result.steps,
                     float(np.mean(result.losses[-5:])), result.tokens_per_s, result.epochs, run_id)


def _model_card(mixture: str, weights: dict, result, cfg, params: int) -> str:
    rows = "\n".join(f"| {d} | {w:.4f} | {result.epochs.get(d, 0.0):.3f} |" for d, w in weights.items())
    return (
        f"# base_model[{mixture}]\n\nA {params:,}-parameter {cfg.model.arch} causal LM trained from scratch "
        f"on the `{mixture}` mixture ({result.tokens:,} tokens, {result.steps} steps) by chameleon-assets.\n\n"
        f"| domain | weight | epochs |\n|---|---|---|\n{rows}\n\n"
        f"Load with `AutoModelForCausalLM.from_pretrained(<this folder>)`; evaluate with `lm_eval --model hf "
        f"--model_args pretrained=<this folder>`.\n"
    )


@dg.asset(
    partitions_def=mixture_partitions,
    ins={"domain_corpus": dg.AssetIn(partition_mapping=ALL_DOMAINS)},
    group_name="models",
    code_version="eval-v1",
    kinds={"pytorch", "mlflow"},
)
def evaluation(
    context: dg.AssetExecutionContext,
    chameleon: ChameleonConfig,
    mlflow_tracking: MLflowTracking,
    base_model: BaseModel,
    domain_corpus,
) -> dict:
    """Per-domain held-out perplexity (the same validation windows for every mixture),
    their average and bits per byte, plus few-shot accuracy on lm-eval tasks
    (offline local tasks by default). Logged to the model's MLflow run.
    """
    profile = chameleon.profile()
    cfg = profile.evaluation
    device = resolve_device(profile.device)
    tok = load_tokenizer(profile.tokenizer)
    model = load_model(base_model.path, device)
    ctx = profile.base_model.model.context_length
    shards = by_domain(domain_corpus)
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
    result = {
        "mixture": base_model.mixture,
        "perplexity": {d: v["perplexity"] for d, v in ppl.items()},
        "bits_per_byte": {d: v.get("bits_per_byte", float("nan")) for d, v in ppl.items()},
        "perplexity_avg": float(np.mean([v["perplexity"] for v in ppl.values()])),
        "bits_per_byte_avg": float(np.mean([v.get("bits_per_byte", np.nan) for v in ppl.values()])),
        "tasks": tasks,
        "num_fewshot": cfg.num_fewshot,
        "limit": cfg.limit,
        "model_identity": base_model.identity,
        "mlflow_run_id": base_model.mlflow_run_id,
    }
    write_json(paths.evaluation_dir(base_model.mixture) / "evaluation.json", result)
    metrics = {
        **{f"ppl.{d}": v for d, v in result["perplexity"].items()},
        **{f"bpb.{d}": v for d, v in result["bits_per_byte"].items()},
        "ppl_avg": result["perplexity_avg"],
        "bpb_avg": result["bits_per_byte_avg"],
        **{f"acc.{t}": m["acc"] for t, m in tasks.items() if "acc" in m},
        **{f"acc_norm.{t}": m["acc_norm"] for t, m in tasks.items() if "acc_norm" in m},
    }
    with mlflow_tracking.start_run(run_id=base_model.mlflow_run_id):
        import mlflow

        mlflow.log_metrics(metrics)
        mlflow.set_tag("evaluated_by_dagster_run", context.run_id)
    context.add_output_metadata({
        "perplexity_avg": result["perplexity_avg"],
        "bits_per_byte_avg": result["bits_per_byte_avg"],
        "perplexity": dg.MetadataValue.md(pd.Series(result["perplexity"], name="ppl").round(2).to_frame().to_markdown()),
        "tasks": dg.MetadataValue.json(tasks),
    })
    return result


@dg.asset(
    deps=[evaluation],
    group_name="models",
    code_version="comparison-v1",
    kinds={"pandas", "mlflow"},
)
def mixture_comparison(
    context: dg.AssetExecutionContext, mlflow_tracking: MLflowTracking, mixture_weights: MixtureTable
) -> pd.DataFrame:
    """One table across every evaluated mixture: its domain weights, per-domain held-out
    perplexity, the average perplexity and bits per byte, and each task's accuracy.
    The best value per column is marked with `*` (lowest perplexity, highest accuracy).
    """
    frame = comparison_table(mixture_weights)
    if frame.empty:
        raise ValueError("no evaluation found: materialise evaluation for at least one mixture first")
    out = paths.comparison_dir()
    with atomic_file(out / "mixture_comparison.csv") as fh:
        frame.to_csv(fh, float_format="%.6g")
    md = mark_best(frame).to_markdown()
    b64 = plots.grouped_bars(
        {"avg perplexity": frame["ppl_avg"].tolist()}, list(frame.index), "average held-out perplexity",
        out / "perplexity.png",
    )
    with mlflow_tracking.start_run(run_name="mixture_comparison", tags={"dagster_run_id": context.run_id,
                                                                         "kind": "comparison"}):
        import mlflow

        mlflow.log_artifact(str(out / "mixture_comparison.csv"))
        mlflow.log_artifact(str(out / "perplexity.png"))
        mlflow.log_text(md, "mixture_comparison.md")
    context.add_output_metadata({
        "table": dg.MetadataValue.md(md),
        "plot": dg.MetadataValue.md(plots.markdown_image(b64, "average perplexity")),
        "mixtures": len(frame),
        "csv": dg.MetadataValue.path(str(out / "mixture_comparison.csv")),
    })
    return frame


def comparison_table(mixture_weights: MixtureTable) -> pd.DataFrame:
    """Rows: evaluated mixtures; columns: w.<domain>, ppl.<domain>, ppl_avg, bpb_avg, acc.<task>."""
    rows = {}
    for name in mixture_weights.weights:
        f = paths.evaluation_dir(name) / "evaluation.json"
        if not f.exists():
            continue
        ev = read_json(f)
        row = {f"w.{d}": w for d, w in zip(mixture_weights.domains, mixture_weights.weights[name])}
        row.update({f"ppl.{d}": v for d, v in ev["perplexity"].items()})
        row["ppl_avg"] = ev["perplexity_avg"]
        row["bpb_avg"] = ev["bits_per_byte_avg"]
        row.update({f"acc.{t}": m.get("acc", np.nan) for t, m in ev["tasks"].items()})
        rows[name] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def mark_best(frame: pd.DataFrame) -> pd.DataFrame:
    """Format numbers and star the best per column (min for ppl/bpb, max for acc)."""
    shown = frame.copy().astype(object)
    for col in frame.columns:
        values = frame[col].astype(float)
        if col.startswith("w.") or values.isna().all():
            shown[col] = values.map(lambda v: f"{v:.3f}")
            continue
        best = values.idxmin() if col.startswith(("ppl", "bpb")) else values.idxmax()
        shown[col] = [f"{v:.3f}" + ("*" if idx == best and len(frame) > 1 else "") for idx, v in values.items()]
    return shown
