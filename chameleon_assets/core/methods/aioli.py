"""Aioli (Chen et al., 2024, "Aioli: A Unified Optimization Framework for Language Model
Data Mixing", HazyResearch/aioli): a mixture that changes while the base model trains.

Its row in the weights table is the mixture it starts from (``prior``: uniform or
natural); the base model then follows ``core.online.AioliMixing``: every ``interval``
optimiser steps a round trains k probe mixtures p^(j) = (1 - delta) p + delta e_j for
``probe_steps`` steps each, measures each domain's held-out loss before and after every
probe (on ``eval_windows`` fixed windows per domain, cut from the end of its training
split and never trained on), fits the linear mixing law

    L_i(t + 1) = L_i(t) - sum_j A_ij p_j        A = argmin sum_j || dL^(j) - A p^(j) ||^2

and moves the weights by exponentiated gradient, p_j <- p_j exp(eta g_j / ||g||_inf) / Z
with g_j = sum_i A_ij: a domain whose training lowers the held-out losses most gains
weight. Its settings (``Params``) are part of each aioli model's data version, so
changing them retrains the aioli models and no other.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, ClassVar, Literal

import numpy as np

from chameleon_assets.core import baselines
from chameleon_assets.core.cost import Cost
from chameleon_assets.core.methods import DomainSet, MethodResult, register
from chameleon_assets.core.online import AioliController, AioliMixing, reserve_windows
from chameleon_assets.core.schema import Check, PositiveFloat, PositiveInt, settings


@register
class Aioli:
    """Online mixing during base training (module docstring); computed here: its start."""

    name = "aioli"
    needs = frozenset({"tokens"})
    stages = frozenset({"pretrain"})  # it changes the base model's sampler; finetuning has none
    online: ClassVar[bool] = True

    @settings
    class Params:
        """``interval``: optimiser steps per round; ``probe_steps``: steps per probe mixture
        (k of them open each round, so k x probe_steps <= interval, checked when training
        starts, where k is known); ``eta``: step size (the largest change of a log weight
        per round); ``delta``: how far a probe leans towards its domain; ``eval_windows``:
        held-out windows per domain in each loss measurement; ``prior``: the start."""

        interval: PositiveInt = 50
        probe_steps: PositiveInt = 2
        eta: PositiveFloat = 0.2
        delta: Annotated[float, Check(gt=0, le=1)] = 0.5
        eval_windows: PositiveInt = 8
        prior: Literal["uniform", "natural"] = "uniform"

    def mixing(self, params: Params, weights: dict[str, float], train: dict[str, np.ndarray],
               seq_len: int) -> AioliMixing:
        """The base model's online mixture: a controller from ``weights`` (this method's row of
        the table) over its domains, measuring on ``eval_windows`` windows of ``seq_len + 1``
        tokens cut from the end of each domain's training split ``train`` and reserved from
        training (``core.online.reserve_windows``)."""
        names = sorted(weights)
        held = {d: reserve_windows(d, train[d], params.eval_windows, seq_len) for d in names}
        controller = AioliController(names, np.array([weights[d] for d in names]), eta=params.eta, delta=params.delta)
        return AioliMixing(controller, params.interval, params.probe_steps, held,
                           reserved={d: int(w.size) for d, w in held.items()})

    def compute(self, domains: DomainSet, params: Params, proxy: Any = None) -> MethodResult:
        t0 = time.perf_counter()
        w = (baselines.uniform(domains.k) if params.prior == "uniform"
             else baselines.natural(domains.train_tokens))
        if (np.asarray(w) <= 0).any():
            empty = domains.names[int(np.argmin(w))]
            raise ValueError(f"aioli: prior '{params.prior}' gives domain '{empty}' no weight; every domain needs "
                             "some to be probed (use prior: uniform)")
        return MethodResult(w, Cost(wall_s=time.perf_counter() - t0),
                            notes=[f"aioli: the {params.prior} start; the weights move during base training "
                                   "(each model's trajectory is in its metadata)"])
