"""Embed a domain with the proxy LM: windows -> middle-layer hidden states -> mean pool.

Following the reference implementation, a sample's embedding is
``hidden_states[len(hidden_states) // 2]`` averaged over its real tokens, where
``hidden_states[0]`` is the embedding output and ``hidden_states[i]`` the output of
decoder layer i. With L layers that is the output of layer m = (L + 1) // 2. The
forward pass stops right there: a hook on layer m raises, so no layer above it (and no
final norm or LM head) is ever computed.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm


def middle_layer(num_layers: int) -> int:
    """m = len(hidden_states) // 2 = (L + 1) // 2 for an L-layer model (hidden_states has L + 1 entries)."""
    return (num_layers + 1) // 2


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The stack of decoder blocks of a HF causal LM (Llama-, GPT-2-, NeoX- and OPT-style)."""
    base = getattr(model, "base_model", model)
    for path in ("layers", "h", "decoder.layers", "blocks"):
        obj = base
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, torch.nn.ModuleList):
            return obj
    raise TypeError(f"cannot find the decoder layers of {type(model).__name__}")


class _Stop(Exception):
    def __init__(self, hidden: torch.Tensor):
        self.hidden = hidden


def sample_windows(tokens: np.ndarray, num_samples: int, length: int, seed: int) -> list[np.ndarray]:
    """``num_samples`` windows of ``length`` tokens at uniformly random starts (seeded).

    A domain shorter than ``length`` yields one window holding all of it.
    """
    n = len(tokens)
    if n == 0:
        raise ValueError("cannot sample windows from an empty token array")
    if n <= length:
        return [np.asarray(tokens, dtype=np.int64)]
    starts = np.sort(np.random.default_rng(seed).integers(0, n - length + 1, size=num_samples))
    return [np.asarray(tokens[s : s + length], dtype=np.int64) for s in starts]


@torch.inference_mode()
def middle_layer_states(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Hidden states (B x T x d) at ``hidden_states[len(hidden_states) // 2]``, computing no layer above it."""
    layers = decoder_layers(model)
    target = layers[middle_layer(len(layers)) - 1]

    def hook(_module, _inputs, output):
        raise _Stop(output[0] if isinstance(output, tuple) else output)

    handle = target.register_forward_hook(hook)
    try:
        base = getattr(model, "base_model", model)
        base(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    except _Stop as stop:
        return stop.hidden
    finally:
        handle.remove()
    raise RuntimeError("the forward pass never reached the middle layer")


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """sum_t h_t * m_t / sum_t m_t: the average over real (unpadded) tokens only."""
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)


@torch.inference_mode()
def embed_windows(
    model: torch.nn.Module,
    windows: Sequence[np.ndarray],
    batch_size: int,
    pad_id: int,
    device: torch.device,
    progress: bool = False,
    desc: str = "embed",
    dtype: str = "float32",
) -> np.ndarray:
    """Pooled middle-layer embedding of each window (N x d, float32), batched and right-padded.

    ``dtype``: ``float32`` runs the forward pass in full precision on every device, as
    the reference routine does; ``bfloat16`` runs it under bfloat16 autocast (the pooling
    is done in float32 either way).
    """
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
    model.to(device).eval()
    use_bf16 = dtype == "bfloat16"
    out = []
    for i in tqdm(range(0, len(windows), batch_size), desc=desc, disable=not progress):
        chunk = windows[i : i + batch_size]
        width = max(len(w) for w in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for r, w in enumerate(chunk):
            ids[r, : len(w)] = torch.as_tensor(w)
            mask[r, : len(w)] = 1
        ids, mask = ids.to(device), mask.to(device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
            hidden = middle_layer_states(model, ids, mask)
        out.append(mean_pool(hidden.float(), mask).cpu().numpy())
    return np.concatenate(out).astype(np.float32)
