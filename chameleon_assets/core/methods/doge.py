"""DoGE (Fan, Pagliardini and Jaggi, ICML 2024): domain weights from gradient alignment.

A fresh proxy of the proxy's size and budget trains on the alpha-weighted sum of its
per-domain gradients; at every step each domain's weight grows with how well its
gradient g_i aligns with the other domains' (universal generalisation, every domain a target):

    W_i     = clip(<g_i, sum_{j != i} g_j> / mean_j ||g_j||, 0, 5)
    alpha_t = (1 - c) softmax(log alpha_{t-1} + eta_t W) + c / k,   eta_t = eta * lr_t / lr
    update  = AdamW step on sum_i alpha_t[i] g_i

The weights returned are the mean of alpha_t over the proxy's steps.

What follows the authors' code (Olivia-fsm/DoGE, ``src/trainer.py``) rather than a
reading of the paper alone:
- j runs over the *other* domains: the code subtracts the diagonal of the Gram matrix
  when the targets are the training domains, so a domain's own gradient norm (the paper's
  sum over all j would add ||g_i||^2) does not raise its weight.
- The scale: each g_i is clipped to the recipe's ``grad_clip`` before the inner products;
  W is divided by the mean gradient norm and clipped to [0, 5] (the code's dw_min, dw_max);
  the step is lr_t / mu, the model's current learning rate over the Bregman coefficient.
  Here the step is ``eta * lr_t / lr``: it follows the warm-up and cosine schedule and
  peaks at ``eta``, independent of the profile's learning rate. The default eta = 0.05 is
  the authors' peak step (lr 5e-4 / mu 0.01 in ``config/doge.json``).
- The authors' batch draws domains by weight; here every step draws
  max(1, batch_size // k) rows of every domain, so every domain has a gradient each step.

Torch is imported inside functions: ``registered()`` imports this module when the Dagster
code location loads.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from chameleon_assets.core.cost import Cost
from chameleon_assets.core.methods import DomainSet, MethodResult, ProxyRecipe, register
from chameleon_assets.core.methods.doremi import Reweighting, doremi_update
from chameleon_assets.core.schema import PositiveFloat, UnitInterval, settings

SCORE_RANGE = (0.0, 5.0)  # the authors' clip of the normalised estimate (dw_min, dw_max)


def generalisation_estimates(gram: np.ndarray) -> np.ndarray:
    """From the Gram matrix K_ij = <g_i, g_j> of the k domain gradients:

        W_i = clip((sum_j K_ij - K_ii) / (mean_j sqrt(K_jj) + 1e-6), 0, 5)
    """
    gram = np.asarray(gram, dtype=np.float64)
    diag = np.diag(gram)
    mean_norm = np.sqrt(np.maximum(diag, 0.0)).mean()
    return np.clip((gram.sum(axis=1) - diag) / (mean_norm + 1e-6), *SCORE_RANGE)


def gram_matrix(grads) -> np.ndarray:  # noqa: ANN001 - a (k, P) array or tensor, or k flat tensors
    """K_ij = <g_i, g_j> for k flattened gradients, as float64 numpy (computed where they live)."""
    if isinstance(grads, np.ndarray):
        g = grads.astype(np.float64)
        return g @ g.T
    import torch

    g = torch.stack(list(grads)) if isinstance(grads, (list, tuple)) else grads
    return (g.float() @ g.float().T).double().cpu().numpy()


def doge_update(alpha: np.ndarray, grads, eta: float,  # noqa: ANN001 - a (k, P) array or tensor, or k flat tensors
                smoothing: float) -> tuple[np.ndarray, np.ndarray]:
    """One DoGE step: W = generalisation_estimates(Gram(grads)), then

        alpha' = alpha * exp(eta * W),   alpha_new = (1 - c) alpha' / sum(alpha') + c / k

    (``doremi_update`` with W as the scores). Returns ``(alpha_new, W)``.
    """
    scores = generalisation_estimates(gram_matrix(grads))
    return doremi_update(alpha, scores, eta, smoothing), scores


def domain_gradients(model, params: list, sampler, domains: Sequence[str], rows: int, accum: int,  # noqa: ANN001
                     device, use_bf16: bool):  # noqa: ANN001, ANN201
    """A (k, P) tensor: row i is the gradient of the mean token loss on ``rows`` windows of
    domain i (averaged over ``accum`` micro-batches), flattened over ``params``."""
    import torch
    import torch.nn.functional as F

    grads = torch.zeros(len(domains), sum(p.numel() for p in params), device=device)
    for _ in range(accum):
        for i, d in enumerate(domains):
            batch = sampler.batch_of([d] * rows).to(device, non_blocking=True)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
                logits = model(input_ids=batch[:, :-1]).logits
            loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1))
            g = torch.autograd.grad(loss, params, allow_unused=True)
            grads[i] += torch.cat([(gi if gi is not None else torch.zeros_like(p)).reshape(-1)
                                   for gi, p in zip(g, params)]) / accum
    return grads


def clip_rows(grads, max_norm: float):  # noqa: ANN001, ANN201 - a (k, P) tensor
    """Each row g_i scaled by min(1, max_norm / ||g_i||)."""
    norms = grads.norm(dim=1, keepdim=True)
    return grads * (max_norm / (norms + 1e-6)).clamp(max=1.0)


def doge_train(model, sampler, train_cfg: Any, device, eta: float, smoothing: float,  # noqa: ANN001
               domains: Sequence[str]) -> Reweighting:
    """Train ``model`` (the proxy) in place with DoGE for ``total_steps(train_cfg)`` steps;
    each step reads max(1, batch_size // k) windows of every domain (``sampler.batch_of``).
    Optimiser, schedule, clipping and bf16-on-CUDA as ``core.train``; ``domains`` fixes
    the order of the weights.
    """
    import torch

    from chameleon_assets.core.train import lr_at, make_optimizer, total_steps

    k, steps = len(domains), total_steps(train_cfg, sampler.seq_len)
    rows = max(1, train_cfg.batch_size // k)
    model.to(device).train()
    params = [p for p in {id(p): p for p in model.parameters()}.values() if p.requires_grad]
    opt = make_optimizer(model, train_cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_at(s, train_cfg, steps) / train_cfg.lr)
    use_bf16 = device.type == "cuda"
    alpha, scores, trajectory = np.full(k, 1.0 / k), np.zeros(k), []
    for step in range(steps):
        grads = domain_gradients(model, params, sampler, domains, rows, train_cfg.grad_accum, device, use_bf16)
        if train_cfg.grad_clip > 0:
            grads = clip_rows(grads, train_cfg.grad_clip)
        alpha, scores = doge_update(alpha, grads, eta * lr_at(step, train_cfg, steps) / train_cfg.lr, smoothing)
        combined = torch.as_tensor(alpha, dtype=grads.dtype, device=device) @ grads
        offset = 0
        for p in params:
            p.grad = combined[offset : offset + p.numel()].view_as(p)
            offset += p.numel()
        if train_cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, train_cfg.grad_clip)
        opt.step()
        sched.step()
        trajectory.append(alpha)
    model.eval()
    trajectory = np.array(trajectory)
    tokens = steps * train_cfg.grad_accum * k * rows * sampler.seq_len
    return Reweighting(trajectory.mean(axis=0), trajectory, scores, tokens)


@register
class DoGE:
    """DoGE: a proxy trained on the weighted sum of its per-domain gradients, each domain's
    weight raised by how well its gradient aligns with the other domains'; the weights are
    the proxy's domain weights averaged over its training steps."""

    name = "doge"
    needs = frozenset({"corpora", "proxy"})

    @settings
    class Params:
        """``eta``: peak step size on the normalised alignment W (scaled by lr_t / lr; the
        authors' lr / mu = 5e-4 / 0.01); ``smoothing``: c, the share mixed with uniform."""

        eta: PositiveFloat = 0.05
        smoothing: UnitInterval = 1e-3

    def compute(self, domains: DomainSet, params: Params, proxy: ProxyRecipe | None = None) -> MethodResult:
        from chameleon_assets.core.train import WeightedDomainSampler

        uniform = {d: 1.0 for d in domains.names}
        model = proxy.build()
        sampler = WeightedDomainSampler(dict(domains.train), uniform, proxy.model.context_length, proxy.seed)
        t0 = time.perf_counter()
        run = doge_train(model, sampler, proxy.train, proxy.torch_device(), params.eta, params.smoothing,
                         domains.names)
        wall = time.perf_counter() - t0
        train_flops, _ = proxy.flops_per_token(model)
        # Every window is a forward and a backward pass; the k x k Gram matrix and the
        # weighted sum (k^2 P + k P multiply-adds a step) are negligible beside them.
        cost = Cost.of("proxy", train_flops * run.tokens, wall, run.tokens)
        return MethodResult(run.weights, cost, trajectory=run.trajectory,
                            details={"steps": len(run.trajectory), "final_scores": run.scores.tolist(),
                                     "final_weights": run.trajectory[-1].tolist()})
