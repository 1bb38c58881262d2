"""Aioli under torchrun: two gloo ranks measure the same held-out losses (averaged across
ranks), so they follow one weight trajectory, the single process's."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import torch

from chameleon_assets.core.corpus import CorpusShards
from chameleon_assets.core.methods import online_mixing
from chameleon_assets.core.model import build_model
from chameleon_assets.core.online import trainable
from chameleon_assets.core.train import WeightedDomainSampler, train_causal_lm
from chameleon_assets.defs import launch
from chameleon_assets.settings import ModelConfig, Profile, TrainConfig, TrainingLaunch

pytestmark = pytest.mark.xdist_group("ddp")

MODEL = ModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, context_length=16)
TRAIN = TrainConfig(tokens=8 * 16 * 12, batch_size=8, lr=3e-2, warmup_steps=2, checkpoint_every=100)
VOCAB = 64
ONLINE = {"method": "aioli", "params": {"interval": 4, "probe_steps": 1, "eta": 0.5, "delta": 0.5,
                                        "eval_windows": 4, "prior": "uniform"}}


def _shards(root: Path) -> dict[str, CorpusShards]:
    """Domain a: noise over the lower half of the vocabulary; b: a 13-token sentence repeated."""
    rng = np.random.default_rng(0)
    streams = {"a": rng.integers(1, VOCAB // 2, 4000), "b": np.tile(rng.integers(VOCAB // 2, VOCAB, 13), 308)}
    out = {}
    for name, tokens in streams.items():
        tokens = tokens.astype(np.uint16)
        folder = root / name
        folder.mkdir(parents=True)
        tokens[:3000].tofile(folder / "train.bin")
        tokens[3000:].tofile(folder / "val.bin")
        out[name] = CorpusShards(name, str(folder), "uint16", VOCAB, 3000, len(tokens) - 3000, 10, 2, 0, 0, f"v-{name}")
    return out


@pytest.mark.slow
def test_two_gloo_ranks_follow_the_single_process_aioli_trajectory(tmp_path: Path) -> None:
    shards = _shards(tmp_path / "corpus")
    weights = {"a": 0.5, "b": 0.5}
    model = build_model(MODEL, VOCAB, 0, seed=0)
    train = {d: s.train() for d, s in shards.items()}
    mixing = online_mixing("aioli", ONLINE["params"], weights, train, MODEL.context_length)
    sampler = WeightedDomainSampler(trainable(train, mixing), weights, MODEL.context_length, 1)
    single = train_causal_lm(model, sampler, TRAIN, torch.device("cpu"), progress=False, mixing=mixing)

    profile = Profile(device="cpu", training=TrainingLaunch(launcher="torchrun", nproc_per_node=2))
    out: dict = {}

    @dg.asset
    def aioli_probe(context):  # noqa: ANN001, ANN202
        job = launch.TrainJob(shards, weights, MODEL.context_length, 1, TRAIN, tmp_path / "ckpt", "k", "aioli",
                              online=ONLINE)
        out["result"] = launch.train(context, profile, build_model(MODEL, VOCAB, 0, seed=0), job)
        return dg.MaterializeResult()

    assert dg.materialize([aioli_probe], instance=dg.DagsterInstance.ephemeral()).success
    ddp = out["result"]
    assert ddp.extra["world_size"] == 2
    s, d = single.extra["mixing"], ddp.extra["mixing"]
    # 12 steps, rounds of 4: updates after the 2 probes of rounds 0 and 4 and 8 (8 + 2 < 12).
    assert s["update_steps"] == d["update_steps"] == [0, 2, 6, 10]
    np.testing.assert_allclose(d["trajectory"], s["trajectory"], atol=1e-4)
    assert s["trajectory"][-1] != s["trajectory"][0]
    assert ddp.draws == single.draws
    np.testing.assert_allclose(ddp.losses, single.losses, atol=1e-4)
