"""Next-token cross-entropy fused with the output layer, computed a chunk of tokens at a time.

The plain way, ``F.cross_entropy(lm_head(h), targets)``, writes the whole (tokens x vocab)
logit matrix, reads it back for the log-softmax, writes its gradient (first a zero-filled
matrix of the same size) and reads that twice more in the backward pass. For the cpu
profile's models (an 8,192-token vocabulary, width 128, 2,032 targets per step) that is
66 MB per pass, and the log-softmax, its backward and the zero fill took about a quarter
of a training step (torch profiler, 2-core machine), more than the attention.

``fused_linear_cross_entropy`` instead takes ``chunk`` rows of hidden states at a time,
computes their logits, the loss and at once the gradient of the loss with respect to
the hidden states and to the output weights, and lets the logits go: each chunk's logits
stay in the CPU cache (or, on a GPU, the memory for logits stops growing with the batch).
The backward pass only scales the stored gradients. The same idea as Liger Kernel's fused
linear cross-entropy and Apple's Cut Cross-Entropy, in plain PyTorch operations.

The arithmetic is the standard one (same values up to floating-point summation order):

    loss = (1/N) * sum_i [ logsumexp_v(z_iv) - z_{i, t_i} ],   z = h W^T
    dloss/dz = (softmax(z) - onehot(t)) / N,   dh = (dloss/dz) W,   dW = (dloss/dz)^T h

Under autocast the two matrix products run in the autocast dtype, as ``lm_head`` would,
and the softmax and the loss in float32, as the plain path's ``logits.float()`` does.
"""

from __future__ import annotations

import torch

# Logit entries per chunk. On the CPU about 8 MB of float32 logits, which stay in the L3
# cache (256 rows at an 8k vocabulary: the fastest of 256, 512 and 1,024 on 2 cores); on
# a GPU 256 MB, large products with the memory for logits still bounded (1,335 rows at 50k).
CHUNK_LOGITS = {"cpu": 2**21, "cuda": 2**26}


def default_chunk(vocab_size: int, device: str = "cpu") -> int:
    """Rows per chunk: ``CHUNK_LOGITS[device] // vocab_size``, at least 32."""
    return max(32, CHUNK_LOGITS.get(device, CHUNK_LOGITS["cpu"]) // vocab_size)


class _FusedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,  # noqa: ANN001, ANN205
                chunk: int, dtype: torch.dtype) -> torch.Tensor:
        n = hidden.shape[0]
        needs_h, needs_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            w = weight.to(dtype)
            total = torch.zeros((), dtype=torch.float32, device=hidden.device)
            grad_h = torch.empty(hidden.shape, dtype=torch.float32, device=hidden.device) if needs_h else None
            grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if needs_w else None
            minus_one = torch.full((chunk, 1), -1.0, device=hidden.device)
            for start in range(0, n, chunk):
                h = hidden[start : start + chunk].to(dtype)
                t = targets[start : start + chunk, None]
                logits = (h @ w.T).float()
                target_logits = logits.gather(1, t).squeeze(1)
                row_max = logits.amax(dim=-1)
                probs = torch.softmax(logits, dim=-1)
                del logits
                # lse = m + log s with s = sum_v exp(z_v - m); the softmax's largest entry is
                # exp(0) / s, so lse = m - log(max_v p_v), exact to rounding (that entry is at
                # least 1/V). One fused softmax and two row maxima instead of logsumexp's
                # subtract, exp and sum and then a second subtract and exp: ~3x less time.
                lse = row_max - probs.amax(dim=-1).log()
                total += (lse - target_logits).sum()
                if not (needs_h or needs_w):
                    continue
                probs.scatter_add_(1, t, minus_one[: t.shape[0]])  # softmax(z) - onehot(t)
                g = probs.to(dtype)
                rows = slice(start, start + chunk)
                if dtype == torch.float32:  # straight into the gradient buffers
                    if needs_h:
                        torch.mm(g, w, out=grad_h[rows])
                    if needs_w:
                        grad_w.addmm_(g.T, h)
                else:
                    if needs_h:
                        grad_h[rows] = g @ w
                    if needs_w:
                        grad_w += (g.T @ h).float()
        ctx.save_for_backward(grad_h if needs_h else None, grad_w if needs_w else None)
        ctx.n, ctx.dtypes = n, (hidden.dtype, weight.dtype)
        return total / n

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # noqa: ANN001, ANN205
        grad_h, grad_w = ctx.saved_tensors
        scale = grad_out / ctx.n
        dh = (grad_h * scale).to(ctx.dtypes[0]) if grad_h is not None else None
        dw = (grad_w * scale).to(ctx.dtypes[1]) if grad_w is not None else None
        return dh, dw, None, None, None


@torch.compiler.disable  # runs eagerly under torch.compile: the rest of the model compiles around it
def fused_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                               chunk: int | None = None) -> torch.Tensor:
    """Mean cross-entropy of ``targets`` (N,) under logits ``hidden @ weight.T``.

    ``hidden``: (N, d); ``weight``: (V, d), the output layer's (no bias). Returns
    ``(1/N) * sum_i [logsumexp(z_i) - z_{i,t_i}]`` with ``z = hidden @ weight.T``, without
    ever holding more than ``chunk`` rows of ``z`` (default ``default_chunk(V, device)``). Under an
    active autocast the products run in its dtype and the softmax in float32.
    """
    if hidden.ndim != 2 or weight.ndim != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"hidden (N, d) and weight (V, d) expected, got {tuple(hidden.shape)} and {tuple(weight.shape)}")
    if targets.shape != hidden.shape[:1]:
        raise ValueError(f"targets must be ({hidden.shape[0]},), got {tuple(targets.shape)}")
    device = hidden.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else torch.float32
    return _FusedLinearCrossEntropy.apply(hidden, weight, targets, chunk or default_chunk(weight.shape[0], device), dtype)


class CausalLMLoss(torch.nn.Module):
    """``model``'s mean next-token loss on ``(input_ids, targets)``, with the output layer
    fused into the cross-entropy (``fused_linear_cross_entropy``).

    A module so that DistributedDataParallel and ``torch.compile`` can wrap it whole; it
    owns no parameters of its own. For Hugging Face causal LMs whose logits are exactly
    ``get_output_embeddings()(last hidden state)`` (Llama, GPT-2: no bias, no scaling).
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        head = model.get_output_embeddings()
        if not isinstance(head, torch.nn.Linear) or head.bias is not None:
            raise ValueError(f"{type(model).__name__}: the fused loss needs an output layer without bias")
        if getattr(model.config, "final_logit_softcapping", None) or getattr(model.config, "logit_scale", None):
            raise ValueError(f"{type(model).__name__}: the fused loss does not scale or cap logits")
        self.model = model

    def forward(self, input_ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        hidden = self.model.base_model(input_ids=input_ids).last_hidden_state
        weight = self.model.get_output_embeddings().weight
        return fused_linear_cross_entropy(hidden.reshape(-1, hidden.shape[-1]), weight, targets.reshape(-1))


class PlainCausalLMLoss(torch.nn.Module):
    """``model``'s mean next-token loss from its full logits (``F.cross_entropy`` on
    ``model(input_ids).logits`` in float32): for models ``CausalLMLoss`` does not take."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = self.model(input_ids=input_ids).logits
        return torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))


# What ``train.loss: auto`` trains with on each device. CPU: the chunked fused loss, 1.46x
# the full-logit step on the cpu profile's model (bench/results/train_step.json,
# fused-loss-v2). CUDA: full logits, with the log-softmax fused by ``torch.compile``; on an
# H200 with the gpu profile's base model the chunked loss (a Python loop of eager chunks,
# which the compiler cannot enter) ran 229,000 tokens/s against 438,000 (issue 27;
# ``bench/bench_gpu.py`` measures both on any GPU). Other devices: the chunked loss.
AUTO_LOSS = {"cpu": "chunked", "cuda": "full"}
LOSS_CHOICES = ("auto", "chunked", "full")


def resolve_loss(choice: str, device: torch.device | str) -> str:
    """The loss ``choice`` (a ``train.loss`` value) trains with on ``device``: ``chunked`` or ``full``."""
    if choice not in LOSS_CHOICES:
        raise ValueError(f"unknown loss {choice!r} (expected one of {', '.join(LOSS_CHOICES)})")
    kind = torch.device(device).type
    return AUTO_LOSS.get(kind, "chunked") if choice == "auto" else choice


def causal_lm_loss(model: torch.nn.Module, choice: str = "auto", device: torch.device | str = "cpu") -> torch.nn.Module:
    """The training loss module for ``model`` on ``device``: ``CausalLMLoss`` (the output layer
    fused into a chunked cross-entropy) or ``PlainCausalLMLoss`` (full logits), as
    ``resolve_loss(choice, device)`` says. A model whose logits are not a plain linear map
    of its last hidden state always gets the full-logit loss. Both compute the same mean
    next-token cross-entropy."""
    if resolve_loss(choice, device) == "chunked":
        try:
            return CausalLMLoss(model)
        except ValueError:
            pass
    return PlainCausalLMLoss(model)
