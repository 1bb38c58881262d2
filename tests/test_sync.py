"""Domains change: only the affected partitions re-materialise; the proxy never retrains."""

import json
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from tests.conftest import write_domain, write_registry

pytestmark = pytest.mark.slow

KEYS = ("domain_corpus", "domain_embeddings", "proxy_model", "affinity_matrix", "mixture_weights")


def _materializations(instance: dg.DagsterInstance) -> dict[str, list[str | None]]:
    """Partition of every materialisation so far, per asset (oldest first)."""
    out = {}
    for key in KEYS:
        records = instance.fetch_materializations(dg.AssetKey(key), limit=10_000).records
        out[key] = sorted((r.partition_key or "") for r in records)
    return out


def _new(before: dict, after: dict) -> dict[str, list[str]]:
    diff = {}
    for key in KEYS:
        rest = list(after[key])
        for p in before[key]:
            rest.remove(p)
        diff[key] = rest
    return diff


@pytest.fixture
def synced(project: Path):
    """Three fixture domains, fully materialised through `sync`."""
    from chameleon_assets.runner import get_instance, sync

    for d in ("alpha", "beta", "gamma", "delta"):
        write_domain(project / "raw", d)
    write_registry(project, ["alpha", "beta", "gamma"])
    instance = get_instance()
    sync(instance=instance)
    return project, instance


def _weights(project: Path) -> dict:
    return json.loads((project / "data/artifacts/weights/weights.json").read_text())


def test_adding_a_domain_materialises_only_its_partitions(synced) -> None:
    from chameleon_assets.runner import sync

    project, instance = synced
    before = _materializations(instance)
    write_registry(project, ["alpha", "beta", "gamma", "delta"])
    plan = sync(instance=instance)
    assert plan.added == ["delta"] and not plan.changed and not plan.removed
    assert _new(before, _materializations(instance)) == {
        "domain_corpus": ["delta"],
        "domain_embeddings": ["delta"],
        "proxy_model": [],
        "affinity_matrix": [""],
        "mixture_weights": [""],
    }
    assert _weights(project)["domains"] == ["alpha", "beta", "delta", "gamma"]


def test_editing_a_domain_rematerialises_that_partition_only(synced) -> None:
    from chameleon_assets.runner import sync

    project, instance = synced
    before = _materializations(instance)
    write_domain(project / "raw", "beta", text="Entirely new text about glaciers, moraines and ice ages.")
    plan = sync(instance=instance)
    assert plan.changed == ["beta"] and not plan.added and not plan.removed
    new = _new(before, _materializations(instance))
    assert new["domain_corpus"] == ["beta"] and new["domain_embeddings"] == ["beta"] and new["proxy_model"] == []


def test_removing_a_domain_recomputes_weights_from_stored_embeddings(synced) -> None:
    from chameleon_assets.core.krls import chameleon_weights, linear_kernel
    from chameleon_assets.runner import sync

    project, instance = synced
    before = _materializations(instance)
    write_registry(project, ["alpha", "gamma"])
    plan = sync(instance=instance)
    assert plan.removed == ["beta"]
    new = _new(before, _materializations(instance))
    assert new["domain_embeddings"] == [] and new["domain_corpus"] == [] and new["proxy_model"] == []
    assert new["mixture_weights"] == [""]
    assert "beta" not in instance.get_dynamic_partitions("domain")
    data = _weights(project)
    assert data["domains"] == ["alpha", "gamma"]
    means = np.stack([np.load(project / f"data/artifacts/embeddings/{d}/mean.npy") for d in ("alpha", "gamma")])
    fresh = chameleon_weights(["alpha", "gamma"], linear_kernel(means))
    np.testing.assert_allclose(data["krls"], fresh.krls, rtol=1e-5)
    np.testing.assert_allclose(data["weights"]["chameleon_pretrain"], fresh.pretrain, rtol=1e-5)


def test_syncing_twice_without_a_change_requests_nothing(synced) -> None:
    from chameleon_assets.runner import sync

    project, instance = synced
    before = _materializations(instance)
    runs_before = len(instance.get_run_records())
    assert sync(instance=instance).empty
    assert _materializations(instance) == before
    assert len(instance.get_run_records()) == runs_before


def test_new_weights_are_logged_to_mlflow_as_a_version_tagged_with_the_domain_set(synced) -> None:
    import mlflow

    from chameleon_assets.runner import sync

    project, instance = synced
    write_registry(project, ["alpha", "beta", "gamma", "delta"])
    sync(instance=instance)
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["chameleon"], filter_string="tags.kind = 'weights'",
                              order_by=["attributes.start_time ASC"])
    assert list(runs["tags.domains"]) == ["alpha,beta,gamma", "alpha,beta,delta,gamma"]
    latest = runs.iloc[-1]
    assert float(latest["params.uniform.delta"]) == pytest.approx(0.25)
    assert latest["metrics.krls.delta"] == pytest.approx(_weights(project)["krls"][2])


def test_only_the_edited_partition_shows_as_stale(synced) -> None:
    from dagster._core.definitions.data_version import CachingStaleStatusResolver
    from dagster._core.loader import LoadingContextForTest

    from chameleon_assets.defs.corpus import domain_source
    from chameleon_assets.runner import load_defs, materialize

    project, instance = synced
    defs = load_defs()
    write_domain(project / "raw", "gamma", text="The committee adjourned; minutes follow.")
    materialize(defs, instance, [domain_source])  # what the sensor and `chameleon sync` do first
    resolver = CachingStaleStatusResolver(instance, defs.get_repository_def().asset_graph,
                                          LoadingContextForTest(instance))
    status = {d: resolver.get_status(dg.AssetKey("domain_corpus"), d).value for d in ("alpha", "beta", "gamma")}
    assert status == {"alpha": "FRESH", "beta": "FRESH", "gamma": "STALE"}


def test_the_sensor_requests_exactly_the_new_domains_partitions(synced) -> None:
    from chameleon_assets.definitions import defs
    from chameleon_assets.defs.sensors import domain_registry_sensor

    project, instance = synced
    context = dg.build_sensor_context(instance=instance, resources=dict(defs.resources))
    idle = domain_registry_sensor(context)
    assert not idle.run_requests and "agree" in (idle.skip_reason.skip_message or "")

    write_registry(project, ["alpha", "gamma", "delta"])
    result = domain_registry_sensor(dg.build_sensor_context(instance=instance, resources=dict(defs.resources)))
    (add, delete) = result.dynamic_partitions_requests
    assert list(add.partition_keys) == ["delta"] and list(delete.partition_keys) == ["beta"]
    by_partition = {r.partition_key: sorted(k.to_user_string() for k in r.asset_selection) for r in result.run_requests}
    assert by_partition == {None: ["domain_source"], "delta": ["domain_corpus", "domain_embeddings"]}
