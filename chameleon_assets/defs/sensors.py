"""The registry sensor: the same plan as `chameleon sync`, issued as Dagster run requests."""

import dagster as dg

from chameleon_assets.defs.corpus import domain_corpus, domain_source
from chameleon_assets.defs.partitions import domain_partitions
from chameleon_assets.defs.resources import ChameleonConfig
from chameleon_assets.defs.weights import affinity_matrix, domain_embeddings, mixture_weights
from chameleon_assets.sync import plan_sync


@dg.sensor(
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    asset_selection=[domain_source, domain_corpus, domain_embeddings, affinity_matrix, mixture_weights],
)
def domain_registry_sensor(context: dg.SensorEvaluationContext, chameleon: ChameleonConfig) -> dg.SensorResult:
    """Watches conf/domains.yaml and the domains' source files. New domain: adds its
    partition and requests its corpus + embeddings; changed source bytes: requests that
    partition only; removed domain: deletes its partition and requests affinity + weights
    (from the stored embeddings). affinity_matrix and mixture_weights follow new
    embeddings through their eager automation condition. The proxy is never requested.
    """
    plan = plan_sync(context.instance, chameleon.registry(), chameleon.profile())
    if plan.empty:
        return dg.SensorResult(skip_reason="registry and partitions agree; no source changed")
    partition_requests = []
    if plan.added:
        partition_requests.append(domain_partitions.build_add_request(plan.added))
    if plan.removed:
        partition_requests.append(domain_partitions.build_delete_request(plan.removed))
    state = ",".join(f"{d}={v}" for d, v in sorted(plan.versions.items())) + "|-" + ",".join(plan.removed)
    runs = [dg.RunRequest(run_key=f"observe:{state}", asset_selection=[domain_source.key])]
    runs += [
        dg.RunRequest(
            run_key=f"{d}:{plan.versions[d]}",
            partition_key=d,
            asset_selection=[domain_corpus.key, domain_embeddings.key],
        )
        for d in plan.to_build
    ]
    if plan.removed and not plan.to_build:
        runs.append(dg.RunRequest(run_key=f"weights:{state}", asset_selection=[affinity_matrix.key, mixture_weights.key]))
    context.log.info(plan.describe())
    return dg.SensorResult(run_requests=runs, dynamic_partitions_requests=partition_requests)
