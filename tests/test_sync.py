"""Domains change: only the affected partitions re-materialise; the proxy never retrains."""

import json
import os
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from tests.conftest import (
    chameleon_by_eigendecomposition,
    configure_chameleon,
    current,
    materialised,
    new_materialisations,
    write_domain,
    write_registry,
)

# Its tests share one materialised project (saved_project): one worker builds it once.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("sync")]

KEYS = ("domain_corpus", "domain_embeddings", "proxy_model", "affinity_matrix", "mixture_weights")
# conf/mixtures.yaml's CHAMELEON settings in this module's project, not the shipped ones
# (10, 5, 0.2): lam k is then of the order of K_c's eigenvalues, where lam changes the scores.
LAM, T_PRETRAIN, T_FINETUNE = 0.05, 2.0, 0.5


def _materializations(instance: dg.DagsterInstance) -> dict[str, list[str]]:
    return materialised(instance, KEYS)


_new = new_materialisations


def build_project(root: Path):  # noqa: ANN201
    """Run once per module by the ``saved_project`` fixture."""
    from chameleon_assets.runner import get_instance, sync

    for d in ("alpha", "beta", "gamma", "delta"):
        write_domain(root / "raw", d)
    write_registry(root, ["alpha", "beta", "gamma"])
    configure_chameleon(root, lam=LAM, t_pretrain=T_PRETRAIN, t_finetune=T_FINETUNE)
    instance = get_instance()
    sync(instance=instance)
    return instance


@pytest.fixture
def synced(restored_project):  # noqa: ANN001, ANN201
    """Three fixture domains, fully materialised through `sync`."""
    return restored_project


def _weights(project: Path) -> dict:
    return json.loads((current(project, "weights") / "weights.json").read_text())


def test_adding_a_domain_materialises_only_its_partitions(synced) -> None:
    from chameleon_assets.defs.policy import stale_partitions
    from chameleon_assets.runner import load_defs, sync

    project, instance = synced
    before = _materializations(instance)
    write_registry(project, ["alpha", "beta", "gamma", "delta"])
    report = sync(instance=instance)
    assert ("proxy_model", None) not in stale_partitions(load_defs(), instance)  # nor would `run` retrain it
    assert report.partition_changes == "+domain: delta"
    assert report.observed == ["domain_registry", "domain_source[delta]"]
    assert _new(before, _materializations(instance)) == {
        "domain_corpus": ["delta"],
        "domain_embeddings": ["delta"],
        "proxy_model": [],
        "affinity_matrix": [""],
        "mixture_weights": [""],
    }
    data = _weights(project)
    assert data["domains"] == ["alpha", "beta", "delta", "gamma"]
    # The rows over the four domains are KRLS of the stored means under the configured
    # lam and temperatures, worked out here independently of core.krls.
    means = np.stack([np.load(current(project, "embeddings", d) / "mean.npy") for d in data["domains"]])
    tau, pretrain, finetune = chameleon_by_eigendecomposition(means, LAM, T_PRETRAIN, T_FINETUNE)
    np.testing.assert_allclose(data["krls"], tau, rtol=1e-5)
    np.testing.assert_allclose(data["weights"]["chameleon_pretrain"], pretrain, rtol=1e-5)
    np.testing.assert_allclose(data["weights"]["chameleon_finetune"], finetune, rtol=1e-5)
    shipped = chameleon_by_eigendecomposition(means, lam=10.0, t_pretrain=5.0, t_finetune=0.2)
    assert min(np.abs(a - b).max() for a, b in zip((tau, pretrain, finetune), shipped)) > 1e-3


def test_editing_a_domain_rematerialises_that_partition_only(synced) -> None:
    from chameleon_assets.runner import sync

    project, instance = synced
    before = _materializations(instance)
    write_domain(project / "raw", "beta", text="Entirely new text about glaciers, moraines and ice ages.")
    report = sync(instance=instance)
    assert report.observed == ["domain_source[beta]"]
    new = _new(before, _materializations(instance))
    assert new["domain_corpus"] == ["beta"] and new["domain_embeddings"] == ["beta"] and new["proxy_model"] == []


def test_removing_a_domain_recomputes_weights_from_stored_embeddings(synced) -> None:
    from chameleon_assets.core.krls import chameleon_weights, linear_kernel
    from chameleon_assets.runner import sync

    project, instance = synced
    before = _materializations(instance)
    write_registry(project, ["alpha", "gamma"])
    report = sync(instance=instance)
    assert report.partition_changes == "-domain: beta"
    from chameleon_assets.defs.policy import stale_partitions
    from chameleon_assets.runner import load_defs

    assert stale_partitions(load_defs(), instance) == set()
    new = _new(before, _materializations(instance))
    assert new["domain_embeddings"] == [] and new["domain_corpus"] == [] and new["proxy_model"] == []
    assert new["mixture_weights"] == [""]
    assert "beta" not in instance.get_dynamic_partitions("domain")
    data = _weights(project)
    assert data["domains"] == ["alpha", "gamma"]
    means = np.stack([np.load(current(project, "embeddings", d) / "mean.npy") for d in ("alpha", "gamma")])
    fresh = chameleon_weights(["alpha", "gamma"], linear_kernel(means), LAM, T_PRETRAIN, T_FINETUNE)
    np.testing.assert_allclose(data["krls"], fresh.krls, rtol=1e-5)
    np.testing.assert_allclose(data["weights"]["chameleon_pretrain"], fresh.pretrain, rtol=1e-5)
    # By hand: two centred means are +-(e_alpha - e_gamma) / 2, of equal leverage whatever
    # lam, so both scores are 1/2 and both CHAMELEON rows uniform.
    np.testing.assert_allclose(data["krls"], [0.5, 0.5], rtol=1e-9)
    np.testing.assert_allclose(data["weights"]["chameleon_pretrain"], [0.5, 0.5], rtol=1e-9)
    np.testing.assert_allclose(data["weights"]["chameleon_finetune"], [0.5, 0.5], rtol=1e-9)


def test_syncing_twice_without_a_change_requests_nothing(synced) -> None:
    from chameleon_assets.runner import sync

    project, instance = synced
    before = _materializations(instance)
    runs_before = len(instance.get_run_records())
    events_before = instance.event_log_storage.get_maximum_record_id()
    assert sync(instance=instance).empty
    assert _materializations(instance) == before
    assert len(instance.get_run_records()) == runs_before
    assert instance.event_log_storage.get_maximum_record_id() == events_before  # not even an observation


def test_new_weights_are_logged_to_mlflow_as_a_version_tagged_with_the_domain_set(synced) -> None:
    import mlflow

    from chameleon_assets.runner import sync

    project, instance = synced
    write_registry(project, ["alpha", "beta", "gamma", "delta"])
    sync(instance=instance)
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    runs = mlflow.search_runs(experiment_names=["chameleon"], filter_string="tags.kind = 'weights'",
                              order_by=["attributes.start_time ASC"])
    assert list(runs["tags.domains"]) == ["alpha,beta,gamma", "alpha,beta,delta,gamma"]
    latest = runs.iloc[-1]
    assert float(latest["params.uniform.delta"]) == pytest.approx(0.25)
    assert latest["metrics.krls.delta"] == pytest.approx(_weights(project)["krls"][2])
    assert latest["tags.weights_version"] == current(project, "weights").name


def test_only_the_edited_partition_shows_as_stale_and_is_what_sync_runs(synced) -> None:
    from chameleon_assets.defs.policy import stale_partitions
    from chameleon_assets.defs.resources import ChameleonConfig
    from chameleon_assets.defs.sources import record_observations, source_observations
    from chameleon_assets.runner import load_defs, sync

    project, instance = synced
    write_domain(project / "raw", "gamma", text="The committee adjourned; minutes follow.")
    observations, _ = source_observations(instance, ChameleonConfig())
    record_observations(instance, observations)  # what the sensor and `chameleon sync` do first
    assert stale_partitions(load_defs(), instance) == {("domain_corpus", "gamma")}
    report = sync(instance=instance)
    assert report.materialized == ["domain_corpus[gamma]", "domain_embeddings[gamma]", "affinity_matrix",
                                   "mixture_weights", "mixture_table", "weight_diagnostics"]
    assert stale_partitions(load_defs(), instance) == set()


def test_the_sensor_registers_partitions_then_observes_changed_sources(synced) -> None:
    from chameleon_assets.definitions import defs
    from chameleon_assets.defs.sensors import domain_registry_sensor

    project, instance = synced

    def tick():
        return domain_registry_sensor(dg.build_sensor_context(instance=instance, resources=dict(defs.resources)))

    idle = tick()
    assert not idle.asset_events and "no source changed" in (idle.skip_reason.skip_message or "")

    write_registry(project, ["alpha", "gamma", "delta"])
    first = tick()
    (add, delete) = first.dynamic_partitions_requests
    assert list(add.partition_keys) == ["delta"] and list(delete.partition_keys) == ["beta"]
    assert not first.run_requests  # what to run is the automation policy's call
    add_and_delete = [r for r in first.dynamic_partitions_requests]
    instance.add_dynamic_partitions("domain", list(add_and_delete[0].partition_keys))
    instance.delete_dynamic_partition("domain", "beta")
    second = tick()
    assert [(e.asset_key.to_user_string(), e.partition) for e in second.asset_events] == [
        ("domain_registry", None), ("domain_source", "delta")]


def test_the_sensor_reads_no_unchanged_raw_bytes(synced, monkeypatch: pytest.MonkeyPatch) -> None:
    from chameleon_assets.core import fingerprint
    from chameleon_assets.definitions import defs
    from chameleon_assets.defs.sensors import domain_registry_sensor

    project, instance = synced
    read = []
    original = fingerprint.sha256_file
    monkeypatch.setattr(fingerprint, "sha256_file", lambda f, *a: read.append(Path(f).parent.name) or original(f, *a))
    domain_registry_sensor(dg.build_sensor_context(instance=instance, resources=dict(defs.resources)))
    assert read == []
    write_domain(project / "raw", "beta", text="Edited.")
    domain_registry_sensor(dg.build_sensor_context(instance=instance, resources=dict(defs.resources)))
    assert read == ["beta"]


def test_the_instance_turns_off_dagsters_first_visit_dialog(project: Path) -> None:
    import yaml

    from chameleon_assets.runner import get_instance

    settings = project / "dagster_home" / "dagster.yaml"
    instance = get_instance()
    assert yaml.safe_load(settings.read_text()) == {"telemetry": {"enabled": False}, "nux": {"enabled": False}}
    assert instance.nux_enabled is False
    instance.dispose()
    # A home made before the setting (telemetry only) is given it; a dagster.yaml of one's own is left alone.
    settings.write_text("telemetry:\n  enabled: false\n")
    get_instance().dispose()
    assert yaml.safe_load(settings.read_text())["nux"] == {"enabled": False}
    settings.write_text("telemetry:\n  enabled: false\n# mine\n")
    instance = get_instance()
    assert instance.nux_enabled is True and settings.read_text().endswith("# mine\n")
    instance.dispose()
