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


# Dense peak throughput (FLOP/s) of common accelerators from the vendors' data sheets (SXM
# parts, no sparsity): bf16 tensor cores, and TF32 for float32 training. For reference
# beside a measured peak (``bench/bench_gpu.py`` reports both); MFU uses the measured one.
DATASHEET_PEAK_FLOPS = {
    "H200": (989e12, 494e12),
    "H100": (989e12, 494e12),
    "A100": (312e12, 156e12),
    "L40S": (362e12, 183e12),
    "A10G": (70e12, 35e12),
    "L4": (121e12, 60e12),
}


def datasheet_peak_flops(device_name: str, bf16: bool = True) -> float | None:
    """The data sheet's dense peak of a GPU named ``device_name`` (None when not listed)."""
    for key, (bf16_peak, tf32_peak) in DATASHEET_PEAK_FLOPS.items():
        if key in device_name:
            return bf16_peak if bf16 else tf32_peak
    return None


@dataclass(frozen=True)
class Peak:
    """A device's peak FLOP/s for MFU and where the figure comes from (``source``)."""

    flops: float
    source: str


# Square matrix products that reach a device's practical peak: large on a GPU (an 8192^3
# bf16 product ran at 785 TFLOP/s on an H200, 79% of its data sheet), modest on a CPU,
# where 1024^3 takes ~15 ms on 2 cores and larger ones gain little.
PEAK_MATMUL_SIZE = {"cuda": 8192, "cpu": 1024}
_MEASURED: dict[tuple[str, str], Peak] = {}


def measure_matmul_flops(device, dtype, size: int, repeats: int = 5) -> float:  # noqa: ANN001 (torch types)
    """FLOP/s of the fastest of ``repeats`` (size x size) @ (size x size) products in ``dtype``
    on ``device`` after one warm-up: 2 size^3 / seconds."""
    import time

    import torch

    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    sync = {"cuda": torch.cuda.synchronize, "mps": torch.mps.synchronize}.get(device.type, lambda: None)
    torch.mm(a, b)
    sync()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        sync()
        best = min(best, time.perf_counter() - t0)
    return 2.0 * size**3 / best


def device_peak(device, bf16: bool = True) -> Peak:  # noqa: ANN001 (torch.device)
    """The peak FLOP/s that MFU (flops/token x tokens/s / peak) is counted against.

    ``CHAMELEON_PEAK_FLOPS`` (a number) wins. Otherwise the device's own: the fastest
    square matrix product of ``PEAK_MATMUL_SIZE`` in the training's precision (bf16, or
    float32 with TF32 allowed on CUDA), measured once per process and device.
    """
    import os

    import torch

    if os.environ.get("CHAMELEON_PEAK_FLOPS"):
        return Peak(float(os.environ["CHAMELEON_PEAK_FLOPS"]), "CHAMELEON_PEAK_FLOPS")
    dtype = torch.bfloat16 if bf16 else torch.float32
    key = (str(device), str(dtype))
    if key not in _MEASURED:
        size = PEAK_MATMUL_SIZE.get(device.type, PEAK_MATMUL_SIZE["cpu"])
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        precision = torch.get_float32_matmul_precision()
        try:
            if device.type == "cuda" and not bf16:
                torch.set_float32_matmul_precision("high")  # TF32, as training sets it
            flops = measure_matmul_flops(device, dtype, size)
        finally:
            torch.set_float32_matmul_precision(precision)
        _MEASURED[key] = Peak(flops, f"measured: {str(dtype).removeprefix('torch.')} matmul {size}^3 on {name}")
    return _MEASURED[key]
