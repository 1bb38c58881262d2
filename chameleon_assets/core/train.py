"""Train a causal LM on a weighted mixture of domains, resumably.

The sampler draws each training sequence's domain with probability equal to the
mixture weight, then takes the next contiguous window of that domain's memory-mapped
train tokens; a domain read past its end wraps to its start and counts an epoch.

A mixture may change during training (``mixing``, ``core.online``: a weight schedule or
Aioli's online controller): before every optimiser step the loop asks it for the
sampler's weights, giving it a function that measures the model's held-out loss per
domain, and its state goes into every checkpoint beside the sampler's.

Checkpoints (model, optimiser, scheduler, sampler, mixing and RNG state) are written every
``checkpoint_every`` steps; a killed run restarted with the same settings resumes at
the last checkpoint and follows the same trajectory as an uninterrupted run.

Under ``torchrun`` (``torch.distributed`` initialised, see ``core.ddp_worker``) the same
function trains with DistributedDataParallel: every rank runs the same sampler, so all
ranks agree on each micro-batch's domains and cursors, and each rank materialises only
its own contiguous ``batch_size / world_size`` rows of it. The global batch, learning
rate schedule and sample stream therefore do not depend on the number of processes;
gradients are averaged across ranks, which equals the single-process mean over the
whole batch. Only rank 0 writes checkpoints.

The step loop does not synchronise host and device: losses stay on the device and are
read (and, under DDP, averaged across ranks) once every ``LOG_EVERY`` steps. On a GPU the
next micro-batches are drawn on a background thread into pinned memory
(``BatchPrefetcher``), so the device never waits for Python. The loss is the one each
device is fastest with (``core.loss.AUTO_LOSS``): the output layer fused into a chunked
cross-entropy on the CPU, full logits under ``torch.compile`` on CUDA.

Speed is reported from steady-state steps only (``StepClock``): the first step (which
compiles the model under ``torch.compile``) and a warm-up are timed and reported apart,
and tokens/s counts the steps after them. MFU is tokens/s x FLOPs per token over the
device's peak, whose source is reported with it (``core.cost.device_peak``).
"""

from __future__ import annotations

import contextlib
import math
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from chameleon_assets.core.artifacts import atomic_dir, read_json, sha256_text, verify_dir, write_json
from chameleon_assets.core.config import TrainConfig
from chameleon_assets.core.cost import device_peak, model_train_flops_per_token
from chameleon_assets.core.loss import causal_lm_loss, resolve_loss
from chameleon_assets.core.model import native_bf16, register_cpu_bf16_attention, training_precision
from chameleon_assets.core.online import OnlineMixing


class WeightedDomainSampler:
    """Draw (batch, seq_len + 1) token windows, each from a domain picked by weight."""

    def __init__(self, tokens: dict[str, np.ndarray], weights: dict[str, float], seq_len: int, seed: int):
        self.domains = [d for d in sorted(tokens) if weights.get(d, 0.0) > 0]
        if not self.domains:
            raise ValueError("no domain has a positive weight")
        w = np.array([weights[d] for d in self.domains], dtype=np.float64)
        self.probs = w / w.sum()
        self.tokens = {d: tokens[d] for d in self.domains}
        for d in self.domains:
            if len(self.tokens[d]) == 0:
                raise ValueError(f"domain '{d}' has no training tokens")
        self.seq_len = seq_len
        self.rng = np.random.default_rng(seed)
        self.cursors = {d: 0 for d in self.domains}
        self.epochs = {d: 0 for d in self.domains}
        self.draws = {d: 0 for d in self.domains}

    def _window(self, d: str) -> np.ndarray:
        arr, n = self.tokens[d], self.seq_len + 1
        if len(arr) < n:  # a tiny domain: repeat it to fill one window
            self.epochs[d] += 1
            return np.resize(np.asarray(arr), n)
        if self.cursors[d] + n > len(arr):
            self.cursors[d] = 0
            self.epochs[d] += 1
        c = self.cursors[d]
        self.cursors[d] = c + self.seq_len
        return np.asarray(arr[c : c + n])

    def set_weights(self, weights: dict[str, float]) -> None:
        """Draw from now on with probability proportional to ``weights`` (a domain left out: 0).
        Only domains the sampler was made with can be drawn."""
        extra = [d for d, v in weights.items() if v > 0 and d not in self.tokens]
        if extra:
            raise ValueError(f"domain '{extra[0]}' gets weight but had none when the sampler was made")
        w = np.array([max(float(weights.get(d, 0.0)), 0.0) for d in self.domains], dtype=np.float64)
        if not w.sum() > 0:
            raise ValueError(f"no domain has a positive weight in {weights}")
        self.probs = w / w.sum()

    def draw_domains(self, count: int) -> list[str]:
        idx = self.rng.choice(len(self.domains), size=count, p=self.probs)
        return [self.domains[i] for i in idx]

    def next_batch(self, batch_size: int) -> torch.Tensor:
        return self.next_labelled_batch(batch_size)[0]

    def next_labelled_batch(self, batch_size: int) -> tuple[torch.Tensor, list[str]]:
        """A batch and the domain of each row (what DoReMi's per-domain losses group by)."""
        domains = self.draw_domains(batch_size)
        return self.batch_of(domains), domains

    def next_batch_shard(self, batch_size: int, rank: int = 0, world_size: int = 1) -> torch.Tensor:
        """Rows ``[rank * b, (rank + 1) * b)`` (b = ``batch_size / world_size``) of the next batch.

        Every rank draws the whole batch's domains and advances every cursor, so the
        sampler's state stays identical on all ranks (one checkpoint resumes them all)
        and the ranks' shares are disjoint; only this rank's windows are read.
        """
        per = batch_size // world_size
        domains = self.draw_domains(batch_size)
        rows = []
        for i, d in enumerate(domains):
            self.draws[d] += 1
            window = self._window(d)
            if rank * per <= i < (rank + 1) * per:
                rows.append(window.astype(np.int64))
        return torch.from_numpy(np.stack(rows))

    def batch_of(self, domains: list[str]) -> torch.Tensor:
        """One window per entry of ``domains``, each from that domain's stream, as a (n, seq_len + 1) batch."""
        rows = []
        for d in domains:
            self.draws[d] += 1
            rows.append(self._window(d).astype(np.int64))
        return torch.from_numpy(np.stack(rows))

    def epochs_seen(self) -> dict[str, float]:
        """Fractional epochs read per domain (completed wraps plus the cursor position)."""
        return {d: self.epochs[d] + self.cursors[d] / max(len(self.tokens[d]), 1) for d in self.domains}

    def state_dict(self) -> dict:
        return {
            "rng": self.rng.bit_generator.state,
            "cursors": dict(self.cursors),
            "epochs": dict(self.epochs),
            "draws": dict(self.draws),
            "probs": self.probs.tolist(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.cursors.update(state["cursors"])
        self.epochs.update(state["epochs"])
        self.draws.update(state["draws"])
        if "probs" in state:  # absent from checkpoints written before weights could change
            self.probs = np.array(state["probs"], dtype=np.float64)


def lr_at(step: int, cfg: TrainConfig, total_steps: int) -> float:
    """Linear warmup to ``lr`` over ``warmup_steps``, then cosine decay to ``min_lr_ratio * lr``.

    lr(s) = lr * (s + 1) / warmup                                       for s < warmup
    lr(s) = lr * (m + (1 - m) * 0.5 * (1 + cos(pi * (s - warmup) / (S - warmup))))  otherwise
    """
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(total_steps - cfg.warmup_steps, 1)
    progress = min((step - cfg.warmup_steps) / span, 1.0)
    m = cfg.min_lr_ratio
    return cfg.lr * (m + (1 - m) * 0.5 * (1 + math.cos(math.pi * progress)))


def total_steps(cfg: TrainConfig, seq_len: int) -> int:
    """Optimiser steps that cover ``cfg.tokens`` (at least one)."""
    return max(1, math.ceil(cfg.tokens / (cfg.batch_size * cfg.grad_accum * seq_len)))


@dataclass
class TrainResult:
    steps: int
    tokens: int
    losses: list[float]
    tokens_per_s: float
    epochs: dict[str, float]
    draws: dict[str, int]
    resumed_from: int = 0
    extra: dict = field(default_factory=dict)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, fused: bool = False) -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices only (tied embeddings counted once).

    ``fused``: one kernel for the whole update (CUDA; the trajectory is the same up to rounding).
    """
    params = {id(p): p for p in model.parameters() if p.requires_grad}.values()
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(cfg.beta1, cfg.beta2),
        fused=fused,
    )


# Losses are read from the device (one host synchronisation) every LOG_EVERY steps.
LOG_EVERY = 10
# Devices whose batches are drawn ahead on a thread (``BatchPrefetcher``). Not the CPU:
# there the thread would take a core from the step it is meant to feed.
PREFETCH_DEVICES = frozenset({"cuda"})
# Steps after the first that still count as warm-up (allocator growth, autotuning, a
# recompile): the steady window opens at the first loss read at least this many steps on.
WARMUP_STEPS = 5


class StepClock:
    """Wall time of training steps, read only where the loop has synchronised with the device.

    ``mark(step)`` records the time once the device has finished ``step``: after the first
    step (one extra synchronisation) and at every loss read. Three spans follow:

    * first step: from the call to the end of the first step (under ``torch.compile`` this
      is where the model compiles);
    * warm-up: from there to the first mark at least ``WARMUP_STEPS`` steps later;
    * steady state: from there to the last mark, less the seconds spent writing
      checkpoints in between (``exclude``).

    tokens/s = tokens_per_step x steady steps / steady seconds. A run too short to have a
    steady window is measured from the end of its first step; a one-step run over the whole.
    """

    def __init__(self, start_step: int, tokens_per_step: int):
        self.t0 = time.perf_counter()
        self.start_step = start_step
        self.tokens_per_step = tokens_per_step
        self.excluded = 0.0
        self.marks: list[tuple[int, float, float]] = []  # (step, time, seconds excluded until then)

    def mark(self, step: int) -> None:
        if not self.marks or self.marks[-1][0] != step:
            self.marks.append((step, time.perf_counter(), self.excluded))

    def exclude(self, seconds: float) -> None:
        """Take ``seconds`` (a checkpoint write) out of the timed steps."""
        self.excluded += seconds

    def _window(self) -> tuple[tuple[int, float, float], tuple[int, float, float]] | None:
        if len(self.marks) < 2:
            return None
        warm = self.marks[0][0] + WARMUP_STEPS
        opening = next((m for m in self.marks[1:-1] if m[0] >= warm), self.marks[0])
        return opening, self.marks[-1]

    def tokens_per_s(self) -> float:
        """The steady rate so far (see the class docstring)."""
        window = self._window()
        if window is None:
            if not self.marks:
                return 0.0
            step, t, excluded = self.marks[-1]
            return (step - self.start_step) * self.tokens_per_step / max(t - self.t0 - excluded, 1e-9)
        (s0, t0, e0), (s1, t1, e1) = window
        return (s1 - s0) * self.tokens_per_step / max(t1 - t0 - (e1 - e0), 1e-9)

    def summary(self) -> dict:
        """first_step_s, warmup_steps, warmup_s, steady_steps, steady_s and tokens_per_s."""
        if not self.marks:
            return {"tokens_per_s": 0.0}
        first = self.marks[0]
        window = self._window()
        opening, last = window if window is not None else (first, first)
        return {
            "first_step_s": first[1] - self.t0 - first[2],
            "warmup_steps": opening[0] - first[0],
            "warmup_s": opening[1] - first[1] - (opening[2] - first[2]),
            "steady_steps": last[0] - opening[0],
            "steady_s": last[1] - opening[1] - (last[2] - opening[2]),
            "tokens_per_s": self.tokens_per_s(),
        }


class BatchPrefetcher:
    """Draws the next micro-batches on a background thread, into pinned host memory.

    On a GPU the device would otherwise wait for each batch's windows to be read and
    stacked in Python. Each batch comes with the sampler's state right after it was drawn:
    a checkpoint stores the state of what was trained on, not of what the thread has read
    ahead, and ``close`` puts the sampler back to the last batch taken.
    """

    def __init__(self, sampler: WeightedDomainSampler, batch_size: int, dist: Distributed, depth: int = 4,
                 pin: bool = True):
        self.sampler, self.state = sampler, sampler.state_dict()
        self._draw = lambda: sampler.next_batch_shard(batch_size, dist.rank, dist.world_size)
        self._pin = pin
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, name="batch-prefetch", daemon=True)
        self._thread.start()

    def _fill(self) -> None:
        try:
            while not self._stop.is_set():
                batch = self._draw()
                item = (batch.pin_memory() if self._pin else batch, self.sampler.state_dict())
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as exc:  # noqa: BLE001 - handed to the training loop, raised there
            self._queue.put((exc, None))

    def next(self) -> torch.Tensor:
        """The next micro-batch (rows of this rank); its sampler state becomes ``self.state``."""
        batch, state = self._queue.get()
        if isinstance(batch, BaseException):
            raise batch
        self.state = state
        return batch

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=0.1)
        self.sampler.load_state_dict(self.state)


@dataclass(frozen=True)
class Distributed:
    """This process's place in a ``torch.distributed`` group (world 1 when there is none)."""

    rank: int = 0
    world_size: int = 1

    @classmethod
    def current(cls) -> Distributed:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()


def train_causal_lm(
    model: torch.nn.Module,
    sampler: WeightedDomainSampler,
    cfg: TrainConfig,
    device: torch.device,
    checkpoint_dir: Path | None = None,
    run_key: str = "",
    on_step: Callable[[int, float, float], None] | None = None,
    progress: bool = True,
    desc: str = "train",
    log: Callable[[str], None] | None = None,
    mixing: OnlineMixing | None = None,
) -> TrainResult:
    """Train ``model`` in place for ``total_steps(cfg)`` steps; return the loss trajectory.

    ``run_key`` identifies the run's settings: a checkpoint in ``checkpoint_dir`` is only
    resumed when its key matches, so a changed mixture or config starts afresh.
    ``on_step(step, loss, tokens_per_s)`` is called for every optimiser step, in groups of
    up to ``LOG_EVERY`` (when the losses are read from the device, and always before a
    checkpoint is written). ``log`` receives a progress line about ten times per run.
    Under ``torch.distributed`` the model is wrapped in DistributedDataParallel and the
    losses reported are the mean over all ranks (see the module docstring).
    ``mixing``: a mixture that changes during training (module docstring); its settings
    are part of the resume key, its state of the checkpoint, its ``summary()`` and the
    seconds its held-out passes took of ``TrainResult.extra["mixing"]``. With it, batches
    are drawn in the loop (no prefetching thread: the next batch's weights are not known
    before the step).
    """
    dist = Distributed.current()
    if cfg.batch_size % dist.world_size:
        raise ValueError(f"train.batch_size {cfg.batch_size} is not divisible by the {dist.world_size} training "
                         "processes (training.nproc_per_node): each rank takes an equal share of every batch")
    seq_len = sampler.seq_len
    steps = total_steps(cfg, seq_len)
    model.to(device).train()
    opt = make_optimizer(model, cfg, fused=device.type == "cuda")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_at(s, cfg, steps) / cfg.lr)
    step, losses = 0, []
    key = sha256_text(run_key, repr(cfg), *([repr(mixing.settings())] if mixing is not None else []))[:16]
    # A checkpoint is resumed only if it is intact (its manifest matches) and of this run.
    if checkpoint_dir is not None and (checkpoint_dir / "state.json").exists() and verify_dir(checkpoint_dir) is None:
        meta = read_json(checkpoint_dir / "state.json")
        if meta.get("key") == key:
            # Tensors and plain values only: a checkpoint file is never allowed to run code.
            state = torch.load(checkpoint_dir / "state.pt", map_location=device, weights_only=True)
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            sampler.load_state_dict(state["sampler"])
            torch.set_rng_state(state["torch_rng"])
            step, losses = meta["step"], list(meta["losses"])
            if mixing is not None:
                mixing.load_state_dict(meta["mixing"])
    resumed_from = step
    precision = training_precision(cfg.precision, device)
    use_bf16 = precision == "bfloat16"
    if use_bf16 and log is not None and not native_bf16(device):
        log(f"{desc}: precision bfloat16 on a {device.type} without bfloat16 in hardware is emulated and may be far "
            "slower than float32; train.precision: bfloat16_if_native uses float32 there")
    # The loss module holds the model (the loss each device is fastest with, see
    # core.loss); DDP and torch.compile wrap it whole.
    loss_kind = resolve_loss(cfg.loss, device)
    net = causal_lm_loss(model, cfg.loss, device)
    if dist.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    run_model = torch.compile(net) if cfg.compile else net
    tokens_per_step = cfg.batch_size * cfg.grad_accum * seq_len  # global: all ranks together
    flops_per_token = model_train_flops_per_token(model, seq_len)
    peak = device_peak(device, bf16=use_bf16)
    report_every = max(LOG_EVERY, steps // 10)
    bar = tqdm(total=steps, initial=step, desc=desc, disable=not progress, mininterval=2.0)
    clock = StepClock(step, tokens_per_step)
    sync = {"cuda": lambda: torch.cuda.synchronize(device), "mps": lambda: torch.mps.synchronize()}.get(
        device.type, lambda: None)
    pending: list[torch.Tensor] = []  # this rank's step losses, still on the device

    def flush() -> None:
        if not pending:
            return
        values = torch.stack(pending)
        if dist.world_size > 1:
            import torch.distributed as tdist

            tdist.all_reduce(values, op=tdist.ReduceOp.SUM)
            values = values / dist.world_size
        first = step - len(pending) + 1
        pending.clear()
        new = values.float().cpu().tolist()  # the one host synchronisation
        clock.mark(step)
        tok_rate = clock.tokens_per_s()
        losses.extend(new)
        bar.set_postfix(loss=f"{new[-1]:.3f}", tok_s=f"{tok_rate:,.0f}")
        if log is not None and (step // report_every > (first - 1) // report_every or step == steps):
            log(f"{desc}: step {step}/{steps}, loss {new[-1]:.4f}, {tok_rate:,.0f} tokens/s, "
                f"MFU {flops_per_token * tok_rate / peak.flops:.1%}")
        if on_step is not None:
            for i, value in enumerate(new):
                on_step(first + i, value, tok_rate)

    mixing_s = 0.0

    def held_out(windows: dict[str, np.ndarray]) -> dict[str, float]:
        """Mean next-token NLL of the model as it is now on each domain's windows (under DDP
        averaged over ranks, so every rank's mixture sees the same numbers)."""
        nonlocal mixing_s
        t0 = time.perf_counter()
        model.eval()
        values = []
        with torch.no_grad(), torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
            for w in windows.values():
                total = torch.zeros((), device=device)
                for i in range(0, len(w), cfg.batch_size):
                    b = torch.from_numpy(np.asarray(w[i : i + cfg.batch_size], dtype=np.int64)).to(device)
                    total += eval_net(b[:, :-1], b[:, 1:]).float() * len(b)
                values.append(total / len(w))
        stacked = torch.stack(values)
        if dist.world_size > 1:
            import torch.distributed as tdist

            tdist.all_reduce(stacked, op=tdist.ReduceOp.SUM)
            stacked = stacked / dist.world_size
        model.train()
        out = dict(zip(windows, stacked.cpu().tolist()))
        seconds = time.perf_counter() - t0
        mixing_s += seconds
        clock.exclude(seconds)  # tokens/s is the training steps' rate
        return out

    eval_net = causal_lm_loss(model, cfg.loss, device) if mixing is not None else None
    prefetch = (BatchPrefetcher(sampler, cfg.batch_size, dist, pin=device.type == "cuda")
                if device.type in PREFETCH_DEVICES and step < steps and mixing is None else None)
    next_batch = prefetch.next if prefetch else (lambda: sampler.next_batch_shard(cfg.batch_size, dist.rank,
                                                                                   dist.world_size))
    attention = model.config._attn_implementation
    if use_bf16 and device.type == "cpu" and attention == "sdpa":  # see core.model.CPU_BF16_ATTENTION
        model.config._attn_implementation = register_cpu_bf16_attention()
    matmul_precision = torch.get_float32_matmul_precision()
    if device.type == "cuda":  # float32 products (outside autocast) on TF32 tensor cores
        torch.set_float32_matmul_precision("high")
    try:
        while step < steps:
            if mixing is not None:
                weights = mixing.weights_for_step(step, steps, held_out)
                if weights is not None:
                    sampler.set_weights(weights)
            opt.zero_grad(set_to_none=True)
            step_loss = torch.zeros((), device=device)
            for micro in range(cfg.grad_accum):
                batch = next_batch().to(device, non_blocking=True)
                # Under DDP, gradients are all-reduced on the last micro-batch of a step only.
                last = micro == cfg.grad_accum - 1
                with net.no_sync() if (dist.world_size > 1 and not last) else contextlib.nullcontext():
                    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
                        loss = run_model(batch[:, :-1], batch[:, 1:])
                    (loss / cfg.grad_accum).backward()
                step_loss += loss.detach() / cfg.grad_accum
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            step += 1
            pending.append(step_loss)
            bar.update(1)
            if step == resumed_from + 1:  # the first step (compilation) is timed apart
                sync()
                clock.mark(step)
            checkpoint_due = (checkpoint_dir is not None and cfg.checkpoint_every > 0
                              and step % cfg.checkpoint_every == 0 and step < steps)
            if step % LOG_EVERY == 0 or step == steps or checkpoint_due:
                flush()
            if checkpoint_due and dist.rank == 0:
                t_save = time.perf_counter()
                _save_checkpoint(checkpoint_dir, model, opt, sched, prefetch.state if prefetch else
                                 sampler.state_dict(), step, losses, key,
                                 mixing.state_dict() if mixing is not None else None)
                clock.exclude(time.perf_counter() - t_save)
        flush()
        bar.close()
    finally:
        if prefetch is not None:
            prefetch.close()
        model.config._attn_implementation = attention
        torch.set_float32_matmul_precision(matmul_precision)
    model.eval()
    timing = clock.summary()
    tok_rate = timing.pop("tokens_per_s")
    if log is not None and timing.get("steady_steps"):
        log(f"{desc}: {tok_rate:,.0f} tokens/s over {timing['steady_steps']} steady steps, MFU "
            f"{flops_per_token * tok_rate / peak.flops:.1%} of {peak.flops / 1e12:,.2f} TFLOP/s ({peak.source}); "
            f"first step {timing['first_step_s']:.1f} s{' (with compilation)' if cfg.compile else ''}, "
            f"warm-up {timing['warmup_steps']} steps in {timing['warmup_s']:.1f} s")
    return TrainResult(
        steps=steps,
        tokens=steps * tokens_per_step,
        losses=losses,
        tokens_per_s=tok_rate,
        epochs=sampler.epochs_seen(),
        draws=dict(sampler.draws),
        resumed_from=resumed_from,
        extra={
            "world_size": dist.world_size,
            "device": str(device),
            "precision": precision,
            "loss": loss_kind,
            "compiled": bool(cfg.compile),
            "flops_per_token": flops_per_token,
            "mfu": flops_per_token * tok_rate / peak.flops,
            "peak_flops": peak.flops,
            "peak_source": peak.source,
            **timing,
            **({"mixing": {**mixing.summary(), "heldout_s": mixing_s}} if mixing is not None else {}),
        },
    )


def _save_checkpoint(directory: Path, model, opt, sched, sampler_state: dict, step: int, losses: list[float],
                     key: str, mixing_state: dict | None = None) -> None:
    """Everything a resumed run needs, atomically. The mixing state is plain JSON in
    ``state.json`` (floats written as their shortest exact repr, so they read back bit-exact)."""
    with atomic_dir(directory) as tmp:
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "sampler": sampler_state,
                "torch_rng": torch.get_rng_state(),
            },
            tmp / "state.pt",
        )
        meta = {"key": key, "step": step, "losses": losses}
        write_json(tmp / "state.json", meta if mixing_state is None else {**meta, "mixing": mixing_state})
