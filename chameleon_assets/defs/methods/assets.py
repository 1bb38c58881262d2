"""The paper's competitors, computed on the user's own domains beside CHAMELEON:

    domain_corpus[*] -> doremi_weights     a uniform reference, then a Group-DRO proxy (core.methods.doremi)
    domain_corpus[*] -> doge_weights       a proxy reweighted by gradient alignment (core.methods.doge)
    domain_corpus[*] -> regmix_run[run]    RegMix's swarm: small models on Dirichlet mixtures, one partition each
    regmix_run[*]    -> regmix_weights     regression mixture -> validation loss, and its minimiser
    regmix_run[*]    -> olmix_weights      Olmix's log-linear law per domain on the same runs, KL-penalised minimiser
    domain_corpus[*] -> olmix_reuse_run[run] -> olmix_reuse_weights
                                           after domains change: the last olmix proposal's ratios frozen
                                           among the unaffected domains, a small swarm over the affected

    mixture_weights (closed form) + every method's weights -> mixture_table -> base_model[m|s]

Unlike CHAMELEON, which embeds each domain once with a fixed proxy, these read every
domain's tokens and train their own proxies, so their data dependencies are all domains:
adding, editing or removing a domain stales them (they must rerun), while CHAMELEON needs
only the new domain's embedding. Like models, they run on request: `chameleon run` when
their mixture is one it trains (the profile's `base_model.mixtures` or `--mixtures`), or
the UI's Materialize button. Each records what it cost (FLOPs and wall time) and its
weight trajectory, in its metadata and in MLflow.
"""

from typing import Callable

import dagster as dg

from chameleon_assets import paths
from chameleon_assets.core.artifacts import atomic_dir, point_current, prune_versions, sha256_text, write_json
from chameleon_assets.defs import launch, plots, policy
from chameleon_assets.defs.io import one_writer, stored_value, versions_text
from chameleon_assets.defs.mixing.weights import cost_markdown, cost_metrics
from chameleon_assets.defs.partitions import olmix_reuse_run_partitions, regmix_run_partitions
from chameleon_assets.defs.resources import ChameleonConfig
from chameleon_assets.defs.sources import config_deps, domain_registry
from chameleon_assets.defs.tracking import MLflowTracking
from chameleon_assets.defs.values import MethodWeights, MixtureTable, SwarmRun

METHODS_CODE_VERSION = "methods-v1"
REGMIX_RUN_CODE_VERSION = "regmix-run-v1"
OLMIX_REUSE_RUN_CODE_VERSION = "olmix-reuse-run-v1"
TABLE_CODE_VERSION = "mixture-table-v1"
# Methods whose work is split into several assets (RegMix: a partitioned swarm, then the
# fit; Olmix: a fit on RegMix's swarm, and reuse's own swarm and fit): those that declare
# settings only their fit reads (``fit_fields``) or another's swarm (``swarm``, core.methods).
# Their assets are below; every other method that trains gets ``_method_weights_asset``.
SWARM_METHODS = ("regmix", "olmix")
ALL_CORPORA = dg.AssetIn("domain_corpus", partition_mapping=dg.AllPartitionMapping(), metadata={"as_dict": True})


def _domain_set(corpus: dict, profile, with_tokens: bool = True):  # noqa: ANN001, ANN202
    """The registered domains as a ``core.methods.DomainSet`` (sorted names, train and
    validation tokens), and ``{domain: corpus version}``."""
    import numpy as np

    from chameleon_assets.core.methods import DomainSet
    from chameleon_assets.core.tokenizer import tokenizer_fingerprint

    if not corpus:
        raise ValueError("no domain is registered: add one to conf/domains.yaml and run `chameleon sync`")
    names = sorted(corpus)
    fingerprint = tokenizer_fingerprint(profile.tokenizer)
    for d in names:
        corpus[d].require_tokenizer(fingerprint, profile.tokenizer)
    tokens = np.array([corpus[d].train_tokens for d in names], dtype=np.float64)
    domains = DomainSet(names, tokens, train={d: corpus[d].train() for d in names} if with_tokens else None,
                        val={d: corpus[d].val() for d in names} if with_tokens else None)
    return domains, {d: corpus[d].data_version for d in names}


def _recipe(profile):  # noqa: ANN001, ANN202
    """The proxy-training hook: the profile's proxy model and recipe, its tokenizer, seed and device."""
    from chameleon_assets.core.methods import ProxyRecipe
    from chameleon_assets.core.model import resolve_device
    from chameleon_assets.core.tokenizer import load_tokenizer

    tok = load_tokenizer(profile.tokenizer)
    return ProxyRecipe(profile.proxy.model, profile.proxy.train, len(tok), tok.eos_token_id, profile.seed,
                       str(resolve_device(profile.device)), progress=True)


def _method_weights_asset(method: str) -> dg.AssetsDefinition:
    """``<method>_weights``: one computed method's weights over every registered domain."""
    from chameleon_assets.core.methods import get

    doc = (get(method).__doc__ or method).strip()

    @dg.asset(
        name=f"{method}_weights",
        ins={"corpus": ALL_CORPORA},
        deps=[*config_deps(f"{method}_weights"), domain_registry],
        group_name="methods",
        code_version=METHODS_CODE_VERSION,
        kinds={"pytorch", "mlflow"},
        pool=launch.GPU_POOL,
        description=f"{doc}\n\nComputed on every registered domain's tokens with proxies of the profile's proxy size "
                    f"and budget (settings: `methods.{method}`). Runs on request; adding, editing or removing a "
                    "domain stales it. Metadata: weights, cost (FLOPs, wall time), the weight trajectory.",
    )
    @one_writer
    def _weights(context: dg.AssetExecutionContext, chameleon: ChameleonConfig, mlflow_tracking: MLflowTracking,
                 corpus: dict) -> dg.Output[MethodWeights]:
        from chameleon_assets.core import methods
        from chameleon_assets.settings import method_params

        profile = chameleon.profile()
        domains, versions = _domain_set(corpus, profile)
        version = sha256_text(METHODS_CODE_VERSION, method, chameleon.section_version(method),
                              versions_text(versions))[:24]
        value = stored_value(f"{method}_weights", None, version)
        if value is None:
            result = methods.run(method, domains, method_params(profile, method), _recipe(profile))
            value = store_method_weights(context, mlflow_tracking, method, version, domains, versions, result)
        return method_output(value)

    return _weights


def store_method_weights(context, tracking: MLflowTracking, method: str, version: str, domains,  # noqa: ANN001
                         versions: dict, result) -> MethodWeights:
    """Write a method's weights, cost and trajectory (JSON, CSV, plot) and its MLflow run."""
    import numpy as np

    out = paths.method_dir(method, version)
    trajectory = np.asarray(result.trajectory) if result.trajectory is not None else None
    value = MethodWeights(
        data_version=version, method=method, path=str(out), domains=list(domains.names),
        weights=[float(x) for x in result.weights], cost=result.cost.as_dict(), corpus_versions=dict(versions),
        train_tokens={d: int(t) for d, t in zip(domains.names, domains.train_tokens)},
        details={**result.details, **({"notes": result.notes} if result.notes else {})},
        trajectory_steps=0 if trajectory is None else int(len(trajectory)),
    )
    with atomic_dir(out) as tmp:
        write_json(tmp / "weights.json", {**value.__dict__, "path": str(out)})
        if trajectory is not None and len(trajectory):
            np.savetxt(tmp / "trajectory.csv", trajectory, delimiter=",", header=",".join(domains.names), comments="")
            plots.line_plot({d: trajectory[:, i].tolist() for i, d in enumerate(domains.names)}, "step", "weight",
                            f"{method}: domain weights over training", tmp / "trajectory.png")
        plots.grouped_bars({method: value.weights}, domains.names, f"{method} weights", tmp / "weights_bars.png")
    value.mlflow_run_id = _log_method(tracking, value, trajectory, context.run_id)
    point_current(out)
    prune_versions(out.parent)
    return value


def _log_method(tracking: MLflowTracking, value: MethodWeights, trajectory, dagster_run_id: str) -> str:  # noqa: ANN001
    """One MLflow run per computation: weights as params, cost and details as metrics, the
    trajectory as one metric per domain over steps (``weight.<domain>``)."""
    import mlflow

    tags = {"kind": "weights", "stage": "pretrain", "method": value.method, "dagster_run_id": dagster_run_id,
            "weights_version": value.data_version, "domains": ",".join(value.domains),
            **{f"data_version.{d}": v for d, v in value.corpus_versions.items()}}
    with tracking.start_run(run_name=f"{value.method}_weights[{len(value.domains)} domains]", tags=tags) as run:
        mlflow.log_params({f"{value.method}.{d}": round(w, 6) for d, w in zip(value.domains, value.weights)})
        mlflow.log_metrics({**cost_metrics({value.method: value.cost}),
                            **{f"cost_flops.{value.method}.{k}": v for k, v in value.cost.get("parts", {}).items()},
                            **{k: float(v) for k, v in value.details.items() if isinstance(v, (int, float))}})
        for name in ("weights.json", "trajectory.png", "weights_bars.png"):
            if (paths.method_dir(value.method, value.data_version) / name).is_file():
                mlflow.log_artifact(str(paths.method_dir(value.method, value.data_version) / name))
        run_id = run.info.run_id
    if trajectory is not None and len(trajectory):
        stride = max(1, len(trajectory) // 1000)  # at most ~1,000 points per domain
        for i, d in enumerate(value.domains):
            tracking.log_series(run_id, f"weight.{d}", trajectory[::stride, i].tolist())
    return run_id


def method_output(value: MethodWeights) -> dg.Output[MethodWeights]:
    out = paths.method_dir(value.method, value.data_version)
    rows = "\n".join(f"| {d} | {w:.4f} |" for d, w in zip(value.domains, value.weights))
    meta = {
        "weights": dg.MetadataValue.md(f"| domain | {value.method} |\n|---|---|\n{rows}"),
        "cost": dg.MetadataValue.md(cost_markdown({value.method: value.cost})),
        "cost_flops": float(value.cost["flops"]),
        "cost_wall_s": float(value.cost["wall_s"]),
        "details": dg.MetadataValue.json({k: v for k, v in value.details.items()
                                          if isinstance(v, (int, float, str, list, dict))}),
        "domains": len(value.domains),
        **{k: float(value.details[k]) for k in ("held_out_mae", "rank_correlation")
           if isinstance(value.details.get(k), (int, float))},
        "mlflow_run_id": value.mlflow_run_id,
        "path": dg.MetadataValue.path(str(out)),
    }
    if (out / "trajectory.png").is_file():
        meta["trajectory"] = dg.MetadataValue.md(plots.markdown_image(plots.file_b64(out / "trajectory.png"),
                                                                      "weights over training steps"))
    return dg.Output(value, data_version=dg.DataVersion(value.data_version), metadata=meta)


def regmix_run_version(section_version: str, run: int, corpus_versions: dict) -> str:
    """hash(code, `config_regmix_run`, the run's index, every domain's corpus version)."""
    return sha256_text(REGMIX_RUN_CODE_VERSION, section_version, f"run={run}", versions_text(corpus_versions))[:24]


@dg.asset(
    partitions_def=regmix_run_partitions,
    ins={"corpus": ALL_CORPORA},
    deps=[*config_deps("regmix_run"), domain_registry],
    group_name="methods",
    code_version=REGMIX_RUN_CODE_VERSION,
    kinds={"pytorch"},
    pool=launch.GPU_POOL,
)
@one_writer
def regmix_run(context: dg.AssetExecutionContext, chameleon: ChameleonConfig, corpus: dict) -> dg.Output[SwarmRun]:
    """One run of RegMix's swarm (partition = run index): a small model trained on a mixture
    drawn from a Dirichlet around the natural distribution (seeded by the run index alone,
    so runs are independent, resumable and can be added), scored on every domain's
    held-out windows. Settings: `methods.regmix` (model, budget, sampling; the swarm size
    is its `runs`)."""
    import numpy as np

    from chameleon_assets.core import baselines
    from chameleon_assets.core.methods import regmix
    from chameleon_assets.settings import method_params

    profile = chameleon.profile()
    params = method_params(profile, "regmix")
    run = int(context.partition_key)
    domains, versions = _domain_set(corpus, profile)
    version = regmix_run_version(chameleon.section_version("regmix_run"), run, versions)
    value = stored_value("regmix_run", context.partition_key, version)
    out = paths.regmix_run_dir(run, version)
    if value is None:
        prior = baselines.natural(domains.train_tokens)
        mixture = regmix.swarm_mixture(prior, run, profile.seed, params)
        result = regmix.train_run(domains, mixture, _recipe(profile), params, run)
        value = SwarmRun(version, run, str(out), list(domains.names), [float(x) for x in np.asarray(result.mixture)],
                         {d: float(v) for d, v in result.val_nll.items()}, result.cost.as_dict(), dict(versions))
        _write_run(out, value)
    return _swarm_run_output(value, version, out)


@dg.asset(
    ins={"runs": dg.AssetIn("regmix_run", partition_mapping=dg.AllPartitionMapping(),
                            metadata={"as_dict": True, "existing_only": True}),
         "corpus": ALL_CORPORA},
    deps=[*config_deps("regmix_weights"), domain_registry],
    group_name="methods",
    code_version=METHODS_CODE_VERSION,
    kinds={"mlflow"},
)
@one_writer
def regmix_weights(context: dg.AssetExecutionContext, chameleon: ChameleonConfig, mlflow_tracking: MLflowTracking,
                   runs: dict, corpus: dict) -> dg.Output[MethodWeights]:
    """RegMix (Liu et al., 2024): a regression from mixture to validation loss fitted on the
    swarm's runs, and the mixture minimising the predicted loss over a large sample of
    candidates from the same Dirichlet (the mean of the best `top_k`). Uses only the runs
    of the current domain data and settings (a stale run is left out, named in the
    metadata); reports the regression's held-out rank correlation. Its cost is the whole
    swarm's."""
    from chameleon_assets.core import baselines
    from chameleon_assets.core.cost import Cost
    from chameleon_assets.core.methods import regmix
    from chameleon_assets.settings import method_params

    profile = chameleon.profile()
    params = method_params(profile, "regmix")
    domains, versions = _domain_set(corpus, profile, with_tokens=False)
    section = chameleon.section_version("regmix_run")
    current, left_out = current_runs("regmix_weights", runs, params.runs, "methods.regmix.runs",
                                     lambda r: regmix_run_version(section, r, versions), "regmix_run", "regmix")
    version = sha256_text(METHODS_CODE_VERSION, "regmix", chameleon.section_version("regmix"),
                          versions_text({str(r.run): r.data_version for r in current}))[:24]
    value = stored_value("regmix_weights", None, version)
    if value is None:
        swarm = [regmix.SwarmRun(r.run, r.mixture, r.val_nll, regmix.target_of(r.val_nll, params.target),
                                 Cost.from_dict(r.cost)) for r in current]
        result = regmix.fit_and_propose(swarm, baselines.natural(domains.train_tokens), params, profile.seed,
                                         names=domains.names)
        result.details["left_out"] = left_out
        value = store_method_weights(context, mlflow_tracking, "regmix", version, domains, versions, result)
    return method_output(value)


def current_runs(asset: str, runs: dict, wanted: int, setting: str, version_of: Callable[[int], str],
                 run_asset: str, mixture: str) -> tuple[list, dict[str, str]]:
    """The swarm runs 0 .. ``wanted`` - 1 whose data version is ``version_of(run)`` (computed on
    the current domain data and settings), and why each other stored run is left out; a
    ValueError naming ``asset`` and the runs to materialise when one is missing."""
    current, left_out = [], {}
    for key, run in sorted(runs.items(), key=lambda kv: int(kv[0])):
        if int(key) >= wanted:
            left_out[key] = f"beyond {setting} ({wanted})"
        elif run.data_version != version_of(int(key)):
            left_out[key] = "computed on other domain data or settings (stale)"
        else:
            current.append(run)
    if len(current) < wanted:
        missing = sorted(set(range(wanted)) - {r.run for r in current})
        raise ValueError(f"{asset}: {len(current)} of {wanted} swarm runs are current; materialise "
                         f"{run_asset} {missing} first (`chameleon run --mixtures {mixture}`)")
    return current, left_out


def _runs_arrays(runs: list, names: list[str]):  # noqa: ANN202
    """(mixtures (n, k), losses (n, k)) of stored swarm runs, both in the order of ``names``."""
    import numpy as np

    mixtures = np.array([[dict(zip(r.domains, r.mixture))[d] for d in names] for r in runs], dtype=np.float64)
    losses = np.array([[r.val_nll[d] for d in names] for r in runs], dtype=np.float64)
    return mixtures, losses


def _swarm_cost(runs: list):  # noqa: ANN202
    from chameleon_assets.core.cost import Cost

    return sum((Cost.from_dict(r.cost) for r in runs), Cost())


@dg.asset(
    ins={"runs": dg.AssetIn("regmix_run", partition_mapping=dg.AllPartitionMapping(),
                            metadata={"as_dict": True, "existing_only": True}),
         "corpus": ALL_CORPORA},
    deps=[*config_deps("olmix_weights"), domain_registry],
    group_name="methods",
    code_version=METHODS_CODE_VERSION,
    kinds={"mlflow"},
)
@one_writer
def olmix_weights(context: dg.AssetExecutionContext, chameleon: ChameleonConfig, mlflow_tracking: MLflowTracking,
                  runs: dict, corpus: dict) -> dg.Output[MethodWeights]:
    """Olmix (AllenAI, 2025): a log-linear law L_i(r) = c_i + k_i exp(sum_j t_ij r_j) per
    domain, fitted with a Huber loss to RegMix's swarm runs (the same `regmix_run`
    partitions: no run of its own), and the mixture minimising the mean predicted loss plus
    lam KL(r || natural), no domain repeated more than `max_repetition` times over the base
    models' budget. Settings: `methods.olmix` (refitting retrains no run). Metadata: the
    law's held-out fit quality (out-of-fold mean absolute error, rank correlation) and the
    cost, the whole swarm's."""
    from chameleon_assets.core.methods import olmix
    from chameleon_assets.settings import fit_params

    profile = chameleon.profile()
    params = fit_params(profile, "olmix")
    domains, versions = _domain_set(corpus, profile, with_tokens=False)
    section = chameleon.section_version("regmix_run")
    current, left_out = current_runs("olmix_weights", runs, params.runs, "methods.olmix.runs",
                                     lambda r: regmix_run_version(section, r, versions), "regmix_run", "olmix")
    version = sha256_text(METHODS_CODE_VERSION, "olmix", chameleon.section_version("olmix"),
                          versions_text({str(r.run): r.data_version for r in current}))[:24]
    value = stored_value("olmix_weights", None, version)
    if value is None:
        mixtures, losses = _runs_arrays(current, domains.names)
        result = olmix.fit_and_propose(mixtures, losses, domains.names, domains.train_tokens, params,
                                       _swarm_cost(current), profile.seed)
        result.details["left_out"] = left_out
        value = store_method_weights(context, mlflow_tracking, "olmix", version, domains, versions, result)
    return method_output(value)


def previous_olmix(instance: dg.DagsterInstance) -> MethodWeights:
    """The latest olmix proposal (``olmix_weights``' latest materialisation, on whatever domains it was computed)."""
    from chameleon_assets.defs.io import load_value

    try:
        return load_value(instance, "olmix_weights")
    except FileNotFoundError:
        raise ValueError("olmix_reuse needs a previous olmix proposal: materialise olmix_weights first "
                         "(`chameleon run --mixtures olmix`)") from None


def reuse_plan(previous: MethodWeights, names: list[str], versions: dict):  # noqa: ANN201 - olmix.ReusePlan
    """Olmix reuse's plan against ``previous``: a domain is affected when it is new or its
    corpus version differs from the one the previous proposal read; and the removed domains."""
    from chameleon_assets.core.methods import olmix

    affected = [d for d in names if previous.corpus_versions.get(d) != versions[d]]
    removed = [d for d in previous.domains if d not in names]
    return olmix.plan_reuse(dict(zip(previous.domains, previous.weights)), names, affected), removed


def olmix_reuse_run_version(section_version: str, run: int, previous: str, corpus_versions: dict) -> str:
    """hash(code, `config_regmix_run`, the run's index, the previous olmix version, every domain's corpus version)."""
    return sha256_text(OLMIX_REUSE_RUN_CODE_VERSION, section_version, f"run={run}", f"previous={previous}",
                       versions_text(corpus_versions))[:24]


@dg.asset(
    partitions_def=olmix_reuse_run_partitions,
    ins={"corpus": ALL_CORPORA},
    deps=[*config_deps("olmix_reuse_run"), domain_registry],
    group_name="methods",
    code_version=OLMIX_REUSE_RUN_CODE_VERSION,
    kinds={"pytorch"},
    pool=launch.GPU_POOL,
)
@one_writer
def olmix_reuse_run(context: dg.AssetExecutionContext, chameleon: ChameleonConfig, corpus: dict) -> dg.Output[SwarmRun]:
    """One run of Olmix reuse's reduced swarm (partition = run index): after domains were added
    or edited since the latest olmix proposal (read from `olmix_weights`' latest
    materialisation, stale or not: reuse is for exactly that case), the unaffected domains'
    ratios are frozen at that proposal's and they act as one domain; the run trains one of
    RegMix's small models (`methods.regmix`) on a Dirichlet(1) draw over (unaffected,
    affected...) and scores every domain. With no affected domain (only removals) it trains
    nothing. Runs: `methods.olmix.reuse_runs`."""
    import numpy as np

    from chameleon_assets.core.cost import Cost
    from chameleon_assets.core.methods import olmix, regmix
    from chameleon_assets.settings import method_params

    profile = chameleon.profile()
    run = int(context.partition_key)
    domains, versions = _domain_set(corpus, profile)
    previous = previous_olmix(context.instance)
    plan, _ = reuse_plan(previous, domains.names, versions)
    version = olmix_reuse_run_version(chameleon.section_version("regmix_run"), run, previous.data_version, versions)
    value = stored_value("olmix_reuse_run", context.partition_key, version)
    out = paths.olmix_reuse_run_dir(run, version)
    if value is None:
        if plan.affected:
            mixture = plan.expand(olmix.reduced_mixture(len(plan.reduced_names), run, profile.seed))
            result = regmix.train_run(domains, mixture, _recipe(profile), method_params(profile, "regmix"), run)
            val_nll, cost = {d: float(v) for d, v in result.val_nll.items()}, result.cost
        else:
            mixture, val_nll, cost = plan.expand(np.array([1.0])), {}, Cost()
        value = SwarmRun(version, run, str(out), list(domains.names), [float(x) for x in mixture], val_nll,
                         cost.as_dict(), dict(versions))
        _write_run(out, value)
    return _swarm_run_output(value, version, out,
                             {"affected": ", ".join(plan.affected) or "none (nothing to train)"})


@dg.asset(
    ins={"runs": dg.AssetIn("olmix_reuse_run", partition_mapping=dg.AllPartitionMapping(),
                            metadata={"as_dict": True, "existing_only": True}),
         "corpus": ALL_CORPORA},
    deps=[*config_deps("olmix_reuse_weights"), domain_registry],
    group_name="methods",
    code_version=METHODS_CODE_VERSION,
    kinds={"mlflow"},
)
@one_writer
def olmix_reuse_weights(context: dg.AssetExecutionContext, chameleon: ChameleonConfig,
                        mlflow_tracking: MLflowTracking, runs: dict, corpus: dict) -> dg.Output[MethodWeights]:
    """Olmix's mixture reuse: the latest olmix proposal's ratios among the unaffected domains
    kept exactly, and the share of the unaffected block and of each added or edited domain
    from the log-linear law fitted to the reduced swarm (`olmix_reuse_run`). Removing a
    domain needs no run: the previous ratios over the remaining domains. Its cost is the
    reduced swarm's (the previous proposal's is in the details)."""
    from chameleon_assets.core.methods import olmix
    from chameleon_assets.settings import fit_params

    profile = chameleon.profile()
    params = fit_params(profile, "olmix")
    domains, versions = _domain_set(corpus, profile, with_tokens=False)
    previous = previous_olmix(context.instance)
    plan, removed = reuse_plan(previous, domains.names, versions)
    current, left_out = [], {}
    if plan.affected:
        section = chameleon.section_version("regmix_run")
        current, left_out = current_runs(
            "olmix_reuse_weights", runs, params.reuse_runs, "methods.olmix.reuse_runs",
            lambda r: olmix_reuse_run_version(section, r, previous.data_version, versions), "olmix_reuse_run",
            "olmix_reuse")
    version = sha256_text(METHODS_CODE_VERSION, "olmix_reuse", chameleon.section_version("olmix"),
                          f"previous={previous.data_version}", versions_text(versions),
                          versions_text({str(r.run): r.data_version for r in current}))[:24]
    value = stored_value("olmix_reuse_weights", None, version)
    if value is None:
        mixtures, losses = _runs_arrays(current, domains.names)
        reduced = [plan.reduce(m) for m in mixtures]
        result = olmix.reuse_result(plan, reduced, losses, domains.train_tokens, params, _swarm_cost(current),
                                    profile.seed, removed)
        result.details.update(previous=previous.data_version, previous_cost_flops=float(previous.cost["flops"]),
                              left_out=left_out)
        value = store_method_weights(context, mlflow_tracking, "olmix_reuse", version, domains, versions, result)
    return method_output(value)


def _trained_assets() -> list[dg.AssetsDefinition]:
    from chameleon_assets.core.methods import get, trained_methods

    swarms = [m for m in trained_methods() if get(m).fit_fields or get(m).swarm]
    if sorted(swarms) != sorted(SWARM_METHODS):
        raise ValueError(f"mixing methods {', '.join(sorted(set(swarms) - set(SWARM_METHODS)))} declare fit_fields "
                         "or a swarm: only RegMix's and Olmix's swarm assets exist (defs/methods/assets.py)")
    return [_method_weights_asset(m) for m in trained_methods() if m not in SWARM_METHODS]


METHOD_WEIGHTS = [*_trained_assets(), regmix_weights, olmix_weights, olmix_reuse_weights]
METHOD_ASSETS = [*METHOD_WEIGHTS, regmix_run, olmix_reuse_run]
# The asset that gives each computed mixture its weights.
WEIGHTS_OF = {a.key.to_user_string().removesuffix("_weights"): a.key.to_user_string() for a in METHOD_WEIGHTS}


@dg.asset(
    ins={"mixture_weights": dg.AssetIn(),
         **{asset: dg.AssetIn(metadata={"existing_only": True}) for asset in WEIGHTS_OF.values()}},
    group_name="mixing",
    code_version=TABLE_CODE_VERSION,
    kinds={"pandas"},
    automation_condition=policy.FOLLOWS_WEIGHTS,
)
@one_writer
def mixture_table(context: dg.AssetExecutionContext, mixture_weights: MixtureTable,
                  **computed: MethodWeights | None) -> dg.Output[MixtureTable]:
    """Every mixture base models can train on, side by side with what its weights cost:
    mixture_weights' closed-form rows (CHAMELEON, baselines, presets) and each computed
    method's (DoReMi, DoGE, RegMix) that is current, i.e. computed on the same domains and
    domain data. A computed mixture that is missing or stale is left out, with the reason,
    until `chameleon run` recomputes it; it never holds back the others."""
    import numpy as np

    weights = dict(mixture_weights.weights)
    costs = dict(mixture_weights.costs)
    sources = dict(mixture_weights.sources) or {m: f"mixture_weights {mixture_weights.data_version}" for m in weights}
    skipped = {m: why for m, why in mixture_weights.skipped.items() if m not in WEIGHTS_OF}
    for method, asset in WEIGHTS_OF.items():
        value = computed.get(asset)
        if value is None:
            skipped[method] = f"{asset} not materialised yet (`chameleon run --mixtures {method}`)"
        elif sorted(value.domains) != sorted(mixture_weights.domains) or any(
                value.corpus_versions.get(d) != v for d, v in mixture_weights.corpus_versions.items()):
            skipped[method] = f"{asset} {value.data_version} was computed on other domain data: it must rerun"
        else:
            by_domain = dict(zip(value.domains, value.weights))
            weights[method] = [float(by_domain[d]) for d in mixture_weights.domains]
            costs[method] = value.cost
            sources[method] = f"{asset} {value.data_version}"
    version = sha256_text(TABLE_CODE_VERSION, mixture_weights.data_version,
                          versions_text({m: sources[m] for m in weights}))[:24]
    out = paths.mixture_table_dir(version)
    table = stored_value("mixture_table", None, version)
    if table is None:
        import shutil
        from dataclasses import replace

        from chameleon_assets.defs.mixing.weights import write_weights

        table = replace(mixture_weights, data_version=version, path=str(out), weights=weights, skipped=skipped,
                        costs={m: costs[m] for m in weights if m in costs}, sources={m: sources[m] for m in weights},
                        heatmap_path=str(out / "affinity_heatmap.png"))
        frame = table.frame()
        with atomic_dir(out) as tmp:
            write_weights(table, tmp)
            shutil.copyfile(mixture_weights.heatmap_path, tmp / "affinity_heatmap.png")
            plots.grouped_bars({m: frame.loc[m].tolist() for m in frame.index}, table.domains, "mixture weights",
                               tmp / "weights_bars.png")
    point_current(out)
    prune_versions(out.parent)
    frame = table.frame()
    return dg.Output(table, data_version=dg.DataVersion(version), metadata={
        "weights": dg.MetadataValue.md(frame.round(4).to_markdown()),
        "cost": dg.MetadataValue.md(cost_markdown(table.costs)),
        "sources": dg.MetadataValue.json(table.sources),
        "skipped": dg.MetadataValue.json(table.skipped),
        "mixtures": ", ".join(table.weights),
        "max_weight": float(np.max(frame.to_numpy())) if len(frame) else 0.0,
        "csv": dg.MetadataValue.path(str(out / "weights.csv")),
    })


def _write_run(out, value: SwarmRun) -> None:  # noqa: ANN001 - a Path
    """Write one swarm run's record atomically into its version folder ``out``."""
    with atomic_dir(out) as tmp:
        write_json(tmp / "run.json", value.__dict__)


def _swarm_run_output(value: SwarmRun, version: str, out, extra: dict | None = None) -> dg.Output:  # noqa: ANN001
    """Point ``current`` at the run's folder, prune old versions, and return the run with its
    mixture, validation losses, cost and path as metadata (``extra`` first)."""
    point_current(out)
    prune_versions(out.parent)
    return dg.Output(value, data_version=dg.DataVersion(version), metadata={
        **(extra or {}),
        "mixture": dg.MetadataValue.json({d: round(w, 4) for d, w in zip(value.domains, value.mixture)}),
        "val_nll": dg.MetadataValue.json({d: round(v, 4) for d, v in value.val_nll.items()}),
        "cost_flops": float(value.cost["flops"]),
        "cost_wall_s": float(value.cost["wall_s"]),
        "path": dg.MetadataValue.path(str(out)),
    })
