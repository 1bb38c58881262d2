"""The body both model stages share: pretraining (``base_model``) and finetuning
(``finetuned_model``) each train a model on one mixture with one seed, score it on
held-out windows and compare the mixtures. What differs is said by the stage:

* what the model starts from (fresh weights of the profile's model, or a start model),
  which domains and configuration section it reads, and a sentence for its model card:
  a ``StageModel``; ``train_stage_model`` does the rest (train through ``launch``, the
  MLflow parent and run with params, metrics, tags and artefacts, the saved folder with
  ``training.json``, model card and loss plot) and ``model_output`` the metadata;
* which held-out windows it scores (``score_windows`` scores them, ``store_evaluation``
  writes and logs the result);
* which recorded facts make an evaluation current: the stage's checks, run in order by
  ``current_evaluations``; ``comparison_output`` stores, logs and describes the table.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import dagster as dg

from chameleon_assets.core.artifacts import atomic_dir, atomic_file, remove_tree, sha256_text, write_json
from chameleon_assets.core.online import heldout_cost
from chameleon_assets.defs import launch, plots
from chameleon_assets.defs.io import stored_value
from chameleon_assets.defs.partitions import split_model_key
from chameleon_assets.defs.tracking import MLflowTracking, log_domain_inputs
from chameleon_assets.defs.values import ComparisonTable, MixtureTable

if TYPE_CHECKING:
    from chameleon_assets.core.corpus import CorpusShards


# --- Training ----------------------------------------------------------------------------

ONLINE_PLOT = "weight_trajectory.png"  # in a model's folder when its mixture changed during training

@dataclass
class StageModel:
    """What a stage says about the one model it is about to train."""

    asset: str  # "base_model" or "finetuned_model": the MLflow run's name and the card's title
    stage: str  # "pretrain" or "finetune"
    mixture: str
    seed: int
    weights: dict[str, float]
    shards: dict  # domain -> CorpusShards of exactly the versions the weights were computed over
    version: str  # the model's data version, also the resume key of its checkpoints
    family: str  # what the mixture's seeds share: their MLflow parent run is keyed by it
    table: MixtureTable  # the weights table the mixture comes from
    train: Any  # core.config.TrainConfig
    context_length: int
    out: Path
    checkpoints: Path
    description: str  # the model card's account of what was trained, after "A <n>-parameter "
    parent_name: str = ""  # the parent run's name (default: the mixture)
    parent_tags: dict = field(default_factory=dict)
    tags: dict = field(default_factory=dict)  # the model run's, beside the shared ones
    params: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    artifacts: list = field(default_factory=list)  # files logged beside the weights table
    record: dict = field(default_factory=dict)  # training.json's, beside the shared fields
    card_footer: str = "Load with `AutoModelForCausalLM.from_pretrained(<this folder>)`."
    plot_title: str = ""
    # A mixture that changes during training ({"method", "params"}, defs.launch.TrainJob.online):
    # its trajectory, the cost of its held-out passes and their plot go with the model.
    online: dict | None = None


@dataclass
class Trained:
    """What ``train_stage_model`` produced: the loop's result and where it was logged."""

    result: Any  # core.train.TrainResult
    final_loss: float  # the mean of the last five steps' losses
    corpus_versions: dict[str, str]
    mlflow_run_id: str
    mlflow_parent_run_id: str


def mixture_of(table: MixtureTable, mixture: str, where: str) -> tuple[dict[str, float], dict[str, str]]:
    """``mixture``'s weights in ``table`` and the corpus versions they were computed over, or
    a ValueError with the table's reason (``where``: where a missing mixture should be listed)."""
    if mixture not in table.weights:
        raise ValueError(f"mixture '{mixture}' has no weights: {table.skipped.get(mixture, f'not in {where}')}")
    weights = dict(zip(table.domains, table.weights[mixture]))
    return weights, {d: table.corpus_versions[d] for d in weights}


def train_stage_model(context: dg.AssetExecutionContext, profile, tracking: MLflowTracking, spec: StageModel,  # noqa: ANN001
                      model, tok) -> Trained:  # noqa: ANN001 (a transformers model and tokenizer)
    """Train ``model`` in place on ``spec``'s mixture, log it to MLflow and save it to ``spec.out``.

    The checkpoint's resume key is the model's data version: it names the weights, every
    domain's data version (so the tokenizer too), the configuration, the seed and the
    start, so a checkpoint of other inputs is never resumed.
    """
    import numpy as np

    from chameleon_assets.core.model import count_parameters

    job = launch.TrainJob({d: spec.shards[d] for d in spec.weights}, spec.weights, spec.context_length, spec.seed,
                          spec.train, spec.checkpoints, spec.version, f"{spec.stage}[{spec.mixture}|{spec.seed}]",
                          online=spec.online)
    result = launch.train(context, profile, model, job)
    if result.resumed_from:
        context.log.info(f"resumed from checkpoint at step {result.resumed_from}")
    corpus_versions = {d: spec.shards[d].data_version for d in spec.weights}
    final_loss = float(np.mean(result.losses[-5:]))
    online = result.extra.get("mixing")
    online_cost = heldout_cost(online, result.extra["flops_per_token"]) if online else None
    shared = {"mixture": spec.mixture, "stage": spec.stage, "mixture_version": spec.family,
              "weights_version": spec.table.data_version, "weights_source": spec.table.sources.get(spec.mixture, "")}
    parent = tracking.parent_run(spec.parent_name or spec.mixture, f"{spec.stage}-{spec.family}",
                                 tags={"kind": "mixture", **spec.parent_tags, **shared})
    tags = {"dagster_run_id": context.run_id, "asset_partition": context.partition_key, "seed": str(spec.seed),
            "model_version": spec.version, **spec.tags, **shared,
            **{f"data_version.{d}": v for d, v in corpus_versions.items()}}
    name = f"{spec.asset}[{spec.mixture}|{spec.seed}]"
    with tracking.start_run(run_name=name, tags=tags, parent_run_id=parent) as run:
        import mlflow

        mlflow.log_params({
            "mixture": spec.mixture, "seed": spec.seed, "token_budget": spec.train.tokens, "profile": profile.name,
            **spec.params, **{f"weight.{d}": round(w, 6) for d, w in spec.weights.items()},
            **{f"train.{k}": v for k, v in asdict(spec.train).items()},
        })
        mlflow.log_metrics({"tokens_per_s": result.tokens_per_s, "final_loss": final_loss, **spec.metrics,
                            **launch.mlflow_metrics(result),
                            **({"online_cost_flops": online_cost.flops, "online_cost_wall_s": online_cost.wall_s,
                                "online_heldout_passes": float(online["heldout_passes"])} if online else {})})
        mlflow.set_tags(launch.mlflow_tags(result))
        log_domain_inputs([spec.shards[d] for d in spec.weights], "training")
        for path in [f"{spec.table.path}/weights.csv", *spec.artifacts]:
            mlflow.log_artifact(path)
        run_id = run.info.run_id
    tracking.log_series(run_id, "train_loss", result.losses)
    if online and "trajectory" in online:
        tracking.log_trajectory(run_id, "online_weight", online["names"], online["update_steps"],
                                online["trajectory"])
    with atomic_dir(spec.out) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        write_json(tmp / "training.json", {
            "mixture": spec.mixture, "seed": spec.seed, "weights": spec.weights, **spec.record,
            "losses": result.losses, "tokens": result.tokens, "tokens_per_s": result.tokens_per_s,
            "epochs": result.epochs, "draws": result.draws, "data_versions": corpus_versions,
            "mlflow_run_id": run_id, "mlflow_parent_run_id": parent, "data_version": spec.version,
            **({"online": {**online, "settings": spec.online, "cost": online_cost.as_dict()}} if online else {}),
        })
        rows = "\n".join(f"| {d} | {w:.4f} | {result.epochs.get(d, 0.0):.3f} |" for d, w in spec.weights.items())
        (tmp / "README.md").write_text(
            f"# {name}\n\nA {count_parameters(model):,}-parameter {spec.description} ({result.tokens:,} tokens, "
            f"{result.steps} steps) by chameleon-assets. Data version `{spec.version}`.\n\n"
            f"| domain | weight | epochs |\n|---|---|---|\n{rows}\n\n{spec.card_footer}\n")
        plots.line_plot({f"{spec.mixture}, seed {spec.seed}": result.losses}, "step", "train loss",
                        spec.plot_title or name, tmp / "loss.png")
        if online and "trajectory" in online:
            plots.weight_trajectory(online["update_steps"], online["trajectory"], online["names"], result.steps,
                                    f"{name}: weights during training", tmp / ONLINE_PLOT)
    with tracking.start_run(run_id=run_id):
        import mlflow

        mlflow.log_artifact(str(spec.out / "README.md"))
    remove_tree(spec.checkpoints)
    return Trained(result, final_loss, corpus_versions, run_id, parent)


def model_output(model, weights: dict[str, float], reused: bool, loss_caption: str,  # noqa: ANN001
                 extra: dict | None = None) -> dg.Output:
    """A trained model's output: its data version and what a person checks first
    (``extra`` first: what the stage adds, e.g. the start model; then, for a mixture that
    changed during training, its final weights, the cost of its held-out passes and the
    plot of its trajectory, read from the model's folder)."""
    from chameleon_assets.core.artifacts import read_json
    from chameleon_assets.core.epochs import MAX_EPOCHS, over_repeated

    out = Path(model.path)
    online = read_json(out / "training.json").get("online") if (out / ONLINE_PLOT).exists() else None
    if online:
        extra = {**(extra or {}),
                 "final_weights": dg.MetadataValue.json(
                     {d: round(w, 4) for d, w in zip(online["names"], online["trajectory"][-1])}),
                 "online_rounds": online["rounds"],
                 "online_cost": dg.MetadataValue.json(online["cost"]),
                 "weight_trajectory": dg.MetadataValue.md(plots.markdown_image(
                     plots.file_b64(out / ONLINE_PLOT), "domain weights during training"))}
    repeated = over_repeated(model.epochs)
    if repeated:  # shown first: the budget outgrew the corpus (core.epochs)
        extra = {f"repeated_over_{MAX_EPOCHS:g}_epochs": dg.MetadataValue.json(
            {d: round(e, 2) for d, e in repeated.items()}), **(extra or {})}
    return dg.Output(model, data_version=dg.DataVersion(model.data_version), metadata={
        **(extra or {}),
        "weights": dg.MetadataValue.json({d: round(w, 4) for d, w in weights.items()}),
        "seed": model.seed,
        "epochs_per_domain": dg.MetadataValue.json({d: round(e, 3) for d, e in model.epochs.items()}),
        "tokens": model.tokens,
        "steps": model.steps,
        "final_loss": model.final_loss,
        "tokens_per_s": round(model.tokens_per_s),
        "mlflow_run_id": model.mlflow_run_id,
        "mlflow_parent_run_id": model.mlflow_parent_run_id,
        "reused_existing_version": reused,
        "resumed_from_step": model.resumed_from_step,
        "loss_curve": dg.MetadataValue.md(plots.markdown_image(plots.file_b64(out / "loss.png"), loss_caption)),
        "path": dg.MetadataValue.path(model.path),
    })


# --- Evaluation --------------------------------------------------------------------------

def held_out_windows(domain: str, shards, count: int, length: int) -> list:  # noqa: ANN001 (CorpusShards)
    """The same ``count`` validation windows of ``length`` tokens for every model scored on
    ``domain``; a clear error when the domain has no held-out tokens."""
    from chameleon_assets.core.evaluate import validation_windows

    if shards.val_tokens < 2:
        raise ValueError(f"domain '{domain}': no held-out tokens ({shards.val_documents} validation documents); "
                         "give it more documents or raise val_fraction in the profile")
    return validation_windows(shards.val(), count, length)


def score_windows(model, windows: dict, batch_size: int, device, tok) -> dict:  # noqa: ANN001
    """``core.evaluate.perplexity`` (NLL, perplexity, bits per byte) of ``model`` on each
    entry of ``windows`` (any key -> that key's windows)."""
    from chameleon_assets.core.evaluate import perplexity

    return {key: perplexity(model, w, batch_size, device, decode=tok.decode) for key, w in windows.items()}


def store_evaluation(context: dg.AssetExecutionContext, tracking: MLflowTracking, result, mlflow_run_id: str,  # noqa: ANN001
                     metrics: dict, scored: list[CorpusShards]) -> None:
    """Write an evaluation's ``evaluation.json`` (atomically, to ``result.path``) and log its
    metrics on its model's MLflow run, tagged with the evaluating Dagster run and version,
    with the held-out splits of ``scored`` (the domains' ``CorpusShards``) as its evaluation inputs."""
    with atomic_dir(Path(result.path)) as tmp:
        write_json(tmp / "evaluation.json", {**result.__dict__, "mlflow_run_id": mlflow_run_id})
    with tracking.start_run(run_id=mlflow_run_id):
        import mlflow

        mlflow.log_metrics(metrics)
        mlflow.set_tag("evaluated_by_dagster_run", context.run_id)
        mlflow.set_tag("evaluation_version", result.data_version)
        log_domain_inputs(scored, "evaluation")


def score_metrics(result) -> dict[str, float]:  # noqa: ANN001 (an evaluation value)
    """Per-domain bits per byte, perplexity and NLL of the scored model, as MLflow metrics."""
    return {**{f"bpb.{d}": v for d, v in result.bits_per_byte.items()},
            **{f"ppl.{d}": v for d, v in result.perplexity.items()},
            **{f"nll.{d}": v for d, v in result.nll.items()}}


# --- Comparison --------------------------------------------------------------------------

# A check on one (evaluation, its model, the mixture's current weights): the reason to leave
# the evaluation out, or None when it passes.
Check = Callable[[Any, Any, dict[str, float]], "str | None"]


def current_evaluations(table: MixtureTable, models: dict, evaluations: dict, checks: list[Check],
                        versions: Callable[[Any, Any], dict], noun: str) -> tuple[dict, dict, dict]:
    """The current evaluations by mixture and seed, what each included one was computed from
    (``versions(model, evaluation)``), and why the others were left out.

    Keys of ``models`` and ``evaluations`` are ``<mixture>|<seed>`` partition keys. An
    evaluation counts only if its mixture has current weights, it is of the latest model
    (``noun`` in the reasons) of its partition, the model was trained on exactly those
    weights, every stage check passes (the first failing reason is given), and its scores
    are finite (a diverged model is left out with the reason, never allowed to fail the table).
    """
    import math

    current: dict[str, dict[int, Any]] = {}
    included, excluded = {}, {}
    for key, ev in sorted(evaluations.items()):
        name, seed = split_model_key(key)
        model = models.get(key)
        weights = dict(zip(table.domains, table.weights.get(name, [])))
        if name not in table.weights:
            excluded[key] = "no current weights"
            continue
        reason = None
        if model is None or ev.model_data_version != model.data_version:
            reason = f"evaluation of an older {noun}"
        elif set(model.weights) != set(weights) or any(abs(model.weights[d] - weights[d]) > 1e-12 for d in weights):
            reason = f"{noun} trained on other weights or domains (retrain with `chameleon run`)"
        for check in checks:
            reason = reason or check(ev, model, weights)
        scores = [*ev.bits_per_byte.values(), *ev.nll.values(), *getattr(ev, "pretrain_bits_per_byte", {}).values()]
        if reason is None and not all(math.isfinite(v) for v in scores):
            reason = "non-finite bits per byte or NLL (the model diverged?)"
        if reason is not None:
            excluded[key] = reason
        else:
            current.setdefault(name, {})[seed] = ev
            included[key] = versions(model, ev)
    order = [m for m in table.weights if m in current]
    return ({m: dict(sorted(current[m].items())) for m in order},
            {k: included[k] for m in order for k in sorted(included) if split_model_key(k)[0] == m}, excluded)


def comparison_output(context, tracking: MLflowTracking, asset: str, stage: str, code_version: str,  # noqa: ANN001
                      table, summary_cells: dict, weights_version: str, models: dict, included: dict,
                      excluded: dict) -> dg.Output[ComparisonTable]:
    """Store, log and describe one stage's comparison (``core.compare.Comparison``): its version
    (hash of code, weights and the included and excluded evaluations), ``<asset>.csv``,
    ``<asset>.md``, the per-domain plot and ``provenance.json`` in a folder of that version,
    an MLflow run with those files, the aggregates on each mixture's parent run, and the
    step's metadata. A version computed before is reused."""
    from chameleon_assets import paths
    from chameleon_assets.core import compare
    from chameleon_assets.core.artifacts import point_current, prune_versions

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
        _log_aggregates(context, tracking, table, models, included)
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


def _log_aggregates(context, tracking: MLflowTracking, table, models: dict, included: dict) -> None:  # noqa: ANN001
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
