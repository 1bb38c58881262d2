"""The settings of the science: what a model, a training run and an embedding pass are
configured with.

Plain dataclasses whose fields carry their ranges (``core.schema``): ``ModelConfig`` is
read by ``core.model.build_model``, ``TrainConfig`` by ``core.train``, ``EmbeddingConfig``
by the embedding step, and the application's profiles (``chameleon_assets.settings``)
compose them. They live apart from the code that uses
them for one reason: reading a configuration must not import torch or transformers
(the Dagster code location loads without them).
"""

from __future__ import annotations

from typing import Literal

from chameleon_assets.core.schema import (HalfOpenUnitInterval, InvalidSetting, NonNegativeFloat, NonNegativeInt,
                                          PositiveFloat, PositiveInt, StrictBool, UnitInterval, settings)


@settings
class ModelConfig:
    """A causal LM built from scratch (``arch``: ``llama`` or ``gpt2``).

    ``vocab_multiple``: the embedding and output layer get ``ceil(V / m) * m`` rows for a
    tokenizer of V tokens. On a GPU a multiple of 64 lets the output layer's matrix
    product (the largest of a small model) run on whole tensor-core tiles: GPT-2's
    50,257 is odd. The extra rows are never inputs or targets; training drives their
    logits down, as in nanoGPT's 50,304.
    """

    arch: Literal["llama", "gpt2"] = "llama"
    hidden_size: PositiveInt = 128
    num_layers: PositiveInt = 4
    num_heads: PositiveInt = 4
    intermediate_size: PositiveInt = 512
    context_length: PositiveInt = 128
    vocab_multiple: PositiveInt = 1

    def check(self) -> None:
        if self.hidden_size % self.num_heads:
            raise InvalidSetting("hidden_size", f"must be divisible by num_heads ({self.num_heads})", self.hidden_size)


@settings
class TrainConfig:
    """AdamW with linear warmup and cosine decay to ``min_lr_ratio * lr``.

    ``precision``: the forward and backward pass's. ``auto`` is bfloat16 autocast on CUDA
    and float32 on the CPU; ``bfloat16`` uses autocast on the CPU too (with attention kept
    in float32 there, see ``core.model.CPU_BF16_ATTENTION``); ``bfloat16_if_native`` is
    bfloat16 where the device has it in hardware (CUDA, CPUs with AVX512-BF16 or AMX) and
    float32 elsewhere, where bfloat16 is emulated and many times slower. What a run used is
    in its metadata (``training_precision``). Master weights, optimiser state and the loss
    are float32 either way.

    ``loss``: how the cross-entropy is computed (``core.loss``): ``auto`` takes what the
    device is fastest with, ``chunked`` the output layer fused into a chunked loss,
    ``full`` the full logits. ``compile``: ``torch.compile`` the model and loss. Neither
    changes what is trained beyond floating-point rounding, so neither is in a data version.
    """

    tokens: PositiveInt = 200_000
    batch_size: PositiveInt = 16
    grad_accum: PositiveInt = 1
    lr: PositiveFloat = 3e-3
    min_lr_ratio: UnitInterval = 0.1
    warmup_steps: NonNegativeInt = 10
    weight_decay: NonNegativeFloat = 0.1
    beta1: HalfOpenUnitInterval = 0.9
    beta2: HalfOpenUnitInterval = 0.95
    grad_clip: PositiveFloat = 1.0
    checkpoint_every: PositiveInt = 50
    compile: StrictBool = False
    precision: Literal["auto", "float32", "bfloat16", "bfloat16_if_native"] = "auto"
    loss: Literal["auto", "chunked", "full"] = "auto"


@settings
class EmbeddingConfig:
    """``num_samples`` windows of ``sample_length`` tokens per domain, embedded at the middle layer.

    ``dtype``: the forward pass's precision. ``float32`` (default) is the reference
    routine's, on every device; ``bfloat16`` runs it under bfloat16 autocast (faster on
    a GPU, but the embeddings, and so the weights, differ slightly).
    """

    num_samples: PositiveInt = 64
    sample_length: PositiveInt = 128
    batch_size: PositiveInt = 32
    dtype: Literal["float32", "bfloat16"] = "float32"
