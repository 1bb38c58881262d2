"""What is out of date, and what recomputes by itself: one policy for the CLI, the sensor and the UI.

*Out of date* is Dagster's stale status: an asset partition is STALE when its code
version changed or when an input's data version differs from the one recorded when it
was materialised (data versions carry the configuration sections and the domains'
bytes, see ``defs.sources``). MISSING when never materialised. One more state, which
Dagster cannot see: DAMAGED, when the files behind the recorded version were deleted,
truncated or never completed (``DamagedCondition``); it is rebuilt like a missing one,
under the same version, so nothing downstream goes stale.

Two kinds of assets:

* **follow their inputs** (``FOLLOWS``): domain_corpus, domain_embeddings,
  affinity_matrix, mixture_weights, weight_diagnostics, evaluation. Their automation condition, which the
  UI's automation sensor evaluates, is "missing or stale, and no input is missing,
  stale or running". mixture_comparison follows whichever evaluations exist
  (``FOLLOWS_ANY_INPUT``): only current weights and running steps hold it back, and it
  shows only the rows of current models. mixture_table follows mixture_weights and
  takes the computed methods' weights as they are (``follows_weights``): a missing or
  stale method is left out of it, never waited for.
* **on request** (``ON_REQUEST``): proxy_model, base_model, finetuned_model and the
  computed methods' assets (doremi_weights, doge_weights, regmix_run, regmix_weights).
  They train models, so nothing starts them by itself; the UI's Materialize button,
  ``chameleon run`` (stale or missing proxy; stale or missing base models and
  method assets of the requested mixtures; stale or missing finetuned models of the profile's
  ``finetune.mixtures`` once their start model is ready, ``StartModelReady``) and
  ``chameleon sync`` (the proxy only when missing) request them.

The finetuning stage follows the same rules: finetune_corpus, finetune_embeddings,
finetune_affinity (once a finetuning domain is registered), finetune_weights,
finetune_diagnostics and finetune_evaluation follow their inputs, finetune_comparison
follows whichever finetune evaluations exist.

``requested`` evaluates these same conditions with Dagster's own evaluator (the one
behind ``dg.evaluate_automation_conditions`` and the automation sensor); the CLI's
request modes only switch the on-request assets on: ``run`` gives them ``FOLLOWS``,
``sync`` gives the proxy "missing". So for everything that follows its inputs the UI's
stale marks, the daemon and the CLI come to the same answer.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import dagster as dg

AC = dg.AutomationCondition


class StaleCondition(AC):
    """True for the candidate partitions whose Dagster stale status is STALE."""

    @property
    def name(self) -> str:
        return "stale"

    @property
    def description(self) -> str:
        return "Dagster's stale status: new code version or an input with a new data version"

    def evaluate(self, context):  # noqa: ANN001 (AutomationContext is internal)
        resolver = _resolver(context.asset_graph_view, context.asset_graph)
        return _candidates_where(context, lambda ap: resolver.get_status(ap.asset_key, ap.partition_key).value
                                 == "STALE")


def _candidates_where(context, holds) -> dg.AutomationResult:  # noqa: ANN001
    """The result holding the candidate partitions for which ``holds(asset_partition)`` is true."""
    view = context.asset_graph_view
    chosen = {ap for ap in context.candidate_subset.expensively_compute_asset_partitions() if holds(ap)}
    return dg.AutomationResult(context, view.get_asset_subset_from_asset_partitions(context.key, chosen))


def _resolver(view, asset_graph):  # noqa: ANN001, ANN202
    """One stale-status resolver per evaluation, kept on the evaluation's view and sharing its
    instance queryer (whose asset records the evaluator has prefetched)."""
    from dagster._core.definitions.data_version import CachingStaleStatusResolver

    resolver = getattr(view, "_chameleon_stale_resolver", None)
    if resolver is None:
        queryer = view.get_inner_queryer_for_back_compat()
        resolver = CachingStaleStatusResolver(view.instance, asset_graph, view, instance_queryer=queryer)
        view._chameleon_stale_resolver = resolver
    return resolver


class DamagedCondition(AC):
    """True for the candidate partitions whose recorded version's files are missing or damaged."""

    @property
    def name(self) -> str:
        return "damaged"

    @property
    def description(self) -> str:
        return "the files of the latest materialisation are missing, truncated or incomplete"

    def evaluate(self, context):  # noqa: ANN001 (AutomationContext is internal)
        if context.key not in context.asset_graph.materializable_asset_keys:  # sources have no files of ours
            return _candidates_where(context, lambda ap: False)
        return _candidates_where(context, lambda ap: damage_of(context.asset_graph_view, ap) is not None)


def damage_of(view, ap) -> str | None:  # noqa: ANN001
    """``io.damage`` of an asset partition's latest materialisation, once per evaluation."""
    from chameleon_assets.defs.io import DATA_VERSION_TAG, damage

    cache = getattr(view, "_chameleon_damage", None)
    if cache is None:
        cache = view._chameleon_damage = {}
    if ap not in cache:
        record = view.get_inner_queryer_for_back_compat().get_latest_materialization_or_observation_record(ap)
        materialization = record.asset_materialization if record is not None else None
        version = materialization.tags.get(DATA_VERSION_TAG) if materialization is not None else None
        cache[ap] = damage(ap.asset_key, ap.partition_key, version)
    return cache[ap]


MISSING_OR_STALE = (AC.missing() | StaleCondition() | DamagedCondition()).with_label("missing, stale or damaged")
INPUTS_READY = (
    ~AC.any_deps_match(AC.missing() | StaleCondition() | DamagedCondition() | AC.in_progress())
).with_label("no input missing, stale, damaged or running")
FOLLOWS = (MISSING_OR_STALE & INPUTS_READY & ~AC.in_progress()).with_label("follows its inputs")


def follows_current(weights: str) -> AC:
    """Missing, stale or damaged; nothing of it or its inputs running; and its ``weights``
    input current. Its other inputs are taken as they are (missing or stale ones are left out)."""
    return (
        MISSING_OR_STALE
        & ~AC.in_progress()
        & ~AC.any_deps_in_progress()
        & ~AC.any_deps_match(AC.missing() | StaleCondition() | DamagedCondition()).allow(
            dg.AssetSelection.assets(weights))
    )


def follows_any_input(weights: str, evaluations: str) -> AC:
    """A comparison's condition: it gathers whatever evaluations exist (mixtures that were
    never trained have none), so a missing input does not hold it back; it keeps only
    current ones. Its ``weights`` input must be current, and one evaluation must exist."""
    return (follows_current(weights) & AC.any_deps_match(~AC.missing()).allow(
        dg.AssetSelection.assets(evaluations))).with_label("follows whichever evaluations exist")


FOLLOWS_ANY_INPUT = follows_any_input("mixture_table", "evaluation")
# mixture_table's: mixture_weights must be current; each computed method's weights are
# taken as they are (a missing or stale one is left out of the table, never waited for:
# those methods run on request).
FOLLOWS_WEIGHTS = follows_current("mixture_weights").with_label(
    "follows mixture_weights; takes computed methods as they are")


class StartModelReady(AC):
    """True for the candidate finetuned_model partitions whose start model is ready: the
    profile's ``finetune.checkpoint``, or ``base_model[<finetune.base>|<seed>]``
    materialised and neither stale nor damaged.

    Which base model is the start is a profile value, so the graph's base_model edge is
    lineage only; this condition is what holds a finetuned model back until its start exists.
    """

    @property
    def name(self) -> str:
        return "start_model_ready"

    @property
    def description(self) -> str:
        return "the base model it starts from (finetune.base) is materialised, current and intact"

    def evaluate(self, context):  # noqa: ANN001 (AutomationContext is internal)
        from dagster._core.definitions.events import AssetKeyPartitionKey

        from chameleon_assets.defs.partitions import split_model_key
        from chameleon_assets.settings import ConfigError, load_profile

        try:
            ft = load_profile().finetune
        except ConfigError:
            return _candidates_where(context, lambda ap: False)  # the step would fail with the same message
        if ft.checkpoint:
            return _candidates_where(context, lambda ap: True)
        view, graph = context.asset_graph_view, context.asset_graph
        resolver = _resolver(view, graph)
        base_key = dg.AssetKey("base_model")
        queryer = view.get_inner_queryer_for_back_compat()

        def ready(ap) -> bool:  # noqa: ANN001
            _, seed = split_model_key(ap.partition_key)
            base = AssetKeyPartitionKey(base_key, dg.MultiPartitionKey({"mixture": ft.base, "seed": str(seed)}))
            if queryer.get_latest_materialization_or_observation_record(base) is None:
                return False
            return (resolver.get_status(base_key, base.partition_key).value != "STALE"
                    and damage_of(view, base) is None)

        return _candidates_where(context, ready)


# finetuned_model under `chameleon run`: FOLLOWS, and its start model must be ready.
FINETUNE_ON_RUN = (
    MISSING_OR_STALE
    & ~AC.in_progress()
    & ~AC.any_deps_match(AC.missing() | StaleCondition() | DamagedCondition() | AC.in_progress()).ignore(
        dg.AssetSelection.assets("base_model"))
    & StartModelReady()
).with_label("follows its inputs and its start model")

def method_assets() -> dict[str, str]:
    """The assets of the mixing methods that train proxies, with the mixture each serves:
    ``<method>_weights`` per method, and RegMix's swarm ``regmix_run``."""
    from chameleon_assets.core.methods import trained_methods

    out = {f"{m}_weights": m for m in trained_methods()}
    if "regmix" in out.values():
        out["regmix_run"] = "regmix"
    return out


# No automation condition: see request_conditions.
ON_REQUEST = ("proxy_model", "base_model", "finetuned_model", *method_assets())


def request_conditions(mode: str) -> dict[str, AC]:
    """The conditions the on-request assets get when the CLI requests them.

    ``run``: train what is missing, stale or damaged. ``sync``: only a missing or damaged
    proxy (a domain change never retrains it; a stale proxy waits for ``chameleon run``).
    """
    if mode == "run":
        return {"proxy_model": FOLLOWS, "base_model": FOLLOWS, "finetuned_model": FINETUNE_ON_RUN,
                **{asset: FOLLOWS for asset in method_assets()}}
    if mode == "sync":
        return {"proxy_model": ((AC.missing() | DamagedCondition()) & INPUTS_READY & ~AC.in_progress()).with_label(
            "missing or damaged")}
    raise ValueError(f"unknown mode {mode!r}: 'run' or 'sync'")


def with_requests(assets: Iterable, mode: str, mixtures: Sequence[str] | None = None) -> list:
    """``assets`` with the on-request assets given their request-mode condition.

    With ``mixtures``, a computed method's assets get one only when its mixture is among
    them (the others are then not even evaluated: RegMix's swarm has many partitions).
    """
    conditions = request_conditions(mode)
    if mixtures is not None:
        serves = method_assets()
        conditions = {k: c for k, c in conditions.items() if k not in serves or serves[k] in mixtures}
    out = []
    for a in assets:
        key = a.key.to_user_string() if isinstance(a, dg.AssetsDefinition) and len(a.keys) == 1 else None
        out.append(a.with_attributes(automation_condition=conditions[key]) if key in conditions else a)
    return out


def requested(
    defs: dg.Definitions, instance: dg.DagsterInstance, mixtures: Sequence[str] | None = None,
    finetune_mixtures: Sequence[str] | None = None,
) -> list[tuple[dg.AssetKey, str | None]]:
    """Asset partitions the policy requests now, in topological order.

    ``mixtures`` limits base_model to the partitions of those mixtures, every seed (the
    rest stay as they are), and the computed methods' assets to those of these mixtures;
    ``finetune_mixtures`` does the same for finetuned_model. This
    is ``dg.evaluate_automation_conditions`` without its cursor round-trip, which a
    one-off evaluation does not need and which costs more than the evaluation itself.
    """
    import logging

    from chameleon_assets.defs.partitions import split_model_key
    from dagster._core.definitions.asset_daemon_cursor import AssetDaemonCursor
    from dagster._core.definitions.declarative_automation.automation_condition_evaluator import (
        AutomationConditionEvaluator,
    )

    graph = defs.resolve_asset_graph()
    evaluator = AutomationConditionEvaluator(
        asset_graph=graph,
        instance=instance,
        entity_keys={k for k in graph.materializable_asset_keys if graph.get(k).automation_condition is not None},
        evaluation_time=None,
        emit_backfills=False,
        logger=logging.getLogger("chameleon.policy"),
        cursor=AssetDaemonCursor.empty(),
        evaluation_id=0,
    )
    _, subsets = evaluator.evaluate()
    wanted: dict[dg.AssetKey, set] = {}
    for subset in subsets:
        for ap in subset.expensively_compute_asset_partitions():
            wanted.setdefault(ap.asset_key, set()).add(ap.partition_key)
    out = []
    serves = method_assets()
    for key in graph.toposorted_asset_keys:
        partitions = wanted.get(key, set())
        if key.to_user_string() in serves and mixtures is not None and serves[key.to_user_string()] not in mixtures:
            partitions = set()
        if key == dg.AssetKey("base_model") and mixtures is not None:
            partitions = {p for p in partitions if split_model_key(p)[0] in mixtures}
        if key == dg.AssetKey("finetuned_model") and finetune_mixtures is not None:
            partitions = {p for p in partitions if split_model_key(p)[0] in finetune_mixtures}
        out += [(key, p) for p in sorted(partitions, key=lambda p: p or "")]
    return out


def stale_partitions(defs: dg.Definitions, instance: dg.DagsterInstance) -> set[tuple[str, str | None]]:
    """Every (asset, partition) that Dagster's stale status marks STALE: what the UI shows."""
    from dagster._core.definitions.data_version import CachingStaleStatusResolver
    from dagster._core.loader import LoadingContextForTest

    graph = defs.resolve_asset_graph()
    resolver = CachingStaleStatusResolver(instance, graph, LoadingContextForTest(instance))
    out = set()
    for key in graph.materializable_asset_keys:
        pdef = graph.get(key).partitions_def
        keys = pdef.get_partition_keys(dynamic_partitions_store=instance) if pdef else [None]
        for p in keys:
            if resolver.get_status(key, p).value == "STALE":
                out.add((key.to_user_string(), p))
    return out


def damaged_partitions(defs: dg.Definitions, instance: dg.DagsterInstance) -> dict[tuple[str, str | None], str]:
    """Every materialised (asset, partition) whose files are missing or damaged, with why."""
    from chameleon_assets.defs.io import damage, latest_version

    graph = defs.resolve_asset_graph()
    out = {}
    for key in graph.materializable_asset_keys:
        pdef = graph.get(key).partitions_def
        keys = pdef.get_partition_keys(dynamic_partitions_store=instance) if pdef else [None]
        for p in keys:
            why = damage(key, p, latest_version(instance, key, p))
            if why:
                out[(key.to_user_string(), p)] = why
    return out
