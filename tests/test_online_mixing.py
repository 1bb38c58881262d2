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
