"""Build small causal LMs from a model config, and save/load them the HF way."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import torch
from transformers import logging as hf_logging
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedModel

from chameleon_assets.core.config import ModelConfig


def padded_vocab(vocab_size: int, multiple: int) -> int:
    """ceil(V / m) * m: the rows of the embedding and output layer for V tokens."""
    return math.ceil(vocab_size / multiple) * multiple


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 in hardware: CUDA with bf16 support, or a CPU with
    AVX512-BF16 or AMX. Elsewhere (AVX2-only CPUs such as AMD Zen 3) PyTorch emulates it, and
    a bfloat16 training step ran about 20x slower than float32 on such a 2-core machine."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if all(callable(c) for c in checks):
        return any(c() for c in checks)
    try:  # an older torch without the probes: the kernel's CPU flags
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def training_precision(precision: str, device: torch.device) -> str:
    """What a ``train.precision`` setting runs as on ``device``: ``bfloat16`` or ``float32``.

    ``auto``: bfloat16 on CUDA, float32 on the CPU. ``bfloat16_if_native``: bfloat16 where
    the device has it in hardware (``native_bf16``), float32 elsewhere. ``bfloat16`` and
    ``float32``: as named, on every device.
    """
    if precision == "auto":
        return "bfloat16" if device.type == "cuda" else "float32"
    if precision == "bfloat16_if_native":
        return "bfloat16" if native_bf16(device) else "float32"
    if precision in ("bfloat16", "float32"):
        return precision
    raise ValueError(f"unknown precision {precision!r} (expected auto, float32, bfloat16 or bfloat16_if_native)")


# PyTorch's CPU flash-attention backward is about four times slower in bfloat16 than in
# float32 (measured on this project's 2-core machine: 13 ms against 3 ms per call for the
# cpu profile's base model), while bfloat16 halves the time of every matrix multiply. So
# training under CPU bfloat16 autocast runs attention in float32 through this registered
# attention function (the same SDPA, inputs upcast, output cast back).
CPU_BF16_ATTENTION = "sdpa_float32"


def _sdpa_float32(module, query, key, value, attention_mask, **kwargs):  # noqa: ANN001, ANN202
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    with torch.autocast(device_type=query.device.type, enabled=False):
        out, weights = sdpa_attention_forward(module, query.float(), key.float(), value.float(), attention_mask,
                                              **kwargs)
    return out.to(query.dtype), weights


def register_cpu_bf16_attention() -> str:
    """Register ``CPU_BF16_ATTENTION`` (attention function and its SDPA mask) with
    transformers, once; return its name for ``config._attn_implementation``."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(CPU_BF16_ATTENTION, _sdpa_float32)
    AttentionMaskInterface.register(CPU_BF16_ATTENTION, sdpa_mask)
    return CPU_BF16_ATTENTION


def build_model(cfg: ModelConfig, vocab_size: int, eos_id: int, seed: int) -> PreTrainedModel:
    """A freshly initialised causal LM (weights seeded by ``seed``), tied embeddings, no dropout,
    for a tokenizer of ``vocab_size`` tokens (rows padded to ``cfg.vocab_multiple``)."""
    torch.manual_seed(seed)
    vocab_size = padded_vocab(vocab_size, cfg.vocab_multiple)
    if cfg.arch == "llama":
        config = LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=cfg.hidden_size,
            intermediate_size=cfg.intermediate_size,
            num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads,
            num_key_value_heads=cfg.num_heads,
            max_position_embeddings=cfg.context_length,
            tie_word_embeddings=True,
            bos_token_id=eos_id,
            eos_token_id=eos_id,
            pad_token_id=eos_id,
        )
        config._attn_implementation = "sdpa"
        return LlamaForCausalLM(config)
    if cfg.arch == "gpt2":
        config = GPT2Config(
            vocab_size=vocab_size,
            n_positions=cfg.context_length,
            n_embd=cfg.hidden_size,
            n_layer=cfg.num_layers,
            n_head=cfg.num_heads,
            n_inner=cfg.intermediate_size,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=eos_id,
            eos_token_id=eos_id,
            pad_token_id=eos_id,
        )
        config._attn_implementation = "sdpa"
        return GPT2LMHeadModel(config)
    raise ValueError(f"unknown model arch {cfg.arch!r} (expected 'llama' or 'gpt2')")


def load_model(path: str | Path, device: torch.device | None = None) -> PreTrainedModel:
    """Load any local HF causal LM (``save_pretrained`` folder) in eval mode.

    Weights are read from safetensors only and no code shipped with the folder is run
    (``trust_remote_code`` stays off): a folder that only holds pickled weights
    (``pytorch_model.bin``), which could execute code when loaded, is refused.
    """
    path = Path(path).expanduser()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: no config.json, not a Hugging Face model folder")
    if not any(path.glob("*.safetensors")):
        raise ValueError(f"{path}: no .safetensors weights; pickled weights (.bin/.pt) are not loaded because "
                         "unpickling can run code. Convert with `model.save_pretrained(folder)` (safetensors)")
    hf_logging.disable_progress_bar()
    model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, attn_implementation="sdpa",
                                                 use_safetensors=True, trust_remote_code=False)
    model.eval()
    return model.to(device) if device is not None else model


def model_identity(path: str | Path) -> str:
    """Short sha256 over a saved model's config and weight files."""
    h = hashlib.sha256()
    path = Path(path)
    for f in sorted(path.glob("*.json")) + sorted(path.glob("*.safetensors")):
        if f.name.startswith("tokenizer") or f.name == "special_tokens_map.json":
            continue
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def count_parameters(model: torch.nn.Module) -> int:
    """Unique parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
