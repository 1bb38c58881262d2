"""`chameleon run --parallel N`: concurrent partitions make the same artefacts as sequential runs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.conftest import write_domain, write_registry

# What a run computes, as opposed to what it records about itself (timings, MLflow run
# ids, plots): these files must be byte-identical however the partitions were scheduled.
COMPUTED = {".bin", ".npy", ".safetensors", ".csv"}


def _artefacts(data: Path) -> dict[str, str]:
    """sha256 of every computed artefact file, by its path under ``data``/artifacts
    (``current`` links and checkpoints excluded)."""
    root = data / "artifacts"
    out = {}
    for f in sorted(root.rglob("*")):
        rel = f.relative_to(root)
        if f.is_file() and f.suffix in COMPUTED and "checkpoints" not in rel.parts and "current" not in rel.parts:
            out[str(rel)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


@pytest.mark.slow
def test_concurrent_partitions_make_byte_identical_artefacts(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from chameleon_assets.runner import get_instance, run_everything

    profile = project / "conf" / "profiles" / "tiny.yaml"
    profile.write_text(profile.read_text().replace("tasks: [arc_easy_local]", "tasks: []"))
    for d in ("alpha", "beta", "gamma"):
        write_domain(project / "raw", d)
    write_registry(project, ["alpha", "beta", "gamma"])

    sequential = run_everything(instance=get_instance())
    assert not sequential.failed, sequential.failed
    expected = _artefacts(project / "data")
    # The same configuration and sources, into a fresh data directory, instance and MLflow store.
    other = project / "second"
    (other / "dagster_home").mkdir(parents=True)
    monkeypatch.setenv("CHAMELEON_DATA_DIR", str(other / "data"))
    monkeypatch.setenv("DAGSTER_HOME", str(other / "dagster_home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{other / 'mlflow.db'}")

    concurrent = run_everything(instance=get_instance(), parallel=2)
    assert not concurrent.failed, concurrent.failed
    assert sorted(concurrent.materialized) == sorted(sequential.materialized)
    got = _artefacts(other / "data")
    assert any(k.startswith("base_model/chameleon_pretrain") and k.endswith(".safetensors") for k in got)
    assert any(k.startswith("corpus/gamma") and k.endswith(".bin") for k in got)
    differ = sorted(k for k in expected.keys() | got.keys() if expected.get(k) != got.get(k))
    assert not differ, differ
