"""The closed-form baselines behind the method interface (formulas in ``core.baselines``).

They read only the domains' train token counts (or names, for presets) and cost no
model compute.
"""

from __future__ import annotations

import time
from typing import Any, Mapping

from chameleon_assets.core import baselines
from chameleon_assets.core.cost import Cost
from chameleon_assets.core.methods import DomainSet, MethodResult, register
from chameleon_assets.core.schema import NonNegativeFloat, PositiveFloat, settings


def _timed(fn, *args) -> MethodResult:  # noqa: ANN001
    t0 = time.perf_counter()
    w = fn(*args)
    return MethodResult(w, Cost(wall_s=time.perf_counter() - t0))


@register
class Uniform:
    """p_i = 1 / k."""

    name = "uniform"
    needs = frozenset()

    @settings
    class Params:
        pass

    def compute(self, domains: DomainSet, params: Params, proxy=None) -> MethodResult:  # noqa: ANN001
        return _timed(baselines.uniform, domains.k)


@register
class Natural:
    """p_i = n_i / sum_j n_j."""

    name = "natural"
    needs = frozenset({"tokens"})

    @settings
    class Params:
        pass

    def compute(self, domains: DomainSet, params: Params, proxy=None) -> MethodResult:  # noqa: ANN001
        return _timed(baselines.natural, domains.train_tokens)


@register
class Temperature:
    """p_i proportional to n_i^(1/T)."""

    name = "temperature"
    needs = frozenset({"tokens"})

    @settings
    class Params:
        t: PositiveFloat = 3.0

    def mixture_settings(self, mixtures: Mapping[str, Any], budget_tokens: int) -> dict[str, Any]:
        """``temperature:`` in conf/mixtures.yaml is T."""
        return {"t": mixtures["temperature"]}

    def compute(self, domains: DomainSet, params: Params, proxy=None) -> MethodResult:  # noqa: ANN001
        return _timed(baselines.temperature, domains.train_tokens, params.t)


@register
class UniMax:
    """A uniform share of the token budget per domain, capped at ``max_epochs`` epochs."""

    name = "unimax"
    needs = frozenset({"tokens"})
    stages = frozenset({"pretrain"})  # its budget is a pretraining one

    @settings
    class Params:
        budget_tokens: PositiveFloat = 600_000.0
        max_epochs: PositiveFloat = 1.0

    def mixture_settings(self, mixtures: Mapping[str, Any], budget_tokens: int) -> dict[str, Any]:
        """``unimax_max_epochs`` and ``unimax_budget_tokens`` (null: the base models' budget)."""
        budget = mixtures.get("unimax_budget_tokens")
        return {"budget_tokens": float(budget if budget is not None else budget_tokens),
                "max_epochs": mixtures["unimax_max_epochs"]}

    def compute(self, domains: DomainSet, params: Params, proxy=None) -> MethodResult:  # noqa: ANN001
        return _timed(baselines.unimax, domains.train_tokens, params.budget_tokens, params.max_epochs)


@register
class Preset:
    """A fixed published mixture applied by domain name, renormalised over the domains."""

    name = "preset"
    needs = frozenset()
    stages = frozenset()  # not a mixture itself: each preset of conf/mixtures.yaml is one, by its own name

    @settings
    class Params:
        weights: dict[str, NonNegativeFloat]

    def compute(self, domains: DomainSet, params: Params, proxy=None) -> MethodResult:  # noqa: ANN001
        w = baselines.preset(domains.names, params.weights)
        if w is None:
            raise ValueError(f"preset does not name every domain: missing "
                             f"{', '.join(d for d in domains.names if d not in params.weights) or 'a positive weight'}")
        return MethodResult(w, Cost())
