"""``domain_corpus`` on a temporary instance: partitions, artefacts, data versions."""

from pathlib import Path

import dagster as dg
import numpy as np

from tests.conftest import current, register, write_domain, write_registry


def _latest_version(instance: dg.DagsterInstance, partition: str) -> str:
    events = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("domain_corpus"), asset_partitions=[partition]), limit=1
    ).records
    assert events
    return events[0].asset_materialization.tags["dagster/data_version"]


def test_changing_one_domain_changes_only_its_data_version(project: Path) -> None:
    from chameleon_assets.defs.corpus.assets import domain_corpus
    from chameleon_assets.runner import get_instance, load_defs, materialize

    write_domain(project / "raw", "alpha")
    write_domain(project / "raw", "beta")
    write_registry(project, ["alpha", "beta"])
    instance = get_instance()
    defs = load_defs()
    register(instance, ["alpha", "beta"])
    for d in ("alpha", "beta"):
        assert materialize(defs, instance, [domain_corpus], partition_key=d).success
    before = {d: _latest_version(instance, d) for d in ("alpha", "beta")}
    assert before["alpha"] != before["beta"]
    shards = np.fromfile(current(project, "corpus", "alpha") / "train.bin", dtype=np.uint16)
    assert shards.size > 0

    write_domain(project / "raw", "alpha", text="Completely different text about volcanoes and lava.")
    for d in ("alpha", "beta"):
        materialize(defs, instance, [domain_corpus], partition_key=d)
    after = {d: _latest_version(instance, d) for d in ("alpha", "beta")}
    assert after["beta"] == before["beta"]
    assert after["alpha"] != before["alpha"]


def test_metadata_reports_counts_preview_and_hash(project: Path) -> None:
    from chameleon_assets.defs.corpus.assets import domain_corpus
    from chameleon_assets.runner import get_instance, load_defs, materialize

    write_domain(project / "raw", "gamma", n_docs=10)
    write_registry(project, ["gamma"])
    instance = get_instance()
    register(instance, ["gamma"])
    result = materialize(load_defs(), instance, [domain_corpus], partition_key="gamma")
    (mat,) = result.asset_materializations_for_node("domain_corpus")
    md = {k: v.value for k, v in mat.metadata.items()}
    assert md["documents"] == 10 and md["train_documents"] == 8 and md["val_documents"] == 2
    assert md["train_tokens"] > 0 and md["val_tokens"] > 0
    assert md["preview"].startswith("Whereas the licensee")
    assert len(mat.tags["dagster/data_version"]) == 24
    assert current(project, "corpus", "gamma").name == mat.tags["dagster/data_version"]


def test_a_partition_missing_from_the_registry_fails_clearly_and_keeps_artefacts(project: Path) -> None:
    import pytest

    from chameleon_assets.core.registry import RegistryError
    from chameleon_assets.defs.corpus.assets import domain_corpus
    from chameleon_assets.runner import get_instance, load_defs, materialize

    write_domain(project / "raw", "alpha")
    write_registry(project, ["alpha"])
    instance = get_instance()
    register(instance, ["alpha", "ghost"])
    materialize(load_defs(), instance, [domain_corpus], partition_key="alpha")
    with pytest.raises(RegistryError, match="domain 'ghost' is a partition but no longer under 'domains:' in"):
        materialize(load_defs(), instance, [domain_corpus], partition_key="ghost")
    assert (current(project, "corpus", "alpha") / "train.bin").exists()
