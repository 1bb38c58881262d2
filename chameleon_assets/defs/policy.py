"""What is out of date, and what recomputes by itself: one policy for the CLI, the sensor and the UI.

*Out of date* is Dagster's stale status: an asset partition is STALE when its code
version changed or when an input's data version differs from the one recorded when it
was materialised (data versions carry the configuration sections and the domains'
bytes, see ``defs.sources``). ``Staleness`` computes it from the provenance Dagster
records on each materialisation, through the instance's public record queries, the
same rules as the UI's stale marks. MISSING when never materialised. One more state, which
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

from chameleon_assets.runner import STALENESS_PARTITION_LIMIT

AC = dg.AutomationCondition


class Staleness:
    """Dagster's stale status, read from the instance's public record queries.

    An asset partition is STALE when its latest materialisation carries a code version
    (``dagster/code_version``) other than its definition's, records an input that is no
    longer a dependency, lacks one that is, or recorded an input whose data version has
    changed since: for an unpartitioned input, the recorded ``dagster/input_data_version/<input>``
    differs from the input's current data version; for an input partition, a record newer
    than the recorded ``dagster/input_event_pointer/<input>`` carries another data version
    than the one the pointer names. Inputs with ``STALENESS_PARTITION_LIMIT`` partitions or
    more for one partition are not compared (Dagster's own limit). One instance serves one
    evaluation: it caches every record it reads.
    """

    def __init__(self, instance: dg.DagsterInstance, graph) -> None:  # noqa: ANN001 - Definitions' asset graph
        self.instance, self.graph = instance, graph
        self._latest: dict[tuple[dg.AssetKey, str | None], object] = {}
        self._damage: dict[tuple[dg.AssetKey, str | None], str | None] = {}

    def _fetch(self, key: dg.AssetKey, partition: str | None, limit: int = 1, **bounds: int):  # noqa: ANN202
        records_filter = dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None,
                                               **bounds)
        fetch = self.instance.fetch_observations if self.graph.get(key).is_external \
            else self.instance.fetch_materializations
        return fetch(records_filter, limit=limit).records

    def latest(self, key: dg.AssetKey, partition: str | None = None):  # noqa: ANN201 - dg.EventLogRecord | None
        """The latest materialisation (observation for a source) of ``key[partition]``, or None."""
        if (key, partition) not in self._latest:
            records = self._fetch(key, partition)
            self._latest[(key, partition)] = records[0] if records else None
        return self._latest[(key, partition)]

    @staticmethod
    def _tags(record) -> dict[str, str]:  # noqa: ANN001
        return dict(record.event_log_entry.tags or {}) if record is not None else {}

    def data_version(self, key: dg.AssetKey, partition: str | None = None) -> str:
        """The current data version, with Dagster's defaults: NULL never materialised, INITIAL untagged."""
        record = self.latest(key, partition)
        if record is None:
            return "INITIAL" if self.graph.get(key).is_external else "NULL"
        return self._tags(record).get("dagster/data_version", "INITIAL")

    def is_stale(self, key: dg.AssetKey, partition: str | None = None) -> bool:
        """Whether ``key[partition]`` is materialised and STALE in Dagster's sense."""
        node = self.graph.get(key)
        if node.is_external or (node.partitions_def is not None and not partition):
            return False
        tags = self._tags(self.latest(key, partition))
        if not tags:
            return False  # missing, not stale
        code = tags.get("dagster/code_version")
        if code is None:  # no provenance: an input materialised after it makes it stale
            return self._any_input_newer(key, partition, self.latest(key, partition).timestamp)
        if node.code_version and node.code_version != code:
            return True
        versions = {k.split("/", 2)[2]: v for k, v in tags.items() if k.startswith("dagster/input_data_version/")}
        pointers = {k.split("/", 2)[2]: v for k, v in tags.items() if k.startswith("dagster/input_event_pointer/")}
        parents = {p.to_user_string() for p in node.parent_keys}
        if set(versions) - parents:
            return True
        for dep, dep_partition in self._inputs(key, partition):
            name = dep.to_user_string()
            if name not in versions or name not in pointers:
                return True
            if dep_partition is None:
                if versions[name] != self.data_version(dep) and not (
                        versions[name] == "INITIAL" and self.data_version(dep) == "NULL"):
                    return True
            elif self._updated_since(dep, dep_partition, None if pointers[name] == "NULL" else int(pointers[name])):
                return True
        return False

    def _inputs(self, key: dg.AssetKey, partition: str | None) -> list[tuple[dg.AssetKey, str | None]]:
        """The input partitions ``key[partition]`` reads, inputs with too many of them left out."""
        out = []
        for dep in sorted(self.graph.get(key).parent_keys):
            if self.graph.get(dep).partitions_def is None:
                out.append((dep, None))
                continue
            if dep == key:
                continue
            keys = list(self.graph.get_parent_partition_keys_for_child(
                partition, dep, key).partitions_subset.get_partition_keys())
            if len(keys) < STALENESS_PARTITION_LIMIT:
                out += [(dep, p) for p in keys]
        return out

    def _updated_since(self, dep: dg.AssetKey, partition: str, pointer: int | None) -> bool:
        """Whether ``dep[partition]`` has a record after ``pointer`` with another data version than
        the record ``pointer`` names (no pointer: nothing to compare, as in Dagster)."""
        if pointer is None:
            return False
        newer = self._fetch(dep, partition, after_storage_id=pointer)
        if not newer:
            return False
        before = self._fetch(dep, partition, before_storage_id=pointer + 1)
        previous = self._tags(before[0]).get("dagster/data_version") if before else None
        return previous != self._tags(newer[0]).get("dagster/data_version")

    def _any_input_newer(self, key: dg.AssetKey, partition: str | None, timestamp: float) -> bool:
        for dep, dep_partition in self._inputs(key, partition):
            if self.graph.get(dep).is_external:
                continue
            record = self.latest(dep, dep_partition)
            if record is None or record.timestamp > timestamp:
                return True
        return False

    def damage(self, key: dg.AssetKey, partition: str | None = None) -> str | None:
        """``io.damage`` of the files behind ``key[partition]``'s latest materialisation."""
        from chameleon_assets.defs.io import DATA_VERSION_TAG, damage

        if (key, partition) not in self._damage:
            record = self.latest(key, partition)
            version = self._tags(record).get(DATA_VERSION_TAG) if record is not None else None
            self._damage[(key, partition)] = damage(key, partition, version)
        return self._damage[(key, partition)]


# One Staleness per evaluation: an evaluation is told apart by its instance and start time.
_current: dict[tuple[int, object], Staleness] = {}


def staleness_of(context: dg.AutomationContext) -> Staleness:
    """The evaluation's ``Staleness`` (records read once per evaluation, shared by every condition)."""
    instance = context.asset_graph_view.instance
    token = (id(instance), context.evaluation_time)
    if token not in _current:
        _current.clear()
        _current[token] = Staleness(instance, context.asset_graph)
    return _current[token]


class StaleCondition(AC):
    """True for the candidate partitions whose stale status (``Staleness``) is STALE."""

    @property
    def name(self) -> str:
        return "stale"

    @property
    def description(self) -> str:
        return "Dagster's stale status: new code version or an input with a new data version"

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        staleness = staleness_of(context)
        return _candidates_where(context, lambda ap: staleness.is_stale(ap.asset_key, ap.partition_key))


def _candidates_where(context: dg.AutomationContext, holds) -> dg.AutomationResult:  # noqa: ANN001
    """The result holding the candidate partitions for which ``holds(asset_partition)`` is true."""
    view = context.asset_graph_view
    chosen = {ap for ap in context.candidate_subset.expensively_compute_asset_partitions() if holds(ap)}
    return dg.AutomationResult(context, view.get_asset_subset_from_asset_partitions(context.key, chosen))


class DamagedCondition(AC):
    """True for the candidate partitions whose recorded version's files are missing or damaged."""

    @property
    def name(self) -> str:
        return "damaged"

    @property
    def description(self) -> str:
        return "the files of the latest materialisation are missing, truncated or incomplete"

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        if context.key not in context.asset_graph.materializable_asset_keys:  # sources have no files of ours
            return _candidates_where(context, lambda ap: False)
        staleness = staleness_of(context)
        return _candidates_where(context, lambda ap: staleness.damage(ap.asset_key, ap.partition_key) is not None)


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
        from chameleon_assets.defs.partitions import split_model_key
        from chameleon_assets.settings import ConfigError, load_profile

        try:
            ft = load_profile().finetune
        except ConfigError:
            return _candidates_where(context, lambda ap: False)  # the step would fail with the same message
        if ft.checkpoint:
            return _candidates_where(context, lambda ap: True)
        staleness = staleness_of(context)
        base_key = dg.AssetKey("base_model")

        def ready(ap) -> bool:  # noqa: ANN001
            _, seed = split_model_key(ap.partition_key)
            base = dg.MultiPartitionKey({"mixture": ft.base, "seed": str(seed)})
            if staleness.latest(base_key, base) is None:
                return False
            return not staleness.is_stale(base_key, base) and staleness.damage(base_key, base) is None

        return _candidates_where(context, ready)


# finetuned_model under `chameleon run`: FOLLOWS, and its start model must be ready.
FINETUNE_ON_RUN = (
    MISSING_OR_STALE
    & ~AC.in_progress()
    & ~AC.any_deps_match(AC.missing() | StaleCondition() | DamagedCondition() | AC.in_progress()).ignore(
        dg.AssetSelection.assets("base_model"))
    & StartModelReady()
).with_label("follows its inputs and its start model")

def method_assets() -> dict[str, tuple[str, ...]]:
    """The assets of the mixing methods that train proxies, with the mixtures each serves:
    ``<method>_weights`` per method and per mixture it also serves, a swarm's ``<method>_run``
    (RegMix's ``regmix_run``, which Olmix's fit reads too) and a served mixture's own runs
    (``olmix_reuse_run``)."""
    from chameleon_assets.core.methods import get, swarm_users, trained_methods

    out: dict[str, tuple[str, ...]] = {}
    for m in trained_methods():
        out[f"{m}_weights"] = (m,)
        if get(m).fit_fields:
            out[f"{m}_run"] = tuple(swarm_users(m))
        for served in get(m).also_serves:
            out[f"{served}_weights"] = out[f"{served}_run"] = (served,)
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
        conditions = {k: c for k, c in conditions.items() if k not in serves or set(serves[k]) & set(mixtures)}
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
    ``finetune_mixtures`` does the same for finetuned_model. This is one tick of the
    automation sensor: ``dg.evaluate_automation_conditions`` from an empty cursor.
    """
    from chameleon_assets.defs.partitions import split_model_key

    graph = defs.resolve_asset_graph()
    conditioned = [k for k in graph.materializable_asset_keys if graph.get(k).automation_condition is not None]
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance,
                                               asset_selection=dg.AssetSelection.assets(*conditioned))
    wanted = {key: set(result.get_requested_partitions(key)) for key in conditioned}
    out = []
    serves = method_assets()
    for key in graph.toposorted_asset_keys:
        partitions = wanted.get(key, set())
        if key.to_user_string() in serves and mixtures is not None and not set(serves[key.to_user_string()]) & set(
                mixtures):
            partitions = set()
        if key == dg.AssetKey("base_model") and mixtures is not None:
            partitions = {p for p in partitions if split_model_key(p)[0] in mixtures}
        if key == dg.AssetKey("finetuned_model") and finetune_mixtures is not None:
            partitions = {p for p in partitions if split_model_key(p)[0] in finetune_mixtures}
        out += [(key, p) for p in sorted(partitions, key=lambda p: p or "")]
    return out


def stale_partitions(defs: dg.Definitions, instance: dg.DagsterInstance) -> set[tuple[str, str | None]]:
    """Every (asset, partition) that Dagster's stale status marks STALE: what the UI shows."""
    graph = defs.resolve_asset_graph()
    staleness = Staleness(instance, graph)
    out = set()
    with dg.partition_loading_context(dynamic_partitions_store=instance):  # the domains are dynamic partitions
        for key in graph.materializable_asset_keys:
            pdef = graph.get(key).partitions_def
            keys = pdef.get_partition_keys(dynamic_partitions_store=instance) if pdef else [None]
            for p in keys:
                if staleness.is_stale(key, p):
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
