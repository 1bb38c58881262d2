"""The weight schedule and Aioli's online controller on planted loss dynamics."""

from __future__ import annotations

import json

import numpy as np
import pytest

from chameleon_assets.core.online import AioliController, WeightSchedule

NAMES = ["a", "b", "c"]
# Planted dynamics: training on domain j for a round lowers domain i's loss by A[i, j].
# Domain c's training lowers every loss most: its loss falls fastest.
A_TRUE = np.array([[0.10, 0.02, 0.05], [0.02, 0.08, 0.05], [0.01, 0.01, 0.30]])


def _drops(c: AioliController, rng: np.random.Generator | None = None) -> np.ndarray:
    d = c.probe_mixtures() @ A_TRUE.T
    return d if rng is None else d + rng.normal(scale=1e-3, size=d.shape)


def test_the_controller_moves_weight_towards_the_domain_whose_loss_falls_fastest() -> None:
    c = AioliController(NAMES, np.array([0.4, 0.4, 0.2]), eta=0.2)
    for _ in range(10):
        c.update(_drops(c))
    assert int(np.argmax(c.weights)) == 2 and c.weights[2] > 0.45 and c.weights.sum() == pytest.approx(1.0)
    assert [t[2] for t in c.trajectory] == sorted(t[2] for t in c.trajectory)  # c grows every round
    assert len(c.trajectory) == 11 and c.round == 10


def test_a_resumed_controller_follows_the_same_trajectory() -> None:
    straight = AioliController(NAMES, np.array([0.5, 0.3, 0.2]), eta=0.3)
    rng = np.random.default_rng(0)
    for _ in range(6):
        straight.update(_drops(straight, rng))
    first = AioliController(NAMES, np.array([0.5, 0.3, 0.2]), eta=0.3)
    rng = np.random.default_rng(0)
    for _ in range(3):
        first.update(_drops(first, rng))
    resumed = AioliController.from_state(json.loads(json.dumps(first.state_dict())))  # through a checkpoint
    for _ in range(3):
        resumed.update(_drops(resumed, rng))
    assert resumed.trajectory == straight.trajectory and np.array_equal(resumed.weights, straight.weights)


def test_the_controller_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="delta"):
        AioliController(NAMES, np.ones(3), delta=0.0)
    with pytest.raises(ValueError, match="3 domains"):
        AioliController(NAMES, np.ones(2))
    with pytest.raises(ValueError, match="one row per probe"):
        AioliController(NAMES, np.ones(3)).update(np.ones((2, 3)))


def test_the_schedule_switches_mixture_at_its_phase_starts() -> None:
    s = WeightSchedule([(0.0, {"a": 1.0, "b": 1.0}), (0.8, {"a": 0.0, "b": 3.0})])
    assert s.weights_at(0.0) == {"a": 0.5, "b": 0.5} and s.weights_at(0.79) == {"a": 0.5, "b": 0.5}
    assert s.weights_at(0.8) == {"a": 0.0, "b": 1.0} and s.weights_at(0.99) == {"a": 0.0, "b": 1.0}
    with pytest.raises(ValueError, match="begin at 0"):
        WeightSchedule([(0.2, {"a": 1.0})])
    with pytest.raises(ValueError, match="on b"):
        WeightSchedule([(0.0, {"a": 1.0, "b": -1.0})])


# --- Through the training loop ---------------------------------------------------------

class _Interrupt(Exception):
    pass


def _loop_run(mixing, tokens: dict, ckpt=None, stop_at: int | None = None, steps: int = 12,  # noqa: ANN001, ANN202
              checkpoint_every: int = 5, lr: float = 1e-2):
    """Train a tiny llama on ``tokens`` for ``steps`` steps of 4 windows of 8 tokens under ``mixing``."""
    import torch

    from chameleon_assets.core.model import build_model
    from chameleon_assets.core.train import WeightedDomainSampler, train_causal_lm
    from chameleon_assets.settings import ModelConfig, TrainConfig

    cfg = ModelConfig(hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32, context_length=8)
    tcfg = TrainConfig(tokens=4 * 8 * steps, batch_size=4, lr=lr, warmup_steps=2, checkpoint_every=checkpoint_every)
    model = build_model(cfg, vocab_size=100, eos_id=0, seed=0)
    sampler = WeightedDomainSampler(tokens, {d: 1.0 for d in tokens}, seq_len=8, seed=1)

    def on_step(step: int, loss: float, rate: float) -> None:
        if stop_at is not None and step == stop_at:
            raise _Interrupt

    return train_causal_lm(model, sampler, tcfg, torch.device("cpu"), ckpt, "k", on_step, progress=False,
                           mixing=mixing)


def test_a_schedule_switches_the_sampled_domains_for_the_last_fifth_of_the_tokens() -> None:
    from chameleon_assets.core.online import ScheduledMixing

    tokens = {"a": np.arange(1, 1001) % 97, "b": np.arange(1, 501) % 89}
    schedule = WeightSchedule([(0.0, {"a": 1.0, "b": 0.0}), (0.8, {"a": 0.0, "b": 1.0})])
    result = _loop_run(ScheduledMixing(schedule), tokens, steps=10)
    # Steps 0-7 (fraction < 0.8) draw only a, steps 8 and 9 only b: 8 x 4 and 2 x 4 windows.
    assert result.draws == {"a": 32, "b": 8}


# Domain "b" is one 23-token sentence repeated (its loss falls fast as the model learns it);
# "a" is uniform noise over tokens 1..99, whose loss cannot fall below ln 99 (about where an
# untrained model starts). "b" sorts last, so it is probed second: the falling learning
# rate of later steps works against it, not for it.
_PLANTED = {"a": np.random.default_rng(0).integers(1, 100, size=4000),
            "b": np.tile(np.random.default_rng(3).integers(1, 100, size=23), 4000 // 23)}


def _aioli(tokens: dict = _PLANTED, eta: float = 1.0):  # noqa: ANN202
    """Aioli over ``tokens`` measuring on 4 windows of 9 tokens from each domain's last 400
    (the loop's sampler trains on all of them: these tests pin the dynamics, not the split)."""
    from chameleon_assets.core.online import AioliMixing

    names = sorted(tokens)
    controller = AioliController(names, np.ones(len(names)), eta=eta, delta=0.5)
    held = {d: np.stack([tokens[d][-400 + 100 * i : -400 + 100 * i + 9] for i in range(4)]) for d in names}
    return AioliMixing(controller, interval=6, probe_steps=2, held_out=held)


def test_aioli_in_the_training_loop_moves_weight_to_the_domain_whose_held_out_loss_falls_fastest() -> None:
    mixing = _aioli()
    result = _loop_run(mixing, _PLANTED, steps=30, lr=3e-2)
    summary = result.extra["mixing"]
    # 30 steps, rounds of 6 steps: 5 rounds, each with 2 probes of 2 steps (the last round's
    # probes end at step 28 < 30, so it updates too) and 3 held-out passes.
    assert summary["rounds"] == 5 and summary["update_steps"] == [0, 4, 10, 16, 22, 28]
    assert summary["heldout_passes"] == 15 and summary["heldout_tokens"] == 15 * 2 * 4 * 8
    b = [w[1] for w in summary["trajectory"]]
    assert b[0] == 0.5 and min(b[1:]) > 0.6 and b[-1] > 0.75, b
    # The sampler followed the controller: after the probes, b was drawn more than a.
    assert result.draws["b"] > result.draws["a"]


def test_an_interrupted_aioli_run_resumes_on_the_same_weight_trajectory_and_loss(tmp_path) -> None:  # noqa: ANN001
    reference = _loop_run(_aioli(), _PLANTED, steps=20, lr=3e-2)
    with pytest.raises(_Interrupt):  # killed after step 17; the checkpoint of step 15 is inside round 12-17's probes
        _loop_run(_aioli(), _PLANTED, tmp_path / "ckpt", stop_at=17, steps=20, lr=3e-2)
    resumed_mixing = _aioli()
    resumed = _loop_run(resumed_mixing, _PLANTED, tmp_path / "ckpt", steps=20, lr=3e-2)
    assert resumed.resumed_from == 15
    assert resumed.extra["mixing"]["trajectory"] == reference.extra["mixing"]["trajectory"]
    assert resumed.extra["mixing"]["heldout_passes"] == reference.extra["mixing"]["heldout_passes"]
    assert resumed.losses == reference.losses and resumed.draws == reference.draws


def test_aioli_refuses_a_round_too_short_for_its_probes() -> None:
    from chameleon_assets.core.online import AioliMixing

    with pytest.raises(ValueError, match="raise interval to at least 6"):
        AioliMixing(AioliController(NAMES, np.ones(3)), interval=5, probe_steps=2,
                    held_out={d: np.zeros((1, 9), dtype=np.int64) for d in NAMES})


def test_a_checkpoint_of_other_aioli_settings_is_not_resumed(tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(_Interrupt):
        _loop_run(_aioli(eta=1.0), _PLANTED, tmp_path / "ckpt", stop_at=7, steps=10)
    resumed = _loop_run(_aioli(eta=0.5), _PLANTED, tmp_path / "ckpt", steps=10)
    assert resumed.resumed_from == 0


def test_aioli_measures_on_training_tokens_it_reserves_from_the_sampler() -> None:
    from chameleon_assets.core.methods import online_mixing
    from chameleon_assets.core.online import trainable

    train = {"a": np.arange(100), "b": np.arange(1000, 1040)}
    params = {"interval": 4, "probe_steps": 1, "eta": 0.1, "delta": 0.5, "eval_windows": 2, "prior": "uniform"}
    mixing = online_mixing("aioli", params, {"a": 0.5, "b": 0.5}, train, seq_len=9)
    # 2 windows of 9 + 1 tokens: the last 20 of each domain, taken out of what the sampler reads.
    assert mixing.held_out["a"].tolist() == [list(range(80, 90)), list(range(90, 100))]
    assert mixing.reserved == {"a": 20, "b": 20}
    assert [len(t) for t in trainable(train, mixing).values()] == [80, 20]
    with pytest.raises(ValueError, match="domain 'b' has 40 training tokens; its held-out windows take 40"):
        online_mixing("aioli", {**params, "eval_windows": 4}, {"a": 0.5, "b": 0.5}, train, seq_len=9)
