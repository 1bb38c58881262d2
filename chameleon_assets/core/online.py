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

``core.train.train_causal_lm`` follows either through an ``OnlineMixing`` (``mixing=``):
before every optimiser step it asks for the sampler's weights. ``ScheduledMixing`` reads
them off the schedule at the fraction of the budget trained; ``AioliMixing`` runs Aioli's
rounds: every ``interval`` steps a round opens with k probe phases of ``probe_steps``
steps each (phase j trains on p^(j)), the held-out loss of every domain measured before
the first and after each phase (k + 1 passes over ``eval_windows`` fixed held-out windows
per domain, cut from the end of the domain's training split and never trained on:
``reserved``), the k loss drops feed ``AioliController.update``, and the round's remaining
steps train on the new p. Its state (the controller, the drops of a round under way, the
weights being followed, the passes spent) is plain JSON in every checkpoint, so a killed
run resumes on the same weight trajectory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

from chameleon_assets.core.cost import Cost


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


# Per-domain held-out losses of the model as it is now: domain -> mean next-token NLL.
HeldOutLosses = Callable[[dict[str, np.ndarray]], dict[str, float]]


class OnlineMixing(Protocol):
    """A mixture that changes during training, as ``core.train.train_causal_lm`` follows it.

    ``reserved``: tokens at the end of each domain's training split that the mixture keeps
    for its own measurements; the sampler must be given the splits without them
    (``trainable``)."""

    domains: list[str]
    reserved: dict[str, int]

    def settings(self) -> dict:
        """What makes two runs' mixtures differ (part of a checkpoint's resume key)."""
        ...

    def weights_for_step(self, step: int, steps: int, held_out: HeldOutLosses) -> dict[str, float] | None:
        """The sampler's weights from step ``step`` (0-based, of ``steps``) on, or None to keep them."""
        ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...

    def summary(self) -> dict:
        """JSON-able record of what the mixture did (trajectory, evaluation passes)."""
        ...


@dataclass
class ScheduledMixing:
    """Follow a ``WeightSchedule``: at step s of S the phase of fraction s / S (every step
    trains the same number of tokens, so this is the fraction of the training tokens).
    The sampler must be made with a positive weight on every domain some phase weighs
    (it draws only from the domains it was made with; the first step sets its weights)."""

    schedule: WeightSchedule
    domains: list[str] = field(init=False)
    reserved: dict[str, int] = field(default_factory=dict)  # it measures nothing

    def __post_init__(self) -> None:
        self.domains = sorted({d for _, w in self.schedule.phases for d in w})

    def settings(self) -> dict:
        return {"schedule": [[s, dict(sorted(w.items()))] for s, w in self.schedule.phases]}

    def weights_for_step(self, step: int, steps: int, held_out: HeldOutLosses) -> dict[str, float] | None:
        return self.schedule.weights_at(step / steps)

    def state_dict(self) -> dict:
        return {}  # a function of the step alone

    def load_state_dict(self, state: dict) -> None:
        return None

    def summary(self) -> dict:
        return {"kind": "schedule", **self.settings()}


def reserve_windows(domain: str, train: np.ndarray, count: int, length: int) -> np.ndarray:
    """The last ``count x (length + 1)`` tokens of a domain's training split as ``count``
    disjoint windows of ``length + 1`` tokens (count x (length + 1)). The sampler is then
    given the split without them (``trainable``): the controller measures on text the
    model never trains on, and evaluation scores the validation split, so the mixture is
    never tuned on the text the models are scored on. At least as many tokens must remain
    to train on."""
    n = count * (length + 1)
    if len(train) < 2 * n:
        raise ValueError(f"aioli: domain '{domain}' has {len(train)} training tokens; its held-out windows take "
                         f"{n} (eval_windows {count} x (context {length} + 1)) and at least as many must remain to "
                         "train on: lower eval_windows or give the domain more text")
    return np.asarray(train[len(train) - n :], dtype=np.int64).reshape(count, length + 1)


def trainable(train: dict[str, np.ndarray], mixing: OnlineMixing | None) -> dict[str, np.ndarray]:
    """Each domain's training split without the tokens ``mixing`` reserved at its end."""
    reserved = mixing.reserved if mixing is not None else {}
    return {d: t[: len(t) - reserved.get(d, 0)] for d, t in train.items()}


@dataclass
class AioliMixing:
    """Aioli's rounds in the training loop (module docstring) over ``controller.names``.

    ``held_out``: domain -> its (eval_windows x (seq_len + 1)) held-out windows, the same
    at every pass. A round that cannot finish its probes before training ends trains on p.
    """

    controller: AioliController
    interval: int
    probe_steps: int
    held_out: dict[str, np.ndarray]
    reserved: dict[str, int] = field(default_factory=dict)  # training tokens the windows were cut from
    drops: list[list[float]] = field(default_factory=list)
    last: list[float] | None = None
    current: list[float] | None = None
    update_steps: list[int] = field(default_factory=list)
    passes: int = 0

    def __post_init__(self) -> None:
        k = len(self.controller.names)
        if self.interval < 1 or self.probe_steps < 1:
            raise ValueError(f"aioli: interval ({self.interval}) and probe_steps ({self.probe_steps}) must be positive")
        if k * self.probe_steps > self.interval:
            raise ValueError(f"aioli: a round of {self.interval} steps cannot hold {k} probes of {self.probe_steps} "
                             f"steps; raise interval to at least {k * self.probe_steps}")
        missing = [d for d in self.controller.names if d not in self.held_out]
        if missing:
            raise ValueError(f"aioli: no held-out windows for domain '{missing[0]}'")
        if self.current is None:
            self.current = self.controller.weights.tolist()

    @property
    def domains(self) -> list[str]:
        return list(self.controller.names)

    def settings(self) -> dict:
        c = self.controller
        return {"kind": "aioli", "eta": c.eta, "delta": c.delta, "interval": self.interval,
                "probe_steps": self.probe_steps, "prior": c.trajectory[0],
                "held_out": {d: [list(w.shape), int(np.asarray(w, dtype=np.int64).sum())]
                             for d, w in sorted(self.held_out.items())}}

    def _losses(self, held_out: HeldOutLosses) -> list[float]:
        self.passes += 1
        losses = held_out(self.held_out)
        return [float(losses[d]) for d in self.controller.names]

    def weights_for_step(self, step: int, steps: int, held_out: HeldOutLosses) -> dict[str, float] | None:
        """At a round's step ``pos = step mod interval``: 0 measures L and starts probe 0;
        ``j * probe_steps`` (0 < j <= k) measures L, records the drop of probe j - 1 and starts
        probe j, or after the last probe updates p. Other steps keep the weights."""
        k, names = len(self.controller.names), self.controller.names
        pos, start = step % self.interval, step - step % self.interval
        if start + k * self.probe_steps >= steps:  # the round's probes would not finish: train on p
            self.current = self.controller.weights.tolist()
            return dict(zip(names, self.current))
        if pos > k * self.probe_steps or pos % self.probe_steps:
            return dict(zip(names, self.current))
        losses = self._losses(held_out)
        if pos == 0:
            self.drops = []
        else:
            self.drops.append([b - a for b, a in zip(self.last, losses)])
        self.last = losses
        if len(self.drops) == k:
            self.controller.update(np.array(self.drops))
            self.update_steps.append(step)
            self.drops = []
            self.current = self.controller.weights.tolist()
        else:
            self.current = self.controller.probe_mixtures()[len(self.drops)].tolist()
        return dict(zip(names, self.current))

    def state_dict(self) -> dict:
        return {"controller": self.controller.state_dict(), "drops": [list(r) for r in self.drops],
                "last": None if self.last is None else list(self.last), "current": list(self.current),
                "update_steps": list(self.update_steps), "passes": self.passes}

    def load_state_dict(self, state: dict) -> None:
        self.controller = AioliController.from_state(state["controller"])
        self.drops = [list(r) for r in state["drops"]]
        self.last = None if state["last"] is None else list(state["last"])
        self.current = list(state["current"])
        self.update_steps = list(state["update_steps"])
        self.passes = int(state["passes"])

    def eval_tokens(self) -> int:
        """Tokens scored by the held-out passes so far: passes x sum over domains of windows x length."""
        return self.passes * sum(int(w.shape[0]) * (int(w.shape[1]) - 1) for w in self.held_out.values())

    def summary(self) -> dict:
        return {"kind": "aioli", "names": list(self.controller.names),
                "trajectory": [list(t) for t in self.controller.trajectory],
                "update_steps": [0, *self.update_steps], "rounds": self.controller.round,
                "heldout_passes": self.passes, "heldout_tokens": self.eval_tokens()}


def heldout_cost(summary: dict, train_flops_per_token: float) -> Cost:
    """The compute an online mixture adds to training (``summary``: ``TrainResult.extra["mixing"]``):
    its held-out passes, forward only, over the tokens they scored,

        FLOPs = forward per token x heldout_tokens = (train_flops_per_token / 3) x heldout_tokens

    (``core.cost``: training = 3 x forward). Probe steps are steps of the training budget,
    not extra. A schedule scores nothing and costs nothing."""
    tokens = int(summary.get("heldout_tokens", 0))
    return Cost.of(f"{summary.get('kind', 'online')}_heldout_passes", train_flops_per_token / 3.0 * tokens,
                   float(summary.get("heldout_s", 0.0)), tokens)
