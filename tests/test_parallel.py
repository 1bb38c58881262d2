"""`chameleon run --parallel N`: concurrent partitions make the same artefacts as sequential
runs, and the `gpu` pool keeps training steps one at a time when its limit is 1."""

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


def _step_spans(instance, step_key: str) -> list[tuple[float, float]]:  # noqa: ANN001
    """(start, end) timestamps of every successful ``step_key`` step in the instance's runs."""
    import dagster as dg

    spans = []
    for run in instance.get_runs():
        times = {}
        for entry in instance.all_logs(run.run_id, of_type={dg.DagsterEventType.STEP_START,
                                                             dg.DagsterEventType.STEP_SUCCESS}):
            if entry.step_key == step_key:
                times[entry.dagster_event.event_type] = entry.timestamp
        if len(times) == 2:
            spans.append((times[dg.DagsterEventType.STEP_START], times[dg.DagsterEventType.STEP_SUCCESS]))
    return spans


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
    # The `gpu` pool at one slot: the two base models' runs start together but train in turn.
    (other / "dagster_home" / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\nconcurrency:\n  pools:\n    default_limit: 1\n")
    monkeypatch.setenv("CHAMELEON_DATA_DIR", str(other / "data"))
    monkeypatch.setenv("DAGSTER_HOME", str(other / "dagster_home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{other / 'mlflow.db'}")

    instance = get_instance()
    concurrent = run_everything(instance=instance, parallel=2)
    assert not concurrent.failed, concurrent.failed
    spans = _step_spans(instance, "base_model")
    assert len(spans) == 2, spans
    (start_a, end_a), (start_b, end_b) = sorted(spans)
    assert end_a <= start_b, f"two pool steps ran at once: {spans}"
    assert sorted(concurrent.materialized) == sorted(sequential.materialized)
    got = _artefacts(other / "data")
    assert any(k.startswith("base_model/chameleon_pretrain") and k.endswith(".safetensors") for k in got)
    assert any(k.startswith("corpus/gamma") and k.endswith(".bin") for k in got)
    differ = sorted(k for k in expected.keys() | got.keys() if expected.get(k) != got.get(k))
    assert not differ, differ


def test_the_gpu_pool_gets_its_default_slots_before_concurrent_runs_and_a_set_limit_stays(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """runner.initialise_pools creates the pool once, at the default limit (not lazily by two
    runs at once), and leaves a limit set by hand alone; no default limit, no pool."""
    import dagster as dg

    from chameleon_assets.runner import initialise_pools

    for default, expected in ((None, None), (1, 1)):
        home = tmp_path / f"home-{default}"
        home.mkdir()
        pools = f"concurrency:\n  pools:\n    default_limit: {default}\n" if default else ""
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n" + pools)
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        with dg.DagsterInstance.get() as instance:
            storage = instance.event_log_storage
            initialise_pools(instance)
            initialise_pools(instance)
            if expected is None:
                assert "gpu" not in storage.get_concurrency_keys()
                continue
            assert storage.get_concurrency_info("gpu").slot_count == expected
            storage.set_concurrency_slots("gpu", 3)
            initialise_pools(instance)
            assert storage.get_concurrency_info("gpu").slot_count == 3


def test_on_a_machine_with_gpus_the_pool_gets_one_slot_per_gpu_and_a_set_limit_stays(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dagster as dg

    from chameleon_assets.runner import initialise_pools, visible_gpus

    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    with dg.DagsterInstance.get() as instance:
        storage = instance.event_log_storage
        initialise_pools(instance, 3)
        assert storage.get_concurrency_info("gpu").slot_count == 3
        storage.set_concurrency_slots("gpu", 1)
        initialise_pools(instance, 3)
        assert storage.get_concurrency_info("gpu").slot_count == 1
    monkeypatch.setenv("CHAMELEON_GPUS", "2")
    assert visible_gpus() == ["0", "1"]
    monkeypatch.setenv("CHAMELEON_GPUS", "1,3")
    assert visible_gpus() == ["1", "3"]
    monkeypatch.delenv("CHAMELEON_GPUS")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6")
    assert visible_gpus() == ["4", "5", "6"]


@pytest.mark.slow
def test_concurrent_trainings_are_each_given_their_own_gpu(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`chameleon run --parallel 2` on a machine that says it has two GPUs (CHAMELEON_GPUS=2:
    the CPU stands in, so each step trains on the CPU but records the GPU it was given):
    the two base models train at the same time, each with its own CUDA_VISIBLE_DEVICES."""
    import dagster as dg

    from chameleon_assets.runner import get_instance, run_everything

    profile = project / "conf" / "profiles" / "tiny.yaml"
    profile.write_text(profile.read_text().replace("tasks: [arc_easy_local]", "tasks: []"))
    for d in ("alpha", "beta", "gamma"):
        write_domain(project / "raw", d)
    write_registry(project, ["alpha", "beta", "gamma"])
    monkeypatch.setenv("CHAMELEON_GPUS", "2")
    instance = get_instance()
    report = run_everything(instance=instance, parallel=2)
    assert not report.failed, report.failed
    assert instance.event_log_storage.get_concurrency_info("gpu").slot_count == 2
    given = {}
    for record in instance.fetch_materializations(dg.AssetKey("base_model"), limit=10).records:
        metadata = record.asset_materialization.metadata
        given[record.partition_key] = (metadata["cuda_visible_devices"].value, metadata["device_slot"].value)
    assert sorted(given) == ["chameleon_pretrain|0", "uniform|0"]
    assert sorted(gpu for gpu, _ in given.values()) == ["0", "1"]
    assert sorted(slot for _, slot in given.values()) == ["0", "1"]
    (start_a, end_a), (start_b, end_b) = sorted(_step_spans(instance, "base_model"))
    assert start_b < end_a, "the two trainings did not run at the same time"


def test_a_training_under_torchrun_is_given_a_set_of_gpus_of_its_process_count() -> None:
    """8 GPUs, 4 DDP processes per training: two trainings at once, on GPUs 0-3 and 4-7; 8
    processes per training: one at a time on all eight; one process: one GPU each."""
    from chameleon_assets.runner import gpu_sets

    gpus = [str(i) for i in range(8)]
    assert gpu_sets(gpus, 4) == [["0", "1", "2", "3"], ["4", "5", "6", "7"]]
    assert gpu_sets(gpus, 8) == gpu_sets(gpus, 16) == [gpus]
    assert gpu_sets(gpus, 1) == [[g] for g in gpus]
    assert gpu_sets(gpus, 3) == [["0", "1", "2"], ["3", "4", "5"]]
    assert gpu_sets([], 2) == []
