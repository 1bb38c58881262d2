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


def model_train_flops_per_token(model, context: int) -> float:  # noqa: ANN001 (a transformers PreTrainedModel)
    """``train_flops_per_token`` of a built model: 6 N + 6 L n_ctx d, N its unique parameters."""
    config = model.config
    layers = getattr(config, "num_hidden_layers", None) or config.n_layer
    width = getattr(config, "hidden_size", None) or config.n_embd
    parameters = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    return train_flops_per_token(parameters, layers, context, width)


# Dense peak throughput (FLOP/s) of common accelerators at the precision training uses:
# bf16 tensor cores (no sparsity) under autocast, TF32 otherwise. From the vendors' data
# sheets (SXM parts); CHAMELEON_PEAK_FLOPS overrides for any other device.
PEAK_FLOPS = {
    "H200": (989e12, 494e12),
    "H100": (989e12, 494e12),
    "A100": (312e12, 156e12),
    "L40S": (362e12, 183e12),
    "A10G": (70e12, 35e12),
    "L4": (121e12, 60e12),
}


def device_peak_flops(device, bf16: bool = True) -> float | None:  # noqa: ANN001 (torch.device)
    """The device's peak FLOP/s for model FLOPs utilisation (MFU = flops/token x tokens/s / peak).

    ``CHAMELEON_PEAK_FLOPS`` (a number) wins; a CUDA device is looked up in ``PEAK_FLOPS``
    by name; anything else (a CPU, an unknown GPU) has no peak: MFU is then not reported.
    """
    import os

    if os.environ.get("CHAMELEON_PEAK_FLOPS"):
        return float(os.environ["CHAMELEON_PEAK_FLOPS"])
    if getattr(device, "type", "") != "cuda":
        return None
    import torch

    name = torch.cuda.get_device_name(device)
    for key, (bf16_peak, tf32_peak) in PEAK_FLOPS.items():
        if key in name:
            return bf16_peak if bf16 else tf32_peak
    return None
