"""The compute a mixing method spends, counted from the model and the tokens it processes.

For a decoder with N parameters (tied embedding counted once: the output projection is
a matmul, the input lookup is free), L layers, width d and context n_ctx, per token:

    forward  = 2 N + 2 L n_ctx d          (Kaplan et al. 2020: weights, plus attention scores and values)
    training = 3 x forward                (the backward pass costs twice the forward)

So the FLOPs of a run are ``training * tokens_trained + forward * tokens_scored``. The
same count for every method, so their costs compare; wall time is measured beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


def forward_flops_per_token(parameters: int, layers: int, context: int, width: int) -> float:
    """2 N + 2 L n_ctx d."""
    return 2.0 * parameters + 2.0 * layers * context * width


def train_flops_per_token(parameters: int, layers: int, context: int, width: int) -> float:
    """3 (2 N + 2 L n_ctx d) = 6 N + 6 L n_ctx d."""
    return 3.0 * forward_flops_per_token(parameters, layers, context, width)


def layer_parameters(arch: str, width: int, intermediate: int) -> int:
    """Parameters of one decoder block.

    llama: attention q, k, v, o (4 d^2), gated MLP (3 d f), two RMSNorms (2 d).
    gpt2:  attention 4 d^2 + 4 d biases, MLP 2 d f + f + d, two LayerNorms (4 d).
    """
    d, f = width, intermediate
    if arch == "llama":
        return 4 * d * d + 3 * d * f + 2 * d
    if arch == "gpt2":
        return 4 * d * d + 4 * d + 2 * d * f + f + d + 4 * d
    raise ValueError(f"unknown arch {arch!r}")


@dataclass
class Cost:
    """What producing a set of weights cost: FLOPs, measured wall seconds, tokens processed.

    ``parts`` splits the FLOPs by component (``{"reference": ..., "proxy": ...}``), so a
    reader sees where the compute went.
    """

    flops: float = 0.0
    wall_s: float = 0.0
    tokens: int = 0
    parts: dict[str, float] = field(default_factory=dict)

    def __add__(self, other: Cost) -> Cost:
        parts = dict(self.parts)
        for k, v in other.parts.items():
            parts[k] = parts.get(k, 0.0) + v
        return Cost(self.flops + other.flops, self.wall_s + other.wall_s, self.tokens + other.tokens, parts)

    @classmethod
    def of(cls, part: str, flops: float, wall_s: float, tokens: int) -> Cost:
        """A cost with a single named component."""
        return cls(float(flops), float(wall_s), int(tokens), {part: float(flops)})

    def as_dict(self) -> dict:
        return {"flops": self.flops, "wall_s": self.wall_s, "tokens": self.tokens, "parts": dict(self.parts)}

    @classmethod
    def from_dict(cls, data: dict) -> Cost:
        return cls(float(data.get("flops", 0.0)), float(data.get("wall_s", 0.0)), int(data.get("tokens", 0)),
                   {k: float(v) for k, v in (data.get("parts") or {}).items()})
