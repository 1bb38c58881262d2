"""Mixtures that change during training: a weight schedule and Aioli's online controller.

``WeightSchedule``: phases, each a mixture from a fraction of the training tokens on
(e.g. a different mixture for the last 20% of tokens).

``AioliController`` (Chen et al., 2024, HazyResearch/aioli): every round it assumes the
linear dynamic mixing law

    L_i(t + 1) = L_i(t) - sum_j A_ij p_j                          (losses over the next steps)

estimates A (m evaluation domains x k training domains) from the held-out loss changes
observed while training on k probe mixtures p^(j) = (1 - delta) p + delta e_j (one per
domain), by least squares  A = argmin sum_j || dL^(j) - A p^(j) ||^2, and updates the
weights by exponentiated gradient on the predicted loss,

    p_j  <-  p_j exp(eta sum_i A_ij / ||sum_i A_i.||_inf) / Z

(the normalisation by the largest entry keeps a step's size independent of the losses'
scale, as the authors' implementation does). A domain whose training lowers the losses
most gains weight. The controller's state (weights, round, trajectory) is a plain dict
(``state_dict``) that a checkpoint stores, so a resumed run continues exactly.

Wiring the schedule and the controller into ``core.train`` (the sampler's weights set
every N steps, their state in the checkpoint) is still to be done.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class WeightSchedule:
    """Phases of training, each ``(start, weights)``: the mixture from a fraction ``start`` of
    the training tokens on, until the next phase's start. The first phase starts at 0."""

    phases: list[tuple[float, dict[str, float]]]

    def __post_init__(self) -> None:
        if not self.phases:
            raise ValueError("weight schedule: phases must not be empty")
        starts = [float(s) for s, _ in self.phases]
        if starts[0] != 0.0 or any(b <= a for a, b in zip(starts, starts[1:])) or starts[-1] >= 1.0:
            raise ValueError(f"weight schedule: phase starts must begin at 0, increase and stay below 1, got {starts}")
        for s, w in self.phases:
            bad = [d for d, v in w.items() if not (np.isfinite(v) and v >= 0)]
            if bad or not sum(w.values()) > 0:
                raise ValueError(f"weight schedule: the phase from {s} has a negative or non-finite weight on "
                                 f"{bad[0] if bad else 'every domain (they sum to 0)'}")

    def weights_at(self, fraction: float) -> dict[str, float]:
        """The mixture (normalised) of the last phase with start <= ``fraction``."""
        current = self.phases[0][1]
        for s, w in self.phases:
            if s <= fraction:
                current = w
        total = sum(current.values())
        return {d: v / total for d, v in current.items()}


@dataclass
class AioliController:
    """Aioli's online mixing (module docstring) over ``names``, from ``weights`` (the prior)."""

    names: list[str]
    weights: np.ndarray
    eta: float = 0.1
    delta: float = 0.5
    round: int = 0
    trajectory: list[list[float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        w = np.asarray(self.weights, dtype=np.float64)
        if w.shape != (len(self.names),) or (w < 0).any() or not w.sum() > 0:
            raise ValueError(f"aioli: weights must be non-negative over the {len(self.names)} domains, "
                             f"got {w.tolist()}")
        if not 0 < self.delta <= 1:
            raise ValueError(f"aioli: delta must be in (0, 1], got {self.delta}")
        if not self.eta > 0:
            raise ValueError(f"aioli: eta must be positive, got {self.eta}")
        self.weights = w / w.sum()
        if not self.trajectory:
            self.trajectory = [self.weights.tolist()]

    def probe_mixtures(self) -> np.ndarray:
        """(k, k): row j is p^(j) = (1 - delta) p + delta e_j."""
        k = len(self.names)
        return (1 - self.delta) * self.weights[None, :] + self.delta * np.eye(k)

    def update(self, loss_drops: np.ndarray) -> np.ndarray:
        """One round: ``loss_drops`` (k probes x m evaluation domains) holds L(before) - L(after)
        over probe j's steps. A = dL^T P^-T (the least-squares law, module docstring); then
        p_j <- p_j exp(eta g_j / ||g||_inf) / Z with g_j = sum_i A_ij. Returns the new weights."""
        D = np.asarray(loss_drops, dtype=np.float64)
        k = len(self.names)
        if D.ndim != 2 or D.shape[0] != k or not np.isfinite(D).all():
            raise ValueError(f"aioli: loss_drops must be finite, one row per probe ({k}), got shape {D.shape}")
        P = self.probe_mixtures()
        A = np.linalg.lstsq(P, D, rcond=None)[0].T  # (m, k): D ~ P A^T
        g = A.sum(axis=0)
        scale = np.abs(g).max()
        step = self.eta * g / scale if scale > 0 else np.zeros(k)
        w = self.weights * np.exp(step - step.max())
        self.weights = w / w.sum()
        self.round += 1
        self.trajectory.append(self.weights.tolist())
        return self.weights

    def state_dict(self) -> dict:
        """The controller's state as plain JSON-able values."""
        return {"names": list(self.names), "weights": self.weights.tolist(), "eta": self.eta, "delta": self.delta,
                "round": self.round, "trajectory": [list(t) for t in self.trajectory]}

    @classmethod
    def from_state(cls, state: dict) -> AioliController:
        """The controller ``state_dict`` described, exactly."""
        c = cls(list(state["names"]), np.array(state["weights"], dtype=np.float64), float(state["eta"]),
                float(state["delta"]), int(state["round"]), [list(t) for t in state["trajectory"]])
        c.weights = np.array(state["weights"], dtype=np.float64)  # bit-exact, not renormalised
        return c
