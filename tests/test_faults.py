"""Faults in a running pipeline: damaged artefacts, writers killed mid-commit, two
writers at once, removed domains. Each test starts from the tiny profile, materialised."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import torch

from tests.conftest import TINY_PROFILE, current, write_domain, write_registry

# Its tests share one materialised project (saved_project): one worker builds it once.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("faults")]

PROFILE = TINY_PROFILE.replace("tasks: [arc_easy_local]", "tasks: []")
DOMAINS = ["alpha", "beta", "gamma"]


def _materializations(instance: dg.DagsterInstance) -> dict[str, list]:
    """Every materialisation record per ``key[partition]``."""
    out: dict[str, list] = {}
    for key in instance.get_asset_keys():
        for r in instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key), limit=1000).records:
            out.setdefault(key.to_user_string() + (f"[{r.partition_key}]" if r.partition_key else ""), []).append(r)
    return out


def _cli(*argv: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "chameleon_assets.cli", *argv], env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _kill_when_paused(proc: subprocess.Popen, marker: Path, timeout: float = 240) -> None:
    t0 = time.monotonic()
    while not marker.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the writer ended before its pause point:\n{proc.stdout.read()}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            raise AssertionError("the writer never reached its pause point")
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def build_project(root: Path):  # noqa: ANN201
    """Run once per module by the ``saved_project`` fixture."""
    from chameleon_assets.runner import get_instance, run_everything

    (root / "conf/profiles/tiny.yaml").write_text(PROFILE)
    for d in DOMAINS:
        write_domain(root / "raw", d)
    write_registry(root, DOMAINS)
    instance = get_instance()
    assert not run_everything(mixtures=["uniform"], instance=instance).failed
    return instance


@pytest.fixture
def ran(restored_project):  # noqa: ANN001, ANN201
    """The fixture domains, everything materialised for the uniform mixture."""
    return restored_project


def test_deleted_or_truncated_artefacts_are_detected_and_rebuilt(ran) -> None:  # noqa: ANN001
    from chameleon_assets.core.artifacts import verify_dir
    from chameleon_assets.defs.io import load_value
    from chameleon_assets.defs.policy import damaged_partitions
    from chameleon_assets.runner import converge, load_defs

    project, instance = ran
    shard = current(project, "corpus", "alpha") / "train.bin"
    embedding = current(project, "embeddings", "beta") / "embeddings.npy"
    model = current(project, "base_model", "uniform/seed-0")
    before = {k: len(v) for k, v in _materializations(instance).items()}
    versions = {k: v[0].asset_materialization.tags["dagster/data_version"]
                for k, v in _materializations(instance).items()}

    weights_value = next((project / "data" / "artifacts" / ".values" / "mixture_weights").rglob("*.pkl"))

    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])  # truncated
    embedding.unlink()                                                 # deleted
    (model / "model.safetensors").unlink()                            # a model folder missing its weights
    weights_value.write_bytes(weights_value.read_bytes()[:40])        # a stored descriptor, torn

    damaged = damaged_partitions(load_defs(), instance)
    assert set(damaged) == {("domain_corpus", "alpha"), ("domain_embeddings", "beta"), ("base_model", "uniform|0"),
                            ("mixture_weights", None)}
    assert "bytes" in damaged[("domain_corpus", "alpha")] and "is missing" in damaged[("domain_embeddings", "beta")]
    assert "unreadable" in damaged[("mixture_weights", None)]

    report = converge("run", mixtures=["uniform"], instance=instance)
    assert not report.failed
    assert sorted(report.materialized) == ["base_model[uniform|0]", "domain_corpus[alpha]", "domain_embeddings[beta]",
                                           "mixture_weights"]
    after = _materializations(instance)
    for name, records in after.items():  # rebuilt under the same version: nothing downstream went stale
        assert records[0].asset_materialization.tags["dagster/data_version"] == versions[name]
        assert len(records) == before[name] + (name in report.materialized)
    for folder in (shard.parent, embedding.parent, model):
        assert verify_dir(folder, deep=True) is None
    assert load_value(instance, "domain_corpus", "alpha").train().shape[0] > 0
    assert load_value(instance, "mixture_weights").domains == DOMAINS
    assert damaged_partitions(load_defs(), instance) == {}


def test_a_damaged_proxy_is_rebuilt_as_it_was_even_after_a_domain_was_added(ran) -> None:  # noqa: ANN001
    """Rebuilding a damaged proxy is not a domain change: it is retrained on the corpus
    versions it recorded, under the same version, and no embedding goes stale."""
    from chameleon_assets.defs.io import latest_version
    from chameleon_assets.runner import converge

    project, instance = ran
    proxy_version = latest_version(instance, "proxy_model")
    (current(project, "proxy_model") / "model.safetensors").unlink()
    write_domain(project / "raw", "delta")
    write_registry(project, DOMAINS + ["delta"])
    report = converge("sync", instance=instance)
    assert not report.failed
    assert "proxy_model" in report.materialized and "domain_embeddings[delta]" in report.materialized
    assert latest_version(instance, "proxy_model") == proxy_version
    assert not any(f"domain_embeddings[{d}]" in report.materialized for d in DOMAINS)


def test_a_writer_killed_before_its_commit_leaves_the_previous_versions_loadable(ran) -> None:  # noqa: ANN001
    from chameleon_assets.core.artifacts import verify_dir
    from chameleon_assets.core.model import load_model
    from chameleon_assets.defs.io import latest_version, load_value
    from chameleon_assets.runner import converge

    project, instance = ran
    marker = project / "paused"
    # Embeddings: an edited domain; weights: a new lambda; a model: a new learning rate.
    # Each killed run first completes what the previous one left (a new corpus, new
    # embeddings...), then is killed at its own commit.
    write_domain(project / "raw", "alpha", n_docs=14)
    edits = [("domain_embeddings", "alpha", "commit:embeddings/alpha/", "sync", None),
             ("mixture_weights", None, "commit:weights/", "sync", ("conf/mixtures.yaml", "lam: 10.0", "lam: 3.0")),
             ("base_model", "uniform|0", "commit:artifacts/base_model/uniform/seed-0/", "run",
              ("conf/profiles/tiny.yaml", "lr: 1.0e-2, warmup_steps: 2, checkpoint_every: 8}\n  mixtures",
               "lr: 5.0e-3, warmup_steps: 2, checkpoint_every: 8}\n  mixtures"))]
    replaced = []
    for key, partition, pause, command, edit in edits:
        if edit:
            path = project / edit[0]
            assert edit[1] in path.read_text(), edit
            path.write_text(path.read_text().replace(edit[1], edit[2], 1))
        version = latest_version(instance, key, partition)
        marker.unlink(missing_ok=True)
        argv = [command, "--mixtures", "uniform"] if command == "run" else [command]
        _kill_when_paused(_cli(*argv, CHAMELEON_PAUSE_AT=pause, CHAMELEON_PAUSE_MARKER=str(marker)), marker)
        target = Path(marker.read_text().split()[2])
        assert target.name != version and not target.exists()  # the new version never appeared half-written
        assert any(p.name.startswith(f".{target.name}.tmp-") for p in target.parent.iterdir())
        # The previous version is still the recorded one, and it loads, intact.
        assert latest_version(instance, key, partition) == version
        value = load_value(instance, key, partition)
        assert verify_dir(Path(value.path), deep=True) is None
        replaced.append((key, partition, version))
    assert load_model(load_value(instance, "base_model", "uniform|0").path) is not None
    # and what loads is the previous model itself: its folder is that version's, and every
    # weight equals the stored file's, read here with safetensors directly (the head is tied
    # to the embedding, so the file holds it once)
    from safetensors.torch import load_file

    previous = Path(load_value(instance, "base_model", "uniform|0").path)
    assert previous.name == replaced[-1][2]
    stored = {name: t for f in sorted(previous.glob("*.safetensors")) for name, t in load_file(f).items()}
    loaded = load_model(previous).state_dict()
    assert stored and set(loaded) - set(stored) <= {"lm_head.weight"} and set(stored) <= set(loaded)
    assert [name for name, t in stored.items() if not torch.equal(loaded[name], t)] == []

    report = converge("run", mixtures=["uniform"], instance=instance)  # the next run finishes the job
    assert not report.failed
    assert "base_model[uniform|0]" in report.materialized
    for key, partition, version in replaced:
        assert latest_version(instance, key, partition) != version
    leftovers = [p for p in (project / "data" / "artifacts").rglob(".*.tmp-*")]
    assert leftovers == []  # the killed writers' temporary folders were cleaned up


def test_two_cli_runs_at_once_run_each_partition_once(project: Path) -> None:
    from chameleon_assets.runner import get_instance

    (project / "conf/profiles/tiny.yaml").write_text(PROFILE)
    for d in DOMAINS:
        write_domain(project / "raw", d)
    write_registry(project, DOMAINS)
    first = _cli("sync")
    time.sleep(1.0)
    second = _cli("sync")
    out1, out2 = first.communicate(timeout=600)[0], second.communicate(timeout=600)[0]
    assert first.returncode == 0 and second.returncode == 0, out1 + out2
    assert "waiting: pid" in out2 and "chameleon sync" in out2
    assert "up to date: nothing to do" in out2
    counts = {k: len(v) for k, v in _materializations(get_instance()).items()}
    assert counts and set(counts.values()) == {1}, counts

    rc = subprocess.run([sys.executable, "-m", "chameleon_assets.cli", "sync", "--no-wait"], capture_output=True,
                        text=True, env={**os.environ, "CHAMELEON_PAUSE_AT": ""})
    assert rc.returncode == 0  # nobody holds the lock now


def test_the_same_partition_from_two_runs_is_computed_once(project: Path) -> None:
    """The CLI and a run the UI's automation launched meet at one partition: the second
    waits for the first and reuses what it stored."""
    from chameleon_assets.runner import get_instance
    from tests.conftest import register

    write_domain(project / "raw", "alpha")
    write_registry(project, ["alpha"])
    register(get_instance(), ["alpha"])
    script = ("from chameleon_assets import runner\n"
              "r = runner.materialize(runner.load_defs(), runner.get_instance(), ['domain_corpus'], 'alpha')\n"
              "print('ok' if r.success else 'failed')\n")
    slow = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "CHAMELEON_PAUSE_AT": "commit:corpus/alpha/",
                                            "CHAMELEON_PAUSE_SECONDS": "8",
                                            "CHAMELEON_PAUSE_MARKER": str(project / "paused")})
    while not (project / "paused").exists():
        assert slow.poll() is None, slow.stdout.read()
        time.sleep(0.1)
    fast = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert slow.wait(timeout=300) == 0 and fast.returncode == 0
    assert "ok" in fast.stdout
    records = _materializations(get_instance())["domain_corpus[alpha]"]
    assert len(records) == 2
    reused = sorted(r.asset_materialization.metadata["reused_existing_version"].value for r in records)
    assert reused == [False, True]  # computed once, by the first; the second waited and reused it


def test_an_emptied_registry_deletes_no_artefact(ran) -> None:  # noqa: ANN001
    from chameleon_assets.defs.partitions import remove_unregistered_domain_artefacts
    from tests.conftest import register

    project, instance = ran
    register(instance, [], None)
    assert remove_unregistered_domain_artefacts(instance) == []
    assert (project / "data" / "artifacts" / "corpus" / "alpha").is_dir()


def test_a_removed_domain_loses_its_derived_artefacts_not_its_raw_data(ran) -> None:  # noqa: ANN001
    from chameleon_assets.runner import converge

    project, instance = ran
    raw = project / "raw" / "gamma" / "documents.jsonl"
    raw_bytes = raw.read_bytes()
    art = project / "data" / "artifacts"
    assert (art / "corpus" / "gamma").is_dir() and (art / "embeddings" / "gamma").is_dir()
    write_registry(project, ["alpha", "beta"])
    report = converge("sync", instance=instance)
    assert not report.failed
    for folder in (art / "corpus" / "gamma", art / "embeddings" / "gamma", art / ".values" / "domain_corpus" / "gamma",
                   art / ".values" / "domain_embeddings" / "gamma"):
        assert not folder.exists(), folder
    assert (art / "corpus" / "alpha").is_dir() and (art / "embeddings" / "beta").is_dir()
    assert raw.read_bytes() == raw_bytes
