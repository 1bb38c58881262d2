"""DDP training under torchrun, launched through Dagster Pipes (defs/launch.py, core/ddp_worker.py).

A 2-process gloo run on the CPU must follow the single-process trajectory of the same
global batch: every rank draws the same sample stream and takes its half of each batch,
and DDP averages the halves' gradients, which is the full batch's mean gradient. Only
the order of floating-point sums differs, so the losses agree to ``LOSS_ATOL``.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import torch

from chameleon_assets.core.corpus import CorpusShards
from chameleon_assets.core.model import build_model
from chameleon_assets.core.train import WeightedDomainSampler, train_causal_lm
from chameleon_assets.defs import launch
from chameleon_assets.settings import ModelConfig, Profile, TrainConfig, TrainingLaunch

# One xdist worker runs this whole file: its module-scoped fixture is built once.
pytestmark = pytest.mark.xdist_group("ddp")

# Losses of the 2-process run equal the single-process ones within this (absolute, nats);
# measured differences are about 1e-6, from the order of floating-point sums.
LOSS_ATOL = 1e-4
MODEL = ModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, context_length=16)
TRAIN = TrainConfig(tokens=8 * 16 * 12, batch_size=8, grad_accum=1, lr=1e-2, warmup_steps=2, checkpoint_every=5)
VOCAB = 64


def _shards(root: Path) -> dict[str, CorpusShards]:
    """Two domains of distinct token statistics, written as ``domain_corpus`` writes them."""
    rng = np.random.default_rng(0)
    out = {}
    for i, name in enumerate(["a", "b"]):
        tokens = (rng.integers(0, VOCAB // 2, 3000) + i * (VOCAB // 2)).astype(np.uint16)
        folder = root / name
        folder.mkdir(parents=True)
        tokens.tofile(folder / "train.bin")
        out[name] = CorpusShards(name, str(folder), "uint16", VOCAB, len(tokens), 0, 10, 0, 3000, 0, f"v-{name}")
    return out


def _job(shards: dict[str, CorpusShards], checkpoints: Path | None) -> launch.TrainJob:
    return launch.TrainJob(shards, {"a": 0.7, "b": 0.3}, MODEL.context_length, 1, TRAIN, checkpoints, "k", "probe")


def _single_process(shards: dict[str, CorpusShards]):  # noqa: ANN202
    model = build_model(MODEL, VOCAB, 0, seed=0)
    sampler = WeightedDomainSampler({d: s.train() for d, s in shards.items()}, {"a": 0.7, "b": 0.3},
                                    MODEL.context_length, 1)
    return model, train_causal_lm(model, sampler, TRAIN, torch.device("cpu"), progress=False)


def _through_pipes(shards: dict[str, CorpusShards], checkpoints: Path, nproc: int):  # noqa: ANN202
    """Materialise an asset whose body is ``launch.train`` with a torchrun profile."""
    profile = Profile(device="cpu", training=TrainingLaunch(launcher="torchrun", nproc_per_node=nproc))
    out: dict = {}

    @dg.asset
    def ddp_probe(context):  # noqa: ANN001, ANN202 (a string annotation would not satisfy Dagster)
        model = build_model(MODEL, VOCAB, 0, seed=0)
        out["result"] = launch.train(context, profile, model, _job(shards, checkpoints))
        out["model"] = model
        return dg.MaterializeResult()

    instance = dg.DagsterInstance.ephemeral()
    run = dg.materialize([ddp_probe], instance=instance)
    return out["model"], out["result"], run, instance


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    root = tmp_path_factory.mktemp("ddp")
    shards = _shards(root / "corpus")
    return shards, _single_process(shards), _through_pipes(shards, root / "ckpt" / "v1", nproc=2)


def test_two_gloo_ranks_follow_the_single_process_trajectory(two_ranks) -> None:
    _, (model_1, single), (model_2, ddp, _, _) = two_ranks
    assert ddp.extra["world_size"] == 2 and single.extra["world_size"] == 1
    assert ddp.steps == single.steps == 12 and ddp.tokens == single.tokens
    np.testing.assert_allclose(ddp.losses, single.losses, rtol=0, atol=LOSS_ATOL)
    assert ddp.draws == single.draws  # the same sample stream, whatever the number of ranks
    for (name, a), b in zip(model_1.state_dict().items(), model_2.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4, msg=f"parameter {name}")


def test_rank_zero_reports_through_pipes_to_the_event_log(two_ranks) -> None:
    _, _, (_, ddp, run, instance) = two_ranks
    assert run.success
    metadata = run.get_asset_materialization_events()[0].materialization.metadata
    assert metadata["training_processes"].value == 2
    assert metadata["tokens_per_s"].value > 0
    messages = [e.message for e in instance.all_logs(run.run_id) if e.message]
    assert any("2 DDP processes under torchrun" in m for m in messages)
    # Rank 0's own progress line, sent over the Pipes message channel.
    assert any(f"probe: step 12/12, loss {ddp.losses[-1]:.4f}" in m for m in messages), messages


class _Killed(Exception):
    pass


def test_a_single_process_checkpoint_resumes_under_torchrun(two_ranks, tmp_path: Path) -> None:
    shards, (_, single), _ = two_ranks
    checkpoints = tmp_path / "ckpt"

    def kill_at_7(step: int, loss: float, rate: float) -> None:
        if step == 7:
            raise _Killed

    model = build_model(MODEL, VOCAB, 0, seed=0)
    sampler = WeightedDomainSampler({d: s.train() for d, s in shards.items()}, {"a": 0.7, "b": 0.3},
                                    MODEL.context_length, 1)
    with pytest.raises(_Killed):  # killed after step 7: the last checkpoint is step 5's
        train_causal_lm(model, sampler, TRAIN, torch.device("cpu"), checkpoints, "k", kill_at_7, progress=False)
    _, resumed, run, _ = _through_pipes(shards, checkpoints, nproc=2)
    assert resumed.resumed_from == 5
    np.testing.assert_allclose(resumed.losses, single.losses, rtol=0, atol=LOSS_ATOL)
    assert not any(checkpoints.parent.glob(".launch-*"))  # the job folder is removed



@pytest.mark.slow
def test_the_pipeline_trains_proxy_and_base_model_under_torchrun(project: Path) -> None:
    """The real assets with ``training: {launcher: torchrun, nproc_per_node: 2}``: the same
    files, MLflow runs and metadata as in-process, with the processes recorded."""
    import mlflow

    from chameleon_assets.runner import get_instance, run_everything
    from tests.conftest import write_domain, write_registry

    profile = project / "conf" / "profiles" / "tiny.yaml"
    text = profile.read_text().replace("tasks: [arc_easy_local]", "tasks: []")
    text = text.replace("mixtures: [uniform, chameleon_pretrain]", "mixtures: [uniform]")
    profile.write_text(text + "training: {launcher: torchrun, nproc_per_node: 2}\n")
    for d in ("alpha", "beta", "gamma"):
        write_domain(project / "raw", d)
    write_registry(project, ["alpha", "beta", "gamma"])
    instance = get_instance()
    report = run_everything(instance=instance)
    assert not report.failed, report.failed
    for key, partition in (("proxy_model", None), ("base_model", "uniform|0")):
        event = instance.get_latest_materialization_event(dg.AssetKey(key))
        assert event.asset_materialization.partition == partition
        metadata = event.asset_materialization.metadata
        assert metadata["training_processes"].value == 2, key
        logs = [e.message for e in instance.all_logs(event.run_id) if e.message]
        assert any("2 DDP processes under torchrun" in m for m in logs), key
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["chameleon"], filter_string="tags.asset_partition = 'uniform|0'")
    history = mlflow.tracking.MlflowClient().get_metric_history(runs.iloc[0]["run_id"], "train_loss")
    assert len(history) == 32 and all(np.isfinite(m.value) for m in history)  # 4096 tokens / (4 x 32) steps
    assert runs.iloc[0]["metrics.tokens_per_s"] > 0 and runs.iloc[0]["tags.training_processes"] == "2"
