"""DoReMi (Xie et al., NeurIPS 2023): domain weights from Group DRO against a reference model.

A reference model of the proxy's size is trained on the uniform mixture; a fresh proxy
then trains for the same budget on uniformly sampled batches while the domain weights
follow exponentiated-gradient ascent on each domain's excess loss over the reference:

    lambda_i = sum over domain i's tokens of max(l_proxy - l_ref, 0) / number of those tokens
    alpha'   = alpha_{t-1} * exp(eta * lambda)
    alpha_t  = (1 - c) alpha' / sum(alpha') + c / k
    proxy objective = sum_i alpha_t[i] * (mean loss of domain i's tokens in the batch)

The weights returned are the mean of alpha_t over the proxy's steps (the paper's output).

Two details follow the authors' code (sangmichaelxie/doremi, ``doremi/trainer.py``), which
the paper leaves open: a domain absent from a step's batch keeps its last excess loss (0
before it is first seen), so its weight is not moved by the others' alone; and with
gradient accumulation the weights move once per optimiser step, from the excess of all of
its micro-batches, before the last micro-batch's objective (earlier ones use alpha_{t-1}).

Torch is imported inside functions: ``registered()`` imports this module when the Dagster
code location loads.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from chameleon_assets.core.cost import Cost
from chameleon_assets.core.methods import DomainSet, MethodResult, ProxyRecipe, register
from chameleon_assets.core.schema import PositiveFloat, UnitInterval, settings


@dataclass
class Reweighting:
    """An online reweighting run: the averaged weights, alpha_t after each step, the last
    per-domain scores that moved them, and the tokens the proxy trained on."""

    weights: np.ndarray  # (k,) mean of alpha_t over steps
    trajectory: np.ndarray  # (steps, k) alpha_t after each step
    scores: np.ndarray  # (k,) the last step's scores (excess losses, generalisation estimates)
    tokens: int


def doremi_update(alpha: np.ndarray, excess: np.ndarray, eta: float, smoothing: float) -> np.ndarray:
    """One exponentiated-gradient step on the simplex, smoothed towards uniform:

        alpha' = alpha * exp(eta * excess),   alpha_new = (1 - c) alpha' / sum(alpha') + c / k

    with c = ``smoothing``; computed as a softmax of log alpha + eta * excess so large
    steps do not overflow.
    """
    alpha = np.asarray(alpha, dtype=np.float64)
    with np.errstate(divide="ignore"):  # a zero weight (c = 0) stays zero
        logits = np.log(alpha) + eta * np.asarray(excess, dtype=np.float64)
    p = np.exp(logits - logits.max())
    return (1.0 - smoothing) * p / p.sum() + smoothing / len(alpha)


def token_losses(model, batch):  # noqa: ANN001, ANN201 - torch module and tensors
    """Per-token cross-entropy -log p(x_{j+1} | x_{<=j}) of a (n, seq + 1) batch: an (n, seq) float tensor."""
    import torch.nn.functional as F

    logits = model(input_ids=batch[:, :-1]).logits
    return F.cross_entropy(logits.float().transpose(1, 2), batch[:, 1:], reduction="none")


def domain_means(values, rows, k: int):  # noqa: ANN001, ANN201 - torch tensors
    """Per-domain mean of an (n, seq) tensor whose row r belongs to domain ``rows[r]``:

        mean_i = sum of domain i's entries / their number   (0 for a domain with no rows)

    Returns ``(means (k,), counts (k,))``; differentiable in ``values``.
    """
    import torch

    sums = values.new_zeros(k).index_add(0, rows, values.sum(dim=1))
    counts = torch.bincount(rows, minlength=k).to(values.dtype) * values.shape[1]
    return sums / counts.clamp(min=1), counts


def doremi_train(model, reference, sampler, train_cfg: Any, device, eta: float, smoothing: float,  # noqa: ANN001
                 domains: Sequence[str]) -> Reweighting:
    """Train ``model`` (the proxy) in place with DoReMi's reweighted objective against
    ``reference`` (any module with ``reference(input_ids=...).logits``) for
    ``total_steps(train_cfg)`` steps of ``sampler.next_labelled_batch`` (the sampler should
    draw domains uniformly). Optimiser, schedule, clipping and bf16-on-CUDA as ``core.train``.
    ``domains`` fixes the order of the weights.
    """
    import torch

    from chameleon_assets.core.train import lr_at, make_optimizer, total_steps

    k, index = len(domains), {d: i for i, d in enumerate(domains)}
    steps = total_steps(train_cfg, sampler.seq_len)
    model.to(device).train()
    reference.to(device).eval()
    opt = make_optimizer(model, train_cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_at(s, train_cfg, steps) / train_cfg.lr)
    use_bf16 = device.type == "cuda"
    alpha, excess = np.full(k, 1.0 / k), np.zeros(k)
    trajectory = []
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        sums, counts = np.zeros(k), np.zeros(k)
        for micro in range(train_cfg.grad_accum):
            batch, labels = sampler.next_labelled_batch(train_cfg.batch_size)
            batch = batch.to(device, non_blocking=True)
            rows = torch.tensor([index[d] for d in labels], device=device)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
                losses = token_losses(model, batch)
                with torch.no_grad():
                    ref_losses = token_losses(reference, batch)
            clipped, n = domain_means((losses.detach() - ref_losses).clamp(min=0), rows, k)
            sums += (clipped * n).double().cpu().numpy()
            counts += n.double().cpu().numpy()
            if micro == train_cfg.grad_accum - 1:
                excess = np.where(counts > 0, sums / np.maximum(counts, 1), excess)
                alpha = doremi_update(alpha, excess, eta, smoothing)
            means, _ = domain_means(losses, rows, k)
            objective = (torch.as_tensor(alpha, dtype=means.dtype, device=device) * means).sum()
            (objective / train_cfg.grad_accum).backward()
        if train_cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
        opt.step()
        sched.step()
        trajectory.append(alpha)
    model.eval()
    trajectory = np.array(trajectory)
    tokens = steps * train_cfg.batch_size * train_cfg.grad_accum * sampler.seq_len
    return Reweighting(trajectory.mean(axis=0), trajectory, excess, tokens)


@register
class DoReMi:
    """DoReMi: a proxy trained with Group DRO on the excess loss over a reference model
    (trained on the uniform mixture); the weights are the proxy's domain weights averaged
    over its training steps."""

    name = "doremi"
    needs = frozenset({"corpora", "proxy"})

    @settings
    class Params:
        """``eta``: step size of the exponentiated-gradient update (the paper's 1);
        ``smoothing``: c, the share mixed with uniform at every step (the paper's 1e-3)."""

        eta: PositiveFloat = 1.0
        smoothing: UnitInterval = 1e-3

    def compute(self, domains: DomainSet, params: Params, proxy: ProxyRecipe | None = None) -> MethodResult:
        from chameleon_assets.core.train import WeightedDomainSampler

        uniform = {d: 1.0 for d in domains.names}
        reference, _, cost = proxy.train_on(domains.train, uniform, part="reference")
        model = proxy.build(seed=proxy.seed + 1)  # not the reference's initialisation
        sampler = WeightedDomainSampler(dict(domains.train), uniform, proxy.model.context_length, proxy.seed + 1)
        t0 = time.perf_counter()
        run = doremi_train(model, reference, sampler, proxy.train, proxy.torch_device(), params.eta,
                           params.smoothing, domains.names)
        wall = time.perf_counter() - t0
        train_flops, forward_flops = proxy.flops_per_token(model)
        # The reference scores every proxy token; its wall time is inside the proxy loop's.
        cost = (cost + Cost.of("proxy", train_flops * run.tokens, wall, run.tokens)
                + Cost.of("reference_forward", forward_flops * run.tokens, 0.0, run.tokens))
        return MethodResult(run.weights, cost, trajectory=run.trajectory,
                            details={"steps": len(run.trajectory), "final_excess": run.scores.tolist(),
                                     "final_weights": run.trajectory[-1].tolist()})
