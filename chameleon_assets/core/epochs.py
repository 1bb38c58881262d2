"""How many times a token budget reads each domain, and when that is more than helps.

Training on ``B`` tokens of a mixture with weight ``w_d`` on a domain of ``n_d`` training
tokens reads that domain ``B * w_d / n_d`` times (the sampler wraps a domain read past its
end). Repeating data is nearly as good as fresh data up to about 4 epochs and worth
quickly less beyond (Muennighoff et al., "Scaling Data-Constrained Language Models",
NeurIPS 2023), so a run that would repeat a domain more is warned about: its budget is
spent on a corpus too small for it.
"""

from __future__ import annotations

MAX_EPOCHS = 4.0


def expected_epochs(weights: dict[str, float], train_tokens: dict[str, int], budget: int) -> dict[str, float]:
    """``{domain: budget * w_d / n_d}`` for every domain with a positive weight (``inf``
    for a weighted domain of no training tokens)."""
    return {d: (budget * w / train_tokens[d] if train_tokens.get(d) else float("inf"))
            for d, w in weights.items() if w > 0}


def over_repeated(epochs: dict[str, float], limit: float = MAX_EPOCHS) -> dict[str, float]:
    """The domains read more than ``limit`` times, most repeated first."""
    return dict(sorted(((d, e) for d, e in epochs.items() if e > limit), key=lambda kv: -kv[1]))


def repeat_warning(what: str, epochs: dict[str, float], budget: int, budget_field: str,
                   limit: float = MAX_EPOCHS) -> str | None:
    """One line naming every domain ``what`` would read more than ``limit`` epochs, or None."""
    over = over_repeated(epochs, limit)
    if not over:
        return None
    listed = ", ".join(f"'{d}' {e:.1f} epochs" for d, e in over.items())
    return (f"warning: {what}: {budget_field} {budget:,} would repeat {listed} (more than {limit:g}, beyond which "
            "repeated tokens add little): add data to those domains or lower the budget")
